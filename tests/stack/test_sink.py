"""The ClickHouse sink on both back-ends: exact contents, crashes, outages, bad records."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from deploy import process
from deploy.pipeline import SMARTPORT
from deploy.services import CLICKHOUSE_PORT, HOST, ClickHouse
from deploy.stack import up
from schemas import Alert, AlertState, GatewayEnvelope, Rule, Severity, encode, topics
from schemas import clickhouse as ch
from smartport.kafka import consumer_config, high_watermarks, read_range
from smartport.settings import Settings
from streams.analytics.migrations import ensure_schema
from streams.analytics.rows import to_row
from streams.analytics.sink import Sink
from streams.analytics.store import Store, open_store
from tests.helpers import crane_reading
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
        value = json.dumps({"received_at": "2026-11-24T02:00:01Z", "gateway_id": "test",
                            "mqtt_topic": f"port/CNSHK/crane/{device}/telemetry",
                            "reading": reading}).encode()
        producer.produce(topics.TELEMETRY, key=b"CSQU3054383", value=value)
        if seq % 100 == 0:  # redeliveries: the same (device_id, seq) twice
            producer.produce(topics.TELEMETRY, key=b"CSQU3054383", value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def test_sink_holds_exactly_what_kafka_holds(stack: Settings, store_url: str) -> None:
    _publish_some(stack)
    producer = Producer(stack.kafka.client_config())
    producer.produce(topics.ANCHORS, key=b"junk", value=b"{not an anchor")  # kept, not fatal
    producer.flush(10)
    until = high_watermarks(stack.kafka, topics.TELEMETRY)
    store = open_store(store_url)
    ensure_schema(store, ttl_days=None)
    sink = Sink(stack, store, group=unique("sink"))
    sink.run(idle_exit_s=5.0)
    _exact(store, stack, until)
    _, rejects = store.query("SELECT raw FROM sink_rejects FINAL WHERE topic = 'anchors.v1'")
    assert ("{not an anchor",) in rejects
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


def test_clickhouse_server_outage_is_survived(stack: Settings) -> None:
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
        up(stack)
    checker = open_store(store_url)
    _exact(checker, stack, until)
    checker.close()
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
