"""Streams benchmark: events/s of one faust worker with every rule and the declaration join,
produce → alert latency, and two baselines: faust's own floor (an agent that does nothing with
each event of the same topic, in an app configured as ours) and the same rules in a plain
confluent-kafka loop.

    .venv/bin/python bench/streams_bench.py --events 150000

Uses scratch topics (deleted afterwards). Throughput: all events produced first, then the time
until the worker's committed offsets reach the end (the bench's workers commit every
``TIMING_COMMIT_S``, 2.8 s, whatever ``batches.streams_commit_seconds`` says: that is the
resolution); the rules worker reads through its relay's micro-batches (streams.relay), so its
end is every reading relayed and every batch committed. Latency: the Kafka timestamp of each
raised alert minus that of the reading in its evidence, for a run produced at ``--rate``
events/s while the worker is running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import NoReturn

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import StreamT

from deploy.topics import delete_app_topics
from ingest.fleet import Fleet, FleetConfig
from ingest.records import envelope_value
from ingest.validation import Accepted, Limits, classify
from schemas import Alert, Declaration, Evidence, encode
from smartport.kafka import committed_offsets, consumer_config, high_watermarks, read_range
from smartport.settings import Settings
from streams.relay import batches_topic, unjudged_readings
from streams.rules.engine import evaluate
from streams.rules.state import ContainerState
from streams.rules.thresholds import Thresholds

RESULTS = Path(__file__).with_name("results")
# Workers timed through a backlog are timed by their commits: every 2.8 s (faust's default, and
# ours until 2026-12-03) keeps the figures comparable with earlier runs.
TIMING_COMMIT_S = 2.8


def timing_settings() -> Settings:
    """The settings of a worker timed by its commits (``TIMING_COMMIT_S``)."""
    settings = Settings()
    return settings.model_copy(update={"batches": settings.batches.model_copy(
        update={"streams_commit_seconds": TIMING_COMMIT_S})})


def worker_main(app_id: str, names: list[str]) -> None:
    from streams.app import create_app, run_worker

    settings = timing_settings()
    app = create_app(settings, Thresholds(), app_id=app_id,
                     topic_names=(names[0], names[1], names[2]))
    run_worker(app, settings, "warning")


def empty_worker_main(app_id: str, names: list[str]) -> None:
    """faust's own floor: an agent that does nothing with each event of the same topic, in an
    app configured as ours."""
    from streams.app import faust_app, new_worker

    settings = timing_settings()
    app = faust_app(settings, app_id)
    topic = app.topic(names[0], key_type=bytes, value_type=bytes,
                      partitions=settings.kafka.partitions)

    @app.agent(topic, concurrency=1)
    async def nothing(stream: StreamT[bytes]) -> None:
        async for _ in stream.events():
            pass

    new_worker(app, "warning").execute_from_commandline()


def envelopes(fleet: Fleet, count: int) -> list[tuple[bytes, bytes]]:
    """The fleet's valid readings as the gateway writes them to telemetry.v1."""
    received_at = datetime.now(UTC)
    return [(outcome.key, envelope_value(outcome, message.topic, "bench", received_at))
            for message in islice(fleet.messages(), count)
            if isinstance(outcome := classify(message.topic, message.payload, Limits()),
                          Accepted)]


def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]],
            rate: float = 0) -> None:
    producer = Producer({**settings.kafka.client_config(), "partitioner": "murmur2_random",
                         "linger.ms": 5})
    started = time.perf_counter()
    for index, (key, value) in enumerate(records):
        if rate:
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                producer.produce(topic, value, key)
                producer.poll(0)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def committed(settings: Settings, group: str, topic: str) -> int:
    return sum(committed_offsets(settings.kafka, group, topic, settings.kafka.partitions).values())


def plain_loop(settings: Settings, names: list[str], total: int) -> float:
    """The same rules in a plain consume loop: declarations into a dict, state in a dict."""
    declarations = {m.key(): Declaration.model_validate_json(m.value() or b"")
                    for m in read_range(settings.kafka, names[1], {})}
    consumer = Consumer(consumer_config(settings.kafka, uuid.uuid4().hex))
    producer = Producer({**settings.kafka.client_config(), "linger.ms": 5})
    consumer.subscribe([names[0]])
    states: dict[bytes, ContainerState] = {}
    thresholds, seen, started = Thresholds(), 0, 0.0
    while seen < total:
        for message in consumer.consume(1000, timeout=1.0):
            if message.error():
                continue
            started = started or time.perf_counter()
            seen += 1
            from schemas import GatewayEnvelope

            envelope = GatewayEnvelope.model_validate_json(message.value() or b"")
            reading = envelope.reading
            key = message.key() or b""
            evidence = Evidence.of(envelope, names[0], message.partition() or 0,
                                   message.offset() or 0)
            state = states.setdefault(key, ContainerState())
            for alert in evaluate(reading, declarations.get(key), state, thresholds,
                                  evidence).alerts:
                producer.produce(names[3], encode(alert), key)
            producer.poll(0)
    producer.flush(30)
    consumer.close()
    return total / (time.perf_counter() - started)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    """Stop a worker and wait for it (on failure too: none is left running)."""
    worker.terminate()
    worker.wait(60)


