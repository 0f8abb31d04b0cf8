"""Sink benchmark: rows/s from Kafka into each ClickHouse back-end, default batch size.

    .venv/bin/python bench/sink_bench.py --records 200000

Produces ``--records`` gateway envelopes, as the gateway writes them, to a scratch copy of
telemetry.v1's shape (the sink's telemetry converter, a scratch topic), then times one sink from
start to the last insert, into a fresh chDB store and a fresh database on the local ClickHouse
server (18.16 here: too old for the intake, so the sink converts every record itself); and
into chDB again without the intake, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.services import CLICKHOUSE_PORT, HOST
from ingest.fleet import Fleet, FleetConfig
from ingest.records import envelope_value
from ingest.validation import Accepted, Limits, classify
from schemas import clickhouse as ch
from schemas import topics
from smartport.settings import Settings
from streams.analytics import rows
from streams.analytics.migrations import ensure_schema
from streams.analytics.sink import Sink
from streams.analytics.store import open_store

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    settings = Settings()
    topic = f"bench-sink-{uuid.uuid4().hex[:6]}"
    # The scratch topic converts like telemetry.v1.
    rows.CONVERTERS[topic] = rows.CONVERTERS[topics.TELEMETRY]
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, settings.kafka.partitions, 1)])[topic].result()
    results = {}
    try:
        producer = Producer({**settings.kafka.client_config(), "linger.ms": 20})
        fleet = Fleet(FleetConfig(devices=500))
        received_at = datetime.now(UTC)
        limits = Limits(max_ahead_s=10 * 365 * 86400)  # the simulated clock runs ahead of ours
        for count, message in enumerate(fleet.messages()):
            if count >= args.records:
                break
            accepted = classify(message.topic, message.payload, limits, received_at)
            assert isinstance(accepted, Accepted), accepted
            value = envelope_value(accepted, message.topic, "bench", received_at)
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
            store = open_store(url)
            ensure_schema(store, None)
            if name == "chdb_converted_by_the_sink":  # the same, without the intake
                for view in ("judge", "rows", "rejects"):
                    store.execute(f"DROP VIEW {ch.INTAKE.name}_{view}")
                store.execute(f"DROP TABLE {ch.INTAKE.name}")
            sink = TimedSink(settings, store, group=f"bench-{uuid.uuid4().hex[:6]}",
                             source_topics=(topic,))
            thread = threading.Thread(target=sink.run, kwargs={"idle_exit_s": 3.0})
            thread.start()
            thread.join()
            elapsed = sink.last_insert - sink.first_record  # group join and idle wait excluded
            results[name] = {"rows": sink.inserted, "seconds": round(elapsed, 2),
                             "rows_per_s": round(sink.inserted / elapsed)}
            if name == "server":
                store.execute(f"DROP DATABASE {database}")
            store.close()
    finally:
        admin.delete_topics([topic])[topic].result()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
