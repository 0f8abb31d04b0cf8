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
from typing import Any

import pytest

from anchoring import receipts, verify
from anchoring.errors import VerificationFailed
from anchoring.ledgers.factory import open_ledger
from anchoring.service import Anchorer
from deploy.cli import main
from deploy.pipeline import PipelineProcess, streams_worker
from deploy.services import CLICKHOUSE_PORT, HOST
from ingest import declarations
from ingest.linked import FAULTS, LinkedConfig, LinkedPorts
from ingest.simulate import SimulationReport, run, write_declarations
from schemas import Alert, encode, topics
from schemas import clickhouse as ch
from schemas.transit import Clearance, DischargeCertificate, PortEvent, TransitEvent
from smartport.ed25519 import fingerprint, own_key
from smartport.kafka import high_watermarks, read_range
from smartport.mqtt import edge_user, mqtt_as
from smartport.settings import Settings
from streams.analytics.migrations import ensure_schema
from streams.analytics.sink import Sink
from streams.analytics.store import open_store
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
    events = [PortEvent.model_validate_json(m.value() or b"")
              for m in read_range(stack.kafka, topics.PORT_EVENTS, port_events_since)]
    equipment = Counter((event.container_no, event.dcsa["equipmentEventTypeCode"])
                        for event in events if event.dcsa["eventType"] == "EQUIPMENT")
    assert equipment == linked.equipment_events()  # cranes and gates, both modes
    iot = Counter((event.container_no, event.dcsa["iotEventCode"])
                  for event in events if event.dcsa["eventType"] == "IOT")
    assert iot == linked.iot_events()  # out of Shunde's area, into Shekou's; a door opened
    # Each declaration's status (released) as a DCSA customs event, derived once per worker
    # from the first version it reads (the topics hold earlier runs' versions too).
    customs = {(event.container_no, event.dcsa["shipmentEventTypeCode"]) for event in (
        PortEvent.model_validate_json(m.value() or b"")
        for m in read_range(stack.kafka, topics.PORT_EVENTS, {}))
        if event.dcsa["eventType"] == "SHIPMENT"}
    assert {(number, "RELS") for number in everyone} <= customs

    certificate, partition, offset = certificates[sorted(clean)[0]]
    _verify_offline(stack, certificate, partition, offset, tmp_path)
    for store_url in (f"chdb://{tmp_path / 'chdb'}", _server_database()):
        _analysts_see_the_same(
            stack, store_url, since={
                "movements": transit_since, "certificates": certificates_since,
                "clearance": clearance_since, "port_events": port_events_since},
            clean=clean, failed={number: check for number, rule, check in expected
                                 if rule == "transit_discrepancy"},
            port_events=len(events))


def _server_database() -> str:
    return f"clickhouse://{HOST}:{CLICKHOUSE_PORT}/{unique('linked').replace('-', '_')}"


def _verify_offline(stack: Settings, certificate: DischargeCertificate, partition: int,
                    offset: int, tmp_path: Path) -> None:
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
    # Signed by the terminal (the worker's key in the stack's state directory).
    terminal = fingerprint(own_key(stack.resolved_terminal_key_file).public_key())
    assert verify.verify_certificate(record, {terminal}) == terminal
    rerouted = record.replace(b'"corridor_id":"CNSUD-CNSHK-river"',
                              b'"corridor_id":"CNSUD-CNSHK-roads"')
    assert rerouted != record
    with pytest.raises(VerificationFailed, match=r"^terminal signature: .*changed after"):
        verify.verify_certificate(rerouted, {terminal})
    receipt_file, record_file = tmp_path / "receipt.json", tmp_path / "certificate.bin"
    receipt_file.write_bytes(encode(receipt))
    record_file.write_bytes(record)
    verify_cli = ["verify", str(receipt_file), "--record", str(record_file),
                  "--trust-ledger", ledger.ledger_id]
    assert main(verify_cli) == 2, "a verifier must name the terminal it trusts"
    assert main([*verify_cli, "--trust-terminal", "0" * 64]) == 1
    assert main([*verify_cli, "--trust-terminal", terminal]) == 0


def _analysts_see_the_same(stack: Settings, store_url: str, *,
                           since: dict[str, dict[int, int]], clean: set[str],
                           failed: dict[str, str], port_events: int) -> None:
    """The sink stores the run's movements, certificates, clearances and DCSA events; the
    README's linked-port queries answer from them."""
    store = open_store(store_url)
    try:
        ensure_schema(store, ttl_days=None)
        Sink(stack, store, group=unique("linked-sink"), source_topics=(
            topics.TRANSIT, topics.CERTIFICATES, topics.CLEARANCE, topics.PORT_EVENTS)).run(
            idle_exit_s=4.0)

        def this_run(columns: str, table: str, where: str = "1") -> list[tuple[Any, ...]]:
            """Rows of the records this test produced (the topics hold earlier runs of the same
            scenario: same identities, and the latest record is the one kept)."""
            _, rows = store.query(f"SELECT kafka_partition, kafka_offset, {columns} "
                                  f"FROM {table} FINAL WHERE {where}")
            return [row[2:] for row in rows if row[1] >= since[table].get(row[0], 0)]

        certified = this_run("container_no, transit_seconds", "certificates")
        assert sorted(number for number, _ in certified) == sorted(clean)  # one each
        assert all(seconds > 0 for _, seconds in certified)
        discrepancies = this_run("container_no, failed_checks", "movements",
                                 "phase = 'discrepancy'")
        assert sorted((number, ",".join(checks)) for number, checks in discrepancies) == sorted(
            failed.items())
        green = this_run("container_no", "clearance", "status = 'green'")
        assert sorted(number for number, in green) == sorted(clean)
        assert len(this_run("event_id", "port_events")) == port_events
        for name in ("Transit time per corridor (certified transits)",
                     "Transit discrepancies by failed check"):
            store.query(ch.ANALYST_QUERIES[name])  # runs on this back-end
        _, cleared = store.query(ch.ANALYST_QUERIES[
            "Containers cleared on one declaration per day"])
        assert sum(int(row[2]) for row in cleared) >= len(clean)
    finally:
        if store_url.startswith("clickhouse://"):
            store.execute(f"DROP DATABASE IF EXISTS {store_url.rsplit('/', 1)[1]}")
        store.close()
