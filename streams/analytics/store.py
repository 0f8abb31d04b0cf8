"""The two ClickHouse back-ends behind one small interface, chosen by URL.

``clickhouse://host:port/db`` is a server over the native protocol (clickhouse-driver);
``chdb:///path`` is chDB, the ClickHouse engine in-process, persistent in ``path``. chDB locks
its directory: while the sink owns the store it answers analysts' queries itself (see
``streams.analytics.query_server``).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from schemas import clickhouse as ch
from smartport.errors import ConfigError, StackError
from smartport.redaction import redact_url
from smartport.signals import crashes_end_the_process
from streams.analytics import intake

log = logging.getLogger(__name__)

Rows = Sequence[dict[str, Any]]
Result = tuple[list[str], list[tuple[Any, ...]]]
# An insert made ready to send (encoded, converted: the Python work, under the GIL); calling it
# sends it and returns what ``Store.insert`` returns.
PreparedInsert = Callable[[], "int | None"]

# Analysts' queries: reads only (ClickHouse's `readonly` also refuses the table functions that
# reach files, URLs, other servers and programs), bounded in time and size. `readonly` comes
# last: once set, a session can change no setting, this one included.
ANALYST_SETTINGS: dict[str, Any] = {
    "max_execution_time": 60,
    "max_result_rows": 1_000_000,
    "max_result_bytes": 256 * 1024 * 1024,
    "result_overflow_mode": "throw",
    "readonly": 1,
}


class Store(Protocol):
    url: str
    # Fewer telemetry records in a flush are converted by the sink than sent to the intake,
    # whose cost per insert (chDB analyses its views) they would not repay.
    intake_min_rows: int
    # Batches the sink may have in flight at once, each inserted by a thread of its own:
    # more than one only where inserts from several threads run side by side.
    inserts_in_flight: int

    def version(self) -> str: ...

    def execute(self, sql: str) -> None: ...

    def insert(self, table: ch.Table, rows: Rows) -> int | None:
        """Insert ``rows``; the rows ClickHouse wrote, those of materialized views included,
        when the store reports it (chDB does), else None."""
        ...

    def prepare(self, table: ch.Table, rows: Rows) -> PreparedInsert:
        """``insert`` in two steps: the returned call sends what this one encoded, so that one
        thread can encode the next batch while another sends this one."""
        ...

    def has_intake(self) -> bool:
        """Whether ``ch.INTAKE`` takes telemetry.v1's records as they are (ClickHouse judges
        and converts them: ``streams.analytics.intake``)."""
        ...

    def query(self, sql: str) -> Result: ...

    def read(self, sql: str) -> Result:
        """An analyst's query: read-only and bounded (ANALYST_SETTINGS), whatever the SQL."""

    def transient(self, error: Exception) -> bool:
        """Whether ``error`` is the store being unreachable (retry the same rows later), not
        the store refusing these rows."""

    def close(self) -> None: ...


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_HTTP_PORT = 8123


def _tick_of(column_type: str) -> timedelta | None:
    """The step of a DateTime or DateTime64(p) column of at most microseconds (what
    clickhouse-driver writes of a datetime), else None."""
    if column_type.startswith("DateTime64("):
        precision = int(column_type[len("DateTime64(")])
        return timedelta(microseconds=10 ** (6 - precision)) if precision <= 6 else None
    return timedelta(seconds=1) if column_type.startswith("DateTime") else None


