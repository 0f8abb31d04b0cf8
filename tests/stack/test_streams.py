"""The faust app on the real stack: simulator → Mosquitto → gateway → Kafka → streams → alerts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest

from deploy.pipeline import PipelineProcess, streams_worker
from ingest import declarations
from ingest.fleet import Fleet, FleetConfig
from ingest.simulate import MqttPublisher, write_declarations
from schemas import Alert, topics
from smartport.kafka import high_watermarks, read_range
from smartport.settings import Settings
from tests.stack.pipeline import GatewayProcess, unique, wait_for


@pytest.fixture
def worker(stack: Settings, tmp_path: Path) -> Iterator[PipelineProcess]:
    started = streams_worker(unique("streams-test"), tmp_path / "streams.log").start()
    yield started
    started.stop()


def _alerts(settings: Settings, since: dict[int, int], containers: set[str]) -> list[Alert]:
    found = []
    for message in read_range(settings.kafka, topics.ALERTS, since):
        alert = Alert.model_validate_json(message.value() or b"")
        if alert.container_no in containers:
            found.append(alert)
    return found


def _drive(stack: Settings, worker: PipelineProcess, tmp_path: Path, *, seed: int,
           kill_after: float | None = None) -> None:
    """Fleet → MQTT → gateway → Kafka → worker; then check alerts against the ground truth.

    With ``kill_after``, the worker is SIGKILLed that many seconds in and restarted.
    """
    fleet = Fleet(FleetConfig(devices=60, seed=seed, anomaly_rate=0.03))
    write_declarations(fleet, tmp_path / "declarations.jsonl")
    declarations.load(stack, tmp_path / "declarations.jsonl")
    gateway = GatewayProcess(unique("gw"), unique("grp"), tmp_path).start()
    since = high_watermarks(stack.kafka, topics.ALERTS)
    messages = list(islice(fleet.messages(), 3000))
    truth = {(m.truth[0], m.truth[1].value) for m in messages if m.truth}
    assert len(truth) > 20
    containers = {d.container_no for d in fleet.declarations} | {c for c, _ in truth}

    def raised() -> set[tuple[str, str]]:
        return {(a.container_no, a.rule.value)
                for a in _alerts(stack, since, containers) if a.state.value == "raised"}

    def publish() -> None:
        publisher = MqttPublisher(stack.mqtt)
        for index, message in enumerate(messages):
            publisher.publish(message.topic, message.payload)
            if index % 100 == 0:
                time.sleep(0.2)  # about 500 messages/s: the kill lands mid-stream
        publisher.close(len(messages))

    publishing = threading.Thread(target=publish)
    try:
        publishing.start()
        if kill_after is not None:
            time.sleep(kill_after)  # past faust's first offset commit (every 2.8 s)
            worker.kill()  # offsets, changelog and alerts in flight
            worker.start()
        publishing.join()
        wait_for(lambda: truth <= raised(), 180, "an alert for every injected anomaly")
    finally:
        gateway.stop()
        gateway.forget_session(stack)
    alerts = _alerts(stack, since, containers)
    assert raised() == truth  # precision and recall 100 %
    incidents = {a.alert_id for a in alerts if a.state.value == "raised"}
    assert len(incidents) == len(truth), "one incident per (container, rule)"
    for alert in alerts:
        assert alert.evidence
        assert alert.evidence[0].topic == topics.TELEMETRY


def test_every_injected_anomaly_gives_exactly_one_incident(
    stack: Settings, worker: PipelineProcess, tmp_path: Path
) -> None:
    _drive(stack, worker, tmp_path, seed=101)


def test_sigkill_of_the_worker_loses_no_alert_and_duplicates_no_incident(
    stack: Settings, worker: PipelineProcess, tmp_path: Path
) -> None:
    _drive(stack, worker, tmp_path, seed=102, kill_after=4.0)


def test_a_released_hold_stops_the_hold_alerts(stack: Settings, worker: PipelineProcess,
                                               tmp_path: Path) -> None:
    from schemas import iso6346
    from tests.helpers import crane_reading, declaration

    container = iso6346.with_check_digit(f"TSTU{int(uuid_hex(), 16) % 10**6:06d}")
    crane = unique("qc")
    path = tmp_path / "declarations.jsonl"
    since = high_watermarks(stack.kafka, topics.ALERTS)
    gateway = GatewayProcess(unique("gw"), unique("grp"), tmp_path).start()
    publisher = MqttPublisher(stack.mqtt)

    def lift(seq: int) -> None:
        reading = crane_reading(device_id=crane, seq=seq, container_no=container,
                                load_kg=21_000.0, event="lift_start")
        publisher.publish(f"port/CNSHK/crane/{crane}/telemetry", encode_json(reading))

    def events() -> list[tuple[str, int]]:
        return [(a.state.value, a.version) for a in _alerts(stack, since, {container})
                if a.rule.value == "hold_violation"]

    try:
        path.write_text(encode_json(declaration(container_no=container, status="held")).decode())
        declarations.load(stack, path)
        time.sleep(2)
        lift(1)
        lift(2)
        wait_for(lambda: ("updated", 2) in events(), 60, "the hold alert and its update")
        path.write_text(encode_json(declaration(container_no=container, status="released",
                                                version=2)).decode())
        declarations.load(stack, path)
        time.sleep(2)
        lift(3)
        lift(4)
        wait_for(lambda: ("cleared", 3) in events(), 60, "the hold alert to clear")
        time.sleep(3)  # room for a wrong alert to show up
    finally:
        publisher.close(4)
        gateway.stop()
        gateway.forget_session(stack)
    assert sorted(set(events())) == [("cleared", 3), ("raised", 1), ("updated", 2)]


def uuid_hex() -> str:
    return unique("x").split("-")[1]


def encode_json(value: object) -> bytes:
    return json.dumps(value).encode()
