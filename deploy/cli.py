"""The `smartport` command: parses arguments, calls one library function, maps errors to exits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from smartport.errors import ConfigError, InputRejected, SmartportError
from smartport.settings import Settings, load_settings

if TYPE_CHECKING:
    from anchoring.ledgers.file import FileLedger
    from deploy.stack import ServiceStatus

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
stack_app = typer.Typer(no_args_is_help=True, help="The local services on 127.0.0.1.")
schemas_app = typer.Typer(no_args_is_help=True, help="Message schemas.")
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")

out = Console()
err = Console(stderr=True)

# A receipt's proof has log2(batch) nodes; a record is a Kafka message (1 MiB by default).
MAX_RECEIPT_BYTES = 1024 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024

MetricsPort = Annotated[int, typer.Option(
    min=0, max=65535, help="serve Prometheus metrics on 127.0.0.1:PORT (0 = off)")]


def _serve_metrics(port: int) -> None:
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1")


class State:
    config: Path | None = None

    def settings(self) -> Settings:
        try:
            return load_settings(self.config)
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"invalid settings: {exc}") from exc


state = State()


@app.callback()
def _global(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (else $SMARTPORT_CONFIG)")
    ] = None,
) -> None:
    """smartport: MQTT ingest, customs cross-validation, ledger anchoring, ClickHouse analytics."""
    state.config = config


@stack_app.command("up")
def stack_up(
    brokers: Annotated[int | None, typer.Option(
        min=1, max=9, help="Kafka nodes on loopback (3 = a replicated cluster); same as "
        "SMARTPORT_KAFKA__BROKERS, which every other command must see too")] = None,
) -> None:
    """Install what is missing, start Kafka, Mosquitto, ClickHouse and anvil; create topics."""
    import os

    from deploy import stack

    if brokers is not None:  # through the environment, so that derived defaults follow
        os.environ["SMARTPORT_KAFKA__BROKERS"] = str(brokers)
    settings = state.settings()
    _print_status(stack.up(settings, err))
    if settings.kafka.brokers > 1 and brokers is not None:
        err.print(f"a {settings.kafka.brokers}-node Kafka cluster: export "
                  f"SMARTPORT_KAFKA__BROKERS={settings.kafka.brokers} for the other commands")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services that `stack up` started from this state directory."""
    from deploy import stack

    stopped = stack.down(state.settings())
    err.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack_app.command("status")
def stack_status() -> None:
    """Health of every service; exits 3 when any is unhealthy."""
    from deploy import stack

    statuses = stack.status(state.settings())
    _print_status(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(3)


@stack_app.command("mqtt-user")
def stack_mqtt_user(
    username: Annotated[str, typer.Argument(
        help="a device id, edge-<locode> (a port's edge gateway), or a role: "
        "smartport-gateway, smartport-streams, customs-officer")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    port: Annotated[str | None, typer.Option(help="a device's UN/LOCODE, e.g. CNSHK")] = None,
    kind: Annotated[str | None, typer.Option(
        help="a device's kind: container, crane, rtg, gate; or edge (user edge-<locode>)")] = None,
) -> None:
    """Add or replace a user of the MQTT broker (127.0.0.1:1883 and :8883): a device may
    publish only port/<port>/<kind>/<its id>/telemetry, a port's edge gateway only its port's
    telemetry; roles as deploy/mqtt_access.py."""
    from deploy import stack

    stack.add_mqtt_user(state.settings(), username, password, port=port, kind=kind)
    err.print(f"MQTT user {username!r} saved; the broker reloaded its password file")


def _print_status(statuses: list[ServiceStatus]) -> None:
    table = Table("service", "endpoint", "health", "pid", "log")
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, s.endpoint, health, str(s.pid or "-"), str(s.log))
    out.print(table)


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="output directory")]) -> None:
    """Write the JSON Schema of every message into DIRECTORY."""
    from schemas.registry import export_json_schemas

    for path in export_json_schemas(directory):
        out.print(str(path))


