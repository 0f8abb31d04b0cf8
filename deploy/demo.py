"""`smartport demo`: the main job on the embedded defaults, reconciled end to end.

Simulated fleet → Mosquitto → gateway → Kafka → streams worker → customs alerts; the anchorer
→ embedded ledger; the sink → embedded chDB; declarations loaded first. At the end every
stage's count is reconciled: each valid published reading is in telemetry.v1 exactly once
after deduplication on (device_id, seq), each invalid one is in the DLQ with its reason, the
same counts are in ClickHouse after deduplication, every injected anomaly raised exactly one
alert and nothing else was raised, every batch holding the run's records is anchored, and the
receipt of one record is built and verified against the ledger. Three analyst queries show
what is in the store.

The streams worker has an app id of its own per run, reading from the end of the topics, so
its alerts are this run's alone (the fleet's container numbers repeat across runs with the
same seed); its internal topics are deleted when the run ends.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from anchoring import receipts
from anchoring.errors import VerificationFailed
from anchoring.ledger import open_ledger
from anchoring.service import anchor_records, anchored_through
from deploy import stack
from deploy.demo_view import Counted, LiveStatus
from deploy.pipeline import Pipeline
from ingest import declarations
from ingest import simulate as simulation
from ingest.fleet import Fleet, FleetConfig
from schemas import Alert, encode, topics
from schemas.clickhouse import ANALYST_QUERIES
from smartport import kafka
from smartport.errors import StackError
from smartport.polling import wait_until
from smartport.settings import Settings
from streams import query_server
from streams.store import Result, open_store

_DRAIN_TIMEOUT_S = 120.0
log = logging.getLogger(__name__)
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
    truth: set[tuple[str, str]] = field(default_factory=set)  # injected (container_no, rule)
    raised: set[tuple[str, str]] = field(default_factory=set)  # alerted (container_no, rule)
    incidents: int = 0  # distinct alert ids raised
    declarations: int = 0
    anchored: int = 0  # batches of telemetry.v1 holding this run's records
    batches_verified: int = 0  # of those, verified against Kafka's records and the ledger
    receipt: str = ""  # the record whose receipt was verified
    elapsed_s: float = 0.0
    store: str = "chDB"
    ledger: str = "file"
    exited: list[str] = field(default_factory=list)  # processes that died on their own

    @property
    def counts_match(self) -> bool:
        return self.valid == self.in_kafka and self.invalid == self.in_dlq

    @property
    def stored_match(self) -> bool:
        return self.stored == self.valid and self.stored_dlq == self.invalid

    @property
    def alerts_match(self) -> bool:
        return self.raised == self.truth and self.incidents == len(self.truth)

    @property
    def reconciled(self) -> bool:
        return (self.counts_match and self.stored_match and self.alerts_match
                and self.anchored == self.batches_verified > 0 and bool(self.receipt)
                and not self.exited)


def _json(value: bytes | None) -> dict[str, Any]:
    """A record's JSON object, or {} for anything else (not ours to judge here)."""
    try:
        parsed = json.loads(value or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _count_run(settings: Settings, report: DemoReport, gateway_id: str,
               since: dict[str, dict[int, int]]) -> bool:
    """Count this run's records in telemetry.v1 and the DLQ; True once they match."""
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
    return report.counts_match


def _count_alerts(settings: Settings, report: DemoReport, since: dict[int, int],
                  containers: set[str]) -> bool:
    """This run's raised alerts, (container, rule) pairs and distinct incidents; True once
    every injected anomaly has one."""
    raised: set[tuple[str, str]] = set()
    incidents: set[str] = set()
    for message in kafka.read_range(settings.kafka, topics.ALERTS, since):
        try:
            alert = Alert.model_validate_json(message.value() or b"")
        except ValueError:
            continue
        if alert.container_no in containers and alert.state.value == "raised":
            raised.add((alert.container_no, alert.rule.value))
            incidents.add(alert.alert_id)
    report.raised, report.incidents = raised, len(incidents)
    return report.truth <= report.raised


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


def _ask(settings: Settings, sql: str) -> Result:
    """A query to the store: through the sink for chDB (it holds the lock), else directly."""
    url = settings.resolved_clickhouse_url
    if url.startswith("chdb://"):
        return query_server.remote_query(sql, settings.query_port)
    store = open_store(url)
    try:
        return store.query(sql)
    finally:
        store.close()


def _answer(settings: Settings, sql: str) -> Result:
    try:
        return _ask(settings, sql)
    except (OSError, ValueError) as exc:
        return ["the store did not answer"], [(str(exc),)]


def _row_count(settings: Settings) -> int | None:
    try:
        return int(_ask(settings, "SELECT count() FROM telemetry")[1][0][0])
    except (OSError, ValueError):
        return None  # the store is busy or restarting: no figure this second


def _wait(console: Console, what: str, done: Callable[[], bool],
          timeout: float = _DRAIN_TIMEOUT_S) -> bool:
    with console.status(f"waiting for {what} ..."):
        return wait_until(done, timeout, interval=1.0)


def run(settings: Settings, *, duration: float, rate: float, devices: int, seed: int,
        console: Console, env: dict[str, str] | None = None,
        fault: Callable[[Pipeline], object] | None = None) -> DemoReport:
    """The main job; ``env`` (SMARTPORT_* variables) is what the started processes need to see
    the same settings as ``settings``. ``fault`` (the fault suite's) runs in a thread of its
    own as the simulation starts, and must be over before the counts are reconciled."""
    stack.up(settings, console)
    run_id = uuid.uuid4().hex[:8]
    work = settings.state_dir / "demo" / run_id
    work.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, anomaly_rate=0.01, invalid_rate=0.005,
                              max_payload_bytes=settings.max_payload_bytes))
    report = DemoReport(
        store="chDB" if settings.resolved_clickhouse_url.startswith("chdb://") else "server",
        ledger=settings.resolved_ledger_url.split(":", 1)[0])
    started = time.monotonic()
    pipeline = Pipeline(settings, f"demo-{run_id}", work, env)
    gateway_id = pipeline.gateway_id
    try:
        console.print("starting the streams worker (faust creates its tables' topics), the "
                      "gateway, the anchorer and the sink ...")
        with pipeline:
            since = {t: kafka.high_watermarks(settings.kafka, t) for t in (
                topics.TELEMETRY, topics.TELEMETRY_DLQ, topics.ALERTS, topics.ANCHORS)}
            declarations_file = work / "declarations.jsonl"
            simulation.write_declarations(fleet, declarations_file)
            report.declarations = declarations.load(settings, declarations_file).produced
            console.print(f"[green]✓[/] {report.declarations} customs declarations loaded; "
                          f"streams worker {pipeline.streams_id}, gateway, anchorer and sink "
                          "running")
            published = Counted(fleet.messages())
            with LiveStatus(settings.kafka, published, since, lambda: _row_count(settings),
                            console), ThreadPoolExecutor(1, "fault") as injector:
                injected = injector.submit(fault, pipeline) if fault else None
                sim = simulation.run(fleet, published, mqtt_settings=settings.mqtt,
                                     rate=rate, total=None, duration=duration,
                                     truth_out=work / "truth.jsonl", show_progress=False)
                if injected is not None:
                    injected.result()
            report.published, report.valid = sim.published, sim.valid
            report.invalid = sum(sim.invalid.values())
            report.truth = {(row["container_no"], row["rule"]) for row in map(
                json.loads, (work / "truth.jsonl").read_text().splitlines())}
            console.print(f"[green]✓[/] published {sim.published} messages "
                          f"({sim.published / sim.elapsed_s:,.0f}/s), all acknowledged by "
                          "Mosquitto")
            _wait(console, "the gateway to drain into Kafka",
                  lambda: _count_run(settings, report, gateway_id, since))
            containers = ({d.container_no for d in fleet.declarations}
                          | {container for container, _ in report.truth})
            _wait(console, "the streams worker to raise every alert", lambda: _count_alerts(
                settings, report, since[topics.ALERTS], containers))
            _wait(console, "the sink to store the run in ClickHouse",
                  lambda: _stored(settings, report, gateway_id))
            report.answers = {name: _answer(settings, ANALYST_QUERIES[name])
                              for name in DEMO_QUERIES}
            ends = kafka.high_watermarks(settings.kafka, topics.TELEMETRY)
            if not _wait(console, "the anchorer to anchor every batch",
                         lambda: anchored_through(settings, topics.TELEMETRY, ends)):
                raise StackError("the anchorer did not anchor this run's records in time; "
                                 f"see {pipeline.anchorer.log_path}")
            report.exited = [f"{p.name} (see {p.log_path})" for p in pipeline.processes
                             if not p.running]
        _count_alerts(settings, report, since[topics.ALERTS], containers)  # late duplicates too
        report.anchored, report.batches_verified = _verify_batches(settings,
                                                                   since[topics.TELEMETRY])
        report.receipt = _verify_one_receipt(settings, gateway_id, since[topics.TELEMETRY], work)
        console.print(f"[green]✓[/] receipt of {report.receipt} verified: {work / 'receipt.json'}")
    finally:
        pipeline.clean_up()
    report.elapsed_s = time.monotonic() - started
    return report


