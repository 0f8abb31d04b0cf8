"""The ClickHouse sink on both back-ends: exact contents, crashes, outages, bad records."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from deploy import process
from deploy.pipeline import SMARTPORT
from deploy.services import CLICKHOUSE_HTTP_PORT, CLICKHOUSE_PORT, HOST, ClickHouse
from deploy.stack import up
from ingest.records import envelope_value
from ingest.validation import Accepted, Limits, classify
from schemas import Alert, AlertState, GatewayEnvelope, Rule, Severity, encode, topics
from schemas import clickhouse as ch
from smartport.errors import ConfigError
from smartport.kafka import consumer_config, high_watermarks, read_range
from smartport.settings import Settings
from streams.analytics import rows
from streams.analytics import sink as sink_module
from streams.analytics.intake import ServerIntake, insert_query
from streams.analytics.migrations import ensure_schema
from streams.analytics.rows import to_row
from streams.analytics.sink import REJECTED, Sink
from streams.analytics.store import ChdbStore, ServerStore, Store, open_store
from tests.helpers import container_reading, crane_reading, rtg_reading
from tests.stack.pipeline import unique, wait_for

# -- against both back-ends -----------------------------------------------------------------

BACKENDS = ["chdb", "server"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, stack: Settings, tmp_path: Path) -> Iterator[str]:
    if request.param == "chdb":
        yield f"chdb://{tmp_path / 'chdb'}"
        return
    database = unique("test").replace("-", "_")
    yield f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}"
    from clickhouse_driver import Client

    Client(HOST, port=CLICKHOUSE_PORT).execute(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture(params=BACKENDS)
def store_urls(request: pytest.FixtureRequest, stack: Settings, tmp_path: Path
               ) -> Iterator[Callable[[str], str]]:
    """A fresh store's URL for each name asked, all on one back-end."""
    databases: list[str] = []

    def url(name: str) -> str:
        if request.param == "chdb":
            return f"chdb://{tmp_path / name}"
        databases.append(unique(f"test-{name}").replace("-", "_"))
        return f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{databases[-1]}"

    yield url
    from clickhouse_driver import Client

    for database in databases:
        Client(HOST, port=CLICKHOUSE_PORT).execute(f"DROP DATABASE IF EXISTS {database}")


