"""Gateway benchmark: MQTT QoS 1 in → Kafka acknowledged, against `mosquitto_sub | kcat`.

Runs on the local stack (`smartport stack up`). Two measurements per pipeline:

1. throughput: N pre-generated readings published as fast as P publisher processes can; the
   figure is N / (time until the last reading is readable in Kafka).
2. latency: readings published at a fixed rate; publish → readable-in-Kafka p50/p99, where the
   publish time is the scheduled time of each message (publisher lag counts against us).

The baseline (`mosquitto_sub -q 1 ... | kcat -P`) acknowledges on receipt and validates
nothing: it is what a user might pick instead, not an equivalent.

Each run also reports the CPU the forwarding processes (the gateways, or mosquitto_sub and
kcat) used per message, from /proc: the figure the end-to-end budget counts. The publishers are
lean (``lean_publisher.py``, a fraction of a paho publisher's CPU) and reported apart.

    .venv/bin/python bench/gateway_throughput.py --messages 100000 --gateways 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from itertools import islice
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from lean_publisher import publish_together  # bench/: sys.path[0]
from pipeline_bench import broker_usage
from process_usage import MachineUsage, ProcessUsage

from deploy.pipeline import SMARTPORT
from ingest.fleet import HOME_PORT, Fleet, FleetConfig
from schemas import topics
from smartport.kafka import consumer_config, high_watermarks
from smartport.mqtt import GATEWAY_USER, edge_user, forget_session, mqtt_as
from smartport.settings import Settings

BASELINE_TOPIC = "bench.baseline.v1"
RESULTS = Path(__file__).with_name("results")


def messages(count: int, seed: int) -> list[tuple[str, bytes, str, int]]:
    fleet = Fleet(FleetConfig(devices=500, seed=seed, step=timedelta(milliseconds=1)))
    return [(m.topic, m.payload, m.device_id, m.seq or 0)
            for m in islice(fleet.messages(), count)]


class Arrivals:
    """Reads a topic from its current end and records when each (device_id, seq) shows up."""

    def __init__(self, settings: Settings, topic: str, enveloped: bool) -> None:
        self._enveloped = enveloped
        self._consumer = Consumer(consumer_config(
            settings.kafka, f"bench-{uuid.uuid4().hex[:6]}", **{"fetch.wait.max.ms": 10}))
        since = high_watermarks(settings.kafka, topic)
        self._consumer.assign([TopicPartition(topic, p, o) for p, o in since.items()])
        self.seen: dict[tuple[str, int], float] = {}

    def until(self, want: set[tuple[str, int]], timeout: float,
              on_arrivals: Callable[[], None], idle: float = 15.0) -> None:
        """Until all of ``want`` arrived, or nothing new came for ``idle`` s after the first;
        ``on_arrivals`` after each batch of them (the meters' reading at the last one)."""
        deadline = time.time() + timeout
        last_new = time.time() + 60  # grace for the publishers to start
        while not want <= self.seen.keys() and time.time() < min(deadline, last_new + idle):
            messages = self._consumer.consume(5000, timeout=0.2)
            for message in messages:
                last_new = max(last_new, time.time())
                if message.error():
                    continue
                now = time.time()
                value = json.loads(message.value() or b"{}")
                reading = value.get("reading", value) if self._enveloped else value
                self.seen.setdefault((reading.get("device_id"), reading.get("seq")), now)
            if messages:
                on_arrivals()
        self._consumer.close()


@contextmanager
def gateways(count: int) -> Iterator[list[int]]:
    group = f"bench-{uuid.uuid4().hex[:6]}"
    processes = []
    for index in range(count):
        log = open(f"/tmp/{group}-{index}.log", "wb")  # noqa: SIM115
        processes.append(subprocess.Popen(
            [*SMARTPORT, "gateway", "--gateway-id", f"{group}-{index}",
             "--share-group", group, "--log-level", "WARNING"], stdout=log, stderr=log))
    time.sleep(3)
    try:
        yield [process.pid for process in processes]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for index, process in enumerate(processes):
            process.wait(60)
            # Or the broker queues every later message for a gateway that never comes back.
            forget_session(Settings(), f"{group}-{index}")


@contextmanager
def baseline(settings: Settings) -> Iterator[list[int]]:
    admin = AdminClient(settings.kafka.client_config())
    if BASELINE_TOPIC not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(BASELINE_TOPIC, settings.kafka.partitions, 1)])[
            BASELINE_TOPIC].result()
    reader = mqtt_as(settings, GATEWAY_USER)  # the broker's ACL lets only gateways read
    credentials = ["-u", reader.username, "-P", reader.password.get_secret_value()] if (
        reader.username and reader.password) else []
    sub = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", settings.mqtt.host,
         "-p", str(settings.mqtt.port), *credentials, "-q", "1", "-V", "mqttv5",
         "-t", f"$share/bench-base/{topics.MQTT_TELEMETRY_FILTER}"],
        stdout=subprocess.PIPE)
    kcat = subprocess.Popen(["kcat", "-P", "-b", settings.kafka.bootstrap_servers,
                             "-t", BASELINE_TOPIC, "-z", "lz4"], stdin=sub.stdout)
    time.sleep(2)
    try:
        yield [sub.pid, kcat.pid]
    finally:
        sub.terminate()
        sub.wait(10)
        kcat.wait(30)