def _stored(settings: Settings, report: DemoReport, gateway_id: str) -> bool:
    """Count this run's rows in the store."""
    try:
        _, rows = _ask(settings,
                       "SELECT (SELECT uniqExact(device_id, seq) FROM telemetry FINAL "
                       f"WHERE gateway_id = '{gateway_id}'), (SELECT count() FROM dlq FINAL "
                       f"WHERE gateway_id = '{gateway_id}')")
    except OSError:
        return False
    report.stored, report.stored_dlq = int(rows[0][0]), int(rows[0][1])
    return report.stored_match


def _verify_batches(settings: Settings, since: dict[int, int]) -> tuple[int, int]:
    """The anchored batches of telemetry.v1 holding records of this run, and how many of them
    verify (Kafka's records hash to the root, the ledger holds it)."""
    ledger = open_ledger(settings, writable=False)
    run_batches = [record for record in anchor_records(settings)
                   if record.manifest.topic == topics.TELEMETRY
                   and record.manifest.last_offset >= since.get(record.manifest.partition, 0)]
    verified = 0
    for record in run_batches:
        try:
            receipts.verify_batch(settings, record, ledger)
            verified += 1
        except VerificationFailed as exc:
            log.error("anchored batch does not verify", extra={
                "batch": record.manifest.batch_id, "error": str(exc)})
    return len(run_batches), verified


