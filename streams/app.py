"""`smartport streams`: the faust app that cross-validates telemetry against declarations.

Three co-partitioned source topics (telemetry.v1, declarations.v1, customs.alert-commands.v1,
keyed by container number), two changelog-backed tables keyed the same way (the current
declaration, and each container's rule state with its open alerts), one agent per source
topic; the state table's two writers (readings, officers' commands) change a state between
awaits only, so they never interleave within one. telemetry.v1 reaches its agent through the
worker's relay (streams.relay) as micro-batches of records on an internal topic partitioned as
telemetry.v1: faust's cost is per Kafka record, and one reading per record bounded the worker at
faust's own floor. Alert events go to customs.alerts.v1 (keyed by container number)
and to MQTT ``port/<locode>/alerts/<severity>/<container>`` (QoS 1).
Processing is at-least-once: after a crash the readings since the last commit are replayed from
the state written back at that commit (streams.state_table), and re-sent alert events carry the
same (alert_id, version); the state's dedup set skips a reading delivered twice.

The worker works or exits: its tables' changelog topics are created (with the app's partition
count) before faust starts, so no agent meets a changelog missing from the metadata; and an agent
that crashes ends the worker with a non-zero exit (faust's default supervisor restarts a failing
agent forever while the process looks healthy), for a supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
import mode
from faust.types import StreamT
from prometheus_client import Gauge
from pydantic import BaseModel, ValidationError

from schemas import Alert, AlertCommand, Declaration, Evidence, GatewayEnvelope, encode, topics
from schemas.base import describe_validation_error
from schemas.topics import mqtt_alert_topic
from schemas.transit import RecordPosition, TransitPhase
from smartport.ed25519 import own_key
from smartport.errors import ConfigError, StackError
from smartport.kafka import ensure_topics, start_at_end
from smartport.mqtt import STREAMS_USER, mqtt_as, new_client
from smartport.readiness import GROUP, NotWorking, Readiness
from smartport.settings import KafkaSettings, MqttSettings, Settings
from streams.faust_kafka import App
from streams.micro_batch import MalformedBatch, unpack
from streams.relay import (
    BATCH_TOPIC_MAX_BYTES,
    RELAY,
    TelemetryRelay,
    batches_topic,
    relay_group,
)
from streams.rules.engine import Outcome, command, declare, evaluate, sweep_transit
from streams.rules.state import EARLY_KEPT, ContainerState
from streams.rules.thresholds import Thresholds
from streams.state_table import ChangelogWriter, Parsed, StateTable, WriteBackOnCommit
from streams.transit.dcsa import customs_event
from streams.transit.signature import sign
from streams.transit.state import OPEN_PHASES

log = logging.getLogger(__name__)
APP_ID = "smartport-streams"
DECLARATIONS_TABLE = "declarations"
STATE_TABLE = "container-state"
OPEN_MOVEMENTS_TABLE = "open-movements"
OVERDUE_TICKS = "overdue-ticks"  # internal topic: <app id>-overdue-ticks
OVERDUE_SWEEP_S = 10.0
ARRIVED = b"arrived"  # an open movement's entry once it arrived: due for judging
READY_GAUGE = Gauge("smartport_streams_ready",
                    "1 while the worker holds its partitions with its tables recovered")
WATCHDOG_S = 5.0
CRASH_STOP_GRACE_S = 15.0
PRODUCER_LINGER_S = 0.02
# How long the broker waits for a silent member (faust's default, made explicit): a killed
# worker's successor joins its group only once the broker has given up on the dead member,
# unless both have the same ``instance_id`` (static membership: the successor takes its place).
SESSION_TIMEOUT_S = 60.0


class _OpenMovements:
    """Containers whose declared movement is under way (with its deadline) or arrived and
    not judged yet: what the transit sweep looks at. A changelog-backed table (a restarted
    worker still knows them), written when a movement changes phase, not per reading."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def note(self, key: bytes, state: ContainerState, declaration: Declaration | None) -> None:
        movement = declaration.movement if declaration else None
        transit = state.transit
        if movement and transit and transit.movement_id == movement.movement_id and (
                transit.phase in OPEN_PHASES | {TransitPhase.ARRIVED}):
            due = (ARRIVED if transit.phase == TransitPhase.ARRIVED
                   else movement.deadline.isoformat().encode())
            if self._table.get(key) != due:
                self._table[key] = due
        elif self._table.get(key) is not None:
            del self._table[key]

    def due(self, clock: datetime) -> list[bytes]:
        """Movements past their deadline at ``clock`` (event time), and arrivals to judge."""
        return [key for key, due in list(self._table.items())
                if due == ARRIVED or datetime.fromisoformat(due.decode()) < clock]


