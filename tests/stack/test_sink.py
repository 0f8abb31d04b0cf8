"""The ClickHouse sink on both back-ends: exact contents, crashes, outages, bad records."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deploy import process
from deploy.pipeline import SMARTPORT
from deploy.services import CLICKHOUSE_PORT, HOST, ClickHouse
from deploy.stack import up
from schemas import clickhouse as ch
from schemas import topics
from smartport.kafka import high_watermarks, read_range
from smartport.settings import Settings
from streams.analytics.sink import Sink
from streams.analytics.store import Store, ensure_schema, open_store
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


def _kafka_readings(settings: Settings, until: dict[int, int]) -> set[tuple[str, int]]:
    readings = set()
    for message in read_range(settings.kafka, topics.TELEMETRY, {}):
        if (message.offset() or 0) >= until.get(message.partition() or 0, 0):
            continue
        try:
            reading = json.loads(message.value() or b"")["reading"]
        except (ValueError, KeyError, TypeError):
            continue
        readings.add((reading["device_id"], reading["seq"]))
    return readings


def _exact(store: Store, settings: Settings, until: dict[int, int]) -> None:
    want = _kafka_readings(settings, until)
    _, rows = store.query("SELECT device_id, seq FROM telemetry FINAL")
    got = {(device, int(seq)) for device, seq in rows}
    assert want <= got, f"{len(want - got)} readings missing from ClickHouse"
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


def _sink_process(url: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = {"SMARTPORT_CLICKHOUSE_URL": url, "SMARTPORT_QUERY_PORT": "18124",
           "PATH": "/usr/bin:/bin"}
    with log.open("ab") as handle:
        return subprocess.Popen([*SMARTPORT, "sink", "--group", group], stdout=handle,
                                stderr=handle, env=env)


def _wait_caught_up(store_url: str, settings: Settings, until: dict[int, int],
                    timeout: float) -> None:
    want = len(_kafka_readings(settings, until))

    def caught_up() -> bool:
        from streams.analytics.query_server import remote_query

        sql = "SELECT count() FROM telemetry FINAL"
        try:
            if store_url.startswith("chdb"):
                rows = remote_query(sql, 18124)[1]
            else:
                store = open_store(store_url)
                rows = store.query(sql)[1]
                store.close()
        except Exception:
            return False
        return int(rows[0][0]) >= want

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
        _wait_caught_up(store_url, stack, until, 180)
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
    stop = threading.Event()
    sink = Sink(stack.model_copy(update={"batches": stack.batches.model_copy(
        update={"sink_rows": 500})}), store, group=unique("sink"))
    thread = threading.Thread(target=sink.run, kwargs={"stop": stop})
    thread.start()
    try:
        time.sleep(2)
        assert process.stop(server.pid_path), "the test needs the stack's own ClickHouse"
        _publish_some(stack, 3000)  # arrives while ClickHouse is down
        time.sleep(15)
        up(stack)
        until = high_watermarks(stack.kafka, topics.TELEMETRY)
        _wait_caught_up(store_url, stack, until, 180)
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