def render(report: DemoReport, console: Console) -> None:
    table = Table("stage", "count", "expected", "ok", title="smartport demo: reconciliation")

    def row(stage: str, count: int, expected: int | None) -> None:
        ok = "" if expected is None else ("[green]✓[/]" if count == expected else "[red]✗[/]")
        table.add_row(stage, f"{count:,}", "" if expected is None else f"{expected:,}", ok)

    row("published over MQTT (QoS 1, acknowledged)", report.published, None)
    row("valid readings → telemetry.v1 (distinct device_id, seq)", report.in_kafka, report.valid)
    row("  records incl. at-least-once duplicates", report.kafka_records, None)
    row("invalid payloads → telemetry.dlq.v1", report.in_dlq, report.invalid)
    row(f"valid readings stored in ClickHouse ({report.store}, FINAL)", report.stored,
        report.valid)
    row("DLQ records stored in ClickHouse", report.stored_dlq, report.invalid)
    row(f"Merkle batches anchored to the {report.ledger} ledger", report.anchored, None)
    row("  of which verified (Kafka's records → root → ledger)", report.batches_verified,
        report.anchored)
    row("customs alerts raised (distinct incidents)", report.incidents, len(report.truth))
    console.print(table)
    alerts = Table("rule", "anomalies injected", "alerts raised", "matching", "missed",
                   "unexpected", title="customs alerts against the simulator's ground truth")
    for rule in sorted({rule for _, rule in report.truth | report.raised}):
        truth = {pair for pair in report.truth if pair[1] == rule}
        raised = {pair for pair in report.raised if pair[1] == rule}
        alerts.add_row(rule, str(len(truth)), str(len(raised)), str(len(truth & raised)),
                       str(len(truth - raised)), str(len(raised - truth)))
    console.print(alerts)
    for name, (columns, rows) in report.answers.items():
        answer = Table(*columns, title=f"analyst query: {name}")
        for values in rows[:8]:
            answer.add_row(*(str(v) for v in values))
        console.print(answer)
    console.print(f"receipt verified offline and on the ledger: {report.receipt or '[red]none[/]'}")
    if report.dlq_reasons:
        console.print("DLQ reasons: " + ", ".join(f"{k} {v}" for k, v in
                                                   sorted(report.dlq_reasons.items())))
    for name in report.exited:
        console.print(f"[red]exited on its own:[/] {name}")
    verdict = "[green]reconciled[/]" if report.reconciled else "[red]NOT reconciled[/]"
    console.print(f"{verdict} in {report.elapsed_s:.1f} s")
