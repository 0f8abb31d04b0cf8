"""One reconciliation of a run through the pipeline: what was published against what each stage
holds. The demo, the fault suite and the full-pipeline benchmark count the same way.

Counts are read from Kafka (this run's records, by gateway id), the ClickHouse store (through
the sink for chDB) and anchors.v1; batches are verified against Kafka's records and the ledger.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anchoring import receipts, verify
from anchoring.anchors import anchor_records
from anchoring.errors import VerificationFailed
from anchoring.ledgers.factory import open_ledger, own_ledger_id
from schemas import Alert, Rule, encode, topics
from schemas.transit import Clearance, DischargeCertificate, TransitEvent
from smartport import kafka
from smartport.errors import SmartportError, StackError
from smartport.settings import Settings
from streams.analytics.query import query
from streams.analytics.store import Result

log = logging.getLogger(__name__)


@dataclass
class Reconciliation:
    published: int = 0
    unmatched: int = 0  # PUBACKs "no matching subscribers": discarded by the broker, re-sent
    valid: int = 0
    invalid: int = 0
    restarts: int = 0  # readings sent right after their device restarted its seq
    in_kafka: int = 0  # distinct readings (reading_id) of this run in telemetry.v1
    kafka_records: int = 0  # records, duplicates included
    in_dlq: int = 0
    stored: int = 0  # distinct readings (reading_id) of this run in ClickHouse (FINAL)
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
    transit: TransitReconciliation | None = None  # the linked-port scenario, when it ran

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
                and not self.exited and (self.transit is None or self.transit.reconciled))


@dataclass
class TransitReconciliation:
    """The linked-port scenario against its ground truth: every clean transit discharged on
    one declaration (exactly one certificate, clearance green), every injected fault found
    once by an alert naming the check it must fail, and nothing else."""

    clearance_expected: dict[str, str] = field(default_factory=dict)  # container → status
    injected: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # ^ faulty container → (fault, rule, check it must fail; "" for overdue)
    found: dict[str, tuple[str, str]] = field(default_factory=dict)
    # ^ container → (rule, failed checks) of the transit alerts raised
    certificates: Counter[str] = field(default_factory=Counter)  # container → records
    transit_s: list[float] = field(default_factory=list)  # departure → discharge, certified
    clearance: dict[str, str] = field(default_factory=dict)  # container → latest status
    receipt: str = ""  # the certificate whose receipt was verified
    signed_by: str = ""  # ... and the terminal key whose signature on it verified

    @property
    def clean(self) -> set[str]:
        return set(self.clearance_expected) - set(self.injected)

    @property
    def faults_match(self) -> bool:
        return self.found == {number: (rule, check) for number, (_, rule, check)
                              in self.injected.items()}

    @property
    def certificates_match(self) -> bool:
        return self.certificates == Counter(dict.fromkeys(self.clean, 1))

    @property
    def reconciled(self) -> bool:
        return (self.faults_match and self.certificates_match and bool(self.receipt)
                and bool(self.signed_by) and self.clearance == self.clearance_expected)


def _json(value: bytes | None) -> dict[str, Any]:
    """A record's JSON object, or {} for anything else (not ours to judge here)."""
    try:
        parsed = json.loads(value or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def count_run(settings: Settings, report: Reconciliation, gateway_id: str,
               since: dict[str, dict[int, int]]) -> bool:
    """Count this run's records in telemetry.v1 and the DLQ; True once they match."""
    seen: set[str] = set()
    records = 0
    for message in kafka.read_range(settings.kafka, topics.TELEMETRY, since[topics.TELEMETRY]):
        value = _json(message.value())
        if value.get("gateway_id") == gateway_id:
            records += 1
            seen.add(value["reading_id"])
    reasons: Counter[str] = Counter()
    for message in kafka.read_range(settings.kafka, topics.TELEMETRY_DLQ,
                                    since[topics.TELEMETRY_DLQ]):
        value = _json(message.value())
        if value.get("gateway_id") == gateway_id:
            reasons[value["reason"]] += 1
    report.in_kafka, report.kafka_records = len(seen), records
    report.in_dlq, report.dlq_reasons = sum(reasons.values()), reasons
    return report.counts_match


def count_alerts(settings: Settings, report: Reconciliation, since: dict[int, int],
                  containers: set[str]) -> bool:
    """This run's raised alerts, (container, rule) pairs and distinct incidents, and the
    checks each transit alert names; True once every injected anomaly has one."""
    raised: set[tuple[str, str]] = set()
    incidents: set[str] = set()
    found: dict[str, tuple[str, str]] = {}
    for message in kafka.read_range(settings.kafka, topics.ALERTS, since):
        try:
            alert = Alert.model_validate_json(message.value() or b"")
        except ValueError:
            continue
        if alert.container_no in containers and alert.state.value == "raised":
            raised.add((alert.container_no, alert.rule.value))
            incidents.add(alert.alert_id)
            if alert.rule in (Rule.TRANSIT_DISCREPANCY, Rule.TRANSIT_OVERDUE):
                found[alert.container_no] = (alert.rule.value,
                                             str(alert.measured.get("failed_checks", "")))
    report.raised, report.incidents = raised, len(incidents)
    if report.transit is not None:
        report.transit.found = found
    return report.truth <= report.raised


def count_transit(settings: Settings, transit: TransitReconciliation,
                  since: dict[str, dict[int, int]]) -> bool:
    """This run's discharge certificates and clearances; True once every clean transit has
    its certificate and every container its expected clearance."""
    containers = transit.clearance_expected
    transit.certificates, transit.transit_s = Counter(), []
    for message in kafka.read_range(settings.kafka, topics.CERTIFICATES,
                                    since[topics.CERTIFICATES]):
        try:
            certificate = DischargeCertificate.model_validate_json(message.value() or b"")
        except ValueError:
            continue
        if certificate.container_no in containers:
            transit.certificates[certificate.container_no] += 1
            transit.transit_s.append(
                (certificate.arrived_at - certificate.departed_at).total_seconds())
    for message in kafka.read_range(settings.kafka, topics.CLEARANCE, since[topics.CLEARANCE]):
        try:
            clearance = Clearance.model_validate_json(message.value() or b"")
        except ValueError:
            continue
        if clearance.container_no in containers:
            transit.clearance[clearance.container_no] = clearance.status
    return transit.clean <= set(transit.certificates) and (
        transit.clearance == transit.clearance_expected)


def following(settings: Settings, since: dict[int, int], containers: set[str]) -> bool:
    """Whether the streams worker follows every one of ``containers``' declared movements
    (its first steps are on transit.movements.v1)."""
    followed = set()
    for message in kafka.read_range(settings.kafka, topics.TRANSIT, since):
        try:
            followed.add(TransitEvent.model_validate_json(message.value() or b"").container_no)
        except ValueError:
            continue
    return containers <= followed


def verify_one_receipt(settings: Settings, topic: str, since: dict[int, int], work: Path,
                       ours: Callable[[dict[str, Any]], bool]) -> str:
    """Receipt of the run's first record of ``topic`` (``ours`` tells), written to ``work``
    (``<topic>.receipt.json``, ``<topic>.record.bin``) and verified against the ledger."""
    for message in kafka.read_range(settings.kafka, topic, since):
        if ours(_json(message.value())):
            break
    else:
        raise StackError(f"no record of this run is in {topic} to build a receipt for")
    partition, offset = message.partition() or 0, message.offset() or 0
    receipt, record = receipts.build(settings, topic, partition, offset)
    (work / f"{topic}.receipt.json").write_bytes(encode(receipt) + b"\n")
    (work / f"{topic}.record.bin").write_bytes(record)
    verify.verify(receipt, record, open_ledger(settings, writable=False),
                  {own_ledger_id(settings)})
    return f"{topic}/{partition}@{offset}"


def ask(settings: Settings, sql: str) -> Result:
    """Through the sink for chDB: it holds the lock, and may be restarting (the fault suite)."""
    return query(settings, sql, open_embedded=False)


def answer(settings: Settings, sql: str) -> Result:
    try:
        return ask(settings, sql)
    except SmartportError as exc:
        return ["the store did not answer"], [(str(exc),)]


def row_count(settings: Settings) -> int | None:
    try:
        return int(ask(settings, "SELECT count() FROM telemetry")[1][0][0])
    except SmartportError:
        return None  # the store is busy or restarting: no figure this second


def stored_counts(settings: Settings, gateway_id: str) -> tuple[int, int] | None:
    """Distinct readings and DLQ rows of a gateway's run in the store; None while it does not
    answer (busy or restarting)."""
    try:
        _, rows = ask(settings,
                      "SELECT (SELECT uniqExact(reading_id) FROM telemetry FINAL "
                      f"WHERE gateway_id = '{gateway_id}'), (SELECT count() FROM dlq FINAL "
                      f"WHERE gateway_id = '{gateway_id}')")
    except SmartportError:
        return None
    return int(rows[0][0]), int(rows[0][1])


def stored_readings(settings: Settings, gateway_id: str) -> int:
    """Distinct readings of a gateway's run in the store; -1 while it does not answer."""
    counts = stored_counts(settings, gateway_id)
    return -1 if counts is None else counts[0]


def stored(settings: Settings, report: Reconciliation, gateway_id: str) -> bool:
    """Count this run's rows in the store; True once they match what was published."""
    counts = stored_counts(settings, gateway_id)
    if counts is None:
        return False
    report.stored, report.stored_dlq = counts
    return report.stored_match


def verify_batches(settings: Settings, since: dict[int, int]) -> tuple[int, int]:
    """The anchored batches of telemetry.v1 holding records of this run, and how many of them
    verify (Kafka's records hash to the root, the ledger holds it)."""
    ledger, trusted = open_ledger(settings, writable=False), {own_ledger_id(settings)}
    run_batches = [record for record in anchor_records(settings)
                   if record.manifest.topic == topics.TELEMETRY
                   and record.manifest.last_offset >= since.get(record.manifest.partition, 0)]
    verified = 0
    for record in run_batches:
        try:
            receipts.verify_batch(settings, record, ledger, trusted)
            verified += 1
        except VerificationFailed as exc:
            log.error("anchored batch does not verify", extra={
                "batch": record.manifest.batch_id, "error": str(exc)})
    return len(run_batches), verified


