"""ClickHouse's own judging of telemetry.v1's records (``schemas.clickhouse.INTAKE_DDL``).

The sink writes the records as they are into the intake, a Null table whose views judge each
one and write it to ``telemetry`` or, with the reason, to ``sink_rejects``. On chDB the intake
is in the store itself. In front of a ClickHouse server it runs in an in-memory chDB session of
the sink's process (``ServerIntake``), whose two target tables are the server's, reached over its
HTTP interface in RowBinary with the server's own column types: the server needs no JSON
functions (the local stack's 18.16 has none), and the sink's Python work per record is only
escaping it for TabSeparated, where converting it here costs a pydantic validation and a
clickhouse-driver encoding (16-18 µs a row, under the GIL).
"""

from __future__ import annotations

import base64
import threading
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from schemas import clickhouse as ch
from smartport.signals import crashes_end_the_process

# ClickHouse's codes for what the network did, not what the server thought of the rows.
_NETWORK_ERRORS = ("(POCO_EXCEPTION)", "(NETWORK_ERROR)", "(SOCKET_TIMEOUT)",
                   "(TIMEOUT_EXCEEDED)", "(CANNOT_READ_FROM_SOCKET)", "(CANNOT_WRITE_TO_SOCKET)")


def insert_query(rows: Sequence[dict[str, Any]]) -> str:
    """The INSERT of intake ``rows`` (topic, kafka_partition, kafka_offset, raw) as
    TabSeparated: escaping a raw record for TSV is a fifth of json.dumps."""
    lines = "".join(f"{row['topic']}\t{row['kafka_partition']}\t{row['kafka_offset']}\t"
                    f"{_tsv_string(row['raw'])}\n" for row in rows)
    return f"INSERT INTO {ch.INTAKE.name} FORMAT TabSeparated\n{lines}"


def _tsv_string(text: str) -> str:
    """A string as a TabSeparated field, escaped as ClickHouse reads it (a NUL too: chDB takes
    the query as a C string)."""
    # str.replace five times is a tenth of str.translate's cost
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r").replace("\0", "\\0"))


def is_network_error(error: Exception) -> bool:
    """Whether a chDB error is the network failing (the server unreachable, restarting)."""
    return isinstance(error, RuntimeError) and any(
        code in str(error) for code in _NETWORK_ERRORS)


Columns = list[tuple[str, str]]  # (name, type) as the server declares them


class JudgingSessions:
    """chDB sessions of one engine (``path``; ``:memory:`` too) that run intake inserts, each
    insert through a session of its own, so that inserts from several threads run side by
    side (the sessions share the engine's tables; chDB releases the GIL). In front of a
    server, 10,000 records an insert: one session judged and sent 72-98k rows/s, two
    109-121k; on chDB, 20,000 records an insert: 131k against 216-221k.

    A session does nothing but judge, with short-circuit evaluation off: with it on, multiIf
    evaluates each branch apart, and every branch parsed the record again (the reading's tuple
    once per field checked): 13 µs of judging a record against 5 in isolation; in
    bench/sink_bench.py at 5,000 rows/s, 31-34 CPU-µs per intake row against 35-39. None of
    the views' functions throws, so evaluating every branch changes no result (an INSERT's
    SETTINGS clause does not reach the views)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._idle = [self._session()]
        self._lock = threading.Lock()
        self._closed = False

    def _session(self) -> Any:
        import chdb

        session = chdb.connect(self._path)
        crashes_end_the_process()  # chDB's engine start installed ClickHouse's handlers
        session.query("SET short_circuit_function_evaluation = 'disable'")
        return session

    def run(self, query: str) -> int:
        """Run ``query`` (``insert_query``'s text, or DDL); the rows it wrote (each intake
        record three times: the record, judged, then stored)."""
        with self._lock:
            session = self._idle.pop() if self._idle else None
        if session is None:  # every session is busy: another thread inserts
            session = self._session()
        try:
            return int(session.query(query).rows_written())
        finally:
            with self._lock:
                if self._closed:
                    session.close()
                else:
                    self._idle.append(session)

    def close(self) -> None:
        """Close the sessions; one still inserting closes when done."""
        with self._lock:
            self._closed = True
            while self._idle:
                self._idle.pop().close()


class ServerIntake(JudgingSessions):
    """The intake in an in-memory chDB engine, its views writing to a ClickHouse server's
    ``telemetry`` and ``sink_rejects`` (``columns``: each table's, as the server has them).
    The engine, its tables with it, ends with its last session."""

    def __init__(self, http_url: str, database: str, user: str, password: str,
                 columns: dict[str, Columns]) -> None:
        super().__init__(":memory:")
        # Basic authentication, not the URL's user and password: ClickHouse's errors quote
        # the URL, and they reach the logs and sink_rejects.
        authorization = base64.b64encode(f"{user}:{password}".encode()).decode()
        statements = []
        for table in (ch.TELEMETRY, ch.REJECTS):
            names = ", ".join(f"`{name}`" for name, _ in columns[table.name])
            target = http_url + "?" + urlencode({
                "database": database,
                "query": f"INSERT INTO {table.name} ({names}) FORMAT RowBinary"}, quote_via=quote)
            declared = ", ".join(f"`{name}` {kind}" for name, kind in columns[table.name])
            statements.append(
                f"CREATE TABLE {table.name} ({declared}) ENGINE = URL({_quoted(target)}, "
                f"'RowBinary', headers('Authorization' = 'Basic {authorization}'))")
        for statement in [*statements, *ch.INTAKE_JUDGE_DDL,
                          *ch.intake_views(columns[ch.TELEMETRY.name])]:
            self.run(statement)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def reachable(http_url: str, timeout_s: float = 5.0) -> str | None:
    """None when a ClickHouse server answers ``http_url``'s /ping, else why not."""
    try:
        with urllib.request.urlopen(http_url + "ping", timeout=timeout_s) as answer:
            body = answer.read(64)
    except OSError as exc:
        return str(exc)
    return None if body.startswith(b"Ok.") else f"/ping answered {body!r}"