def run(settings: Settings, batch: list[tuple[str, bytes, str, int]], *, publishers: int,
        rate: float, enveloped: bool, topic: str, forwarders: list[int]) -> dict[str, float]:
    arrivals = Arrivals(settings, topic, enveloped)
    usage = [ProcessUsage(pid) for pid in forwarders]
    # the brokers, and this process (mostly its reader of arrivals)
    brokers = {**broker_usage(settings), "bench": ProcessUsage(os.getpid())}
    machine = MachineUsage()
    slices = [batch[i::publishers] for i in range(publishers)]
    per_publisher = rate / publishers if rate else 0.0
    shares = [[(t, p, position / per_publisher if rate else 0.0)
               for position, (t, p, _, _) in enumerate(slice_)] for slice_ in slices]
    # CPU seconds as they stood at the last arrival (not at the end of the idle wait for
    # messages that never came)
    used: dict[str, float] = {}

    started_at = 0.0

    def start_meters() -> None:
        nonlocal started_at
        for process in [*usage, *brokers.values()]:
            process.start()
        machine.start()
        started_at = time.monotonic()

    def read_meters() -> None:
        used["forwarders"] = sum(p.used_s() for p in usage)
        used.update({name: p.used_s() for name, p in brokers.items()})
        used["machine"] = machine.used_s()
        used["elapsed"] = time.monotonic() - started_at

    with ThreadPoolExecutor(1) as pool:  # the publishers publish while arrivals are read
        publishing = pool.submit(publish_together, mqtt_as(settings, edge_user(HOME_PORT)),
                                 shares, on_start=start_meters)
        arrivals.until({(d, s) for _, _, d, s in batch}, timeout=600, on_arrivals=read_meters)
        published = publishing.result(600)
    start_at, publishers_cpu_s = published.start_at, published.cpu_s
    got = [arrivals.seen.get((d, s)) for _, _, d, s in batch]
    arrived = [t for t in got if t is not None]
    figures: dict[str, float] = {"messages": len(batch), "arrived": len(arrived),
                                 "seconds": max(arrived) - start_at if arrived else 0.0}
    figures["msg_per_s"] = len(arrived) / figures["seconds"] if arrived else 0.0
    count = max(len(arrived), 1)
    figures["cpu_us_per_msg"] = 1e6 * used.get("forwarders", 0.0) / count
    figures["publishers_cpu_us_per_msg"] = 1e6 * publishers_cpu_s / len(batch)
    for name in brokers:
        figures[f"{name}_cpu_us_per_msg"] = 1e6 * used.get(name, 0.0) / count
    figures["machine_busy"] = used.get("machine", 0.0) / max(
        used.get("elapsed", 0.0) * (os.cpu_count() or 1), 1e-9)
    # Everything but the forwarders (brokers, publishers, this bench's reader): what a
    # forwarder of no CPU at all would still leave to run on the machine's cores.
    figures["others_cpu_us_per_msg"] = 1e6 * (
        used.get("machine", 0.0) - used.get("forwarders", 0.0)) / count
    figures["free_forwarder_msg_per_s"] = (
        1e6 * (os.cpu_count() or 1) / max(figures["others_cpu_us_per_msg"], 1e-9))
    if rate:
        latencies = []
        for index, slice_ in enumerate(slices):
            for position, (_, _, device, seq) in enumerate(slice_):
                seen = arrivals.seen.get((device, seq))
                if seen is not None:
                    latencies.append(seen - (start_at + position / per_publisher))
            del index
        quantiles = statistics.quantiles(latencies, n=100)
        figures["p50_ms"], figures["p99_ms"] = quantiles[49] * 1000, quantiles[98] * 1000
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--gateways", type=int, default=1)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--latency-rate", type=float, default=5000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    args = parser.parse_args()
    if not shutil.which("mosquitto_sub") or not shutil.which("kcat"):
        sys.exit("mosquitto_sub and kcat are needed: run `smartport stack up` first")
    settings = Settings()
    batch = messages(args.messages, seed=1)
    latency_batch = messages(int(args.latency_rate * args.latency_seconds), seed=2)
    results: dict[str, dict[str, float]] = {}
    with gateways(args.gateways) as pids:
        results["gateway_throughput"] = run(settings, batch, publishers=args.publishers,
                                            rate=0, enveloped=True, topic=topics.TELEMETRY,
                                            forwarders=pids)
        results["gateway_latency"] = run(settings, latency_batch, publishers=args.publishers,
                                         rate=args.latency_rate, enveloped=True,
                                         topic=topics.TELEMETRY, forwarders=pids)
    with baseline(settings) as pids:
        results["baseline_throughput"] = run(settings, batch, publishers=args.publishers,
                                             rate=0, enveloped=False, topic=BASELINE_TOPIC,
                                             forwarders=pids)
        results["baseline_latency"] = run(settings, latency_batch, publishers=args.publishers,
                                          rate=args.latency_rate, enveloped=False,
                                          topic=BASELINE_TOPIC, forwarders=pids)
    baseline_rate = max(results["baseline_throughput"]["msg_per_s"], 1e-9)
    ratio = results["gateway_throughput"]["msg_per_s"] / baseline_rate
    # The most any forwarder could do here: the machine's cores over what the rest of the
    # baseline's run cost per message (its brokers and publishers, for the same messages).
    ceiling = results["baseline_throughput"]["free_forwarder_msg_per_s"] / baseline_rate
    summary = {"args": vars(args), "results": results, "throughput_ratio": ratio,
               "free_forwarder_ratio": ceiling}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'run':<22}{'arrived':>10}{'msg/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'CPU µs/msg':>12}{'publishers':>12}{'others':>10}{'machine':>10}")
    for name, figures in results.items():
        print(f"{name:<22}{figures['arrived']:>10.0f}{figures['msg_per_s']:>10.0f}"
              f"{figures.get('p50_ms', float('nan')):>10.1f}"
              f"{figures.get('p99_ms', float('nan')):>10.1f}"
              f"{figures['cpu_us_per_msg']:>12.0f}{figures['publishers_cpu_us_per_msg']:>12.1f}"
              f"{figures['others_cpu_us_per_msg']:>10.1f}{figures['machine_busy']:>10.0%}")
        print(f"{'':<22}of the others: Kafka {figures.get('kafka_cpu_us_per_msg', 0):.1f} "
              f"µs/msg, Mosquitto {figures.get('mosquitto_cpu_us_per_msg', 0):.1f}, this "
              f"bench's reader {figures['bench_cpu_us_per_msg']:.1f}")
    print(f"throughput ratio gateway / baseline: {ratio:.2f}")
    print(f"a forwarder of no CPU at all, with the rest of the baseline's run: at most "
          f"{ceiling:.2f} times the baseline")


if __name__ == "__main__":
    main()