class _EventClock:
    """The latest event time this worker has seen: the clock deadlines are held to (readings
    may lag the wall clock by hours: buffered at sea, or simulated)."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def see(self, ts: datetime) -> None:
        if self.now is None or ts > self.now:
            self.now = ts


class AlertPublisher(mode.Service):
    """The MQTT client that publishes alerts for field officers, connected while the worker
    runs. QoS 1; paho queues what is published while the broker is away."""

    def __init__(self, settings: MqttSettings, client_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._client = new_client(settings, client_id)

    async def on_start(self) -> None:
        self._client.connect_async(self._settings.host, self._settings.port)
        self._client.loop_start()

    async def on_stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1)


class RelayService(mode.Service):
    """The telemetry relay's thread, started and stopped with the worker."""

    def __init__(self, relay: TelemetryRelay, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._relay = relay

    async def on_start(self) -> None:
        self._relay.start()

    async def on_stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._relay.stop)


def faust_app(settings: Settings, app_id: str, *, web_port: int | None = None,
              instance_id: str | None = None) -> App:
    """A faust App configured as our workers run (benches measure faust's own floor with it).
    A new app id reads its topics from the start; ``create_app`` sets another start for
    ``latest`` by committing it. ``instance_id``: the worker's static group membership."""
    datadir = settings.state_dir / "streams" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return App(
        app_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        broker_credentials=faust_credentials(settings.kafka),
        store="memory://",  # the tables are rebuilt from their changelogs (StateTable)
        web_enabled=web_port is not None,  # faust's web server only when asked, on loopback
        web_port=web_port or 6066,
        web_bind="127.0.0.1",
        processing_guarantee="at_least_once",  # faust's exactly_once has open bugs
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(datadir),
        agent_supervisor=mode.CrashingSupervisor,  # a crashed agent ends the worker
        # Stopping does not wait for buffered events to be processed: a crashed agent never
        # acknowledges its event, and the wait hung the worker ("Wait for streams...", 1 stop
        # in 5). Nothing is lost: what was not acknowledged is not committed, so it is replayed.
        stream_wait_empty=False,
        # Fewer, larger produce requests: the broker's cost is per request, not per record.
        producer_linger=PRODUCER_LINGER_S,
        producer_compression_type="lz4",
        producer_max_batch_size=256 * 1024,
        broker_commit_interval=settings.batches.streams_commit_seconds,
        broker_session_timeout=SESSION_TIMEOUT_S,
        consumer_group_instance_id=instance_id,
    )


