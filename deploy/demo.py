"""`smartport demo`: the main job on the embedded defaults, reconciled end to end.

Simulated fleet → Mosquitto → gateway → Kafka → streams worker → customs alerts; the anchorer
→ embedded ledger; the sink → embedded chDB; declarations loaded first. At the end every
stage's count is reconciled: each valid published reading is in telemetry.v1 exactly once
after deduplication on its reading_id (devices restart their seq now and then, and none of
those readings may be folded into an earlier one), each invalid one is in the DLQ with its
reason, the same counts are in ClickHouse after deduplication, every injected anomaly raised
exactly one alert and nothing else was raised, every batch holding the run's records is
anchored, and the receipt of one record is built and verified against the ledger. Three
analyst queries show what is in the store.

With ``linked`` containers (the CLI's default is the pilot's 200 TEU) the linked-port scenario
runs after the fleet: containers declared once at Shunde go by barge to Shekou, a tenth of them
with one injected transit fault. Its reconciliation: every clean transit discharged on one
declaration (exactly one certificate, clearance green), every fault found once by an alert
naming the check it must fail (clearance held), nothing else raised, the transit times, and
one discharge certificate verified offline against the ledger.

The streams worker has an app id of its own per run, reading from the end of the topics, so
its alerts are this run's alone (the fleet's container numbers repeat across runs with the
same seed); its internal topics are deleted when the run ends.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from anchoring.anchors import anchored_through
from anchoring.verify import verify_certificate
from deploy import process, reconcile, stack
from deploy.demo_view import Counted, LiveStatus
from deploy.pipeline import Pipeline, PipelineProcess
from deploy.reconcile import Reconciliation
from ingest import declarations
from ingest import simulate as simulation
from ingest.fleet import HOME_PORT, Fleet, FleetConfig, step_for_rate
from ingest.linked import LinkedConfig, LinkedPorts
from schemas import topics
from schemas.clickhouse import ANALYST_QUERIES
from smartport import kafka
from smartport.ed25519 import fingerprint, own_key
from smartport.errors import StackError
from smartport.mqtt import edge_user, mqtt_as
from smartport.polling import wait_until
from smartport.settings import Settings

# About one device restart per 500 readings: seq starts again, and no reading may be lost to it.
REBOOT_RATE = 0.002
TRANSIT_FAULT_RATE = 0.1  # of the linked-port containers, one injected transit fault each
_DRAIN_TIMEOUT_S = 120.0
DEMO_QUERIES = ("Why input was rejected", "Quay-crane moves per hour",
                "Readings and distinct devices per port and kind today")
LINKED_QUERIES = ("Transit time per corridor (certified transits)",
                  "Containers cleared on one declaration per day")


def _wait(console: Console, what: str, done: Callable[[], bool],
          timeout: float = _DRAIN_TIMEOUT_S, stage: PipelineProcess | None = None) -> bool:
    """Wait for ``what``; when the deadline passes, say so, with the end of ``stage``'s log
    (the process that should have done it: alive, but was it working?)."""
    with console.status(f"waiting for {what} ..."):
        if wait_until(done, timeout, interval=1.0):
            return True
    console.print(f"[red]✗[/] {what}: not done after {timeout:.0f} s")
    if stage is not None:
        state = ("exited" if not stage.running
                 else f"running, readiness {'1' if stage.ready else '0 or unanswered'}")
        console.print(f"{stage.name} {state}; "
                      f"{stage.log_path} ends:\n{process.tail(stage.log_path, 40)}",
                      markup=False, highlight=False)
    return False


def _linked_truth(ports: LinkedPorts) -> reconcile.TransitReconciliation:
    truth = reconcile.TransitReconciliation()
    for transit in ports.transits:
        number = transit.declaration.container_no
        truth.clearance_expected[number] = "held" if transit.fault else "green"
        if transit.fault and transit.expected:
            rule, check = transit.expected
            truth.injected[number] = (transit.fault, rule.value, check.value if check else "")
    return truth


def run(settings: Settings, *, duration: float, rate: float, devices: int, seed: int,
        console: Console, env: dict[str, str] | None = None,
        fault: Callable[[Pipeline], object] | None = None, linked: int = 0) -> Reconciliation:
    """The main job; ``env`` (SMARTPORT_* variables) is what the started processes need to see
    the same settings as ``settings``. ``fault`` (the fault suite's) runs in a thread of its
    own as the simulation starts, and must be over before the counts are reconciled.
    ``linked`` containers go through the linked-port scenario after the fleet (0: none)."""
    stack.up(settings, console)
    run_id = uuid.uuid4().hex[:8]
    work = settings.state_dir / "demo" / run_id
    work.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, step=step_for_rate(rate),
                              anomaly_rate=0.01, invalid_rate=0.005, reboot_rate=REBOOT_RATE,
                              max_payload_bytes=settings.max_payload_bytes))
    ports = LinkedPorts(LinkedConfig(containers=linked, seed=seed,
                                     fault_rate=TRANSIT_FAULT_RATE)) if linked else None
    report = Reconciliation(
        store="chDB" if settings.resolved_clickhouse_url.startswith("chdb://") else "server",
        ledger=settings.resolved_ledger_url.split(":", 1)[0],
        transit=_linked_truth(ports) if ports else None)
    started = time.monotonic()
    pipeline = Pipeline(settings, f"demo-{run_id}", work, env)
    gateway_id = pipeline.gateway_id
    try:
        console.print("starting the streams worker (faust creates its tables' topics), the "
                      "gateway, the anchorer and the sink ...")
        with pipeline:
            since = {t: kafka.high_watermarks(settings.kafka, t) for t in (
                topics.TELEMETRY, topics.TELEMETRY_DLQ, topics.ALERTS, topics.ANCHORS,
                topics.TRANSIT, topics.CERTIFICATES, topics.CLEARANCE)}
            report.declarations = _load_declarations(settings, work, fleet, ports)
            console.print(f"[green]✓[/] {report.declarations} customs declarations loaded"
                          f"{f' ({linked} with a movement Shunde → Shekou)' if linked else ''}; "
                          f"streams worker {pipeline.streams_id}, gateway, anchorer and sink "
                          "running")
            published = Counted(fleet.messages())
            with LiveStatus(settings.kafka, published, since,
                            lambda: reconcile.row_count(settings), console), \
                    ThreadPoolExecutor(1, "fault") as injector:
                injected = injector.submit(fault, pipeline) if fault else None
                sim = simulation.run(
                    published, rate=rate, total=None, duration=duration,
                    mqtt_settings=lambda port: mqtt_as(settings, edge_user(port or HOME_PORT)),
                    truth_out=work / "truth.jsonl", show_progress=False)
                if injected is not None:
                    injected.result()
            report.published, report.valid = sim.published, sim.valid
            report.unmatched, report.restarts = sim.unmatched, sim.restarts
            report.invalid = sum(sim.invalid.values())
            console.print(f"[green]✓[/] published {sim.published} messages "
                          f"({sim.published / sim.elapsed_s:,.0f}/s), all acknowledged by "
                          "Mosquitto")
            if ports is not None:
                _run_linked(settings, ports, work=work, report=report, since=since,
                            console=console)
            report.truth = {(row["container_no"], row["rule"]) for name in (
                "truth", "transit-truth") if (work / f"{name}.jsonl").exists()
                for row in map(json.loads, (work / f"{name}.jsonl").read_text().splitlines())}
            _wait(console, "the gateway to drain into Kafka",
                  lambda: reconcile.count_run(settings, report, gateway_id, since),
                  stage=pipeline.gateway)
            containers = ({d.container_no for d in fleet.declarations}
                          | {d.container_no for d in (ports.declarations if ports else ())}
                          | {container for container, _ in report.truth})
            _wait(console, "the streams worker to raise every alert",
                  lambda: reconcile.count_alerts(settings, report, since[topics.ALERTS],
                                                 containers), stage=pipeline.streams)
            if report.transit is not None:
                transit = report.transit
                _wait(console, "a certificate for every clean transit, a clearance for each",
                      lambda: reconcile.count_transit(settings, transit, since))
            _wait(console, "the sink to store the run in ClickHouse",
                  lambda: reconcile.stored(settings, report, gateway_id), stage=pipeline.sink)
            report.answers = {name: reconcile.answer(settings, ANALYST_QUERIES[name])
                              for name in DEMO_QUERIES + (LINKED_QUERIES if ports else ())}
            anchored = [topics.TELEMETRY] + ([topics.CERTIFICATES] if ports else [])
            ends = {topic: kafka.high_watermarks(settings.kafka, topic) for topic in anchored}
            if not _wait(console, "the anchorer to anchor every batch", lambda: all(
                    anchored_through(settings, topic, ends[topic]) for topic in anchored)):
                raise StackError("the anchorer did not anchor this run's records in time; "
                                 f"see {pipeline.anchorer.log_path}, which ends:\n"
                                 f"{process.tail(pipeline.anchorer.log_path, 40)}")
            report.exited = [f"{p.name} (see {p.log_path})" for p in pipeline.processes
                             if not p.running]
        # again, for late duplicates too
        reconcile.count_alerts(settings, report, since[topics.ALERTS], containers)
        report.anchored, report.batches_verified = reconcile.verify_batches(
            settings, since[topics.TELEMETRY])
        _verify_receipts(settings, report, work=work, gateway_id=gateway_id, since=since,
                         console=console)
    finally:
        pipeline.clean_up()
    report.elapsed_s = time.monotonic() - started
    return report


def _verify_receipts(settings: Settings, report: Reconciliation, *, work: Path,
                     gateway_id: str, since: dict[str, dict[int, int]],
                     console: Console) -> None:
    """One reading's receipt, and one discharge certificate's, built and verified offline."""
    report.receipt = reconcile.verify_one_receipt(
        settings, topics.TELEMETRY, since[topics.TELEMETRY], work,
        lambda record: record.get("gateway_id") == gateway_id)
    console.print(f"[green]✓[/] receipt of {report.receipt} verified: "
                  f"{work / (topics.TELEMETRY + '.receipt.json')}")
    if report.transit is not None:
        clean = report.transit.clean
        report.transit.receipt = reconcile.verify_one_receipt(
            settings, topics.CERTIFICATES, since[topics.CERTIFICATES], work,
            lambda record: record.get("container_no") in clean)
        terminal = fingerprint(own_key(settings.resolved_terminal_key_file).public_key())
        report.transit.signed_by = verify_certificate(
            (work / f"{topics.CERTIFICATES}.record.bin").read_bytes(), {terminal})
        console.print(f"[green]✓[/] discharge certificate {report.transit.receipt} verified "
                      f"offline, signed by terminal key {terminal[:16]}…: "
                      f"{work / (topics.CERTIFICATES + '.receipt.json')}")


def _load_declarations(settings: Settings, work: Path, fleet: Fleet,
                       ports: LinkedPorts | None) -> int:
    loaded = 0
    for name, declared in (("declarations", fleet), ("movements", ports)):
        if declared is not None:
            simulation.write_declarations(declared, work / f"{name}.jsonl")
            loaded += declarations.load(settings, work / f"{name}.jsonl").produced
    return loaded


def _run_linked(settings: Settings, ports: LinkedPorts, *, work: Path, report: Reconciliation,
                since: dict[str, dict[int, int]], console: Console) -> None:
    """The linked-port scenario, once the worker follows every declared movement (as in the
    pilot: the movements are lodged before the barges sail)."""
    containers = {d.container_no for d in ports.declarations}
    if not _wait(console, f"the streams worker to follow {len(containers)} declared movements",
                 lambda: reconcile.following(settings, since[topics.TRANSIT], containers)):
        raise StackError("the streams worker did not follow the declared movements in time; "
                         "see its log in the run's directory")
    sim = simulation.run(
        ports.messages(), rate=0, total=None, duration=None,
        mqtt_settings=lambda port: mqtt_as(settings, edge_user(port or HOME_PORT)),
        truth_out=work / "transit-truth.jsonl", show_progress=False)
    report.published += sim.published
    report.valid += sim.valid
    report.unmatched += sim.unmatched
    console.print(f"[green]✓[/] linked ports: {len(containers)} containers' legs Shunde → "
                  f"Shekou published ({sim.published} readings at both ports)")


def render(report: Reconciliation, console: Console) -> None:
    table = Table("stage", "count", "expected", "ok", title="smartport demo: reconciliation")

    def row(stage: str, count: int, expected: int | None) -> None:
        ok = "" if expected is None else ("[green]✓[/]" if count == expected else "[red]✗[/]")
        table.add_row(stage, f"{count:,}", "" if expected is None else f"{expected:,}", ok)

    row("published over MQTT (QoS 1, acknowledged)", report.published, None)
    if report.unmatched:
        row("  re-sent after PUBACK 'no matching subscribers'", report.unmatched, None)
    row("  readings right after a device restarted its seq", report.restarts, None)
    row("valid readings → telemetry.v1 (distinct reading_id)", report.in_kafka, report.valid)
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
    if report.transit is not None:
        _render_transit(report.transit, console)
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


def _render_transit(transit: reconcile.TransitReconciliation, console: Console) -> None:
    def mark(ok: bool) -> str:
        return "[green]✓[/]" if ok else "[red]✗[/]"

    clean, statuses = transit.clean, list(transit.clearance.values())
    table = Table("linked ports Shunde → Shekou", "count", "expected", "ok",
                  title="one declaration, two ports")
    table.add_row("containers declared once at the origin, with a movement",
                  f"{len(transit.clearance_expected):,}", "", "")
    discharged = {n for n, status in transit.clearance.items() if status == "green"}
    table.add_row("discharged on one declaration (clearance green)", f"{len(discharged):,}",
                  f"{len(clean):,}", mark(discharged == clean))
    table.add_row("discharge certificates issued (exactly one per clean transit)",
                  f"{sum(transit.certificates.values()):,}", f"{len(clean):,}",
                  mark(transit.certificates_match))
    table.add_row("held at the destination (clearance held)", f"{statuses.count('held'):,}",
                  f"{len(transit.injected):,}",
                  mark(transit.clearance == transit.clearance_expected))
    console.print(table)
    faults = Table("transit fault", "injected", "check it must fail", "found once, naming it",
                   "missed", "unexpected", title="transit faults against the ground truth")
    expected = {n: (rule, check) for n, (_, rule, check) in transit.injected.items()}
    for fault in sorted({fault for fault, _, _ in transit.injected.values()}):
        mine = {n for n, (f, _, _) in transit.injected.items() if f == fault}
        check = next(transit.injected[n][2] for n in mine)
        found = {n for n in mine if transit.found.get(n) == expected[n]}
        faults.add_row(fault, str(len(mine)), check or "(deadline passed)", str(len(found)),
                       str(len(mine - found)), "")
    unexpected = sorted(set(transit.found) - set(expected))
    faults.add_row("(none injected)", "0", "", "0", "", str(len(unexpected)))
    console.print(faults)
    if transit.transit_s:
        minutes = sorted(s / 60 for s in transit.transit_s)
        console.print(f"transit time departure → discharge (event time), certified legs: "
                      f"min {minutes[0]:.1f} min, median {statistics.median(minutes):.1f} min, "
                      f"max {minutes[-1]:.1f} min")
    console.print(f"discharge certificate verified offline and on the ledger: "
                  f"{transit.receipt or '[red]none[/]'}, signed by terminal key "
                  f"{transit.signed_by or '[red]none[/]'}")