@schemas_app.command("asyncapi")
def schemas_asyncapi(
    check: Annotated[bool, typer.Option(help="fail if schemas/asyncapi.yaml is stale")] = False,
) -> None:
    """Regenerate schemas/asyncapi.yaml from the models (or --check it)."""
    from schemas import asyncapi

    if check:
        if asyncapi.ASYNCAPI_PATH.read_text() != asyncapi.render():
            raise ConfigError(
                f"{asyncapi.ASYNCAPI_PATH} is stale: run `smartport schemas asyncapi`"
            )
        return
    out.print(str(asyncapi.write()))


@app.command("gateway")
def gateway(
    gateway_id: Annotated[str, typer.Option(
        help="stable id: the MQTT client id of this gateway's persistent session")] = "",
    share_group: Annotated[str, typer.Option(
        help="MQTT shared-subscription group (default from settings: none, a plain "
        "subscription the broker keeps across its restarts)")] = "",
    subscribe: Annotated[list[str] | None, typer.Option(
        help="telemetry filter to subscribe to (repeatable), e.g. port/+/crane/+/telemetry: "
        "split the topic space among gateways (default from settings: all telemetry)")] = None,
    receive_maximum: Annotated[int | None, typer.Option(
        min=1, max=65535, help="MQTT messages in flight at once (bounds memory; default from "
        "settings: mqtt.receive_maximum)")] = None,
    metrics_port: MetricsPort = 0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Run an MQTT → Kafka gateway until SIGTERM/SIGINT."""
    import socket

    from ingest.gateway import Gateway
    from smartport import logs

    logs.configure(log_level)
    settings = state.settings()
    _serve_metrics(metrics_port)
    Gateway(
        settings,
        gateway_id or f"gw-{socket.gethostname()}",
        share_group=share_group or None,
        receive_maximum=receive_maximum,
        subscriptions=_telemetry_filters(subscribe),
    ).run()


def _telemetry_filters(filters: list[str] | None) -> tuple[str, ...] | None:
    from schemas.topics import check_telemetry_filters

    try:
        return check_telemetry_filters(tuple(filters)) if filters else None
    except ValueError as exc:
        raise ConfigError(f"--subscribe {exc}") from None


declarations_app = typer.Typer(no_args_is_help=True, help="Customs declarations intake.")
app.add_typer(declarations_app, name="declarations")


@declarations_app.command("load")
def declarations_load(
    file: Annotated[Path, typer.Argument(help="JSON Lines (.jsonl) or CSV (.csv) declarations")],
) -> None:
    """Validate FILE and produce its declarations to declarations.v1 (exit 4 if any rejected)."""
    from ingest import declarations

    report = declarations.load(state.settings(), file)
    err.print(f"loaded {report.produced} declarations from {file}")


@app.command("simulate")
def simulate(
    devices: Annotated[int, typer.Option(min=3, help="devices in the fleet")] = 50,
    rate: Annotated[float, typer.Option(min=0, help="messages per second (0 = max)")] = 100.0,
    duration: Annotated[float | None, typer.Option(min=0, help="seconds to run")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="messages to publish")] = None,
    seed: Annotated[int, typer.Option(help="same seed, same fleet and anomalies")] = 1,
    anomaly_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    invalid_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    reboot_rate: Annotated[float, typer.Option(
        min=0, max=1, help="chance a device restarts (its seq starts again) before a reading")
    ] = 0.0,
    declarations_out: Annotated[Path | None, typer.Option(help="write declarations here")] = None,
    truth: Annotated[Path | None, typer.Option(help="write injected anomalies here")] = None,
    emit_jsonl: Annotated[Path | None, typer.Option(help="write messages here, not MQTT")] = None,
    report_out: Annotated[Path | None, typer.Option("--report", help="JSON summary")] = None,
) -> None:
    """Simulate a terminal's devices publishing telemetry over MQTT (QoS 1)."""
    import json

    from ingest import simulate as simulation
    from ingest.fleet import HOME_PORT, Fleet, FleetConfig, step_for_rate
    from smartport.mqtt import edge_user, mqtt_as

    if duration is None and count is None:
        raise ConfigError("give --duration SECONDS or --count MESSAGES (or both)")
    settings = state.settings()
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, step=step_for_rate(rate),
                              anomaly_rate=anomaly_rate,
                              invalid_rate=invalid_rate, reboot_rate=reboot_rate,
                              max_payload_bytes=settings.max_payload_bytes))
    if declarations_out:
        written = simulation.write_declarations(fleet, declarations_out)
        err.print(f"wrote {written} declarations to {declarations_out}")
    report = simulation.run(
        fleet.messages(), rate=rate,
        mqtt_settings=lambda port: mqtt_as(settings, edge_user(port or HOME_PORT)),
        total=count, duration=duration, truth_out=truth, emit_jsonl=emit_jsonl,
        show_progress=err.is_terminal,
    )
    summary = json.dumps(report.as_dict())
    if report_out:
        report_out.write_text(summary + "\n")
    err.print(summary, highlight=False, soft_wrap=True)