def create_app(settings: Settings, thresholds: Thresholds, *, app_id: str = APP_ID,
               offset_reset: str = "earliest",
               web_port: int | None = None, instance_id: str | None = None,
               topic_names: tuple[str, str, str] = (topics.TELEMETRY, topics.DECLARATIONS,
                                                    topics.ALERTS)) -> faust.App:
    """The app; ``topic_names`` (telemetry, declarations, alerts) are replaced only by benches.
    ``offset_reset`` is where a new app id starts: ``earliest``, or ``latest``, the end of its
    sources as of this call, committed at once so that it holds until the worker's own first
    commit (smartport.kafka.start_at_end); its internal topics are always read from the start."""
    partitions = settings.kafka.partitions
    if offset_reset == "latest":
        start_at_end(settings.kafka, relay_group(app_id), [topic_names[0]])
        start_at_end(settings.kafka, app_id, [topic_names[1], topics.ALERT_COMMANDS])
    app = faust_app(settings, app_id, web_port=web_port, instance_id=instance_id)
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "partitions": partitions}
    source = topic_names[0]
    declarations, alerts = (app.topic(name, **raw) for name in topic_names[1:])
    batches = app.topic(batches_topic(app_id), **raw)
    transit = {name: app.topic(name, **raw) for name in (
        topics.TRANSIT, topics.CERTIFICATES, topics.CLEARANCE, topics.PORT_EVENTS)}
    declaration_table = app.Table(DECLARATIONS_TABLE, **raw)
    state_table = app.Table(STATE_TABLE, **raw)
    open_movements = _OpenMovements(app.Table(OPEN_MOVEMENTS_TABLE, **raw))
    clock = _EventClock()
    officers = AlertPublisher(mqtt_as(settings, STREAMS_USER), f"{app_id}-alerts")
    terminal_key = own_key(settings.resolved_terminal_key_file)  # signs its certificates
    readiness = Readiness(READY_GAUGE, "streams", settings.kafka.join_timeout_s, (RELAY,))
    relay = TelemetryRelay(settings.kafka, source, app_id, readiness=readiness,
                           instance_id=instance_id)
    app.add_dependency(officers)  # started and stopped with the app (the worker)
    app.add_dependency(RelayService(relay))

    _watch_readiness(app, readiness, relay)
    states = _rule_states(app, settings.kafka, state_table, batches.get_topic_name(), readiness)
    current_declarations = Parsed(declaration_table, Declaration.model_validate_json)

    def publish_outcome(key: bytes, outcome: Outcome) -> None:
        for alert in outcome.alerts:
            publish(key, alert)
        for step in outcome.transit:
            transit[topics.TRANSIT].send_soon(key=key, value=encode(step))
        for port_event in outcome.port_events:
            transit[topics.PORT_EVENTS].send_soon(key=key, value=encode(port_event))
        certificate = outcome.certificate and sign(outcome.certificate, terminal_key)
        for name, made in ((topics.CERTIFICATES, certificate),
                           (topics.CLEARANCE, outcome.clearance)):
            if made is not None:
                transit[name].send_soon(key=key, value=encode(made))

    _keep_declarations(app, declarations, table=declaration_table,
                       current_declarations=current_declarations, states=states,
                       open_movements=open_movements, thresholds=thresholds, issuer=app_id,
                       publish=publish_outcome)

    _judge_telemetry(app, batches, source, states=states,
                     current_declarations=current_declarations, open_movements=open_movements,
                     clock=clock, thresholds=thresholds, issuer=app_id, publish=publish_outcome)

    def publish(key: bytes, alert: Alert) -> None:
        value = encode(alert)
        alerts.send_soon(key=key, value=value)
        officers.publish(mqtt_alert_topic(alert.port, alert.severity.value, alert.container_no),
                         value)

    _officer_commands(app, app.topic(topics.ALERT_COMMANDS, **raw), states=states,
                      current_declarations=current_declarations, thresholds=thresholds,
                      publish=publish)
    _transit_sweeps(app, app.topic(f"{app_id}-{OVERDUE_TICKS}", **raw), clock=clock,
                    open_movements=open_movements, states=states,
                    current_declarations=current_declarations, thresholds=thresholds,
                    issuer=app_id, publish=publish_outcome)
    return app


