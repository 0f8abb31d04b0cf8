"""Micro-batching benchmark: readings/s of a faust agent when each Kafka record carries N readings.

    .venv/bin/python bench/batching_bench.py --readings 40000 --sizes 1,10,50

faust costs about the same per Kafka record whatever the record holds, so the question issue 14
asks is how far readings/s rises when the gateway would write micro-batches of readings to an
internal topic for the streams worker (telemetry.v1 keeps one reading per record). The same
agent runs for every size: it parses each envelope, judges the reading against its declaration
with the real rule engine (states in memory) and sends the alerts to Kafka; only the number of
readings per record changes. Records are newline-separated canonical envelopes. Scratch topics,
deleted afterwards; figures into bench/results/batching.json.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import timedelta
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic
from faust.types import StreamT
from streams_bench import (  # bench/: sys.path[0]
    envelopes,
    produce,
    save,
    timed_worker,
    timing_settings,
)

from ingest.fleet import Fleet, FleetConfig
from schemas import Declaration, Evidence, GatewayEnvelope, encode
from smartport.kafka import read_range
from smartport.settings import Settings
from streams.rules.engine import evaluate
from streams.rules.state import ContainerState
from streams.rules.thresholds import Thresholds


def batched_worker_main(app_id: str, names: list[str]) -> None:
    """The agent: ``names`` = batches topic, declarations topic, alerts topic."""
    from streams.app import faust_app, new_worker

    settings = timing_settings()
    declarations = {m.key(): Declaration.model_validate_json(m.value() or b"")
                    for m in read_range(settings.kafka, names[1], {})}
    app = faust_app(settings, app_id)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes,
                           "partitions": settings.kafka.partitions}
    batches, alerts = app.topic(names[0], **raw), app.topic(names[2], **raw)
    states: dict[bytes, ContainerState] = {}
    thresholds = Thresholds()

    @app.agent(batches, concurrency=1)
    async def judge(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            for index, line in enumerate(event.value.split(b"\n")):
                envelope = GatewayEnvelope.model_validate_json(line)
                reading = envelope.reading
                container = getattr(reading, "container_no", None)
                if container is None:
                    continue
                key = container.encode()
                evidence = Evidence.of(envelope, names[0], event.message.partition,
                                       event.message.offset * 1000 + index)
                state = states.setdefault(key, ContainerState())
                for alert in evaluate(reading, declarations.get(key), state, thresholds,
                                      evidence).alerts:
                    await alerts.send(key=key, value=encode(alert))

    new_worker(app, "warning").execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=40_000)
    parser.add_argument("--sizes", default="1,10,50", help="readings per Kafka record")
    args = parser.parse_args()
    settings = Settings()
    partitions = settings.kafka.partitions
    admin = AdminClient(settings.kafka.client_config())
    fleet = Fleet(FleetConfig(devices=500, seed=3, anomaly_rate=0.01,
                              step=timedelta(milliseconds=1)))  # behind the wall clock
    readings = envelopes(fleet, args.readings)
    results: dict[str, float] = {"readings": len(readings)}
    for size in (int(s) for s in args.sizes.split(",")):
        tag = uuid.uuid4().hex[:6]
        names = [f"bench-{tag}-batches", f"bench-{tag}-declarations", f"bench-{tag}-alerts"]
        for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
            future.result()
        try:
            produce(settings, names[1], [(d.container_no.encode(), encode(d))
                                         for d in fleet.declarations])
            records = [(readings[i][0], b"\n".join(value for _, value in readings[i:i + size]))
                       for i in range(0, len(readings), size)]
            produce(settings, names[0], records)
            worker, per_s = timed_worker(settings, "worker", f"bench-{tag}", names, len(records),
                                         script=__file__)
            worker.terminate()
            worker.wait(60)
            results[f"readings_per_s_at_{size}_per_record"] = per_s * size
        finally:
            for future in admin.delete_topics(names).values():
                future.result()
    save("batching.json", results)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        batched_worker_main(sys.argv[2], sys.argv[3:])
    else:
        main()
