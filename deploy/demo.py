"""`smartport demo`: the main job on the embedded defaults, reconciled end to end.

Simulated fleet → Mosquitto → gateway → Kafka → anchorer → embedded ledger, and the sink into
embedded chDB, with declarations loaded first. At the end every stage's count is reconciled:
each valid published reading is in telemetry.v1 exactly once after deduplication on
(device_id, seq), each invalid one is in the DLQ with its reason, the same counts are in
ClickHouse after deduplication, every batch holding the run's records is anchored, and the
receipt of one record is built and verified against the ledger. Three analyst queries show
what is in the store.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from anchoring import receipts
from anchoring.ledger import open_ledger
from anchoring.service import anchor_records, last_anchored
from deploy.process import tail
from ingest import declarations, kafka
from ingest import simulate as simulation
from ingest.fleet import Fleet, FleetConfig
from ingest.mqtt import connect_properties, new_client
from schemas import encode, topics
from schemas.clickhouse import ANALYST_QUERIES
from smartport.errors import StackError
from smartport.settings import Settings
from streams import query_server
from streams.store import Result

_START_TIMEOUT_S = 60.0
_DRAIN_TIMEOUT_S = 120.0
DEMO_QUERIES = ("Why input was rejected", "Quay-crane moves per hour",
                "Readings and distinct devices per port and kind today")


@dataclass
class DemoReport:
    published: int = 0
    valid: int = 0
    invalid: int = 0
    in_kafka: int = 0  # distinct (device_id, seq) of this run in telemetry.v1
    kafka_records: int = 0  # records, duplicates included
    in_dlq: int = 0
    stored: int = 0  # distinct (device_id, seq) of this run in ClickHouse (FINAL)
    stored_dlq: int = 0
    answers: dict[str, Result] = field(default_factory=dict)
    dlq_reasons: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    declarations: int = 0
    anchored: int = 0  # batches of telemetry.v1 holding this run's records
    receipt: str = ""  # the record whose receipt was verified
    elapsed_s: float = 0.0

    @property
    def counts_match(self) -> bool:
        return self.valid == self.in_kafka and self.invalid == self.in_dlq

    @property
    def stored_match(self) -> bool:
        return self.stored == self.valid and self.stored_dlq == self.invalid

    @property
    def reconciled(self) -> bool:
        return self.counts_match and self.stored_match and bool(self.receipt)


class _Process:
    """One of our processes started by the demo, ready once its log shows ``ready``, and
    stopped however the demo ends."""

    def __init__(self, name: str, args: list[str], ready: str, log_path: Path) -> None:
        self.name = name
        self._args = args
        self._ready = ready
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Process:
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "smartport", *self._args],
                                             stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while self._ready not in self._log_path.read_text():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"the demo's {self.name} did not start; see {self._log_path}:"
                                 f"\n{tail(self._log_path)}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(60)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _forget_session(settings: Settings, client_id: str) -> None:
    """Drop a persistent MQTT session (the demo's gateway group is its own)."""
    client = new_client(settings.mqtt, client_id)
    try:
        client.connect(settings.mqtt.host, settings.mqtt.port, clean_start=True,
                       properties=connect_properties(session_expiry_s=0))
        client.disconnect()
    except OSError:
        pass


def _json(value: bytes | None) -> dict[str, Any]:
    """A record's JSON object, or {} for anything else (not ours to judge here)."""
    try:
        parsed = json.loads(value or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _count_run(settings: Settings, report: DemoReport, gateway_id: str,
               since: dict[str, dict[int, int]]) -> None:
    seen: set[tuple[str, int]] = set()
    records = 0
    for message in kafka.read_range(settings.kafka, topics.TELEMETRY, since[topics.TELEMETRY]):
        value = _json(message.value())
        if value.get("gateway_id") == gateway_id:
            records += 1
            seen.add((value["reading"]["device_id"], value["reading"]["seq"]))
    reasons: Counter[str] = Counter()
    for message in kafka.read_range(settings.kafka, topics.TELEMETRY_DLQ,
                                    since[topics.TELEMETRY_DLQ]):
        value = _json(message.value())
        if value.get("gateway_id") == gateway_id:
            reasons[value["reason"]] += 1
    report.in_kafka, report.kafka_records = len(seen), records
    report.in_dlq, report.dlq_reasons = sum(reasons.values()), reasons


def _anchored_through(settings: Settings, ends: dict[int, int]) -> bool:
    """True once every telemetry.v1 partition is anchored up to ``ends`` (exclusive)."""
    latest = last_anchored(settings)
    return all((topics.TELEMETRY, p) in latest
               and latest[topics.TELEMETRY, p].last_offset + 1 >= end
               for p, end in ends.items() if end > 0)


def _verify_one_receipt(settings: Settings, gateway_id: str, since: dict[int, int],
                        work: Path) -> str:
    """Receipt of the run's first record, written to ``work`` and verified against the ledger."""
    for message in kafka.read_range(settings.kafka, topics.TELEMETRY, since):
        if _json(message.value()).get("gateway_id") == gateway_id:
            break
    else:
        raise StackError("no record of this run is in telemetry.v1 to build a receipt for")
    partition, offset = message.partition() or 0, message.offset() or 0
    receipt, record = receipts.build(settings, topics.TELEMETRY, partition, offset)
    (work / "receipt.json").write_bytes(encode(receipt) + b"\n")
    (work / "record.bin").write_bytes(record)
    receipts.verify(receipt, record, open_ledger(settings, writable=False))
    return f"{topics.TELEMETRY}/{partition}@{offset}"


def run(settings: Settings, *, duration: float, rate: float, devices: int, seed: int,
        console: Console) -> DemoReport:
    run_id = uuid.uuid4().hex[:8]
    work = settings.state_dir / "demo" / run_id
    work.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, anomaly_rate=0.01, invalid_rate=0.005,
                              max_payload_bytes=settings.max_payload_bytes))
    report = DemoReport()
    started = time.monotonic()

    declarations_file = work / "declarations.jsonl"
    simulation.write_declarations(fleet, declarations_file)
    report.declarations = declarations.load(settings, declarations_file).produced
    console.print(f"[green]✓[/] loaded {report.declarations} customs declarations")

    since = {t: kafka.high_watermarks(settings.kafka, t)
             for t in (topics.TELEMETRY, topics.TELEMETRY_DLQ)}
    gateway_id = f"demo-{run_id}"
    gateway = _Process("gateway", ["gateway", "--gateway-id", gateway_id, "--share-group",
                                   gateway_id], '"msg": "subscribed"', work / "gateway.log")
    anchorer = _Process("anchorer", ["anchor"], '"msg": "assigned"', work / "anchor.log")
    sink = _Process("sink", ["sink"], '"msg": "sink ready"', work / "sink.log")
    try:
        with gateway, anchorer, sink:
            console.print(f"[green]✓[/] gateway {gateway_id} subscribed, anchorer and sink "
                          "running")
            sim = simulation.run(fleet, fleet.messages(), mqtt_settings=settings.mqtt,
                                 rate=rate, total=None, duration=duration,
                                 truth_out=work / "truth.jsonl", show_progress=console.is_terminal)
            report.published, report.valid = sim.published, sim.valid
            report.invalid, report.anomalies = sum(sim.invalid.values()), sim.anomalies
            console.print(f"[green]✓[/] published {sim.published} messages "
                          f"({sim.published / sim.elapsed_s:,.0f}/s), all acknowledged by "
                          "Mosquitto")
            with console.status("waiting for the gateway to drain into Kafka ..."):
                deadline = time.monotonic() + _DRAIN_TIMEOUT_S
                while True:
                    _count_run(settings, report, gateway_id, since)
                    if report.counts_match or time.monotonic() > deadline:
                        break
                    time.sleep(1)
            with console.status("waiting for the sink to store the run in ClickHouse ..."):
                deadline = time.monotonic() + _DRAIN_TIMEOUT_S
                while not _stored(settings, report, gateway_id):
                    if time.monotonic() > deadline:
                        break
                    time.sleep(1)
            report.answers = {name: query_server.remote_query(ANALYST_QUERIES[name],
                                                              settings.query_port)
                              for name in DEMO_QUERIES}
            ends = kafka.high_watermarks(settings.kafka, topics.TELEMETRY)
            with console.status("waiting for the anchorer to anchor every batch ..."):
                deadline = time.monotonic() + _DRAIN_TIMEOUT_S
                while not _anchored_through(settings, ends):
                    if time.monotonic() > deadline:
                        raise StackError("the anchorer did not anchor this run's records in "
                                         f"time; see {work / 'anchor.log'}")
                    time.sleep(1)
        report.anchored = _anchored_since(settings, since[topics.TELEMETRY])
        report.receipt = _verify_one_receipt(settings, gateway_id, since[topics.TELEMETRY], work)
        console.print(f"[green]✓[/] receipt of {report.receipt} verified: {work / 'receipt.json'}")
    finally:
        _forget_session(settings, gateway_id)
    report.elapsed_s = time.monotonic() - started
    return report