def _intake_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flush of telemetry through the intake, however few its records."""
    for store in (ChdbStore, ServerStore):
        monkeypatch.setattr(store, "intake_min_rows", 1)


def _reading_id(value: bytes) -> str | None:
    try:
        return GatewayEnvelope.model_validate_json(value).reading_id
    except ValueError:
        return None  # not a reading: the sink keeps it in sink_rejects


def _kafka_readings(settings: Settings, until: dict[int, int]) -> set[str]:
    readings = {_reading_id(message.value() or b"")
                for message in read_range(settings.kafka, topics.TELEMETRY, {})
                if (message.offset() or 0) < until.get(message.partition() or 0, 0)}
    return {reading_id for reading_id in readings if reading_id is not None}


def _exact(store: Store, settings: Settings, until: dict[int, int]) -> None:
    want = _kafka_readings(settings, until)
    _, rows = store.query("SELECT reading_id FROM telemetry FINAL")
    got = {str(reading_id) for reading_id, in rows}
    _, refused = store.query("SELECT raw, reason FROM sink_rejects FINAL "
                             f"WHERE topic = '{topics.TELEMETRY}'")
    kept = {_reading_id(raw.encode()): reason for raw, reason in refused}
    missing = want - got - kept.keys()
    assert not missing, f"{len(missing)} readings neither in ClickHouse nor kept in sink_rejects"
    print(f"{len(kept)} refused by ClickHouse, kept with the reason:", set(kept.values()))
    assert len(rows) == len(got), "duplicates survived deduplication"


def _publish_some(settings: Settings, count: int = 2000) -> None:
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    device = unique("sink")
    for seq in range(count):
        reading = crane_reading(device_id=device, seq=seq)
        # Half as the gateway writes them (on chDB, ClickHouse converts those), half without
        # the reading_id (records written before it existed: converted by the sink).
        value = _gateway_envelope(reading) if seq % 2 else json.dumps({
            "received_at": "2026-11-24T02:00:01Z", "gateway_id": "test",
            "mqtt_topic": f"port/CNSHK/crane/{device}/telemetry", "reading": reading}).encode()
        producer.produce(topics.TELEMETRY, key=b"CSQU3054383", value=value)
        if seq % 100 == 0:  # redeliveries: the same (device_id, seq) twice
            producer.produce(topics.TELEMETRY, key=b"CSQU3054383", value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def test_sink_holds_exactly_what_kafka_holds(stack: Settings, store_url: str) -> None:
    _publish_some(stack)
    producer = Producer(stack.kafka.client_config())
    producer.produce(topics.ANCHORS, key=b"junk", value=b"{not an anchor")  # kept, not fatal
    hostile = [HOSTILE_RECORDS["seq fractional"][0], HOSTILE_RECORDS["deeply nested"][0],
               _GOOD.replace(b'"gw-intake"', b'"gw-\xff"')]  # not UTF-8
    for value in hostile:
        producer.produce(topics.TELEMETRY, key=b"junk", value=value)
    producer.flush(10)
    rejected_before = REJECTED.labels(topics.TELEMETRY)._value.get()
    until = high_watermarks(stack.kafka, topics.TELEMETRY)
    store = open_store(store_url)
    ensure_schema(store, ttl_days=None)
    sink = Sink(stack, store, group=unique("sink"))
    sink.run(idle_exit_s=5.0)
    _exact(store, stack, until)
    _, rejects = store.query("SELECT raw FROM sink_rejects FINAL WHERE topic = 'anchors.v1'")
    assert ("{not an anchor",) in rejects
    _, rejects = store.query("SELECT raw, reason FROM sink_rejects FINAL "
                             f"WHERE topic = '{topics.TELEMETRY}'")
    kept = {raw.encode("utf-8", errors="surrogateescape"): reason for raw, reason in rejects}
    for value in hostile[:2]:
        assert kept[value].startswith("not a valid telemetry message"), kept[value]
    assert any("invalid unicode code point" in reason for reason in kept.values())
    assert REJECTED.labels(topics.TELEMETRY)._value.get() - rejected_before >= len(hostile)
    for name, sql in ch.ANALYST_QUERIES.items():  # every README query runs on this back-end
        store.query(sql)
        del name
    store.close()


def _envelope(**reading: Any) -> bytes:
    return json.dumps({"received_at": datetime.now(UTC).isoformat(), "gateway_id": "test",
                       "mqtt_topic": "port/CNSHK/crane/qc-01/telemetry",
                       "reading": crane_reading(**reading)}).encode()


def test_readings_from_many_days_go_in_one_insert(store_url: str) -> None:
    store = open_store(store_url)
    try:
        ensure_schema(store, ttl_days=None)
        start = datetime(2026, 1, 1, tzinfo=UTC)
        rows = [to_row(topics.TELEMETRY, 0, day, _envelope(
            seq=day, ts=(start - timedelta(days=day)).isoformat()), start)[1]
            for day in range(150)]
        store.insert(ch.TELEMETRY, rows)  # 150 days of ts, one month of received_at
        assert store.query("SELECT count() FROM telemetry")[1] == [(150,)]
    finally:
        store.close()


def test_the_server_stores_times_exactly_as_clickhouse_driver_would(stack: Settings) -> None:
    """The server store sends aware datetimes as the integers their columns hold (a
    speed-up): what it stores must be what clickhouse-driver stores of the datetimes."""
    from clickhouse_driver import Client

    database = unique("test").replace("-", "_")
    store = open_store(f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}")
    client = Client(HOST, port=CLICKHOUSE_PORT, database=database)
    try:
        ensure_schema(store, ttl_days=None)
        received = datetime(2026, 3, 1, 12, 34, 56, 789_999, tzinfo=UTC)
        rows = [to_row(topics.TELEMETRY, 0, seq, _envelope(seq=seq, ts=ts), received)[1]
                for seq, ts in enumerate(("2026-03-01T14:34:56.789+02:00",
                                          "1970-01-01T00:00:01.999Z", "2026-03-01T12:34:56Z",
                                          "2105-12-31T23:59:59.999999-05:30"))]
        store.insert(ch.TELEMETRY, rows)
        client.execute("CREATE TABLE by_driver AS telemetry")
        names = ch.TELEMETRY.column_names
        client.execute(f"INSERT INTO by_driver ({', '.join(names)}) VALUES",
                       [[row[name] for name in names] for row in rows])
        select = ("SELECT seq, toString(ts), toString(received_at) FROM {} ORDER BY seq")
        stored = client.execute(select.format("telemetry"))
        assert stored == client.execute(select.format("by_driver"))
        assert len(stored) == len(rows)
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {database}")
        store.close()


def _schema_1(table: ch.Table) -> ch.Table:
    """A table as schema 1 made it: daily partitions by event time, readings keyed by
    (device_id, seq) and without the identity columns."""
    columns = tuple(c for c in table.columns if c.name not in ("boot", "reading_id"))
    if table is ch.TELEMETRY:
        return replace(table, columns=columns, order_by="(device_id, seq)", time_column="ts",
                       monthly=False)
    return replace(table, monthly=False)


def _make_schema_1_store(store: Store, telemetry: list[bytes], alerts: list[bytes]) -> None:
    old = {table.name: _schema_1(table) for table in ch.TABLES}
    for table in old.values():
        store.execute(ch.create_table(table, ch.Dialect.for_version(store.version()), None))
    store.execute(f"CREATE TABLE {ch.VERSION_TABLE} (version UInt32, applied_at DateTime) "
                  "ENGINE = MergeTree ORDER BY version")
    store.insert(ch.VERSIONS, [{"version": 1, "applied_at": datetime.now(UTC)}])
    now = datetime.now(UTC)
    rows = [to_row(topics.TELEMETRY, 0, offset, value, now)[1]
            for offset, value in enumerate(telemetry)]
    store.insert(old["telemetry"], [{k: row[k] for k in old["telemetry"].column_names}
                                    for row in rows])
    store.insert(old["alerts"], [to_row(topics.ALERTS, 0, 0, v, now)[1] for v in alerts])


def test_a_schema_1_store_is_migrated_and_keeps_every_reading(store_url: str) -> None:
    store = open_store(store_url)
    try:
        values = [_envelope(seq=5, ts="2026-11-24T10:00:00Z"),
                  _envelope(seq=6, ts="2026-11-24T10:00:01Z")]
        now = datetime.now(UTC)
        alert = encode(Alert(
            alert_id="CSQU3054383/weight_mismatch/1", rule=Rule.WEIGHT_MISMATCH,
            severity=Severity.CRITICAL, state=AlertState.RAISED, container_no="CSQU3054383",
            port="CNSHK", first_seen=now, last_seen=now, count=1, version=1))
        _make_schema_1_store(store, values, [alert])
        # A stored row whose raw value no longer converts (schema 1 was laxer, or it was
        # edited in place): the migration keeps it in sink_rejects, never drops it.
        old_telemetry = _schema_1(ch.TELEMETRY)
        row = to_row(topics.TELEMETRY, 0, 9, values[0], now)[1]
        unconvertible = '{"no longer": "a reading"}'
        store.insert(old_telemetry, [{**{k: row[k] for k in old_telemetry.column_names},
                                      "seq": 99, "raw": unconvertible}])
        messages: list[str] = []

        ensure_schema(store, ttl_days=None, progress=messages.append)

        assert store.query(f"SELECT max(version) FROM {ch.VERSION_TABLE}")[1] == [
            (ch.SCHEMA_VERSION,)]
        _, ids = store.query("SELECT reading_id FROM telemetry FINAL ORDER BY seq")
        assert [i for i, in ids] == [_reading_id(v) for v in values]
        _, kept = store.query("SELECT raw FROM sink_rejects FINAL WHERE topic = 'telemetry.v1'")
        assert kept == [(unconvertible,)]
        assert store.query("SELECT count() FROM alerts FINAL")[1] == [(1,)]
        _, left = store.query("SELECT name FROM system.tables WHERE database = "
                              "currentDatabase() AND name LIKE '%_schema1'")
        assert left == []
        migrated = f"telemetry: migrated to schema {ch.SCHEMA_VERSION} — 2 rows"
        assert any(migrated in m and "1 kept in sink_rejects" in m for m in messages), messages
        ensure_schema(store, ttl_days=None, progress=messages.append)  # idempotent
        # The device rebooted: seq 5 again, later. Schema 1 folded it; schema 2 keeps both.
        rebooted = _envelope(seq=5, ts="2026-11-24T11:00:00Z")
        store.insert(ch.TELEMETRY, [to_row(topics.TELEMETRY, 0, 2, rebooted, now)[1]])
        assert store.query("SELECT count() FROM telemetry FINAL")[1] == [(3,)]
    finally:
        store.close()


def _sink_process(url: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = {"SMARTPORT_CLICKHOUSE_URL": url, "SMARTPORT_QUERY_PORT": "18124",
           "PATH": "/usr/bin:/bin"}
    with log.open("ab") as handle:
        return subprocess.Popen([*SMARTPORT, "sink", "--group", group], stdout=handle,
                                stderr=handle, env=env)


def _wait_caught_up(settings: Settings, group: str, until: dict[int, int],
                    timeout: float) -> None:
    """Until the sink's group committed ``until`` on every partition: it commits only after
    ClickHouse took the rows (or ``sink_rejects`` the refused ones)."""
    partitions = [TopicPartition(topics.TELEMETRY, p) for p in until]

    def caught_up() -> bool:
        consumer = Consumer(consumer_config(settings.kafka, group))
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException:
            return False
        finally:
            consumer.close()
        return all(until[tp.partition] == 0 or tp.offset >= until[tp.partition]
                   for tp in committed)

    wait_for(caught_up, timeout, "the sink to catch up with Kafka")


def test_sigkill_and_restart_is_still_exact(stack: Settings, store_url: str,
                                            tmp_path: Path) -> None:
    _publish_some(stack, 5000)
    until = high_watermarks(stack.kafka, topics.TELEMETRY)
    group, log = unique("sink"), tmp_path / "sink.log"
    first = _sink_process(store_url, group, log)
    wait_for(lambda: '"msg": "inserted"' in log.read_text(), 60, "the first insert")
    first.send_signal(signal.SIGKILL)  # mid-stream: inserted, maybe not yet committed
    first.wait(10)
    second = _sink_process(store_url, group, log)
    try:
        _wait_caught_up(stack, group, until, 180)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    store = open_store(store_url)
    _exact(store, stack, until)
    store.close()


def test_two_sinks_in_one_group_share_the_partitions_and_store_exactly(
        stack: Settings, tmp_path: Path) -> None:
    """How the server back-end scales (README, Analytics): a second sink takes part of the
    partitions; rebalanced while both insert, the two still store every reading once."""
    database = unique("test").replace("-", "_")
    url = f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}"
    store = open_store(url)
    ensure_schema(store, ttl_days=None)  # once: the sinks find it made
    _publish_some(stack, 5000)
    until = high_watermarks(stack.kafka, topics.TELEMETRY)
    group = unique("sink")
    sinks = [_sink_process(url, group, tmp_path / f"sink{n}.log") for n in range(2)]
    admin = AdminClient(stack.kafka.client_config())

    def shared() -> bool:
        described = admin.describe_consumer_groups([group])[group].result()
        owned = [m.assignment.topic_partitions for m in described.members]
        return len(owned) == 2 and all(
            any(tp.topic == topics.TELEMETRY for tp in partitions) for partitions in owned)

    try:
        wait_for(shared, 60, "both sinks to hold part of telemetry.v1")
        _wait_caught_up(stack, group, until, 180)
    finally:
        for sink in sinks:
            sink.send_signal(signal.SIGTERM)
        for sink in sinks:
            assert sink.wait(60) == 0
    try:
        _exact(store, stack, until)
    finally:
        store.execute(f"DROP DATABASE {database}")
        store.close()


def test_clickhouse_server_outage_is_survived(
        stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """ClickHouse stopped while the sink inserts: every flush of telemetry goes through the
    intake (chDB in the sink's process, sending over HTTP) and the rest over the native
    protocol; both kinds of failure are retried, nothing is lost or turned into a reject."""
    _intake_always(monkeypatch)
    database = unique("outage").replace("-", "_")
    store_url = f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}"
    store = open_store(store_url)
    ensure_schema(store, ttl_days=None)
    server = ClickHouse(stack.state_dir)
    stop, group = threading.Event(), unique("sink")
    sink = Sink(stack.model_copy(update={"batches": stack.batches.model_copy(
        update={"sink_rows": 500})}), store, group=group)
    thread = threading.Thread(target=sink.run, kwargs={"stop": stop})
    thread.start()
    try:
        time.sleep(2)
        assert process.stop(server.pid_path), "the test needs the stack's own ClickHouse"
        _publish_some(stack, 3000)  # arrives while ClickHouse is down
        time.sleep(15)
        up(stack)
        until = high_watermarks(stack.kafka, topics.TELEMETRY)
        _wait_caught_up(stack, group, until, 180)
    finally:
        stop.set()
        thread.join(60)
        store.close()  # and its intake's chDB session: a process has one chDB engine
        up(stack)
    checker = open_store(store_url)
    _exact(checker, stack, until)
    _, refused = checker.query("SELECT reason FROM sink_rejects "
                               "WHERE reason LIKE 'ClickHouse refused%'")
    checker.close()
    outage = [reason for (reason,) in refused if any(
        sign in reason for sign in ("Connection", "POCO_EXCEPTION", "NETWORK", "Socket"))]
    assert not outage, f"the outage turned records into rejects: {outage[:3]}"
    from clickhouse_driver import Client

    Client(HOST, port=CLICKHOUSE_PORT).execute(f"DROP DATABASE IF EXISTS {database}")


def test_a_refused_row_never_stops_the_others(stack: Settings, store_url: str) -> None:
    """Readings buffered at sea span many days: a batch over more than 100 daily partitions is
    refused whole by modern ClickHouse (chDB); a year-2200 timestamp does not fit the server's
    DateTime. Before, the sink retried such a batch forever and stored nothing after it."""
    device = unique("at-sea")
    producer = Producer(stack.kafka.client_config())

    def produce(seq: int, ts: str) -> None:
        value = json.dumps({"received_at": "2026-11-24T02:00:01Z", "gateway_id": "test",
                            "mqtt_topic": f"port/CNSHK/crane/{device}/telemetry",
                            "reading": crane_reading(device_id=device, seq=seq, ts=ts)})
        producer.produce(topics.TELEMETRY, key=b"CSQU3054383", value=value.encode())

    first_day = datetime(2026, 1, 1, tzinfo=UTC)
    for day in range(101):
        produce(day, (first_day + timedelta(days=day)).isoformat())
    produce(1000, "2200-01-01T00:00:00+00:00")
    assert producer.flush(30) == 0
    store = open_store(store_url)
    ensure_schema(store, ttl_days=None)
    sink = Sink(stack, store, group=unique("sink"))
    stop = threading.Event()
    runner = threading.Thread(target=sink.run, kwargs={"stop": stop, "idle_exit_s": 5.0})
    runner.start()
    runner.join(180)
    stop.set()
    runner.join(60)
    try:
        assert not runner.is_alive()
        _, rows = store.query(f"SELECT seq FROM telemetry FINAL WHERE device_id = '{device}'")
        stored = {int(seq) for (seq,) in rows}
        assert set(range(101)) <= stored, f"{101 - len(stored & set(range(101)))} days missing"
        _, rejects = store.query("SELECT reason FROM sink_rejects FINAL "
                                 f"WHERE position(raw, '{device}') > 0")
        refused = [reason for (reason,) in rejects]
        assert 1000 in stored or any(r.startswith("ClickHouse refused the telemetry row")
                                     for r in refused), refused
    finally:
        store.close()


def test_a_row_the_store_cannot_encode_is_kept_and_the_others_stored(
        stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's inserts are encoded in the consumer's thread (``Store.prepare``). A row the
    store cannot encode must not stop the sink there: the inserter meets it again, and it goes
    to sink_rejects with the reason while the rest of its batch is stored and committed."""
    topic, group, device = unique("unencodable"), unique("sink"), unique("unencodable")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    table, convert = rows.CONVERTERS[topics.TELEMETRY]

    def convert_one_badly(value: bytes, partition: int, offset: int) -> rows.Row:
        row = convert(value, partition, offset)
        if offset == 7:
            row["door"] = b"\xff"  # no JSON form
        return row

    monkeypatch.setitem(rows.CONVERTERS, topic, (table, convert_one_badly))
    producer = Producer(stack.kafka.client_config())
    for seq in range(20):  # without reading_id: converted by the sink, not chDB's intake
        producer.produce(topic, value=json.dumps({
            "received_at": "2026-11-24T02:00:01Z", "gateway_id": "test", "mqtt_topic": "t",
            "reading": crane_reading(device_id=device, seq=seq)}).encode())
    assert producer.flush(30) == 0
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    ensure_schema(store, ttl_days=None)
    sink = Sink(stack, store, group=group, source_topics=(topic,))
    runner = threading.Thread(target=sink.run, kwargs={"idle_exit_s": 3.0})
    runner.start()
    runner.join(120)
    try:
        assert not runner.is_alive(), "the sink did not finish"
        assert _committed(stack, group, topic) == 20
        _, stored = store.query(f"SELECT seq FROM telemetry WHERE device_id = '{device}'")
        assert sorted(int(seq) for (seq,) in stored) == [s for s in range(20) if s != 7]
        _, rejects = store.query(f"SELECT kafka_offset, reason FROM sink_rejects "
                                 f"WHERE topic = '{topic}'")
        [(offset, reason)] = rejects
        assert int(offset) == 7
        assert "no JSONEachRow form for a bytes" in reason, reason
    finally:
        store.close()
        admin.delete_topics([topic])[topic].result()


def test_a_time_the_server_cannot_hold_is_kept_not_wrapped_round(
        stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's DateTime holds 1970 to 2106. Readings of 2200 and 1969, sound to the
    intake's judge, must not be stored as some other time (an insert clamps them into the
    range): they alone go to sink_rejects with the reason."""
    topic, device = unique("far-future"), unique("far-future")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    monkeypatch.setitem(rows.CONVERTERS, topic, rows.CONVERTERS[topics.TELEMETRY])
    _intake_always(monkeypatch)
    producer = Producer(stack.kafka.client_config())
    for seq, year in enumerate((2026, 2026, 2200, 2026, 1969)):
        producer.produce(topic, encode(GatewayEnvelope.model_validate_json(json.dumps({
            "received_at": "2026-11-24T02:00:01Z", "gateway_id": "test", "mqtt_topic": "t",
            "reading": crane_reading(device_id=device, seq=seq,
                                     ts=f"{year}-01-01T00:00:00Z")}))))
    assert producer.flush(30) == 0
    database = unique("test").replace("-", "_")
    store = open_store(f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}")
    try:
        ensure_schema(store, ttl_days=None)
        sink = Sink(stack, store, group=unique("sink"), source_topics=(topic,))
        sink.run(idle_exit_s=5.0)
        assert sink._intake, "the server's intake was not used"
        _, stored = store.query(f"SELECT seq, toYear(ts) FROM telemetry WHERE device_id = "
                                f"'{device}' ORDER BY seq")
        assert [tuple(row) for row in stored] == [(0, 2026), (1, 2026), (3, 2026)]
        _, rejects = store.query(f"SELECT kafka_offset, reason FROM sink_rejects "
                                 f"WHERE topic = '{topic}' ORDER BY kafka_offset")
        assert [int(offset) for offset, _ in rejects] == [2, 4]
        for _, reason in rejects:
            assert reason == ("not a valid telemetry message: ts or received_at is before "
                              "1970 or after 2106 (a DateTime)"), reason
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {database}")
        store.close()
        admin.delete_topics([topic])[topic].result()


# -- the intake: ClickHouse turns telemetry.v1's records into rows ---------------------------

def _gateway_envelope(reading: dict[str, Any]) -> bytes:
    """What the gateway writes for ``reading``: validated, enveloped, with its reading_id."""
    topic = f"port/{reading['port']}/{reading['kind']}/{reading['device_id']}/telemetry"
    outcome = classify(topic, json.dumps(reading).encode(), Limits(), INTAKE_NOW)
    assert isinstance(outcome, Accepted), outcome
    return envelope_value(outcome, topic, "gw-intake", INTAKE_NOW)


INTAKE_NOW = datetime(2026, 11, 24, 3, 0, 0, 123000, tzinfo=UTC)
# Every kind, optional fields absent and present, and strings that need escaping in TSV.
INTAKE_READINGS = [
    crane_reading(),
    crane_reading(seq=2, event="heartbeat", container_no=None, load_kg=None, boot=4),
    container_reading(seal_id='a\\b\t"c"\n\x00é✓'),
    container_reading(seq=8, door=None, seal_state="broken", reefer_temp_c=None, lat=-0.0,
                      ts="2026-11-24T02:00:00.987654Z"),
    rtg_reading(),
    {"kind": "gate", "device_id": "gate-02", "seq": 2**63 - 1, "boot": 2**32 - 1,
     "ts": "2026-11-24T09:59:59.999+08:00", "port": "CNSHK", "event": "gate_in",
     "container_no": "CSQU3054383", "lane": 3, "truck_plate": "YUE B 12345", "load_kg": 0},
]


def _intake(store: Store, values: list[bytes]) -> None:
    written = store.insert(ch.INTAKE, [{"topic": topics.TELEMETRY, "kafka_partition": 2,
                                        "kafka_offset": offset, "raw": value.decode()}
                                       for offset, value in enumerate(values)])
    # What the sink checks to know that no view of the intake is gone: each record written,
    # judged, then stored or rejected.
    assert written == sink_module.INTAKE_WRITES * len(values)


def test_the_intake_stores_each_reading_as_the_sink_would(store_url: str) -> None:
    """On chDB the intake is in the store; in front of the server it runs in chDB in the
    sink's process and sends the judged rows over HTTP, in the server's own column types."""
    values = [_gateway_envelope(reading) for reading in INTAKE_READINGS]
    store = open_store(store_url)
    try:
        ensure_schema(store, ttl_days=None)
        assert store.has_intake()
        store.insert(ch.TELEMETRY, [to_row(topics.TELEMETRY, 2, offset, value, INTAKE_NOW)[1]
                                    for offset, value in enumerate(values)])
        every_column = "SELECT * FROM telemetry ORDER BY kafka_offset"
        converted = store.query(every_column)[1]
        assert len(converted) == len(values)
        store.execute("TRUNCATE TABLE telemetry")
        _intake(store, values)
        assert store.query(every_column)[1] == converted
        assert store.query("SELECT count() FROM sink_rejects")[1] == [(0,)]
    finally:
        store.close()


def test_the_chdb_intake_leaves_the_stores_session_as_it_was(tmp_path: Path) -> None:
    """The views judge with short-circuit evaluation off, in sessions of their own."""
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    try:
        ensure_schema(store, ttl_days=None)
        _intake(store, [_gateway_envelope(reading) for reading in INTAKE_READINGS])
        assert store.query("SELECT getSetting('short_circuit_function_evaluation')")[1] == [
            ("enable",)]
    finally:
        store.close()


def test_an_analysts_long_query_does_not_hold_up_the_chdb_intakes_inserts(
    tmp_path: Path
) -> None:
    """The store's lock keeps its own sessions to one query at a time (an analyst's through
    the query port among them); the intake's inserts have sessions of their own and pass."""
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    assert isinstance(store, ChdbStore)
    values = [_gateway_envelope(reading) for reading in INTAKE_READINGS]
    finished: list[str] = []
    try:
        ensure_schema(store, ttl_days=None)
        _intake(store, values)  # the intake's sessions opened

        def analyst() -> None:
            store.read("SELECT sum(sleepEachRow(0.5)) FROM numbers(6)")  # 3 s
            finished.append("analyst's query")

        query = threading.Thread(target=analyst)
        query.start()
        wait_for(store._lock.locked, 10, "the analyst's query under way")
        _intake(store, values)
        finished.append("intake insert")
        query.join(30)
        assert finished == ["intake insert", "analyst's query"]
    finally:
        store.close()