def _in_ticks(value: Any, tick: timedelta) -> Any:
    """An aware datetime as the integer a time column stores (floored, exactly); any other
    value (a naive datetime: in the server's zone) is left to clickhouse-driver."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return (value - _EPOCH) // tick
    return value


class ServerStore:
    # CPU of the sink's process per insert, medians of five, intake vs converted: 2,000 rows
    # 32.5 vs 21.7 ms, 10,000 rows 82.7 vs 121.0 (the server's own CPU alike either way).
    intake_min_rows = 3_300
    # The intake judges one batch while the server stores the one before: bench/sink_bench.py
    # (400,000 rows, one sink) 98.5k and 103.2k rows/s against 82.6k and 86.7k with one.
    inserts_in_flight = 2

    def __init__(self, url: str) -> None:
        from clickhouse_driver import Client

        parts = urlsplit(url)
        self.url = url
        self._database = parts.path.strip("/") or "default"
        options = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 9000,
                   "user": parts.username or "default", "password": parts.password or "",
                   "connect_timeout": 5, "send_receive_timeout": 60}
        options_given = parse_qs(parts.query, keep_blank_values=True)
        if unknown := sorted(set(options_given) - {"http_port"}):
            raise ConfigError(f"{', '.join(unknown)} in the ClickHouse URL {redact_url(url)!r} "
                              "is no option of ours; the only one is http_port, e.g. "
                              f"?http_port={DEFAULT_HTTP_PORT}")
        http_port = options_given.get("http_port", [str(DEFAULT_HTTP_PORT)])[-1]
        if not (http_port.isascii() and http_port.isdigit()) or not 0 < int(http_port) < 65536:
            raise ConfigError(f"http_port={http_port!r} in the ClickHouse URL "
                              f"{redact_url(url)!r} is not a port number; the server's HTTP "
                              f"interface is usually ?http_port={DEFAULT_HTTP_PORT}")
        self._http_url = f"http://{options['host']}:{http_port}/"
        self._credentials = (str(options["user"]), str(options["password"]))
        self._intake: intake.ServerIntake | None = None
        self._intake_lock = threading.Lock()
        try:
            Client(**options).execute(f"CREATE DATABASE IF NOT EXISTS `{self._database}`")
        except Exception as exc:
            detail = str(exc).replace(parts.password, "***") if parts.password else str(exc)
            raise StackError(f"cannot reach ClickHouse at {redact_url(url)}: {detail}") from None
        self._client = Client(**options, database=self._database)
        self._lock = threading.Lock()  # one connection: one call at a time, whatever thread
        self._column_types: dict[str, list[tuple[str, str]]] = {}

    def version(self) -> str:
        return str(self._call("SELECT version()")[0][0])

    def _call(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.execute(sql, *args, **kwargs)

    def execute(self, sql: str) -> None:
        self._column_types.clear()  # DDL (a migration) may have changed them
        self._close_intake()  # and the intake's targets with them
        self._call(sql)

    def insert(self, table: ch.Table, rows: Rows) -> int | None:
        return self.prepare(table, rows)()

    def prepare(self, table: ch.Table, rows: Rows) -> PreparedInsert:
        if table is ch.INTAKE:
            query = intake.insert_query(rows)
            return lambda: self._judge(query)
        names = table.column_names
        columns = [[row[name] for row in rows] for name in names]  # columnar: native blocks
        ticks = self._ticks(table.name)
        for name, column in zip(names, columns, strict=True):
            if (tick := ticks.get(name)) is not None:
                column[:] = [_in_ticks(value, tick) for value in column]
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES"

        def send() -> None:
            self._call(sql, columns, columnar=True)

        return send

    def has_intake(self) -> bool:
        """The intake runs in chDB in front of the server: chDB must be installed (the
        ``embedded`` extra) and the server's HTTP interface must answer; else the sink
        converts telemetry itself, which costs it three times the CPU."""
        if importlib.util.find_spec("chdb") is None:
            log.warning("chDB is not installed: the sink converts telemetry itself "
                        "(pip install 'smartport[embedded]' lets ClickHouse do it, faster)")
            return False
        problem = intake.reachable(self._http_url)
        if problem is not None:
            log.warning("ClickHouse's HTTP interface does not answer: the sink converts "
                        "telemetry itself (slower); name its port in the store URL, e.g. "
                        f"?http_port={DEFAULT_HTTP_PORT}",
                        extra={"url": self._http_url, "error": problem})
            return False
        return True

    def _judge(self, query: str) -> int:
        with self._intake_lock:
            if self._intake is None:
                columns = {table.name: self.column_types(table.name)
                           for table in (ch.TELEMETRY, ch.REJECTS)}
                self._intake = intake.ServerIntake(self._http_url, self._database,
                                                   *self._credentials, columns)
            judge = self._intake
        return judge.run(query)  # a session of its own: the next batch's may run meanwhile

    def _close_intake(self) -> None:
        with self._intake_lock:
            if self._intake is not None:
                self._intake.close()
                self._intake = None

    def _ticks(self, table: str) -> dict[str, timedelta]:
        """The tick of each of ``table``'s time columns, as the server declares them (a table
        made before a server upgrade keeps its types). clickhouse-driver takes an int as the
        value it sends, where a datetime costs it 3.2 µs a row through pytz: half its CPU per
        telemetry row (10,000-row inserts into the local 18.16 server)."""
        return {name: tick for name, kind in self.column_types(table)
                if (tick := _tick_of(kind)) is not None}

    def column_types(self, table: str) -> list[tuple[str, str]]:
        """``table``'s (name, type) as the server declares them (read once)."""
        if table not in self._column_types:
            self._column_types[table] = [(str(name), str(kind)) for name, kind in self._call(
                "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                "AND table = %(table)s", {"table": table})]
        return self._column_types[table]

    def query(self, sql: str, settings: dict[str, Any] | None = None) -> Result:
        data, columns = self._call(sql, with_column_types=True, settings=settings)
        return [name for name, _ in columns], [tuple(row) for row in data]

    def read(self, sql: str) -> Result:
        return self.query(sql, ANALYST_SETTINGS)

    def transient(self, error: Exception) -> bool:
        from clickhouse_driver import errors

        return isinstance(error, OSError | EOFError | errors.NetworkError
                          | errors.SocketTimeoutError | errors.UnexpectedPacketFromServerError
                          ) or intake.is_network_error(error)

    def close(self) -> None:
        self._close_intake()  # chDB's engine serves one path a process: let another open
        self._client.disconnect()


def _json_value(value: Any) -> Any:
    """What JSONEachRow takes for a value json cannot write itself (json calls it only for
    those: a datetime, as DateTime64(3) text)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    raise TypeError(f"no JSONEachRow form for a {type(value).__name__}")


class ChdbStore:
    # CPU per insert, medians, intake vs converted: 600 rows 64-67 vs 63-66 ms, 800 71-74 vs
    # 73-92, 1,000 76-80 vs 84-99 (2026-12-03); 700 rows 29.1 vs 30.3 (2026-12-05).
    intake_min_rows = 700
    # Intake inserts run side by side in sessions of their own (intake.JudgingSessions):
    # bench/sink_bench.py (400,000 rows) 113.2k and 121.8k rows/s against 89.6k and 91.2k.
    inserts_in_flight = 2

    def __init__(self, path: Path, url: str) -> None:
        import chdb

        self.url = url
        path.mkdir(parents=True, exist_ok=True)
        if _locked(path / "status"):
            raise StoreLocked(f"the chDB store {path} is open in another process")
        self._path = path
        self._connection = chdb.connect(str(path))
        crashes_end_the_process()  # chDB's engine start installed ClickHouse's handlers
        self._reader: Any = None  # a second session, read-only for good: analysts' queries
        self._judging: intake.JudgingSessions | None = None  # the intake's inserts
        # One query at a time across both sessions: concurrent queries (the sink's and the
        # query server's threads) were seen to mix their outputs.
        self._lock = threading.Lock()

    def version(self) -> str:
        return self.query("SELECT version()")[1][0][0]  # type: ignore[no-any-return]

    def execute(self, sql: str) -> None:
        with self._lock:
            self._connection.query(sql)

    def insert(self, table: ch.Table, rows: Rows) -> int | None:
        return self.prepare(table, rows)()

    def prepare(self, table: ch.Table, rows: Rows) -> PreparedInsert:
        judged = table is ch.INTAKE
        if judged:
            query = intake.insert_query(rows)
        else:
            lines = "".join(json.dumps(row, default=_json_value) + "\n" for row in rows)
            query = f"INSERT INTO {table.name} FORMAT JSONEachRow\n{lines}"

        def send() -> int:
            # chDB releases the GIL while it inserts: only the text is made under it
            if judged:
                return self._judging_sessions().run(query)
            with self._lock:
                return int(self._connection.query(query).rows_written())

        return send

    def _judging_sessions(self) -> intake.JudgingSessions:
        # The lock only to open them: an analyst's query holding it must not stall inserts.
        if self._judging is None:
            with self._lock:
                if self._judging is None:
                    self._judging = intake.JudgingSessions(str(self._path))
        return self._judging

    def has_intake(self) -> bool:
        _, found = self.query("SELECT count() FROM system.tables WHERE database = "
                              f"currentDatabase() AND name = '{ch.INTAKE.name}'")
        return bool(found and found[0][0])

    def query(self, sql: str) -> Result:
        with self._lock:
            return self._result(self._connection.query(sql, "JSONCompact"))

    def read(self, sql: str) -> Result:
        return self._result(self.read_raw(sql, "JSONCompact"))

    def read_raw(self, sql: str, output_format: str) -> bytes:
        """An analyst's query, read-only and bounded, in any output format chDB writes (a
        FORMAT clause in ``sql`` wins): what the ClickHouse HTTP interface answers."""
        with self._lock:
            if self._reader is None:
                import chdb

                reader = chdb.connect(str(self._path))
                crashes_end_the_process()
                for name, value in ANALYST_SETTINGS.items():
                    reader.query(f"SET {name} = {value!r}")
                self._reader = reader
            try:
                result = self._reader.query(sql, output_format)
            except Exception:
                # A failed query can leave output behind (the first of two statements, rows
                # before a limit tripped) that chDB hands to the next one: start afresh.
                self._reader.close()
                self._reader = None
                raise
            return result.bytes() if hasattr(result, "bytes") else str(result).encode()

    @staticmethod
    def _result(result: Any) -> Result:
        if isinstance(result, bytes):
            text = result.decode()
        else:
            text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        if not text.strip():
            return [], []
        document = json.loads(text)
        return ([column["name"] for column in document["meta"]],
                [tuple(row) for row in document["data"]])

    def transient(self, error: Exception) -> bool:
        return isinstance(error, OSError)  # in-process: anything else is a refusal

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._judging is not None:
            self._judging.close()
        self._connection.close()


def _locked(status_file: Path) -> bool:
    """Whether another process holds the lock chDB (like clickhouse-server) takes on start."""
    try:
        with status_file.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    return False


class StoreLocked(StackError):
    """The embedded store is owned by another process (a running sink)."""


def open_store(url: str) -> Store:
    parts = urlsplit(url)
    if parts.scheme == "clickhouse":
        return ServerStore(url)
    if parts.scheme == "chdb":
        return ChdbStore(Path(parts.path), url)
    raise ConfigError(f"ClickHouse URL {redact_url(url)!r} must be clickhouse://host:9000/db or chdb:///path")
