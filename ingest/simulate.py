"""`smartport simulate`: drive a simulated fleet's messages into MQTT (or a JSON Lines file)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingest.fleet import SimMessage
from schemas import Declaration, encode
from schemas.topics import parse_telemetry_topic
from smartport.errors import StackError
from smartport.mqtt import new_client
from smartport.redaction import redact_url
from smartport.settings import MqttSettings

_CONNECT_TIMEOUT_S = 10.0
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason: accepted, but nobody will get it
UNMATCHED_RETRY_S = 30.0  # long enough for a gateway to reconnect and subscribe again
_RETRY_DELAY_S = 0.25
_OUTAGE_S = 300.0  # how long publishing waits for a broker that went away


@dataclass
class SimulationReport:
    published: int = 0
    acknowledged: int = 0
    refused: int = 0  # PUBACK with a failure reason code (e.g. not authorised)
    unmatched: int = 0  # PUBACKs "no matching subscribers" (each message published again)
    undelivered: int = 0  # messages that found no subscriber within UNMATCHED_RETRY_S
    valid: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)
    restarts: int = 0  # readings sent right after their device restarted its seq
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"published": self.published, "acknowledged": self.acknowledged,
                "refused": self.refused, "unmatched": self.unmatched,
                "undelivered": self.undelivered, "valid": self.valid, "invalid": dict(self.invalid),
                "anomalies": dict(self.anomalies), "restarts": self.restarts,
                "elapsed_s": round(self.elapsed_s, 3)}


class MqttPublisher:
    """QoS 1 publisher that counts PUBACKs, so callers know what the broker really took.

    A PUBACK with reason 0x10 "no matching subscribers" is not a delivery: the broker discarded
    the message (Mosquitto does so while a gateway's shared subscription is gone after a broker
    restart, and paho calls 0x10 a success). Such a message is published again until a
    subscriber takes it, for up to ``UNMATCHED_RETRY_S``; each 0x10 is counted in ``unmatched``,
    a message given up on in ``undelivered``.
    """

    def __init__(self, settings: MqttSettings, client_id: str | None = None,
                 max_inflight: int = 1000) -> None:
        self._client = new_client(settings, client_id or f"sim-{uuid.uuid4().hex[:10]}")
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self.acknowledged = 0
        self.refused = 0
        self.unmatched = 0
        self.undelivered = 0
        self._pending: dict[int, tuple[str, bytes, float]] = {}  # mid → topic, payload, first
        self._early: dict[int, ReasonCode] = {}  # PUBACKs that beat the bookkeeping
        self._retries: list[tuple[float, str, bytes, float]] = []  # due, topic, payload, first
        self._connected = threading.Event()
        self._in_order = threading.Event()  # cleared while a lost connection is resent
        self._in_order.set()
        self._refusal: ReasonCode | None = None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        try:
            self._client.connect(settings.host, settings.port, keepalive=30)
        except OSError as exc:
            raise StackError(f"cannot reach the MQTT broker at {redact_url(settings.url)}: "
                             f"{exc}; is it up? (`smartport stack status`)") from exc
        self._client.loop_start()
        if not self._connected.wait(_CONNECT_TIMEOUT_S) or self._refusal is not None:
            self._client.loop_stop()
            raise StackError(f"the MQTT broker at {redact_url(settings.url)} did not accept "
                             f"the connection ({self._refusal or 'no answer'}): check "
                             "mqtt.username and mqtt.password")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Properties | None) -> None:
        if reason.is_failure:
            self._refusal = reason
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Properties | None) -> None:
        self._in_order.clear()

    def wait_acknowledged(self) -> None:
        """Block until the connection is up and the broker acknowledged everything published
        so far: what is published next reaches it after all of that."""
        deadline = time.monotonic() + _OUTAGE_S
        while time.monotonic() < deadline:
            with self._lock:
                if self._client.is_connected() and not self._pending:
                    return
            time.sleep(0.001)
        if not self._client.is_connected():
            raise StackError(f"the MQTT broker has been unreachable for {_OUTAGE_S:.0f} s with "
                             f"{len(self._pending)} messages unacknowledged; is it up? "
                             "(`smartport stack status`)")
        raise StackError(f"the MQTT broker is connected but has not acknowledged "
                         f"{len(self._pending)} messages in {_OUTAGE_S:.0f} s; is it overloaded? "
                         "(`smartport stack status`)")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties) -> None:
        with self._lock:
            entry = self._pending.pop(mid, None)
            if entry is None:
                self._early[mid] = reason
            else:
                self._settle(reason, *entry)

    def _settle(self, reason: ReasonCode, topic: str, payload: bytes, first: float) -> None:
        """Count one PUBACK (the caller holds the lock)."""
        if reason.value == NO_MATCHING_SUBSCRIBERS:
            self.unmatched += 1
            now = time.monotonic()
            if now - first < UNMATCHED_RETRY_S:
                self._retries.append((now + _RETRY_DELAY_S, topic, payload, first))
            else:
                self.undelivered += 1
        elif reason.is_failure:
            self.refused += 1
        else:
            self.acknowledged += 1

    def publish(self, topic: str, payload: bytes, first: float | None = None) -> None:
        if not self._in_order.is_set():  # see the class's docstring
            self.wait_acknowledged()
            self._in_order.set()
        self._publish_due_retries()
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise StackError(f"publishing to {topic} failed: {mqtt.error_string(info.rc)}")
        entry = (topic, payload, time.monotonic() if first is None else first)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = entry
            else:
                self._settle(early, *entry)

    def _publish_due_retries(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [r for r in self._retries if r[0] <= now]
            self._retries = [r for r in self._retries if r[0] > now]
        for _, topic, payload, first in due:
            self.publish(topic, payload, first)

    def close(self, expected: int, timeout: float = 60.0) -> None:
        """Wait until ``expected`` messages were acknowledged, refused or given up on, then
        disconnect."""
        deadline = time.monotonic() + timeout
        while (self.acknowledged + self.refused + self.undelivered < expected
               and time.monotonic() < deadline):
            self._publish_due_retries()
            time.sleep(0.05)
        self._client.disconnect()
        self._client.loop_stop()


def _pace(started: float, sent: int, rate: float, deadline: float | None) -> bool:
    """Sleep until the next message is due at ``rate``; False once ``deadline`` has passed."""
    now = time.monotonic()
    if deadline is not None and now >= deadline:
        return False
    if rate > 0 and started + sent / rate > now:
        time.sleep(started + sent / rate - now)
    return True


def _record(report: SimulationReport, message: SimMessage, truth: TextIO | None) -> None:
    report.published += 1
    report.restarts += message.restarted
    if message.valid:
        report.valid += 1
    else:
        report.invalid[message.invalid_kind or "?"] += 1
    if message.truth is not None:
        container_no, rule = message.truth
        report.anomalies[rule.value] += 1
        if truth is not None:
            truth.write(json.dumps({"container_no": container_no, "rule": rule.value}) + "\n")


class Declared(Protocol):
    """A simulated terminal (``Fleet``) or linked port (``LinkedPorts``)."""

    @property
    def declarations(self) -> list[Declaration]: ...


def write_declarations(source: Declared, path: Path) -> int:
    path.write_text("".join(encode(d).decode() + "\n" for d in source.declarations))
    return len(source.declarations)


class PortPublishers:
    """One publisher per port, each logged in as that port's user (its edge gateway): a
    linked-port run publishes at two ports.

    A device that moves on to the other port (a container's tracker) publishes there only once
    the broker acknowledged everything the first port's connection sent: two connections race,
    and its reading at the destination overtook the last ones of its leg (whose door opening
    was then a late report, no event)."""

    def __init__(self, settings_of: Callable[[str], MqttSettings]) -> None:
        self._settings_of = settings_of
        self._publishers: dict[str, MqttPublisher] = {}
        self._published: Counter[str] = Counter()
        self._last_port: dict[str, str] = {}  # device id → the port it last published at

    def publish(self, topic: str, payload: bytes) -> None:
        named = parse_telemetry_topic(topic)
        port, device = (named.port, named.device_id) if named else ("", "")
        if port not in self._publishers:
            self._publishers[port] = MqttPublisher(self._settings_of(port))
        previous = self._last_port.get(device, port)
        if previous != port:
            self._publishers[previous].wait_acknowledged()
        self._last_port[device] = port
        self._publishers[port].publish(topic, payload)
        self._published[port] += 1

    def close(self, report: SimulationReport) -> None:
        """Wait for every publisher's acknowledgements and count them into ``report``."""
        for port, publisher in self._publishers.items():
            publisher.close(self._published[port])
            report.acknowledged += publisher.acknowledged
            report.refused += publisher.refused
            report.unmatched += publisher.unmatched
            report.undelivered += publisher.undelivered


def run(
    messages: Iterable[SimMessage],
    *,
    mqtt_settings: Callable[[str], MqttSettings] | None,
    rate: float,
    total: int | None,
    duration: float | None,
    truth_out: Path | None = None,
    emit_jsonl: Path | None = None,
    show_progress: bool = True,
) -> SimulationReport:
    """Publish ``messages`` at ``rate``/s (0 = as fast as possible) until ``total`` or ``duration``.

    ``mqtt_settings`` gives the settings of a port's publisher (its edge gateway's user). With
    ``emit_jsonl`` the messages are written as {"topic", "payload"} lines instead.
    """
    report = SimulationReport()
    publisher = PortPublishers(mqtt_settings) if emit_jsonl is None and mqtt_settings else None
    sink = emit_jsonl.open("w") if emit_jsonl else None
    truth = truth_out.open("w") if truth_out else None
    started = time.monotonic()
    deadline = started + duration if duration else None
    progress = Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), disable=not show_progress)
    try:
        with progress:
            task = progress.add_task("messages", total=total)
            in_scenario = False
            for message in messages:
                if total is not None and report.published >= total:
                    break
                if not _pace(started, report.published, rate, deadline) and not in_scenario:
                    break
                in_scenario = not message.ends_scenario
                if sink is not None:
                    sink.write(json.dumps({"topic": message.topic,
                                           "payload": message.payload.decode()}) + "\n")
                elif publisher is not None:
                    publisher.publish(message.topic, message.payload)
                _record(report, message, truth)
                if report.published % 500 == 0:
                    progress.update(task, completed=report.published)
            progress.update(task, completed=report.published)
    finally:
        if publisher is not None:
            publisher.close(report)
        for handle in (sink, truth):
            if handle is not None:
                handle.close()
    report.elapsed_s = time.monotonic() - started
    if publisher is not None and report.acknowledged + report.refused < report.published:
        raise StackError(
            f"the MQTT broker acknowledged only {report.acknowledged} of {report.published} "
            f"messages within 60 s ({report.undelivered} found no subscriber for "
            f"{UNMATCHED_RETRY_S:.0f} s: is a gateway running?); check the broker's log "
            "(`smartport stack status`)")
    return report
