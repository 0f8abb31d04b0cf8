"""Sink benchmark: rows/s from Kafka into each ClickHouse back-end, default batch size.

    .venv/bin/python bench/sink_bench.py --records 200000

Produces ``--records`` gateway envelopes, as the gateway writes them, to a scratch copy of
telemetry.v1's shape (the sink's telemetry converter, a scratch topic), then times one sink from
start to the last insert, into a fresh chDB store and a fresh database on the local ClickHouse
server (18.16 here: too old for the intake, so the sink converts every record itself); and
into chDB again without the intake, for the ratio. Each run reports the CPU per row of the
sink's process (chDB runs inside it), of the ClickHouse server (on the server run) and of the
Kafka broker, and the rows/s those figures allow on this machine's cores: what bounds the
back-end, however the work is scheduled. Then (``--steady-rate``) the sink's CPU per row on
chDB, with and without the intake, while another process produces at that rate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from process_usage import ProcessUsage  # bench/: sys.path[0]

from deploy.process import read_pid
from deploy.services import CLICKHOUSE_PORT, HOST, ClickHouse, Kafka, Service
from ingest.fleet import Fleet, FleetConfig
from ingest.records import envelope_value
from ingest.validation import Accepted, Limits, classify
from schemas import clickhouse as ch
from schemas import topics
from smartport.kafka import produce, producer_config
from smartport.settings import Settings
from streams.analytics import rows
from streams.analytics import store as analytics_store
from streams.analytics.migrations import ensure_schema
from streams.analytics.sink import Sink
from streams.analytics.store import Store

RESULTS = Path(__file__).with_name("results")


class TimedSink(Sink):
    """The sink, noting when its first record arrived and its last insert finished."""

    first_record = 0.0
    last_insert = 0.0

    def _add(self, message: Message) -> None:
        if not self.first_record:
            self.first_record = time.perf_counter()
        super()._add(message)

    def _flush(self) -> None:
        before = self.inserted
        super()._flush()
        if self.inserted > before:
            self.last_insert = time.perf_counter()


def envelopes(count: int) -> list[bytes]:
    """``count`` readings of the simulated fleet, enveloped as the gateway writes them."""
    received_at = datetime.now(UTC)
    limits = Limits(max_ahead_s=10 * 365 * 86400)  # the simulated clock runs ahead of ours
    values = []
    for message in islice(Fleet(FleetConfig(devices=500)).messages(), count):
        accepted = classify(message.topic, message.payload, limits, received_at)
        assert isinstance(accepted, Accepted), accepted
        values.append(envelope_value(accepted, message.topic, "bench", received_at))
    return values


def open_store(url: str, intake: bool = True) -> Store:
    """A fresh store with the schema; on chDB without the intake when ``intake`` is False."""
    store = analytics_store.open_store(url)
    ensure_schema(store, None)
    if not intake:
        for view in ("judge", "rows", "rejects"):
            store.execute(f"DROP VIEW {ch.INTAKE.name}_{view}")
        store.execute(f"DROP TABLE {ch.INTAKE.name}")
    return store


def _meters(settings: Settings, server: bool) -> dict[str, ProcessUsage]:
    """CPU meters of the broker and, for the server back-end, of ClickHouse (the local stack's)."""
    services: list[tuple[str, Service]] = [("kafka", Kafka(settings.state_dir, 1))]
    if server:
        services.append(("clickhouse_server", ClickHouse(settings.state_dir)))
    meters = {}
    for name, service in services:
        pid = read_pid(service.pid_path)
        if pid is not None:
            meters[name] = ProcessUsage(pid)
    return meters


def timed_run(settings: Settings, store: Store, topic: str, server: bool) -> dict[str, object]:
    """One sink from its first record to its last insert, and each process's CPU per row."""
    sink = TimedSink(settings, store, group=f"bench-{uuid.uuid4().hex[:6]}",
                     source_topics=(topic,))
    meters = _meters(settings, server)
    for meter in meters.values():
        meter.start()
    cpu_started = time.process_time()
    thread = threading.Thread(target=sink.run, kwargs={"idle_exit_s": 3.0})
    thread.start()
    thread.join()
    # the sink's process: its thread, librdkafka's and (on chDB) ClickHouse's; the bench does
    # nothing else meanwhile. Merges a back-end runs after the last insert count too.
    cpu_us = {"sink": (time.process_time() - cpu_started) / sink.inserted * 1e6}
    cpu_us |= {name: meter.used_s() / sink.inserted * 1e6 for name, meter in meters.items()}
    elapsed = sink.last_insert - sink.first_record  # group join and idle wait excluded
    total = sum(cpu_us.values())
    return {"rows": sink.inserted, "seconds": round(elapsed, 2),
            "rows_per_s": round(sink.inserted / elapsed),
            "cpu_us_per_row": {name: round(us, 1) for name, us in cpu_us.items()},
            # if every core did only this work: the ceiling the CPU per row sets
            "cpu_bound_rows_per_s": round((os.cpu_count() or 1) * 1e6 / total),
            "busiest": max(cpu_us, key=lambda name: cpu_us[name])}


def _produce_steadily(topic: str, rate: float, seconds: float) -> None:
    producer = Producer(producer_config(Settings().kafka, "bench-sink-steady"))
    values = envelopes(int(rate * seconds))
    start = time.time()
    for index, value in enumerate(values):
        delay = start + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        produce(producer, topic, b"", value)
    producer.flush(60)


def steady(settings: Settings, rate: float, seconds: float, intake: bool) -> dict[str, float]:
    """The sink's CPU (this process: its threads, librdkafka's and chDB's) per row while
    another process produces ``rate`` envelopes a second: what it costs in the pipeline,
    where its fixed cost per insert counts as much as the rows."""
    topic = f"bench-sink-steady-{uuid.uuid4().hex[:6]}"
    rows.CONVERTERS[topic] = rows.CONVERTERS[topics.TELEMETRY]
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, settings.kafka.partitions, 1)])[topic].result()
    store = open_store(f"chdb://{tempfile.mkdtemp()}/chdb", intake)
    try:
        sink = Sink(settings, store, group=f"bench-{uuid.uuid4().hex[:6]}", source_topics=(topic,))
        stop = threading.Event()
        runner = threading.Thread(target=sink.run, kwargs={"stop": stop})
        runner.start()
        producer = multiprocessing.get_context("spawn").Process(
            target=_produce_steadily, args=(topic, rate, seconds))
        producer.start()
        while not sink.inserted:
            time.sleep(0.01)
        cpu_started, started = time.process_time(), time.perf_counter()
        want, deadline = int(rate * seconds), time.perf_counter() + seconds + 120
        while sink.inserted < want:
            if time.perf_counter() > deadline:
                raise SystemExit(f"the sink stored {sink.inserted} of {want} rows in time")
            time.sleep(0.05)
        cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
        stop.set()
        runner.join()
        producer.join()
    finally:
        store.close()
        admin.delete_topics([topic])[topic].result()
    return {"rate": rate, "rows": sink.inserted, "cpu_us_per_row": round(cpu / sink.inserted * 1e6),
            "cpu_percent": round(cpu / wall * 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--steady-rate", type=float, default=2000,
                        help="then the sink's CPU per row at this rate (0: skip)")
    parser.add_argument("--steady-seconds", type=float, default=30)
    args = parser.parse_args()
    settings = Settings()
    topic = f"bench-sink-{uuid.uuid4().hex[:6]}"
    # The scratch topic converts like telemetry.v1.
    rows.CONVERTERS[topic] = rows.CONVERTERS[topics.TELEMETRY]
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, settings.kafka.partitions, 1)])[topic].result()
    results: dict[str, Mapping[str, object]] = {}
    try:
        producer = Producer({**settings.kafka.client_config(), "linger.ms": 20})
        for value in envelopes(args.records):
            while True:
                try:
                    producer.produce(topic, value)
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        database = f"bench_{uuid.uuid4().hex[:6]}"
        for name, url in (("chdb", f"chdb://{tempfile.mkdtemp()}/chdb"),
                          ("chdb_converted_by_the_sink", f"chdb://{tempfile.mkdtemp()}/chdb"),
                          ("server", f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}")):
            store = open_store(url, intake=name != "chdb_converted_by_the_sink")
            results[name] = timed_run(settings, store, topic, server=name == "server")
            print(name, json.dumps(results[name]), flush=True)
            if name == "server":
                store.execute(f"DROP DATABASE {database}")
            store.close()
        for intake in (True, False) if args.steady_rate else ():
            results[f"chdb_{'intake' if intake else 'converted_by_the_sink'}_steady"] = steady(
                settings, args.steady_rate, args.steady_seconds, intake)
    finally:
        admin.delete_topics([topic])[topic].result()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