def test_the_server_intakes_errors_do_not_show_the_password(stack: Settings) -> None:
    """ClickHouse quotes the URL it was sent to in its errors, which reach the sink's log and
    sink_rejects: the intake's credentials go in a header, not in the URL."""
    database = unique("secret").replace("-", "_")
    store = open_store(f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}")
    try:
        ensure_schema(store, ttl_days=None)
        assert isinstance(store, ServerStore)
        columns = {table: store.column_types(table)
                   for table in (ch.TELEMETRY.name, ch.REJECTS.name)}
        judge = ServerIntake(f"http://{HOST}:{CLICKHOUSE_HTTP_PORT}/", database, "default",
                             "s3cret-pw", columns)
        try:
            with pytest.raises(RuntimeError) as error:
                judge.run(insert_query([{"topic": topics.TELEMETRY, "kafka_partition": 0,
                                            "kafka_offset": 0, "raw": _GOOD.decode()}]))
        finally:
            judge.close()
        assert "Unauthorized" in str(error.value)
        assert "s3cret-pw" not in str(error.value)
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {database}")
        store.close()


def test_a_server_whose_http_interface_is_unreachable_gets_converted_rows(
        stack: Settings) -> None:
    """The intake reaches the server over HTTP: a server whose HTTP port is not the one
    named has no intake, and the sink converts its telemetry itself (and says why)."""
    database = unique("nohttp").replace("-", "_")
    store = open_store(f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}?http_port=1")
    try:
        assert not store.has_intake()
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {database}")
        store.close()
    with pytest.raises(ConfigError, match=r"http_port='x' .* is not a port number"):
        open_store(f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}?http_port=x")