@app.command("simulate-transit")
def simulate_transit(
    containers: Annotated[int, typer.Option(min=1, help="containers moved (the pilot: 200)")]
    = 200,
    fault_rate: Annotated[float, typer.Option(
        min=0, max=1, help="share of containers with one injected transit fault")] = 0.0,
    seed: Annotated[int, typer.Option(help="same seed, same containers and faults")] = 1,
    rate: Annotated[float, typer.Option(min=0, help="messages per second (0 = max)")] = 200.0,
    declarations_out: Annotated[Path | None, typer.Option(help="write declarations here")] = None,
    truth: Annotated[Path | None, typer.Option(help="write each faulty container's expected "
                                               "alert and check here")] = None,
    emit_jsonl: Annotated[Path | None, typer.Option(help="write messages here, not MQTT")] = None,
) -> None:
    """Simulate linked ports: containers declared once at Shunde (CNSUD) go by barge to Shekou
    (CNSHK), their devices publishing at both ports (each port's edge gateway)."""
    import json

    from ingest import simulate as simulation
    from ingest.linked import LinkedConfig, LinkedPorts
    from smartport.mqtt import edge_user, mqtt_as

    settings = state.settings()
    linked = LinkedPorts(LinkedConfig(containers=containers, seed=seed, fault_rate=fault_rate))
    if declarations_out:
        written = simulation.write_declarations(linked, declarations_out)
        err.print(f"wrote {written} declarations to {declarations_out}")
    if truth:
        truth.write_text("".join(json.dumps({
            "container_no": t.declaration.container_no, "fault": t.fault,
            "rule": t.expected[0].value, "check": t.expected[1].value if t.expected[1] else None,
        }) + "\n" for t in linked.transits if t.expected))
    report = simulation.run(
        linked.messages(), rate=rate, total=None, duration=None, emit_jsonl=emit_jsonl,
        mqtt_settings=lambda port: mqtt_as(settings, edge_user(port)),
        show_progress=err.is_terminal)
    err.print(json.dumps(report.as_dict()), highlight=False, soft_wrap=True)


@app.command("demo")
def demo(
    duration: Annotated[float, typer.Option(min=1, help="seconds of simulated traffic")] = 60.0,
    rate: Annotated[float, typer.Option(min=1, help="messages per second")] = 500.0,
    devices: Annotated[int, typer.Option(min=3, help="devices in the fleet")] = 200,
    seed: Annotated[int, typer.Option(help="fleet seed")] = 1,
    linked: Annotated[int, typer.Option(min=0, help=(
        "containers of the linked-port scenario after the fleet (declared at Shunde, moved by "
        "barge to Shekou; a tenth with a transit fault); 0 = none"))] = 200,
    ledger: Annotated[str, typer.Option(
        help="file (embedded, Ed25519-signed) or evm (the stack's local chain)")] = "file",
    clickhouse: Annotated[str, typer.Option(
        help="clickhouse://host:9000/db for a ClickHouse server; empty = embedded chDB")] = "",
) -> None:
    """The main job: fleet → MQTT → gateway → Kafka → streams, anchorer, sink for DURATION,
    with a live status view, then the linked-port scenario (the pilot's 200 TEU); then
    reconcile every count and exit 1 if anything does not."""
    from deploy import demo as main_job
    from deploy.services import ANVIL_PORT, Anvil

    settings = state.settings()
    overrides: dict[str, object] = {}
    if ledger == "evm":
        overrides["ledger_url"] = f"evm+http://127.0.0.1:{ANVIL_PORT}"
        overrides["ledger_key_file"] = Anvil(settings.state_dir).dev_key_file
    elif ledger != "file":
        raise ConfigError(f"--ledger {ledger!r}: use file or evm")
    if clickhouse:
        if not clickhouse.startswith("clickhouse://"):
            raise ConfigError(f"--clickhouse {clickhouse!r}: give a URL like "
                              "clickhouse://127.0.0.1:9000/default")
        overrides["clickhouse_url"] = clickhouse
    env = {f"SMARTPORT_{name.upper()}": str(value) for name, value in overrides.items()}
    if state.config is not None:  # the started processes read the same file
        env["SMARTPORT_CONFIG"] = str(state.config.resolve())
    report = main_job.run(settings.model_copy(update=overrides), duration=duration, rate=rate,
                          devices=devices, seed=seed, console=err, env=env, linked=linked)
    main_job.render(report, out)
    if not report.reconciled:
        raise typer.Exit(1)