# Publishing queues the messages in faust's producer buffer (flushed before every offset commit)
# without yielding to the event loop: a commit, and the state write-back that starts it, never
# falls between a state change and the messages it caused. With an await there, a commit could
# write a state that had judged a reading whose alert was not yet queued; the reading, replayed
# after a crash, was then skipped as a redelivery and its alert lost (seen once batches made the
# agent await many times per event).
Publish = Callable[[bytes, Alert], None]
PublishOutcome = Callable[[bytes, Outcome], None]
M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], value: bytes, topic: str, partition: int, offset: int) -> M | None:
    """``value`` as ``model``; a record that is not one is logged and skipped."""
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        log.warning("skipping a %s record that is not a %s (partition %s, offset %s): %s",
                    topic, model.__name__, partition, offset, describe_validation_error(exc))
        return None


def _parse_event(model: type[M], event: Any) -> M | None:
    return _parse(model, event.value, event.message.topic, event.message.partition,
                  event.message.offset)


def _judge_telemetry(app: faust.App, batches: Any, source: str, *, states: StateTable,
                     current_declarations: Parsed[Declaration], open_movements: _OpenMovements,
                     clock: _EventClock, thresholds: Thresholds, issuer: str,
                     publish: PublishOutcome) -> None:
    """The agent that judges every reading of ``source`` (telemetry.v1), read as the relay's
    micro-batches, against its container's declaration and rule state."""

    @app.agent(batches, concurrency=1)
    async def cross_validate(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            partition = event.message.partition
            try:
                records = unpack(event.value)
            except MalformedBatch as exc:  # only the relay should write the topic
                log.error("skipping a %s record (partition %s, offset %s): %s",
                          event.message.topic, partition, event.message.offset, exc)
                continue
            for offset, value in records:
                envelope = _parse(GatewayEnvelope, value, source, partition, offset)
                if envelope is not None:
                    judge(envelope, partition, offset)

    def judge(envelope: GatewayEnvelope, partition: int, offset: int) -> None:
        reading = envelope.reading
        container = getattr(reading, "container_no", None)
        if container is None:
            return
        key = container.encode()
        state = states.get(key) or ContainerState()
        declaration = current_declarations.get(key)
        evidence = Evidence.of(envelope, source, partition, offset)
        clock.see(reading.ts)
        outcome = evaluate(reading, declaration, state, thresholds, evidence, issuer=issuer,
                           now=datetime.now(UTC))
        states.put(key, state, partition)
        if state.transit is not None:  # a reading moves a movement, never starts or ends it
            open_movements.note(key, state, declaration)
        publish(key, outcome)


def _keep_declarations(app: faust.App, declarations: Any, *, table: Any,
                       current_declarations: Parsed[Declaration],
                       states: StateTable, open_movements: _OpenMovements,
                       thresholds: Thresholds, issuer: str, publish: PublishOutcome) -> None:
    """The agent that keeps each container's current declaration, and starts following the
    movement a declaration declares."""

    @app.agent(declarations, concurrency=1)
    async def keep_declarations(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            key, value = event.key, event.value
            if value is None:  # a tombstone: the declaration was withdrawn
                table.pop(key, None)
                continue
            # Anyone who may write the topic could otherwise poison every later reading.
            declaration = _parse_event(Declaration, event)
            if declaration is None:
                continue
            previous = current_declarations.get(key)
            current_declarations.put(key, declaration, value)
            state = states.get(key) or ContainerState()
            if state.early_dropped:
                log.warning("%s: %d readings before its declaration were beyond the %d kept "
                            "and are not judged against it", declaration.container_no,
                            state.early_dropped, EARLY_KEPT)
            now = datetime.now(UTC)
            outcome = declare(state, declaration, thresholds, issuer=issuer, now=now)
            status = customs_event(declaration, previous, RecordPosition(
                topic=event.message.topic, partition=event.message.partition,
                offset=event.message.offset), now)
            outcome.port_events += [status] if status else []
            states.put(key, state, event.message.partition)
            open_movements.note(key, state, declaration)
            publish(key, outcome)


def _officer_commands(app: faust.App, commands: Any, *, states: StateTable,
                      current_declarations: Parsed[Declaration], thresholds: Thresholds,
                      publish: Publish) -> None:
    """The agent that applies officers' acknowledgements and closings to the state table."""

    @app.agent(commands, concurrency=1)
    async def officer_commands(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            order = _parse_event(AlertCommand, event)
            if order is None:
                continue
            key = order.container_no.encode()
            state = states.get(key)
            if event.key != key or state is None:
                log.warning("alert command for %s not applied: %s", order.alert_id,
                            "keyed by another container" if state else "no such container")
                continue
            alert = command(state, order, current_declarations.get(key), thresholds)
            if alert is None:
                log.info("alert command for %s changes nothing: not open (closed, a replay, "
                         "or an earlier incident)", order.alert_id)
                continue
            states.put(key, state, event.message.partition)
            publish(key, alert)


def _transit_sweeps(app: faust.App, ticks: Any, *, clock: _EventClock,
                    open_movements: _OpenMovements, states: StateTable,
                    current_declarations: Parsed[Declaration], thresholds: Thresholds,
                    issuer: str, publish: PublishOutcome) -> None:
    """What the clock decides: overdue is raised when the deadline passes, even if the
    container's tracker fell silent, and an arrival is judged once its late evidence had
    time. Every OVERDUE_SWEEP_S the worker sends a tick for each such movement to an internal
    topic co-partitioned with the state, whose agent applies it (faust lets tables change
    only inside a stream)."""

    async def sweep() -> None:
        if clock.now is None:
            return
        for key in open_movements.due(clock.now):
            await ticks.send(key=key, value=clock.now.isoformat().encode())

    app.timer(OVERDUE_SWEEP_S)(sweep)

    @app.agent(ticks, concurrency=1)
    async def overdue(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            key, ticked = event.key, datetime.fromisoformat(event.value.decode())
            state, declaration = states.get(key), current_declarations.get(key)
            if state is None or declaration is None:
                continue
            outcome = sweep_transit(state, declaration, thresholds, clock=ticked,
                                    now=datetime.now(UTC), issuer=issuer)
            if outcome.transit:
                states.put(key, state, event.message.partition)
            open_movements.note(key, state, declaration)
            publish(key, outcome)


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """The worker's Kafka security, from the same settings as every other client (faust's
    broker URL alone would connect in plaintext whatever they say)."""
    context = None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    if kafka.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=context, mechanism=kafka.sasl_mechanism or "PLAIN")
    return None

def _rule_states(app: App, kafka: KafkaSettings, table: Any, source: str,
                 readiness: Readiness) -> StateTable:
    """The state table, written back as the worker commits (see streams.state_table); the
    unwritten states of revoked partitions are dropped. ``source``: a co-partitioned topic."""
    changelog = ChangelogWriter(kafka, table.changelog_topic.get_topic_name(),
                                f"{app.conf.id}-{STATE_TABLE}-changelog", readiness)
    app.after_flush.append(changelog.write)
    states = StateTable(table, changelog)
    app.sensors.add(WriteBackOnCommit(states, source))

    @app.on_partitions_revoked.connect
    async def _forget(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0]  # faust sends the revoked partitions (TPs)
        states.forget({tp.partition for tp in revoked if tp.topic == source})

    return states


def _watch_readiness(app: faust.App, readiness: Readiness, relay: TelemetryRelay) -> None:
    """Ready once a rebalance completed (tables recovered) and the relay is in its group; a
    worker left without partitions longer than the bound, or whose relay failed, crashes the
    app, so the worker exits non-zero."""

    @app.on_rebalance_complete.connect
    async def _assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        readiness.set(GROUP, True)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        readiness.set(GROUP, False)

    async def _watchdog() -> None:
        try:
            readiness.check()
        except NotWorking as exc:
            log.error(str(exc))
            await app.crash(exc)
        if relay.failure is not None and app.crash_reason is None:
            await app.crash(relay.failure)

    app.timer(WATCHDOG_S)(_watchdog)


def internal_topics(app_id: str) -> dict[str, dict[str, str]]:
    """The changelog topic of each table (faust names it ``<app id>-<table>-changelog``), and
    the overdue ticks' topic: internal topics made before the agents start, with the right
    partition count."""
    return {**{f"{app_id}-{table}-changelog": {"cleanup.policy": "compact"}
               for table in (DECLARATIONS_TABLE, STATE_TABLE, OPEN_MOVEMENTS_TABLE)},
            f"{app_id}-{OVERDUE_TICKS}": {},
            batches_topic(app_id): {"max.message.bytes": str(BATCH_TOPIC_MAX_BYTES)}}


KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]+")
KAFKA_NAME_MAX = 249  # Kafka's bound on a topic name and on a group instance id


def check_worker_ids(app_id: str, instance_id: str | None) -> None:
    """Refuse an app id or instance id Kafka would refuse, or take for another's: the app id
    names the worker's consumer groups and internal topics, the instance id its place in them."""
    for option, value in (("--app-id", app_id), ("--instance-id", instance_id)):
        if value is not None and not KAFKA_NAME.fullmatch(value):
            raise ConfigError(f"{option} {value!r}: use only letters, digits, '.', '_' and '-' "
                              "(Kafka's rule for the names it is part of)")
    longest = max((*internal_topics(app_id), relay_group(app_id)), key=len)
    if len(longest) > KAFKA_NAME_MAX:
        raise ConfigError(f"--app-id {app_id[:40]!r}… is too long: {longest[:40]!r}… would have "
                          f"{len(longest)} characters, over Kafka's {KAFKA_NAME_MAX}")
    if instance_id is not None and len(instance_id) > KAFKA_NAME_MAX:
        raise ConfigError(f"--instance-id {instance_id[:40]!r}… has {len(instance_id)} "
                          f"characters, over Kafka's {KAFKA_NAME_MAX}")


class WorkerCrashed(StackError):
    """An agent of the worker crashed; the worker stopped so that it is restarted."""


def _exit_if_stop_hangs(app: faust.App, grace_s: float = CRASH_STOP_GRACE_S) -> None:
    """After an agent crashed, the worker stops; if stopping hangs (seen in aiokafka's consumer
    stop, about 1 crash in 5), end the process anyway: a worker stuck stopping is alive but not
    working. What it had not committed is replayed by the next worker."""

    def watch() -> None:
        while app.crash_reason is None:
            time.sleep(0.5)
        time.sleep(grace_s)
        message = (f"the streams worker stopped: an agent crashed with {app.crash_reason!r}, "
                   f"and stopping hung for {grace_s:.0f} s: exiting")
        log.error(message)
        print(message, file=sys.stderr, flush=True)
        os._exit(WorkerCrashed.code)

    threading.Thread(target=watch, name="exit-if-stop-hangs", daemon=True).start()


def new_worker(app: faust.App, log_level: str) -> faust.Worker:
    """A faust worker without its terminal spinner: at level warning and above the spinner
    sets the root logger to DEBUG (to spin on every record), so every library's debug records
    were built per event. A service's log is its JSON lines, not a terminal."""
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.spinner = None
    return worker


def run_worker(app: faust.App, settings: Settings, log_level: str = "info") -> None:
    """Run one worker until SIGTERM/SIGINT (faust handles the signals). Raises WorkerCrashed
    when an agent crashed (faust itself would exit 0)."""
    ensure_topics(settings.kafka, internal_topics(app.conf.id))
    worker = new_worker(app, log_level)
    _exit_if_stop_hangs(app)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if app.crash_reason is None:
            raise
        crashed: BaseException = app.crash_reason
    except BaseException as exc:  # mode re-raises the crash (or what it cancelled) on the way out
        crashed = app.crash_reason or exc
    if isinstance(crashed, NotWorking):
        raise crashed
    raise WorkerCrashed(f"the streams worker stopped: an agent crashed with {crashed!r} "
                        "(its traceback is in the log above)")
