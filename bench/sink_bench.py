"""Sink benchmark: rows/s from Kafka into each ClickHouse back-end, default batch size.

    .venv/bin/python bench/sink_bench.py --records 200000

Produces ``--records`` gateway envelopes, as the gateway writes them, to a scratch copy of
telemetry.v1's shape (the sink's telemetry converter, a scratch topic), then times one sink from
start to the last insert, into a fresh chDB store and a fresh database on the local ClickHouse
server (through the intake: chDB in the sink's process judges the records and sends the rows
over HTTP), each again without the intake (the sink converts every record itself), for the
ratio; then two sinks in one group, a process each, into the server (how it scales: chDB's
store belongs to one process). Each run reports the CPU
per row of the sink's process (chDB runs inside it), of the ClickHouse server (on the server
runs) and of the Kafka broker, and the rows/s those figures allow on this machine's cores:
what bounds the back-end, however the work is scheduled. Then (``--steady-rate``) the sink's
CPU per row on chDB, with and without the intake, while another process produces at that rate.
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
from multiprocessing.queues import Queue
from pathlib import Path
from urllib.parse import urlsplit

from confluent_kafka import Consumer, Message, Producer, TopicPartition
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
    """The sink, noting when its first record arrived and, after each insert, the time and
    its rows so far."""

    first_record = 0.0

    def __init__(self, settings: Settings, store: Store, group: str,
                 source_topics: tuple[str, ...]) -> None:
        super().__init__(settings, store, group, source_topics, on_stored=self._stored)
        self.inserts: list[tuple[float, int]] = []
        self._inserts_lock = threading.Lock()  # a store may insert from several threads

    @property
    def last_insert(self) -> float:
        return self.inserts[-1][0] if self.inserts else 0.0

    def _add(self, message: Message) -> None:
        if not self.first_record:
            self.first_record = time.perf_counter()
        super()._add(message)

    def _stored(self, rows: int) -> None:  # the inserter thread: when a batch is stored
        with self._inserts_lock:
            before = self.inserts[-1][1] if self.inserts else 0
            self.inserts.append((time.perf_counter(), before + rows))


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
    """A fresh store with the schema; without the intake when ``intake`` is False."""
    store = analytics_store.open_store(url)
    ensure_schema(store, None)
    if not intake and isinstance(store, analytics_store.ServerStore):
        store.has_intake = lambda: False  # type: ignore[method-assign]
    elif not intake:
        for view in ("judge", "rows", "rejects"):
            store.execute(f"DROP VIEW {ch.INTAKE.name}_{view}")
        store.execute(f"DROP TABLE {ch.INTAKE.name}")
    return store


def _started_meters(settings: Settings, server: bool) -> dict[str, ProcessUsage]:
    """CPU meters, started, of the broker and, for the server back-end, of ClickHouse (the
    local stack's)."""
    services: list[tuple[str, Service]] = [("kafka", Kafka(settings.state_dir, 1))]
    if server:
        services.append(("clickhouse_server", ClickHouse(settings.state_dir)))
    meters = {}
    for name, service in services:
        pid = read_pid(service.pid_path)
        if pid is not None:
            meters[name] = ProcessUsage(pid)
            meters[name].start()
    return meters


def _report(first_record: float, last_insert: float, inserted: int, *,
            sink_cpu_s: float, meters: dict[str, ProcessUsage], cpu_rows: int | None = None
            ) -> dict[str, object]:
    """Rows/s from the first record read to the last insert, and each process's CPU per row
    (over ``cpu_rows`` when the CPU was metered over more rows than the time)."""
    per_row = 1e6 / (cpu_rows or inserted)
    cpu_us = {"sink": sink_cpu_s * per_row}
    cpu_us |= {name: meter.used_s() * per_row for name, meter in meters.items()}
    elapsed = last_insert - first_record  # group join and idle wait excluded
    return {"rows": inserted, "seconds": round(elapsed, 2), "rows_per_s": round(inserted / elapsed),
            "cpu_us_per_row": {name: round(us, 1) for name, us in cpu_us.items()},
            # if every core did only this work: the ceiling the CPU per row sets
            "cpu_bound_rows_per_s": round((os.cpu_count() or 1) * 1e6 / sum(cpu_us.values())),
            "busiest": max(cpu_us, key=lambda name: cpu_us[name])}


def timed_run(settings: Settings, store: Store, topic: str, server: bool) -> dict[str, object]:
    """One sink, in this process, from its first record to its last insert."""
    sink = TimedSink(settings, store, group=f"bench-{uuid.uuid4().hex[:6]}",
                     source_topics=(topic,))
    meters = _started_meters(settings, server)
    cpu_started = time.process_time()
    thread = threading.Thread(target=sink.run, kwargs={"idle_exit_s": 3.0})
    thread.start()
    thread.join()
    # the sink's process: its thread, librdkafka's and (on chDB) ClickHouse's; the bench does
    # nothing else meanwhile. Merges a back-end runs after the last insert count too.
    return _report(sink.first_record, sink.last_insert, sink.inserted,
                   sink_cpu_s=time.process_time() - cpu_started, meters=meters)


class GroupMember(TimedSink):
    """A timed sink that also notes when it first held partitions."""

    joined = 0.0

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        if assigned and not self.joined:
            self.joined = time.perf_counter()
        super()._on_assign(consumer, assigned)


Outcome = tuple[float, list[tuple[float, int]], float]  # joined, (when, rows) per insert, CPU


def _member(url: str, topic: str, group: str, outcome: Queue[Outcome]) -> None:
    """A sink of ``group`` in a process of its own (perf_counter is system-wide)."""
    rows.CONVERTERS[topic] = rows.CONVERTERS[topics.TELEMETRY]
    settings = Settings()
    # A member's last rows would wait sink_seconds (5 s) for the bound they never reach.
    settings = settings.model_copy(update={
        "batches": settings.batches.model_copy(update={"sink_seconds": 0.5})})
    store = analytics_store.open_store(url)
    sink = GroupMember(settings, store, group=group, source_topics=(topic,))
    cpu_started = time.process_time()
    sink.run(idle_exit_s=10.0)  # a joining member waits a heartbeat (3 s) for its partitions
    store.close()
    outcome.put((sink.joined, sink.inserts, time.process_time() - cpu_started))


def group_run(settings: Settings, url: str, topic: str, members: int) -> dict[str, object]:
    """``members`` sinks in one consumer group, a process each (how the server back-end scales:
    chDB is one process's). The first to join reads alone until the next joins (a heartbeat,
    3 s, later), so the rate is over the rows inserted from when the last joined to the last
    insert, and the CPU per row over the whole run."""
    context = multiprocessing.get_context("spawn")
    outcome: Queue[Outcome] = context.Queue()
    group = f"bench-{uuid.uuid4().hex[:6]}"
    meters = _started_meters(settings, server=True)
    processes = [context.Process(target=_member, args=(url, topic, group, outcome))
                 for _ in range(members)]
    for process in processes:
        process.start()
    outcomes = [outcome.get(timeout=900) for _ in processes]
    for process in processes:
        process.join()
    if not all(joined for joined, _, _ in outcomes):
        raise SystemExit("a member of the group never held a partition")
    all_joined = max(joined for joined, _, _ in outcomes)
    before = sum(max((n for at, n in inserts if at <= all_joined), default=0)
                 for _, inserts, _ in outcomes)
    total = sum(inserts[-1][1] for _, inserts, _ in outcomes if inserts)
    last = max(inserts[-1][0] for _, inserts, _ in outcomes if inserts)
    return {"members": members, "rows_before_all_joined": before, **_report(
        all_joined, last, total - before, sink_cpu_s=sum(cpu for _, _, cpu in outcomes),
        meters=meters, cpu_rows=total)}


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


def _scratch_topic(settings: Settings, admin: AdminClient, values: list[bytes],
                   copies: int = 1) -> str:
    """A new topic converted like telemetry.v1, holding ``values`` ``copies`` times, round
    robin over its partitions (so every member of a group gets as many records)."""
    topic = f"bench-sink-{uuid.uuid4().hex[:6]}"
    rows.CONVERTERS[topic] = rows.CONVERTERS[topics.TELEMETRY]
    admin.create_topics([NewTopic(topic, settings.kafka.partitions, 1)])[topic].result()
    producer = Producer({**settings.kafka.client_config(), "linger.ms": 20})
    for index, value in enumerate(value for _ in range(copies) for value in values):
        while True:
            try:
                producer.produce(topic, value, partition=index % settings.kafka.partitions)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    return topic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--group-copies", type=int, default=5, help=(
        "the two-member run reads the records this many times over (0: skip it); the first "
        "member reads alone for 3 s, which must not be most of the run"))
    parser.add_argument("--steady-rate", type=float, default=2000,
                        help="then the sink's CPU per row at this rate (0: skip)")
    parser.add_argument("--steady-seconds", type=float, default=30)
    args = parser.parse_args()
    if args.records < 1 or args.group_copies < 0:
        parser.error("--records must be at least 1 and --group-copies at least 0")
    settings = Settings()
    admin = AdminClient(settings.kafka.client_config())
    results: dict[str, Mapping[str, object]] = {}
    scratch: list[str] = []
    try:
        values = envelopes(args.records)
        scratch.append(topic := _scratch_topic(settings, admin, values))
        database = f"bench_{uuid.uuid4().hex[:6]}"
        for name, url in (
                ("chdb", f"chdb://{tempfile.mkdtemp()}/chdb"),
                ("chdb_converted_by_the_sink", f"chdb://{tempfile.mkdtemp()}/chdb"),
                ("server", f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}"),
                ("server_converted_by_the_sink",
                 f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}_converted")):
            server = name.startswith("server")
            store = open_store(url, intake=not name.endswith("converted_by_the_sink"))
            results[name] = timed_run(settings, store, topic, server=server)
            print(name, json.dumps(results[name]), flush=True)
            if server:
                store.execute(f"DROP DATABASE {urlsplit(url).path.strip('/')}")
            store.close()
        if args.group_copies:  # the server's way to more cores: another sink in the group
            scratch.append(topic := _scratch_topic(settings, admin, values, args.group_copies))
            url = f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{database}_group"
            store = open_store(url)
            results["server_two_members"] = group_run(settings, url, topic, members=2)
            print("server_two_members", json.dumps(results["server_two_members"]), flush=True)
            store.execute(f"DROP DATABASE {database}_group")
            store.close()
        for intake in (True, False) if args.steady_rate else ():
            results[f"chdb_{'intake' if intake else 'converted_by_the_sink'}_steady"] = steady(
                settings, args.steady_rate, args.steady_seconds, intake)
    finally:
        for topic in scratch:
            admin.delete_topics([topic])[topic].result()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