ledger_app = typer.Typer(no_args_is_help=True, help="The anchoring ledger.")
app.add_typer(ledger_app, name="ledger")


@app.command("anchor")
def anchor(
    topic: Annotated[list[str] | None, typer.Option(
        help="topic to anchor (repeatable; default from settings: anchor_topics)")] = None,
    group: Annotated[str, typer.Option(help="Kafka consumer group")] = "smartport-anchor",
    metrics_port: MetricsPort = 0,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Batch records into Merkle trees and anchor their roots to the ledger, until SIGTERM."""
    from anchoring.ledgers.factory import open_ledger, periodic_witness
    from anchoring.service import Anchorer
    from smartport import logs

    logs.configure(log_level)
    settings = state.settings()
    _serve_metrics(metrics_port)
    ledger = open_ledger(settings)
    Anchorer(settings, ledger, group=group, source_topics=tuple(topic) if topic else None,
             witness=periodic_witness(settings, ledger)).run()


@app.command("receipt")
def receipt(
    topic: Annotated[str, typer.Option(help="Kafka topic of the record")],
    partition: Annotated[int, typer.Option(min=0)],
    offset: Annotated[int, typer.Option(min=0)],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="receipt file")] = None,
    record_out: Annotated[Path | None, typer.Option(help="also save the record's bytes")] = None,
) -> None:
    """Write the self-contained receipt of one anchored record."""
    from anchoring import receipts
    from schemas import encode

    value, record = receipts.build(state.settings(), topic, partition, offset)
    if output:
        output.write_bytes(encode(value) + b"\n")
    else:
        out.print(encode(value).decode(), highlight=False, soft_wrap=True)
    if record_out:
        record_out.write_bytes(record)


TrustLedger = Annotated[list[str] | None, typer.Option(
    help="a ledger id you trust (repeatable; setting: trusted_ledgers): a file ledger's "
    "key fingerprint or an EVM account eip155:<chain>:<address>, as the operator "
    "published it (`smartport ledger id` on the operator's side)")]


def _trusted(trust_ledger: list[str] | None) -> set[str]:
    trusted = set(trust_ledger or state.settings().trusted_ledgers)
    if not trusted:
        raise ConfigError("name the ledger you trust: --trust-ledger ID (or the setting "
                          "trusted_ledgers); the operator publishes it, and `smartport ledger id` "
                          "prints it on the operator's machine")
    return trusted


@app.command("verify")
def verify(
    receipt_file: Annotated[Path, typer.Argument(help="receipt JSON")],
    record: Annotated[Path, typer.Option(help="file holding the record's exact bytes")],
    trust_ledger: TrustLedger = None,
    trust_terminal: Annotated[list[str] | None, typer.Option(
        help="for a discharge certificate: a terminal key id you trust (repeatable; setting: "
        "trusted_terminals), as the terminal published it (`smartport terminal-key`)")] = None,
) -> None:
    """Check a receipt's proofs offline, then its anchor on a ledger you trust (exit 1 if
    invalid). Proves: these exact bytes are the record at the receipt's topic/partition/offset,
    in a batch the named ledger anchored. A discharge certificate must also carry the signature
    of a terminal you trust."""
    from pydantic import ValidationError

    from anchoring import verify as verification
    from anchoring.ledgers.factory import open_ledger
    from schemas import Receipt, topics
    from smartport.files import read_bounded

    settings = state.settings()
    trusted = _trusted(trust_ledger)
    receipt_bytes = read_bounded(receipt_file, MAX_RECEIPT_BYTES, "a receipt")
    record_bytes = read_bounded(record, MAX_RECORD_BYTES, "a record")
    try:
        parsed = Receipt.model_validate_json(receipt_bytes)
    except ValidationError as exc:
        raise InputRejected(f"{receipt_file} is not a smartport receipt: {exc}") from None
    verification.verify(parsed, record_bytes, open_ledger(settings, writable=False), trusted)
    signed = ""
    if parsed.record.topic == topics.CERTIFICATES:
        terminals = set(trust_terminal or settings.trusted_terminals)
        if not terminals:
            raise ConfigError("a discharge certificate is vouched for by its terminal: name the "
                              "terminal key you trust with --trust-terminal ID (or the setting "
                              "trusted_terminals); `smartport terminal-key` prints it on the "
                              "terminal's side")
        signed = (", signed by terminal key "
                  f"{verification.verify_certificate(record_bytes, terminals)}")
    out.print(f"[green]valid[/]: {parsed.record.topic}/{parsed.record.partition}@"
              f"{parsed.record.offset} is in batch {parsed.manifest.batch_id}, anchored as "
              f"{parsed.ledger.kind} ledger {parsed.ledger.ledger_id} entry {parsed.ledger.entry}"
              f"{signed}")


@app.command("terminal-key")
def terminal_key() -> None:
    """Print the id of the key this terminal signs discharge certificates with (made on first
    use): publish it for customs and trade partners (`smartport verify --trust-terminal`)."""
    from smartport.ed25519 import fingerprint, own_key

    key = own_key(state.settings().resolved_terminal_key_file)
    out.print(fingerprint(key.public_key()), highlight=False)


@ledger_app.command("id")
def ledger_id() -> None:
    """Print the id of the ledger this installation anchors to: publish it for verifiers."""
    from anchoring.ledgers.factory import own_ledger_id

    out.print(own_ledger_id(state.settings()), highlight=False)


def _file_ledger(writable: bool) -> FileLedger:
    from anchoring.ledgers.factory import open_ledger
    from anchoring.ledgers.file import FileLedger

    ledger = open_ledger(state.settings(), writable=writable)
    if not isinstance(ledger, FileLedger):
        raise ConfigError("this command is for a file:// ledger; an EVM chain keeps its own "
                          "history (check receipts against it with `smartport verify`)")
    return ledger


@ledger_app.command("verify")
def ledger_verify(
    expect_key: Annotated[str | None, typer.Option(
        help="the ledger id you trust (its first key's fingerprint, `smartport ledger id`)")
    ] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="a checkpoint (or a receipt carrying one, or a witnessed one from `ledger "
        "witness`) the ledger must still be consistent with (repeatable)")] = None,
    remember: Annotated[bool, typer.Option(
        help="check against what the last run saw, then remember this run's size and root "
        "(in STATE_DIR/verifier)")] = True,
    trust_ledger: Annotated[list[str] | None, typer.Option(
        help="for witnessed checkpoints: the EVM account you trust as the witness "
        "(eip155:<chain>:<address>; setting: trusted_ledgers)")] = None,
) -> None:
    """Check the file ledger: every entry's chain, hash and signature (and the key history),
    the key you expect, and that it only grew since every checkpoint you hold (exit 1 if not).
    A witnessed checkpoint is first checked on the witness chain (ledger_witness_url)."""
    from anchoring.ledgers.audit import audit, read_checkpoint, read_witnessed
    from anchoring.ledgers.factory import open_witness
    from anchoring.witness import check_witness

    witnessed = [w for w in map(read_witnessed, checkpoint or []) if w is not None]
    if witnessed:
        chain = open_witness(state.settings(), writable=False)
        if chain is None:
            raise ConfigError("a witnessed checkpoint is checked on its chain: set "
                              "SMARTPORT_LEDGER_WITNESS_URL to a node of it (evm+http://…)")
        for one in witnessed:
            check_witness(one, chain, _trusted(trust_ledger))
            err.print(f"witnessed: size {one.checkpoint.size} by {one.witness.ledger_id} in "
                      f"{one.witness.entry}", highlight=False, soft_wrap=True)
    checkpoints = [read_checkpoint(path) for path in checkpoint or []]
    report = audit(_file_ledger(writable=False), expect_key=expect_key, checkpoints=checkpoints,
                   verifier_dir=state.settings().state_dir / "verifier" if remember else None)
    if report.torn_tail_bytes:
        err.print(f"[yellow]warning[/]: the last {report.torn_tail_bytes} bytes are a torn "
                  "line (a crash mid-append), not an entry; the anchorer sets them aside",
                  soft_wrap=True)
    keys = f"key {report.key_id}" + (f" after {report.rotations} rotation(s)"
                                     if report.rotations else "")
    out.print(f"[green]intact[/]: {report.entries} entries of ledger {report.ledger_id}, "
              f"signed by {keys}" + "".join(f"; consistent with the {c}"
                                             for c in report.checked),
              highlight=False, soft_wrap=True)


@ledger_app.command("checkpoint")
def ledger_checkpoint(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="checkpoint file")]
    = None,
) -> None:
    """Sign and print the ledger's checkpoint (size, Merkle root, last entry): hand it to those
    who verify, so they can later prove the ledger only grew."""
    from schemas import encode

    value = encode(_file_ledger(writable=True).checkpoint())
    if output:
        output.write_bytes(value + b"\n")
    else:
        out.print(value.decode(), highlight=False, soft_wrap=True)


@ledger_app.command("witness")
def ledger_witness(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="witnessed checkpoint "
                                                "file")] = None,
) -> None:
    """Witness the ledger's checkpoint now on the chain of ledger_witness_url (the anchorer
    does it every ledger_witness_seconds) and print it: publish it for verifiers."""
    from anchoring.ledgers.factory import open_witness
    from anchoring.witness import witness
    from schemas import encode

    chain = open_witness(state.settings())
    if chain is None:
        raise ConfigError("set SMARTPORT_LEDGER_WITNESS_URL (evm+http://host:8545) and the "
                          "signing key SMARTPORT_LEDGER_KEY or SMARTPORT_LEDGER_KEY_FILE")
    value = encode(witness(_file_ledger(writable=True).checkpoint(), chain))
    if output:
        output.write_bytes(value + b"\n")
    else:
        out.print(value.decode(), highlight=False, soft_wrap=True)


@ledger_app.command("consistency")
def ledger_consistency(
    old: Annotated[Path, typer.Argument(help="the earlier checkpoint")],
    new: Annotated[Path, typer.Argument(help="the later checkpoint")],
) -> None:
    """Prove from the ledger that NEW extends OLD (RFC 9162 consistency proof; exit 1 if not)."""
    from anchoring.ledgers.audit import read_checkpoint

    earlier, later = read_checkpoint(old), read_checkpoint(new)
    proof = _file_ledger(writable=False).consistency_proof(earlier, later)
    out.print(f"[green]consistent[/]: size {earlier.size} → {later.size}, proof "
              f"[{', '.join(node.hex() for node in proof)}]", highlight=False, soft_wrap=True)


@ledger_app.command("rotate-key")
def ledger_rotate_key() -> None:
    """Sign a new ledger key with the current one; it signs every later entry. Receipts and
    checkpoints signed before stay valid, and the ledger id does not change."""
    ledger = _file_ledger(writable=True)
    out.print(f"new key {ledger.rotate_key()} for ledger {ledger.ledger_id}", highlight=False)


alerts_app = typer.Typer(no_args_is_help=True, help="Customs officers' actions on alerts.")
app.add_typer(alerts_app, name="alerts")
Officer = Annotated[str, typer.Option(help="who acts: name or badge, recorded in the alert")]
Reason = Annotated[str, typer.Option(help="why, recorded in the alert")]


def _officer_action(alert_id: str, action: str, officer: str, reason: str) -> None:
    from streams import officers

    event = officers.send(state.settings(), alert_id, "close" if action == "close"
                          else "acknowledge", officer=officer, reason=reason)
    out.print(f"{event.alert_id} {event.state.value} by {event.officer} (version "
              f"{event.version})", highlight=False)


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[str, typer.Argument(help="<container>/<rule>/<incident>")],
               officer: Officer, reason: Reason) -> None:
    """Acknowledge an open alert: it stays open, marked as seen by OFFICER."""
    _officer_action(alert_id, "acknowledge", officer, reason)


@alerts_app.command("close")
def alerts_close(alert_id: Annotated[str, typer.Argument(help="<container>/<rule>/<incident>")],
                 officer: Officer, reason: Reason) -> None:
    """Close an alert: the only way a critical alert ends (telemetry never clears it)."""
    _officer_action(alert_id, "close", officer, reason)


@app.command("streams")
def streams(
    rules: Annotated[Path | None, typer.Option(help="TOML file of rule thresholds")] = None,
    app_id: Annotated[str, typer.Option(
        help="faust app id: consumer group and table changelog prefix")] = "smartport-streams",
    offset_reset: Annotated[str, typer.Option(
        help="where a new app id starts: earliest, or latest (the end of its sources when "
             "first started, kept until its first commit)")] = "earliest",
    instance_id: Annotated[str | None, typer.Option(
        help="this worker's own id among those of its app id, kept across its restarts "
             "(static group membership: a restarted worker takes its partitions back at once "
             "instead of after the 60-s session timeout; no two running workers may share "
             "it)")] = None,
    web_port: Annotated[int, typer.Option(
        min=0, max=65535, help="serve faust's web views on 127.0.0.1:PORT (0 = off)")] = 0,
    metrics_port: MetricsPort = 0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
) -> None:
    """Run a customs cross-validation worker (faust) until SIGTERM; start more to scale out."""
    from streams.app import check_worker_ids, create_app, run_worker
    from streams.rules.thresholds import load_thresholds

    if offset_reset not in ("earliest", "latest"):
        raise ConfigError(f"--offset-reset {offset_reset!r}: use earliest or latest")
    check_worker_ids(app_id, instance_id)
    settings = state.settings()
    _serve_metrics(metrics_port)
    run_worker(create_app(settings, load_thresholds(rules), app_id=app_id,
                          offset_reset=offset_reset, web_port=web_port or None,
                          instance_id=instance_id),
               settings, log_level)


@app.command("sink")
def sink(
    metrics_port: MetricsPort = 0,
    group: Annotated[str, typer.Option(help="Kafka consumer group")] = "smartport-sink",
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR")] = "INFO",
) -> None:
    """Write telemetry, alerts, declarations, anchors and the DLQ into ClickHouse, until SIGTERM."""
    from smartport import logs
    from streams.analytics import query_server
    from streams.analytics.migrations import ensure_schema
    from streams.analytics.sink import Sink
    from streams.analytics.store import ChdbStore, open_store

    logs.configure(log_level)
    settings = state.settings()
    store = open_store(settings.resolved_clickhouse_url)
    ensure_schema(store, settings.clickhouse_ttl_days)
    _serve_metrics(metrics_port)
    server = None
    if isinstance(store, ChdbStore):  # chDB is locked by this process: analysts ask through it
        server = query_server.serve(store.read, store.read_raw, settings.query_port,
                                    settings.query_token_file)
    try:
        Sink(settings, store, group=group).run()
    finally:  # chDB torn down at interpreter exit, under a live server thread, can segfault
        if server is not None:
            server.shutdown()
        store.close()


@app.command("sql")
def sql(
    query: Annotated[str, typer.Argument(help="a ClickHouse SQL query")],
    output_format: Annotated[str, typer.Option(
        "--format", help="table, csv or json")] = "table",
) -> None:
    """Run QUERY against the configured ClickHouse store and print the result."""
    from streams.analytics.query import query as ask

    if output_format not in ("table", "csv", "json"):
        raise ConfigError(f"--format {output_format!r}: use table, csv or json")
    columns, rows = ask(state.settings(), query)
    _print_result(columns, rows, output_format)


def _print_result(columns: list[str], rows: list[tuple[object, ...]], output_format: str) -> None:
    import csv
    import json
    import sys

    if output_format == "json":
        for row in rows:
            out.print(json.dumps(dict(zip(columns, row, strict=True)), default=str),
                      highlight=False, soft_wrap=True)
    elif output_format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*(str(value) for value in row))
        out.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn our error family into a message and an exit code."""
    try:
        app(args=argv, prog_name="smartport")  # usage errors print themselves and exit 2
    except SmartportError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
