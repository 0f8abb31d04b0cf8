"""Linked ports on the real stack: containers declared at Shunde go by barge to Shekou; their
devices publish at both ports (each port's edge gateway), the gateway and the streams worker
follow every movement. Each injected transit fault raises exactly one alert naming the failed
check; each clean transit yields exactly one discharge certificate, which verifies offline like
any record, and fails once a byte of it changes."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchoring import receipts, verify
from anchoring.errors import VerificationFailed
from anchoring.ledgers.factory import open_ledger
from anchoring.service import Anchorer
from deploy.pipeline import PipelineProcess, streams_worker
from ingest import declarations
from ingest.linked import FAULTS, LinkedConfig, LinkedPorts
from ingest.simulate import SimulationReport, run, write_declarations
from schemas import Alert, topics
from schemas.transit import Clearance, DischargeCertificate, PortEvent, TransitEvent
from smartport.kafka import high_watermarks, read_range
from smartport.mqtt import edge_user, mqtt_as
from smartport.settings import Settings
from tests.stack.pipeline import GatewayProcess, unique, wait_for


@pytest.fixture
def worker(stack: Settings, tmp_path: Path) -> Iterator[PipelineProcess]:
    started = streams_worker(unique("linked"), tmp_path / "streams.log").start()
    yield started
    started.stop()


def _raised(settings: Settings, since: dict[int, int], containers: set[str]
            ) -> list[tuple[str, str, str]]:
    found = []
    for message in read_range(settings.kafka, topics.ALERTS, since):
        alert = Alert.model_validate_json(message.value() or b"")
        if alert.container_no in containers and alert.state.value == "raised":
            found.append((alert.container_no, alert.rule.value,
                          str(alert.measured.get("failed_checks", ""))))
    return sorted(found)


def _certificates(settings: Settings, since: dict[int, int]
                  ) -> dict[str, tuple[DischargeCertificate, int, int]]:
    """Certificate, partition and offset, by container."""
    return {certificate.container_no: (certificate, message.partition() or 0,
                                       message.offset() or 0)
            for message in read_range(settings.kafka, topics.CERTIFICATES, since)
            if (certificate := DischargeCertificate.model_validate_json(message.value() or b""))}


def test_each_transit_fault_one_alert_each_clean_transit_one_certificate_that_verifies(
    stack: Settings, worker: PipelineProcess, tmp_path: Path
) -> None:
    linked = LinkedPorts(LinkedConfig(containers=24, seed=1, fault_rate=0.5))
    faulty = {t.declaration.container_no: t for t in linked.transits if t.fault}
    assert {t.fault for t in faulty.values()} == set(FAULTS)
    clean = {t.declaration.container_no for t in linked.transits if not t.fault}
    expected = sorted((number, rule.value, check.value if check else "")
                      for number, (rule, check) in
                      ((n, t.expected) for n, t in faulty.items() if t.expected))
    alerts_since = high_watermarks(stack.kafka, topics.ALERTS)
    certificates_since = high_watermarks(stack.kafka, topics.CERTIFICATES)
    clearance_since = high_watermarks(stack.kafka, topics.CLEARANCE)
    port_events_since = high_watermarks(stack.kafka, topics.PORT_EVENTS)
    transit_since = high_watermarks(stack.kafka, topics.TRANSIT)
    write_declarations(linked, tmp_path / "declarations.jsonl")
    declarations.load(stack, tmp_path / "declarations.jsonl")
    # Declarations come hours before a barge leaves; here seconds: wait until the worker has
    # them (a reading of a container it has no declaration for is not a movement's evidence).
    everyone = set(faulty) | clean
    wait_for(lambda: {TransitEvent.model_validate_json(m.value() or b"").container_no
                      for m in read_range(stack.kafka, topics.TRANSIT, transit_since)}
             >= everyone, 60, "the worker to follow every declared movement")
    gateway = GatewayProcess(unique("gw"), None, tmp_path).start()
    report = SimulationReport()

    def publish() -> None:
        nonlocal report
        report = run(linked.messages(), rate=0, total=None, duration=None, show_progress=False,
                     mqtt_settings=lambda port: mqtt_as(stack, edge_user(port)))

    try:
        publishing = threading.Thread(target=publish)
        publishing.start()
        publishing.join(120)
        wait_for(lambda: len(_raised(stack, alerts_since, set(faulty))) >= len(expected)
                 and set(_certificates(stack, certificates_since)) >= clean, 120,
                 "an alert for every faulty transit and a certificate for every clean one")
    finally:
        gateway.stop()
        gateway.forget_session(stack)
    assert report.acknowledged == report.published > 0  # both ports' edge gateways took them
    assert _raised(stack, alerts_since, everyone) == expected  # nothing else raised
    certificates = _certificates(stack, certificates_since)
    assert set(certificates) == clean  # exactly one each (a dict would hide a second)
    assert sum(1 for _ in read_range(stack.kafka, topics.CERTIFICATES,
                                     certificates_since)) == len(clean)
    statuses = {c.container_no: c.status for c in (
        Clearance.model_validate_json(m.value() or b"")
        for m in read_range(stack.kafka, topics.CLEARANCE, clearance_since))}
    assert statuses == {number: "held" if number in faulty else "green" for number in everyone}
    codes = Counter(
        (event.container_no, event.dcsa["equipmentEventTypeCode"]) for event in (
            PortEvent.model_validate_json(m.value() or b"")
            for m in read_range(stack.kafka, topics.PORT_EVENTS, port_events_since)))
    stuck = {n for n, t in faulty.items() if t.fault == "overdue"}
    assert codes == Counter({**{(n, "LOAD"): 1 for n in everyone},
                             **{(n, "DISC"): 1 for n in everyone - stuck}})

    certificate, partition, offset = certificates[sorted(clean)[0]]
    _verify_offline(stack, certificate, partition, offset)


def _verify_offline(stack: Settings, certificate: DischargeCertificate, partition: int,
                    offset: int) -> None:
    """The certificate's record → its anchored batch → the ledger; a changed byte fails."""
    settings = stack.model_copy(update={"batches": stack.batches.model_copy(
        update={"anchor_seconds": 1.0})})
    ledger = open_ledger(settings)
    anchorer = Anchorer(settings, ledger, source_topics=(topics.CERTIFICATES,))
    anchoring = threading.Thread(target=anchorer.run, kwargs={"idle_exit_s": 4.0})
    anchoring.start()
    anchoring.join(120)
    receipt, record = receipts.build(settings, topics.CERTIFICATES, partition, offset)
    trusted = {ledger.ledger_id}
    verify.verify(receipt, record, open_ledger(settings, writable=False), trusted)
    assert json.loads(record)["movement_id"] == certificate.movement_id
    forged = record.replace(b'"passed":true', b'"passed":false', 1)
    assert forged != record
    with pytest.raises(VerificationFailed, match=r"^record hash"):
        verify.verify(receipt, forged, open_ledger(settings, writable=False), trusted)