def _untimeable(total: int) -> NoReturn:
    raise SystemExit(f"a worker read all {total:,} events before its first commit (every "
                     f"{TIMING_COMMIT_S} s), so they cannot be timed: give it more "
                     "(--events 150000)")


def timed_worker(settings: Settings, mode: str, app_id: str, names: list[str], total: int, *,
                 script: str = __file__) -> tuple[subprocess.Popen[bytes], float]:
    """Start a worker (``script``'s ``mode``) and time it through the ``total`` records already
    in ``names[0]``, read straight from it: records/s from its first commit to its commit of
    the last one. Returns the worker, still running."""
    worker = subprocess.Popen([sys.executable, script, mode, app_id, *names])
    try:
        while (first := committed(settings, app_id, names[0])) == 0:
            time.sleep(0.2)  # the worker is starting and joining the group
        if first >= total:
            _untimeable(total)
        started = time.perf_counter()
        while committed(settings, app_id, names[0]) < total:
            time.sleep(0.5)
    except BaseException:
        _stop(worker)
        raise
    return worker, (total - first) / (time.perf_counter() - started)


def timed_streams_worker(settings: Settings, app_id: str, names: list[str],
                         total: int) -> tuple[subprocess.Popen[bytes], float]:
    """``timed_worker`` for the streams worker, which reads ``names[0]`` through its relay:
    from its first commit of micro-batches until it has judged every reading."""
    worker = subprocess.Popen([sys.executable, __file__, "worker", app_id, *names])
    try:
        while not any(committed_offsets(settings.kafka, app_id, batches_topic(app_id),
                                        settings.kafka.partitions).values()):
            time.sleep(0.2)
        started = time.perf_counter()
        first = total - unjudged_readings(settings.kafka, app_id, names[0])
        if first == total:
            _untimeable(total)
        while unjudged_readings(settings.kafka, app_id, names[0]) > 0:
            time.sleep(0.5)
    except BaseException:
        _stop(worker)
        raise
    return worker, (total - first) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    args = parser.parse_args()
    settings = Settings()
    tag = uuid.uuid4().hex[:6]
    names = [f"bench-{tag}-telemetry", f"bench-{tag}-declarations", f"bench-{tag}-alerts",
             f"bench-{tag}-plain-alerts"]
    partitions = settings.kafka.partitions
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result()
    try:
        results = measure(settings, names, tag, count=args.events, rate=args.rate,
                          latency_seconds=args.latency_seconds)
    finally:  # the scratch topics, both workers' internal topics and their groups
        delete_app_topics(settings.kafka, f"bench-{tag}-empty")
        delete_app_topics(settings.kafka, f"bench-{tag}")
    save("streams.json", results)


def measure(settings: Settings, names: list[str], tag: str, *, count: int, rate: float,
            latency_seconds: float) -> dict[str, float]:
    """Every figure of the bench, on the scratch topics ``names``."""
    fleet = Fleet(FleetConfig(devices=500, seed=3, anomaly_rate=0.01,
                              step=timedelta(milliseconds=1)))  # behind the wall clock
    produce(settings, names[1], [(d.container_no.encode(), encode(d))
                                 for d in fleet.declarations])
    events = envelopes(fleet, count)
    produce(settings, names[0], events)
    total = len(events)
    results: dict[str, float] = {"events": total}
    empty, results["empty_agent_events_per_s"] = timed_worker(
        settings, "empty", f"bench-{tag}-empty", names, total)
    _stop(empty)
    worker, results["faust_events_per_s"] = timed_streams_worker(
        settings, f"bench-{tag}", names, total)
    try:
        since = high_watermarks(settings.kafka, names[2])
        timed = envelopes(fleet, int(rate * latency_seconds))
        produce(settings, names[0], timed, rate=rate)
        time.sleep(10)
        stamps = {(m.partition(), m.offset()): m.timestamp()[1]
                  for m in read_range(settings.kafka, names[0], {})}
        latencies = []
        for message in read_range(settings.kafka, names[2], since):
            alert = Alert.model_validate_json(message.value() or b"")
            if alert.state.value == "raised":
                source = alert.evidence[0]
                latencies.append(message.timestamp()[1] - stamps[source.partition, source.offset])
        if len(latencies) >= 2:
            quantiles = statistics.quantiles(latencies, n=100)
            results["alert_latency_p50_ms"], results["alert_latency_p99_ms"] = (
                quantiles[49], quantiles[98])
        results["latency_samples"] = len(latencies)
    finally:
        _stop(worker)
    results["plain_loop_events_per_s"] = plain_loop(settings, names, total)
    results["faust_vs_empty_agent"] = (results["faust_events_per_s"]
                                       / results["empty_agent_events_per_s"])
    results["faust_vs_plain"] = results["faust_events_per_s"] / results["plain_loop_events_per_s"]
    return results


def save(file_name: str, results: dict[str, float]) -> None:
    """Into bench/results, and printed."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / file_name).write_text(json.dumps(results, indent=2))
    for name, value in results.items():
        print(f"{name:<36}{value:>12,.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) > 2 and sys.argv[1] == "empty":
        empty_worker_main(sys.argv[2], sys.argv[3:])
    else:
        main()