def _stored(settings: Settings, report: DemoReport, gateway_id: str) -> bool:
    """Count this run's rows in the sink's store (asked through the sink: chDB is locked)."""
    try:
        _, rows = query_server.remote_query(
            "SELECT (SELECT uniqExact(device_id, seq) FROM telemetry FINAL "
            f"WHERE gateway_id = '{gateway_id}'), (SELECT count() FROM dlq FINAL "
            f"WHERE gateway_id = '{gateway_id}')", settings.query_port)
    except OSError:
        return False
    report.stored, report.stored_dlq = int(rows[0][0]), int(rows[0][1])
    return report.stored_match


def _anchored_since(settings: Settings, since: dict[int, int]) -> int:
    """Batches of telemetry.v1 anchored that hold records of this run."""
    return sum(1 for record in anchor_records(settings)
               if record.manifest.topic == topics.TELEMETRY
               and record.manifest.last_offset >= since.get(record.manifest.partition, 0))


def render(report: DemoReport, console: Console) -> None:
    table = Table("stage", "count", "expected", "ok", title="smartport demo: reconciliation")

    def row(stage: str, count: int, expected: int | None) -> None:
        ok = "" if expected is None else ("[green]✓[/]" if count == expected else "[red]✗[/]")
        table.add_row(stage, f"{count:,}", "" if expected is None else f"{expected:,}", ok)

    row("published over MQTT (QoS 1, acknowledged)", report.published, None)
    row("valid readings → telemetry.v1 (distinct device_id, seq)", report.in_kafka, report.valid)
    row("  records incl. at-least-once duplicates", report.kafka_records, None)
    row("invalid payloads → telemetry.dlq.v1", report.in_dlq, report.invalid)
    row("valid readings stored in ClickHouse (chDB, FINAL)", report.stored, report.valid)
    row("DLQ records stored in ClickHouse", report.stored_dlq, report.invalid)
    row("Merkle batches anchored to the embedded ledger", report.anchored, None)
    console.print(table)
    for name, (columns, rows) in report.answers.items():
        answer = Table(*columns, title=f"analyst query: {name}")
        for values in rows[:8]:
            answer.add_row(*(str(v) for v in values))
        console.print(answer)
    console.print(f"receipt verified offline and on the ledger: {report.receipt or '[red]none[/]'}")
    if report.dlq_reasons:
        console.print("DLQ reasons: " + ", ".join(f"{k} {v}" for k, v in
                                                   sorted(report.dlq_reasons.items())))
    if report.anomalies:
        console.print("anomalies injected (ground truth for the customs rules): " + ", ".join(
            f"{k} {v}" for k, v in sorted(report.anomalies.items())))
    verdict = "[green]reconciled[/]" if report.reconciled else "[red]NOT reconciled[/]"
    console.print(f"{verdict} in {report.elapsed_s:.1f} s")
