"""End-to-end anchoring benchmark: records/s from Kafka to the ledger and anchors.v1.

    .venv/bin/python bench/anchor_bench.py --records 500000 --ledger file

Produces ``--records`` 200-byte records to a scratch topic, then times one anchorer from its
start to the last batch anchored (its offsets committed), and deletes the topic.

Two rates: the wall figure until the last batch, which includes joining the group and reading
where to resume (the backlog's last, partial, entry goes as soon as it has been read); and
the steady figure, what the anchorer sustains while full entries (``MAX_BATCHES_PER_ENTRY``
batches) are written as fast as they fill: the records anchored between the first full entry
and the last, over the time between them (two full entries at least: 600,000 records).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from anchoring.ledgers.factory import open_ledger
from anchoring.service import MAX_BATCHES_PER_ENTRY, Anchorer
from deploy.services import ANVIL_DEV_KEY, ANVIL_PORT, HOST
from smartport.settings import Settings

RESULTS = Path(__file__).with_name("results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--ledger", choices=("file", "evm"), default="file")
    args = parser.parse_args()
    base = Settings()
    ledger_url = (f"file://{tempfile.mkdtemp()}/ledger" if args.ledger == "file"
                  else f"evm+http://{HOST}:{ANVIL_PORT}")
    settings = base.model_copy(update={"ledger_url": ledger_url,
                                       "ledger_key": SecretStr(ANVIL_DEV_KEY)})
    topic = f"bench-anchor-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.kafka.client_config())
    admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result()
    try:
        producer = Producer({**settings.kafka.client_config(), "linger.ms": 20})
        for _ in range(args.records):
            while True:
                try:
                    producer.produce(topic, os.urandom(200))
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.flush(120)
        anchorer = Anchorer(settings, open_ledger(settings), group=f"bench-{topic}",
                            source_topics=(topic,))
        started, cpu_started = time.perf_counter(), time.process_time()
        thread = threading.Thread(target=anchorer.run, kwargs={"idle_exit_s": 3.0})
        thread.start()
        full_entries = [(0, started)]  # batches anchored when each full entry was, and when
        while thread.is_alive():
            anchored = anchorer.anchored_batches
            if anchored - full_entries[-1][0] >= MAX_BATCHES_PER_ENTRY:
                full_entries.append((anchored, time.perf_counter()))
            time.sleep(0.005)
        thread.join()
        elapsed = time.perf_counter() - started - 3.0  # minus the idle wait that ends the run
        batch_records = settings.batches.anchor_records
        cpu = time.process_time() - cpu_started  # the anchorer's: this process does nothing else
        # The CPU figure is what one core sustains on a stream that never ends.
        result = {"records": args.records, "ledger": args.ledger,
                  "batches": anchorer.anchored_batches, "seconds": elapsed,
                  "records_per_s": args.records / elapsed,
                  "steady_records_per_s": (
                      (full_entries[-1][0] - full_entries[1][0]) * batch_records
                      / (full_entries[-1][1] - full_entries[1][1])
                      if len(full_entries) > 2 else None),
                  "cpu_us_per_record": cpu / args.records * 1e6,
                  "records_per_cpu_s": args.records / cpu}
    finally:
        admin.delete_topics([topic])[topic].result()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"anchor_{args.ledger}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
