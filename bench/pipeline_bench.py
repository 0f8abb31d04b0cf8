"""Full-pipeline benchmark: simulator → Mosquitto → gateway → Kafka → streams, anchorer, sink.

Runs on the local stack (`smartport stack up`) at increasing offered loads. For each load a
fresh pipeline (deploy.pipeline.Pipeline: its own gateway session and faust app) gets
``--warmup`` then ``--duration`` seconds of simulated traffic, without a pause, from
``--publishers`` lean publisher processes (lean_publisher.py; their CPU is reported apart),
paced per message; then the run drains. The warm-up is the measured window's start-up on a
stack just started (Kafka's JVM compiling, the worker's first rebalance and commits): its
readings are stored, judged and counted for loss like the others, its alerts' latency is
reported apart, and the meters start after it. Figures per load:

- sustained end-to-end throughput: valid readings stored in ClickHouse *and* anchored, divided
  by the time from the first publish to the moment both were complete; "sustained" means the
  pipeline kept up: when publishing stopped, no stage was more than ``SLACK_S`` of load behind
  beyond the window it trails by design (a commit or batch interval), and everything was stored,
  anchored and judged within the longest of those windows plus 10 s;
- nothing lost: distinct readings (reading_id) stored == valid readings published;
- publish → alert latency p50/p99 (after the warm-up; the warm-up's apart): the alert's Kafka
  timestamp minus the scheduled publish time of the reading that raised it (publisher lag
  counts against us); the alerts more than a
  second late and the 10-s windows of the run they fell in, counted from the first publish
  (each alert's times are in the load's work directory, ``alert_latencies.jsonl``);
- CPU (% of one core) and peak RSS of every process, ours and the brokers', after the warm-up;
- the bottleneck: the stage with the largest backlog when publishing stopped.

In the same run, the stage baselines of the other benches (mosquitto_sub | kcat, a plain
confluent-kafka rules loop, pymerkle) are re-measured so every figure has a ratio beside it.
Writes bench/results/pipeline.json and bench/results/pipeline.md.

A run stopped half-way (Ctrl-C, SIGTERM) still forgets its gateway's persistent MQTT session;
one killed outright leaves the session's id in the load's work directory, and the next run
forgets it first (a session left behind is given every later run's telemetry to hold, up to
Mosquitto's queue limit: 1.4 GB once, and a broker that slow measures nothing).

    .venv/bin/python bench/pipeline_bench.py --loads 500,1000,2000 --duration 60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lean_publisher import publish_together  # bench/: sys.path[0]
from process_usage import ProcessUsage

from anchoring.anchors import anchored_through
from deploy import stack
from deploy.pipeline import Pipeline
from deploy.process import read_pid
from deploy.reconcile import stored_readings
from deploy.services import Kafka, Mosquitto
from ingest import declarations
from ingest.fleet import HOME_PORT, Fleet, FleetConfig, SimMessage, step_for_rate
from ingest.simulate import write_declarations
from schemas import Alert, topics
from smartport.kafka import committed_offsets, high_watermarks, read_range
from smartport.mqtt import edge_user, mqtt_as
from smartport.polling import wait_until
from smartport.settings import Settings
from streams.relay import unjudged_readings

BENCH = Path(__file__).parent
RESULTS = BENCH / "results"


def scenario_messages(fleet: Fleet, count: int) -> list[SimMessage]:
    """At least ``count`` messages, ending on a scenario boundary (no anomaly cut short)."""
    out: list[SimMessage] = []
    for message in fleet.messages():
        out.append(message)
        if len(out) >= count and message.ends_scenario:
            return out
    raise AssertionError("the fleet's stream is endless")


def _group_lag(settings: Settings, group: str, ends: dict[int, int]) -> int:
    committed = committed_offsets(settings.kafka, group, topics.TELEMETRY, len(ends))
    return sum(max(0, end - committed.get(partition, 0)) for partition, end in ends.items())


def _forwarded(settings: Settings, before: dict[str, int]) -> int:
    """Records the gateway wrote to telemetry.v1 and its DLQ since ``before`` (their ends)."""
    return sum(sum(high_watermarks(settings.kafka, t).values()) - before[t] for t in before)


def _all_stored(settings: Settings, run_id: str, *, valid: int, acknowledged: int,
                before: dict[str, int], timeout: float) -> bool:
    """Wait until the run's ``valid`` readings are in ClickHouse. Asked of Kafka while the run
    drains (the gateway forwarded every message; the sink committed up to telemetry.v1's end,
    which it does only once ClickHouse took the rows), then counted once: counting every half
    second (a FINAL over the whole table, run by the sink's chDB: 0.4 CPU-s at 900,000 rows)
    charged the sink most of a core while the run drained, and slowed the drain."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    if not wait_until(lambda: _forwarded(settings, before) >= acknowledged, left()):
        return False
    ends = high_watermarks(settings.kafka, topics.TELEMETRY)
    return wait_until(lambda: _group_lag(settings, "smartport-sink", ends) == 0, left()) and (
        wait_until(lambda: stored_readings(settings, run_id) >= valid, left(), interval=5.0))


def _all_done(settings: Settings, run_id: str, *, valid: int, acknowledged: int,
              before: dict[str, int], timeout: float = 600) -> bool:
    """Wait until the run's readings are stored, anchored and judged (each within ``timeout``)."""
    if not _all_stored(settings, run_id, valid=valid, acknowledged=acknowledged, before=before,
                       timeout=timeout):
        return False
    ends = high_watermarks(settings.kafka, topics.TELEMETRY)
    return wait_until(lambda: anchored_through(settings, topics.TELEMETRY, ends), timeout) and (
        wait_until(lambda: unjudged_readings(settings.kafka, run_id, topics.TELEMETRY) == 0,
                   timeout))


@dataclass
class LoadResult:
    offered_per_s: float
    warmup_s: float = 0.0
    published: int = 0
    valid: int = 0
    stored: int = 0
    lost: int = 0
    end_to_end_per_s: float = 0.0
    drain_s: float = 0.0
    sustained: bool = False
    alerts: int = 0
    anomalies: int = 0
    alert_p50_ms: float | None = None
    alert_p99_ms: float | None = None
    # The same split: publish → the reading in Kafka, then the reading in Kafka → the alert.
    to_kafka_p50_ms: float | None = None
    to_kafka_p99_ms: float | None = None
    kafka_to_alert_p50_ms: float | None = None
    kafka_to_alert_p99_ms: float | None = None
    # Alerts more than a second late, and the 10-s windows of the run they were published in:
    # a few windows point at a stall, many at a pipeline running at its limit.
    late_alerts: int = 0
    late_windows: list[int] = field(default_factory=list)  # seconds since the first publish
    # The same for the alerts raised by readings published during the warm-up.
    warmup_alert_p50_ms: float | None = None
    warmup_alert_p99_ms: float | None = None
    warmup_late_alerts: int = 0
    backlog_at_end: dict[str, int] = field(default_factory=dict)
    bottleneck: str = ""
    processes: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_ms_per_message: float = 0.0  # all the processes above (publishers not included)
    publishers_cpu_ms_per_message: float = 0.0  # the load generator, apart


SLACK_S = 2.0  # of load, that a stage may be behind beyond its window when publishing stops


def _windows(settings: Settings) -> dict[str, float]:
    """Seconds each stage's committed offsets may trail what it has done: its commit or batch
    window."""
    return {"streams": settings.batches.streams_commit_seconds,
            "anchorer": settings.batches.anchor_seconds, "sink": settings.batches.sink_seconds}


def _excess(settings: Settings, result: LoadResult) -> dict[str, float]:
    """Each stage's backlog when publishing stopped, beyond what it holds by design (its
    committed offsets trail by a commit or batch window)."""
    windows = _windows(settings)
    return {stage: backlog - result.offered_per_s * windows.get(stage, 0.0)
            for stage, backlog in result.backlog_at_end.items()}


def _kept_up(settings: Settings, result: LoadResult) -> bool:
    """Whether the pipeline kept up with the load (see the module's docstring). The drain
    alone is not enough: a minute's growing backlog still drains in seconds."""
    return (max(_excess(settings, result).values()) <= SLACK_S * result.offered_per_s
            and result.drain_s <= max(_windows(settings).values()) + 10)


def _wait_for_backlogs(settings: Settings, timeout_s: float = 1800) -> None:
    """Let the sink and the anchorer (their usual groups carry on where the last ones stopped)
    first take what the stack held before this load, so that the load's figures are its own."""
    deadline = time.monotonic() + timeout_s
    while True:
        ends = high_watermarks(settings.kafka, topics.TELEMETRY)
        lag = {group: _group_lag(settings, group, ends)
               for group in ("smartport-sink", "smartport-anchor")}
        if not any(lag.values()):
            return
        if time.monotonic() > deadline:
            sys.exit(f"the stack's backlog did not drain in {timeout_s:.0f} s: {lag}")
        print(f"waiting for the backlog the stack held before the load: {lag}", flush=True)
        time.sleep(10)


LEFT_BEHIND = "run_in_progress"  # in a load's work directory: the run id of a run not cleaned up


def claim_work(settings: Settings, work: Path, run_id: str) -> None:
    """Forget what a run killed outright left behind in ``work`` (its gateway's MQTT session
    above all), and note ``run_id`` there until it is cleaned up."""
    marker = work / LEFT_BEHIND
    if marker.is_file():
        left_behind = marker.read_text().strip()
        print(f"forgetting {left_behind}, left behind by a run that did not end", flush=True)
        Pipeline(settings, left_behind, work).clean_up()
    marker.write_text(run_id)


def _shares(messages: list[SimMessage], rate: float, publishers: int
            ) -> list[list[tuple[str, bytes, float]]]:
    """Each publisher's messages (a device's all in one), with their offsets from the start."""
    shares: list[list[tuple[str, bytes, float]]] = [[] for _ in range(publishers)]
    for index, message in enumerate(messages):
        shares[hash(message.device_id) % publishers].append(
            (message.topic, message.payload, index / rate))
    return shares


def _window_figures(usage: dict[str, ProcessUsage], messages: int) -> dict[str, dict[str, float]]:
    """Each process's figures over the metered window, in which ``messages`` were published."""
    return {name: {
        "cpu_percent": round(u.cpu_percent, 1), "peak_rss_mb": round(u.peak_rss_mb, 1),
        "switches_per_message": round(
            (u.voluntary_switches + u.involuntary_switches) / messages, 2),
        "involuntary_switches_per_message": round(u.involuntary_switches / messages, 2)}
        for name, u in usage.items()}


def run_load(settings: Settings, rate: float, duration: float, publishers: int, work: Path, *,
             warmup: float) -> LoadResult:
    result = LoadResult(offered_per_s=rate, warmup_s=warmup)
    fleet = Fleet(FleetConfig(devices=2000, seed=int(rate), step=step_for_rate(rate),
                              anomaly_rate=0.002, invalid_rate=0.002))
    messages = scenario_messages(fleet, int(rate * (warmup + duration)))
    warmup_messages = min(len(messages), math.ceil(rate * warmup))
    write_declarations(fleet, work / "declarations.jsonl")
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    claim_work(settings, work, run_id)
    pipeline = Pipeline(settings, run_id, work)
    try:
        with pipeline:
            declarations.load(settings, work / "declarations.jsonl")
            _wait_for_backlogs(settings)
            since = {t: high_watermarks(settings.kafka, t)
                     for t in (topics.TELEMETRY, topics.ALERTS)}
            before = {t: sum(high_watermarks(settings.kafka, t).values())
                      for t in (topics.TELEMETRY, topics.TELEMETRY_DLQ)}
            usage = _usage(pipeline, settings)

            def start_meters() -> None:
                for process in usage.values():
                    process.start()

            # publish_together starts its clock 0.1 s after calling on_start.
            meters = threading.Timer(0.1 + warmup, start_meters)
            published = publish_together(mqtt_as(settings, edge_user(HOME_PORT)),
                                         _shares(messages, rate, publishers),
                                         on_start=meters.start)
            acknowledged, start_at = published.acknowledged, published.start_at
            measured = max(1, acknowledged - warmup_messages)
            scheduled = {(m.device_id, m.seq): start_at + index / rate
                         for index, m in enumerate(messages) if m.seq is not None}
            result.publishers_cpu_ms_per_message = round(
                1000 * published.cpu_s / max(len(messages), 1), 4)
            published_at = time.time()
            window = published_at - start_at - warmup
            for process in usage.values():
                process.stop(window)
            result.processes = _window_figures(usage, measured)
            result.published = acknowledged
            result.valid = sum(1 for m in messages if m.valid)
            ends = high_watermarks(settings.kafka, topics.TELEMETRY)
            result.backlog_at_end = {
                "gateway (MQTT → Kafka)": max(0, acknowledged - _forwarded(settings, before)),
                "streams": unjudged_readings(settings.kafka, run_id, topics.TELEMETRY),
                "anchorer": _group_lag(settings, "smartport-anchor", ends),
                "sink": _group_lag(settings, "smartport-sink", ends),
            }
            result.bottleneck = _bottleneck(settings, result, rate)
            done = _all_done(settings, run_id, valid=result.valid, acknowledged=acknowledged,
                             before=before)
            finished_at = time.time()
            # CPU per message: what each process used from the warm-up's end until everything
            # was stored, anchored and judged, over the messages published since (an
            # unsustained load's drain counts too).
            for name, process in usage.items():
                result.processes[name]["cpu_ms_per_message"] = round(
                    1000 * process.used_s() / measured, 3)
            result.cpu_ms_per_message = round(sum(
                p["cpu_ms_per_message"] for p in result.processes.values()), 3)
            result.stored = max(0, stored_readings(settings, run_id))
            result.lost = result.valid - result.stored
            result.drain_s = finished_at - published_at
            result.end_to_end_per_s = result.stored / (finished_at - start_at)
            result.sustained = done and _kept_up(settings, result)
            time.sleep(5)  # late alerts
            containers = ({d.container_no for d in fleet.declarations}
                          | {m.truth[0] for m in messages if m.truth})
            result.anomalies = sum(1 for m in messages if m.truth)
            _alert_latency(settings, result, since, scheduled, containers, start_at=start_at,
                           warmup=warmup, record=work / "alert_latencies.jsonl")
    finally:
        pipeline.clean_up()
        (work / LEFT_BEHIND).unlink()
    return result


def _bottleneck(settings: Settings, result: LoadResult, rate: float) -> str:
    """The stage furthest behind beyond what it holds by design; else the busiest process."""
    excess = _excess(settings, result)
    stage = max(excess, key=lambda k: excess[k])
    busiest = max(result.processes, key=lambda k: result.processes[k]["cpu_percent"])
    cpu = result.processes[busiest]["cpu_percent"]
    if excess[stage] > rate:  # more than a second of traffic behind
        return f"{stage} ({excess[stage]:,.0f} records behind); busiest: {busiest} {cpu:.0f} %"
    return f"none behind; busiest: {busiest} {cpu:.0f} %"


def broker_usage(settings: Settings) -> dict[str, ProcessUsage]:
    """Meters of the local stack's Kafka and Mosquitto (those running)."""
    found = {}
    for name, pid_path in (("kafka", Kafka(settings.state_dir, 1).pid_path),
                           ("mosquitto", Mosquitto(settings.state_dir).pid_path)):
        pid = read_pid(pid_path)
        if pid is not None:
            found[name] = ProcessUsage(pid)
    return found


def _usage(pipeline: Pipeline, settings: Settings) -> dict[str, ProcessUsage]:
    found = {p.name: ProcessUsage(p.process.pid)
             for p in pipeline.processes if p.process is not None}
    return {**found, **broker_usage(settings)}


def _quantiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None
    cuts = statistics.quantiles(values, n=100)
    return cuts[49], cuts[98]


def _alert_latency(settings: Settings, result: LoadResult, since: dict[str, dict[int, int]],
                   scheduled: dict[tuple[str, int], float], containers: set[str], *,
                   start_at: float, warmup: float, record: Path) -> None:
    """Publish → alert, split at the moment the raising reading was in Kafka, for the alerts
    whose reading was published after the ``warmup`` (the warm-up's alone, apart); each
    alert's three times (epoch ms) go to ``record`` as JSON lines."""
    in_kafka = {(m.partition(), m.offset()): m.timestamp()[1]
                for m in read_range(settings.kafka, topics.TELEMETRY, since[topics.TELEMETRY])}
    total, to_kafka, to_alert, in_warmup = [], [], [], []
    late: set[int] = set()
    lines = []
    for message in read_range(settings.kafka, topics.ALERTS, since[topics.ALERTS]):
        alert = Alert.model_validate_json(message.value() or b"")
        if alert.state.value != "raised" or alert.container_no not in containers:
            continue
        result.alerts += 1
        trigger = alert.evidence[-1]
        published = scheduled.get((trigger.device_id, trigger.seq))
        stored = in_kafka.get((trigger.partition, trigger.offset))
        alerted = message.timestamp()[1]
        if published is None or stored is None:
            continue
        latency, since_start = alerted - published * 1000, published - start_at
        lines.append(json.dumps({"published": round(published * 1000),
                                 "in_kafka": stored, "alerted": alerted}))
        if latency > 1000:
            late.add(int(since_start // 10 * 10))
        if since_start < warmup:
            in_warmup.append(latency)
            result.warmup_late_alerts += latency > 1000
            continue
        total.append(latency)
        to_kafka.append(stored - published * 1000)
        to_alert.append(alerted - stored)
        result.late_alerts += latency > 1000
    record.write_text("".join(f"{line}\n" for line in lines))
    result.late_windows = sorted(late)
    result.alert_p50_ms, result.alert_p99_ms = _quantiles(total)
    result.warmup_alert_p50_ms, result.warmup_alert_p99_ms = _quantiles(in_warmup)
    result.to_kafka_p50_ms, result.to_kafka_p99_ms = _quantiles(to_kafka)
    result.kafka_to_alert_p50_ms, result.kafka_to_alert_p99_ms = _quantiles(to_alert)


def baselines(quick: bool) -> dict[str, Any]:
    """Re-run the stage benches (smaller) and read back their figures; a bench that fails is
    reported and left out (the loads' figures are kept whatever happens here)."""
    scale = 0.2 if quick else 1.0
    runs = {
        "gateway_throughput.json": ["gateway_throughput.py", "--messages",
                                    str(int(100_000 * scale)), "--latency-seconds", "5"],
        # Fewer events than this are judged before the worker's first commit: untimeable.
        "streams.json": ["streams_bench.py", "--events", "150000", "--latency-seconds", "5"],
        "merkle.json": ["merkle_bench.py", "--leaves", str(int(500_000 * scale))],
    }
    figures: dict[str, Any] = {}
    for result_file, command in runs.items():
        print(f"baseline: {' '.join(command)}", flush=True)
        done = subprocess.run([sys.executable, str(BENCH / command[0]), *command[1:]],
                              check=False, env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
        if done.returncode:
            print(f"baseline {command[0]} failed (exit {done.returncode}): left out", flush=True)
        else:
            figures[result_file] = json.loads((RESULTS / result_file).read_text())
    return baseline_figures(figures)


def baseline_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """The ratios' denominators, from the stage benches' result files that are there."""
    base: dict[str, Any] = {}
    if "gateway_throughput.json" in figures:
        gateway = figures["gateway_throughput.json"]["results"]
        base["mosquitto_sub_kcat_msg_per_s"] = gateway["baseline_throughput"]["msg_per_s"]
        base["gateway_msg_per_s"] = gateway["gateway_throughput"]["msg_per_s"]
    if "streams.json" in figures:
        base["plain_rules_loop_events_per_s"] = figures["streams.json"]["plain_loop_events_per_s"]
        base["faust_events_per_s"] = figures["streams.json"]["faust_events_per_s"]
    if "merkle.json" in figures:
        base["merkle_ratio_vs_pymerkle"] = figures["merkle.json"]["ratio_vs_pymerkle"]
    return base


def _pair(p50: float | None, p99: float | None) -> str:
    return "-" if p50 is None or p99 is None else f"{p50:,.0f} / {p99:,.0f}"


def markdown(results: list[LoadResult], base: dict[str, Any]) -> str:
    kcat = base.get("mosquitto_sub_kcat_msg_per_s")
    plain = base.get("plain_rules_loop_events_per_s")
    lines = ["| offered/s | end-to-end/s | vs kcat | vs plain loop | drain s | sustained | "
             "lost | alerts/anomalies | alert p50 / p99 ms | publish→Kafka p50 / p99 | "
             "Kafka→alert p50 / p99 | alerts > 1 s (in 10-s windows) | "
             "warm-up: s, alert p50 / p99, alerts > 1 s | bottleneck |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def ratio(base_rate: float | None, value: float = r.end_to_end_per_s) -> str:
            return f"{value / base_rate:.2f}" if base_rate else "-"
        lines.append(f"| {r.offered_per_s:,.0f} | {r.end_to_end_per_s:,.0f} | {ratio(kcat)} | "
                     f"{ratio(plain)} | {r.drain_s:.1f} | {'yes' if r.sustained else 'no'} | "
                     f"{r.lost} | {r.alerts}/{r.anomalies} | "
                     f"{_pair(r.alert_p50_ms, r.alert_p99_ms)} | "
                     f"{_pair(r.to_kafka_p50_ms, r.to_kafka_p99_ms)} | "
                     f"{_pair(r.kafka_to_alert_p50_ms, r.kafka_to_alert_p99_ms)} | "
                     f"{r.late_alerts} ({len(r.late_windows)}) | {r.warmup_s:.0f}, "
                     f"{_pair(r.warmup_alert_p50_ms, r.warmup_alert_p99_ms)}, "
                     f"{r.warmup_late_alerts} | {r.bottleneck} |")
    lines += ["", "| process | " + " | ".join(
        f"{r.offered_per_s:,.0f}/s: CPU %, CPU ms/msg, peak MB, context switches/msg "
        "(involuntary)" for r in results) + " |",
        "|---|" + "---|" * len(results)]
    for name in results[0].processes if results else []:
        cells = [", ".join(f"{r.processes.get(name, {}).get(key, 0):{spec}}" for key, spec in (
            ("cpu_percent", ".0f"), ("cpu_ms_per_message", ".3f"), ("peak_rss_mb", ".0f"),
            ("switches_per_message", ".2f")))
            + f" ({r.processes.get(name, {}).get('involuntary_switches_per_message', 0):.2f})"
            for r in results]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| all of the above, CPU ms per message | " + " | ".join(
        f"{r.cpu_ms_per_message:.3f} (at most {2000 / r.cpu_ms_per_message:,.0f} msg/s on "
        "2 cores)" if r.cpu_ms_per_message else "-" for r in results) + " |")
    lines.append("| the publishers (the load generator, not counted above) | " + " | ".join(
        f"{r.publishers_cpu_ms_per_message:.3f}" for r in results) + " |")
    if base:
        lines += ["", "Stage baselines: " + ", ".join(f"{k} {v:,.2f}" for k, v in base.items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="500,1000,2000,4000",
                        help="offered loads in messages/s, comma-separated")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per load")
    parser.add_argument("--warmup", type=float, default=30.0,
                        help="seconds of load before the measured window (not metered)")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--baselines", choices=("quick", "full", "none"), default="quick")
    args = parser.parse_args()
    # Stopped (SIGTERM), a run still forgets its gateway's session on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings = Settings()
    stack.up(settings)
    results = []
    for rate in (float(r) for r in args.loads.split(",")):
        work = RESULTS / "pipeline" / f"{rate:.0f}"
        work.mkdir(parents=True, exist_ok=True)
        print(f"load {rate:,.0f} msg/s for {args.warmup:.0f} s of warm-up and "
              f"{args.duration:.0f} s measured ...", flush=True)
        result = run_load(settings, rate, args.duration, args.publishers, work,
                          warmup=args.warmup)
        print(json.dumps(result.__dict__, default=str), flush=True)
        results.append(result)
        if not result.sustained:
            print("not sustained: higher loads would not be either; stopping here")
            break
    base = baselines(args.baselines == "quick") if args.baselines != "none" else {}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(
        {"args": vars(args), "loads": [r.__dict__ for r in results], "baselines": base},
        indent=2, default=str))
    table = markdown(results, base)
    (RESULTS / "pipeline.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
