"""Linked-ports benchmark: how many containers' movements the rule engine follows per second,
and, on the running stack, the arrival → certificate latency through the real pipeline.

    .venv/bin/python bench/transit_bench.py --containers 2000            # the engine alone
    .venv/bin/python bench/transit_bench.py --containers 200 --stack     # + the pipeline

The engine figure runs the simulated linked port (``ingest.linked``) through
``streams.rules.engine`` in one process: containers/s and readings/s of pure work, the floor
under what the faust worker adds. With ``--stack`` a streams worker and a gateway of their own
follow the same scenario over MQTT and Kafka; the latency of each certificate is its Kafka
timestamp minus that of the arrival it judged — a barge's discharge lift, a truck's gate-in
(it includes ``transit_settle_s`` and up to one sweep interval, both on purpose: late evidence
is awaited).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.linked import LinkedConfig, LinkedPorts
from ingest.validation import Accepted, Limits, classify
from schemas import Evidence
from streams.rules.engine import declare, evaluate, sweep_transit
from streams.rules.state import ContainerState
from streams.rules.thresholds import Thresholds

RESULTS = Path(__file__).with_name("results")


def engine(containers: int) -> dict[str, float]:
    linked = LinkedPorts(LinkedConfig(containers=containers, seed=5, fault_rate=0.1))
    parsed = []
    for message in linked.messages():
        accepted = classify(message.topic, message.payload, Limits())
        assert isinstance(accepted, Accepted)
        parsed.append(accepted.reading)
    declarations = {d.container_no: d for d in linked.declarations}
    thresholds = Thresholds()
    started = time.perf_counter()
    states = {number: ContainerState() for number in declarations}
    for number, declaration in declarations.items():
        declare(states[number], declaration, thresholds, issuer="bench",
                now=datetime(2000, 1, 1, tzinfo=UTC))
    clock = datetime(2000, 1, 1, tzinfo=UTC)
    for offset, reading in enumerate(parsed):
        container = getattr(reading, "container_no", None)
        assert container is not None
        evaluate(reading, declarations[container], states[container], thresholds,
                 Evidence(topic="telemetry.v1", partition=0, offset=offset,
                          device_id=reading.device_id, seq=reading.seq))
        clock = max(clock, reading.ts)
    for number, declaration in declarations.items():
        sweep_transit(states[number], declaration, thresholds, clock=clock,
                      now=clock + timedelta(days=1), issuer="bench")
    elapsed = time.perf_counter() - started
    return {"containers": containers, "readings": len(parsed),
            "containers_per_s": round(containers / elapsed, 1),
            "readings_per_s": round(len(parsed) / elapsed, 1),
            "us_per_reading": round(elapsed / len(parsed) * 1e6, 1)}


def pipeline(containers: int) -> dict[str, float]:
    from deploy.pipeline import Pipeline
    from ingest import declarations as intake
    from ingest.simulate import run, write_declarations
    from schemas import topics
    from schemas.transit import DischargeCertificate
    from smartport.kafka import high_watermarks, read_range
    from smartport.mqtt import edge_user, mqtt_as
    from smartport.polling import wait_until
    from smartport.settings import Settings

    settings = Settings()
    work = Path(tempfile.mkdtemp())
    linked = LinkedPorts(LinkedConfig(containers=containers, seed=6))
    pipeline = Pipeline(settings, f"transit-bench-{uuid.uuid4().hex[:6]}", work)
    with pipeline:  # the real processes: streams worker, gateway, anchorer, sink
        telemetry_since = high_watermarks(settings.kafka, topics.TELEMETRY)
        since = high_watermarks(settings.kafka, topics.CERTIFICATES)
        write_declarations(linked, work / "declarations.jsonl")
        intake.load(settings, work / "declarations.jsonl")
        # Published at once: readings that beat their declaration to the worker are kept
        # and replayed when it comes (ContainerState.early).
        run(linked.messages(), rate=0, total=None, duration=None, show_progress=False,
            mqtt_settings=lambda port: mqtt_as(settings, edge_user(port)))

        def certificates() -> list[tuple[DischargeCertificate, int]]:
            return [(DischargeCertificate.model_validate_json(m.value() or b""),
                     m.timestamp()[1]) for m in read_range(settings.kafka, topics.CERTIFICATES,
                                                           since)]

        wait_until(lambda: len(certificates()) >= containers, 300, interval=2.0)
        arrivals: dict[str, int] = {}  # a barge's discharge lift, a truck's gate-in
        for message in read_range(settings.kafka, topics.TELEMETRY, telemetry_since):
            reading = json.loads(message.value() or b"{}")["reading"]
            if reading["port"] == linked.config.destination and (
                    reading["kind"], reading.get("event")) in (("crane", "lift_end"),
                                                               ("gate", "gate_in")):
                arrivals[reading["container_no"]] = message.timestamp()[1]
        latencies = [(stamp - arrivals[c.container_no]) / 1000 for c, stamp in certificates()]
    pipeline.clean_up()
    return {"certificates": len(latencies),
            "latency_p50_s": round(statistics.median(latencies), 2),
            "latency_max_s": round(max(latencies), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=2000)
    parser.add_argument("--stack", action="store_true", help="also run the real pipeline")
    args = parser.parse_args()
    result: dict[str, object] = {"engine": engine(args.containers)}
    print(json.dumps(result["engine"]))
    if args.stack:
        result["pipeline"] = pipeline(min(args.containers, 200))
        print(json.dumps(result["pipeline"]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transit_bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