def _mutated(change: Callable[[dict[str, Any]], None]) -> bytes:
    envelope = json.loads(_gateway_envelope(crane_reading()))
    change(envelope)
    return json.dumps(envelope).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(envelope: dict[str, Any]) -> None:
        *parents, key = path.split(".")
        target = envelope
        for parent in parents:
            target = target[parent]
        if value is _ABSENT:
            del target[key]
        else:
            target[key] = value
    return change


_ABSENT = object()
_GOOD = _gateway_envelope(crane_reading())
# A record no gateway wrote (Kafka has no authorizer) → the reason the intake gives.
HOSTILE_RECORDS: dict[str, tuple[bytes, str]] = {
    "truncated": (_GOOD[:-1], "not JSON"),
    "deeply nested": (b'{"reading_id":"' + b"[" * 20_000, "not JSON"),
    "reading is a list": (_mutated(_set("reading", [1])), "no reading object"),
    "reading_id forged short": (_mutated(_set("reading_id", "abc")), "reading_id is not"),
    "received_at not a time": (_mutated(_set("received_at", "yesterday")), "received_at is"),
    "gateway_id empty": (_mutated(_set("gateway_id", "")), "gateway_id is missing"),
    "seq fractional": (_mutated(_set("reading.seq", 1.5)),
                       "reading.seq is of the wrong type: 1.5"),
    "seq negative": (_mutated(_set("reading.seq", -1)), "reading.seq is missing or not an"),
    "seq a string": (_mutated(_set("reading.seq", "5")), 'reading.seq is of the wrong type: "5"'),
    "seq above 2^64": (_mutated(_set("reading.seq", 2**64)), "reading.seq is missing or not an"),
    "seq absent": (_mutated(_set("reading.seq", _ABSENT)), "reading.seq is missing or not an"),
    "boot above 2^32": (_mutated(_set("reading.boot", 2**32)), "reading.boot is not an integer"),
    "boot a boolean": (_mutated(_set("reading.boot", True)), "reading.boot is of the wrong type"),
    "load a string": (_mutated(_set("reading.load_kg", "heavy")),
                      "reading.load_kg is of the wrong type"),
    "load huge": (_mutated(_set("reading.load_kg", [1e308])), "reading.load_kg is of the wrong"),
    "container_no a number": (_mutated(_set("reading.container_no", 5)),
                              "reading.container_no is of the wrong type"),
    "kind unknown": (_mutated(_set("reading.kind", "drone")), "reading.kind is not"),
    "ts absent": (_mutated(_set("reading.ts", _ABSENT)), "reading.ts is missing"),
    "ts year 10000": (_mutated(_set("reading.ts", "10000-01-01T00:00:00Z")), "reading.ts is"),
    "device_id absent": (_mutated(_set("reading.device_id", _ABSENT)), "reading.device_id is"),
    "port absent": (_mutated(_set("reading.port", _ABSENT)), "reading.port is missing"),
    # pydantic keeps the last of two keys, ClickHouse the first: one record, two readings
    "seq twice": (_GOOD.replace(b'"seq":1,', b'"seq":1,"seq":2,'), "a key appears twice"),
    "gateway_id twice": (_GOOD.replace(b'"gateway_id":"gw-intake"',
                                       b'"gateway_id":"gw-intake","gateway_id":"x"'),
                         "a key appears twice"),
}


def test_the_intake_keeps_hostile_records_with_their_reason(store_url: str) -> None:
    values = [value for value, _ in HOSTILE_RECORDS.values()]
    for name, value in zip(HOSTILE_RECORDS, values, strict=True):  # and so does the sink here
        assert to_row(topics.TELEMETRY, 2, 0, value, INTAKE_NOW)[0] is ch.REJECTS, name
    store = open_store(store_url)
    try:
        ensure_schema(store, ttl_days=None)
        _intake(store, [*values, _GOOD])
        assert store.query("SELECT kafka_offset FROM telemetry")[1] == [(len(values),)]
        _, rejects = store.query("SELECT kafka_offset, reason FROM sink_rejects")
        reasons = {int(offset): str(reason) for offset, reason in rejects}
        wrong = {name: reasons.get(offset) for offset, (name, (_, want)) in
                 enumerate(HOSTILE_RECORDS.items())
                 if not reasons.get(offset, "").startswith(
                     f"not a valid telemetry message: {want}")}
        assert not wrong, wrong
    finally:
        store.close()


def test_the_sink_stores_the_same_rows_whether_clickhouse_or_it_converts(
        stack: Settings, store_urls: Callable[[str], str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush of many telemetry records goes through the intake, a flush of few is
    converted by the sink (the intake's cost per insert is not repaid): same rows, same
    rejects counted."""
    topic = unique("intake")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    monkeypatch.setitem(rows.CONVERTERS, topic, rows.CONVERTERS[topics.TELEMETRY])
    hostile = [HOSTILE_RECORDS[name][0] for name in ("seq fractional", "kind unknown")]
    producer = Producer(stack.kafka.client_config())
    for reading in INTAKE_READINGS:
        producer.produce(topic, _gateway_envelope(reading))
    for value in hostile:
        producer.produce(topic, value)
    assert producer.flush(30) == 0
    stored = {}
    try:
        for min_rows in (1, 1_000_000):
            store = open_store(store_urls(f"min{min_rows}"))
            store.intake_min_rows = min_rows
            try:
                ensure_schema(store, ttl_days=None)
                rejected_before = REJECTED.labels(topic)._value.get()
                sink = Sink(stack, store, group=unique("sink"), source_topics=(topic,))
                sink.run(idle_exit_s=10.0)
                # ClickHouse wrote what the sink's check expects of every intake record
                assert sink._intake, "the sink stopped using a sound intake"
                rejects = store.query("SELECT kafka_partition, kafka_offset "
                                      "FROM sink_rejects ORDER BY raw")[1]
                stored[min_rows] = (
                    store.query("SELECT * FROM telemetry ORDER BY raw")[1], rejects,
                    REJECTED.labels(topic)._value.get() - rejected_before)
            finally:
                store.close()
    finally:
        admin.delete_topics([topic])[topic].result()
    by_clickhouse, by_the_sink = stored.values()
    assert len(by_clickhouse[0]) == len(INTAKE_READINGS)
    assert len(by_clickhouse[1]) == len(hostile) == by_clickhouse[2]
    assert by_clickhouse == by_the_sink


@pytest.mark.parametrize("view", ["telemetry_intake_judge", "telemetry_intake_rows"])
def test_an_intake_without_its_views_loses_nothing(
        stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, view: str) -> None:
    """The intake is a Null table: with one of its views dropped (an operator's DDL), an insert
    into it succeeds and keeps nothing. The sink checks that each record reached telemetry or
    sink_rejects, converts those that did not itself, and stops using the intake."""
    topic = unique("intake-gone")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    monkeypatch.setitem(rows.CONVERTERS, topic, rows.CONVERTERS[topics.TELEMETRY])
    _intake_always(monkeypatch)
    hostile = HOSTILE_RECORDS["seq fractional"][0]
    producer = Producer(stack.kafka.client_config())
    for reading in INTAKE_READINGS:
        producer.produce(topic, _gateway_envelope(reading))
    producer.produce(topic, hostile)
    assert producer.flush(30) == 0
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    try:
        ensure_schema(store, ttl_days=None)
        store.execute(f"DROP VIEW {view}")
        sink = Sink(stack, store, group=unique("sink"), source_topics=(topic,))
        sink.run(idle_exit_s=10.0)
        stored = store.query("SELECT count(), uniqExact(reading_id) FROM telemetry")[1][0]
        rejected = store.query("SELECT count() FROM sink_rejects")[1][0][0]
        assert sink.inserted == len(INTAKE_READINGS) + 1
        assert not sink._intake  # converted by the sink from then on
    finally:
        store.close()
        admin.delete_topics([topic])[topic].result()
    assert tuple(stored) == (len(INTAKE_READINGS), len(INTAKE_READINGS))
    assert rejected == 1


class _OverlapTopic:
    """A one-partition topic the sink reads as telemetry.v1, and one device's readings on it."""

    def __init__(self, stack: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        self.name, self.device = unique("overlap"), unique("overlap")
        self._admin = AdminClient(stack.kafka.client_config())
        self._admin.create_topics([NewTopic(self.name, 1, 1)])[self.name].result()
        monkeypatch.setitem(rows.CONVERTERS, self.name, rows.CONVERTERS[topics.TELEMETRY])
        self._producer = Producer(stack.kafka.client_config())

    def produce(self, seqs: range) -> None:
        for seq in seqs:
            self._producer.produce(self.name, _gateway_envelope(
                crane_reading(device_id=self.device, seq=seq)))
        assert self._producer.flush(30) == 0

    def stored(self, store: Store) -> int:
        """How many of the device's readings ``store`` holds (each seq once)."""
        _, found = store.query(
            f"SELECT uniqExact(seq) FROM telemetry WHERE device_id = '{self.device}'")
        return int(found[0][0])

    def delete(self) -> None:
        self._admin.delete_topics([self.name])[self.name].result()


def _running_sink(stack: Settings, store: Store, topic: str, group: str
                  ) -> tuple[Sink, threading.Event, threading.Thread]:
    sink = Sink(stack.model_copy(update={"batches": stack.batches.model_copy(
        update={"sink_rows": 100})}), store, group=group, source_topics=(topic,))
    stop = threading.Event()
    runner = threading.Thread(target=sink.run, kwargs={"stop": stop})
    runner.start()
    return sink, stop, runner


class _HeldInserts:
    """Wraps a store's ``prepare``: notes each batch's size, and holds every send until
    ``release`` is set."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.prepared: list[int] = []
        self.sending, self.release = threading.Event(), threading.Event()
        self._prepare = store.prepare
        monkeypatch.setattr(store, "prepare", self.prepare)

    def prepare(self, table: ch.Table, batch: Any) -> Callable[[], int | None]:
        send = self._prepare(table, batch)
        self.prepared.append(len(batch))

        def held_send() -> int | None:
            self.sending.set()
            self.release.wait(60)
            return send()

        return held_send


def _committed(settings: Settings, group: str, topic: str) -> int:
    consumer = Consumer(consumer_config(settings.kafka, group))
    try:
        [position] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    return int(position.offset)


def test_the_next_batch_is_read_while_one_is_inserted_and_committed_only_once_stored(
        stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink read, converted, inserted and committed one batch after the other, so chDB's
    insert (which runs without the GIL) and the Python work never overlapped. Now an inserter
    thread sends a batch while the next is read and encoded; a batch's offsets are still
    committed only once ClickHouse took it, and in order."""
    topic, group = _OverlapTopic(stack, monkeypatch), unique("sink")
    topic.produce(range(100))
    store = open_store(f"chdb://{tmp_path / 'chdb'}")
    ensure_schema(store, ttl_days=None)
    held = _HeldInserts(store, monkeypatch)
    sink, stop, runner = _running_sink(stack, store, topic.name, group)
    try:
        wait_for(held.sending.is_set, 60, "the first insert")
        topic.produce(range(100, 200))
        wait_for(lambda: len(held.prepared) >= 2, 60,
                 "the next batch read during the first insert")
        time.sleep(1)  # the sink's loop comes round: nothing to commit yet
        assert _committed(stack, group, topic.name) < 0, "committed before ClickHouse took the rows"
        assert sink.inserted == 0
        held.release.set()
        wait_for(lambda: _committed(stack, group, topic.name) == 200, 60,
                 "both batches stored and committed")
    finally:
        held.release.set()
        stop.set()
        runner.join(60)
        topic.delete()
    try:
        assert held.prepared == [100, 100]
        assert sink.inserted == 200
        _, stored = store.query(f"SELECT count(), uniqExact(seq) FROM telemetry "
                                f"WHERE device_id = '{topic.device}'")
        assert tuple(stored[0]) == (200, 200)
    finally:
        store.close()


class _FirstInsertHeld:
    """Wraps a store's ``prepare``: a send of the first batch's rows (offsets below 100) waits
    for ``release`` or, with ``unreachable``, fails as an unreachable store does until then;
    the others go through. Two batches may be in flight."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch,
                 unreachable: bool = False) -> None:
        self.sending, self.release = threading.Event(), threading.Event()
        self._unreachable = unreachable
        self._prepare = store.prepare
        monkeypatch.setattr(store, "prepare", self.prepare)
        monkeypatch.setattr(store, "inserts_in_flight", 2)

    def prepare(self, table: ch.Table, batch: Any) -> Callable[[], int | None]:
        send = self._prepare(table, batch)
        if batch[0]["kafka_offset"] >= 100:
            return send

        def held_send() -> int | None:
            self.sending.set()
            if self._unreachable and not self.release.is_set():
                raise ConnectionRefusedError("ClickHouse is unreachable (held by the test)")
            self.release.wait(60)
            return send()

        return held_send


def test_a_batch_stored_before_the_one_read_before_it_waits_for_it_to_be_committed(
        stack: Settings, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With two batches in flight the second can be stored first; committing its offsets
    then would commit the first batch's records too, before ClickHouse has them."""
    topic, group = _OverlapTopic(stack, monkeypatch), unique("sink")
    topic.produce(range(100))
    store = open_store(store_url)
    ensure_schema(store, ttl_days=None)
    held = _FirstInsertHeld(store, monkeypatch)
    sink, stop, runner = _running_sink(stack, store, topic.name, group)
    try:
        wait_for(held.sending.is_set, 60, "the first insert")
        topic.produce(range(100, 200))
        wait_for(lambda: topic.stored(store) == 100, 60, "the second batch stored first")
        time.sleep(1)  # the sink's loop comes round: nothing to commit yet
        assert _committed(stack, group, topic.name) < 0, "committed the first batch unstored"
        assert sink.inserted == 0
        held.release.set()
        wait_for(lambda: _committed(stack, group, topic.name) == 200, 60,
                 "both batches stored and committed")
        assert topic.stored(store) == 200
        assert sink.inserted == 200
    finally:
        held.release.set()
        stop.set()
        runner.join(60)
        store.close()
        topic.delete()


def test_stopping_while_a_batch_is_retried_commits_none_of_the_batches_after_it(
        stack: Settings, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first batch cannot be stored (its inserts fail as an unreachable server's do)
    while the second is; the sink stops: neither is committed, and the next sink stores the
    first batch's records."""
    topic, group = _OverlapTopic(stack, monkeypatch), unique("sink")
    topic.produce(range(100))
    store = open_store(store_url)
    ensure_schema(store, ttl_days=None)
    held = _FirstInsertHeld(store, monkeypatch, unreachable=True)
    sink, stop, runner = _running_sink(stack, store, topic.name, group)
    try:
        wait_for(held.sending.is_set, 60, "the first insert")
        topic.produce(range(100, 200))
        wait_for(lambda: topic.stored(store) == 100, 60, "the second batch stored")
    finally:
        stop.set()
        runner.join(60)
    try:
        assert not runner.is_alive()
        assert _committed(stack, group, topic.name) < 0, "committed past an unstored batch"
        assert sink.inserted == 0
        monkeypatch.undo()  # the store as it is, and the topic still read as telemetry
        monkeypatch.setitem(rows.CONVERTERS, topic.name, rows.CONVERTERS[topics.TELEMETRY])
        Sink(stack, store, group=group, source_topics=(topic.name,)).run(idle_exit_s=5)
        assert _committed(stack, group, topic.name) == 200
        assert topic.stored(store) == 200
    finally:
        store.close()
        topic.delete()
