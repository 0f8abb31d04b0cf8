"""The fault suite: the whole pipeline under load while something breaks.

Each test runs the main job (`deploy.demo.run`) with a fault injected during the simulation,
and afterwards the job's own reconciliation must hold exactly: every published valid
(device_id, seq) is in Kafka and in ClickHouse, every invalid one in the DLQ, every injected
anomaly raised exactly one incident and nothing else was raised, and every anchored batch of
the run verifies against Kafka's records and the ledger. Run alone with ``-m fault``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console

from deploy import demo, process
from deploy import stack as local_stack
from deploy.pipeline import Pipeline
from deploy.reconcile import Reconciliation
from deploy.services import Kafka, Mosquitto, kafka_nodes
from ingest.simulate import MqttPublisher
from schemas import topics
from smartport.polling import wait_until
from smartport.settings import Settings
from tests.helpers import crane_reading
from tests.stack.pipeline import (
    GatewayProcess,
    Record,
    edge_mqtt,
    high_watermarks,
    read_topic,
    unique,
    wait_for,
)

pytestmark = pytest.mark.fault  # and stack, as everything in this folder

FAULT_AT_S = 5.0  # into the simulation: records are flowing through every stage
DURATION_S = 15.0


def _run_with(settings: Settings, fault: Callable[[Pipeline], object], seed: int,
              env: dict[str, str] | None = None) -> Reconciliation:
    report = demo.run(settings, duration=DURATION_S, rate=300, devices=80, seed=seed,
                      console=Console(stderr=True), env=env, fault=fault)
    described = (f"published {report.published}, valid {report.valid} → Kafka "
                 f"{report.in_kafka} ({report.kafka_records} records) → stored {report.stored}; "
                 f"invalid {report.invalid} → DLQ {report.in_dlq} → stored {report.stored_dlq}; "
                 f"missed alerts {report.truth - report.raised}, unexpected "
                 f"{report.raised - report.truth}, incidents {report.incidents}/"
                 f"{len(report.truth)}; batches {report.batches_verified}/{report.anchored}; "
                 f"exited on their own: {report.exited}")
    assert not report.exited, described
    assert report.counts_match, described
    assert report.stored_match, described
    assert report.alerts_match, described
    assert report.anchored == report.batches_verified > 0, described
    assert report.reconciled, described
    return report


@pytest.mark.parametrize("name", ["gateway", "streams", "anchorer", "sink"])
def test_sigkill_and_restart_of_each_process(stack: Settings, name: str) -> None:
    def kill_and_restart(pipeline: Pipeline) -> None:
        time.sleep(FAULT_AT_S)
        victim = getattr(pipeline, name)
        victim.kill()
        time.sleep(1)
        victim.start()

    _run_with(stack, kill_and_restart, seed=200 + len(name))


@pytest.mark.parametrize("gateway_down", [True, False], ids=["queue-held", "gateway-connected"])
def test_mosquitto_restart(stack: Settings, gateway_down: bool) -> None:
    """With the gateway down, the broker holds a queue for its persistent session across the
    restart; with it connected, the gateway reconnects by itself. Its plain subscription is in
    the broker's persistence file, so publishes made before it reconnects are queued for it."""
    broker = Mosquitto(stack.state_dir)

    def restart_broker(pipeline: Pipeline) -> None:
        time.sleep(FAULT_AT_S)
        if gateway_down:
            pipeline.gateway.kill()
            time.sleep(2)
        assert process.stop(broker.pid_path), "the test needs the stack's own Mosquitto"
        time.sleep(2)
        local_stack.up(stack)
        if gateway_down:
            pipeline.gateway.start()

    _run_with(stack, restart_broker, seed=301)


def test_kafka_restart_under_load(stack: Settings) -> None:
    broker = Kafka(stack.state_dir, stack.kafka.partitions)

    def restart_kafka(pipeline: Pipeline) -> None:
        time.sleep(FAULT_AT_S)
        assert process.stop(broker.pid_path, timeout=60), "the test needs the stack's own Kafka"
        time.sleep(10)
        local_stack.up(stack)

    try:
        _run_with(stack, restart_kafka, seed=302)
    finally:
        local_stack.up(stack)


def test_frozen_consumers_catch_up(stack: Settings) -> None:
    """Slow consumers: the gateway and the sink stop dead (SIGSTOP) for 10 s under load."""
    def freeze(pipeline: Pipeline) -> None:
        time.sleep(FAULT_AT_S)
        frozen = [p.process for p in (pipeline.gateway, pipeline.sink) if p.process]
        for handle in frozen:
            handle.send_signal(signal.SIGSTOP)
        time.sleep(10)
        for handle in frozen:
            handle.send_signal(signal.SIGCONT)

    _run_with(stack, freeze, seed=303)


@pytest.fixture
def cluster(stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[Settings]:
    """A three-node KRaft cluster on loopback (replication 3, min.insync.replicas 2) in a state
    directory of its own, in place of the stack's single broker for the test's duration."""
    assert process.stop(Kafka(stack.state_dir, stack.kafka.partitions).pid_path, timeout=60), \
        "the test needs the stack's own Kafka"
    monkeypatch.setenv("SMARTPORT_STATE_DIR", str(tmp_path / "cluster"))
    # The stack's Mosquitto serves the cluster's pipeline: its processes log in as before.
    (tmp_path / "cluster" / "mosquitto").mkdir(parents=True)
    for password in (stack.state_dir / "mosquitto").glob("*.password"):
        shutil.copy2(password, tmp_path / "cluster" / "mosquitto" / password.name)
    monkeypatch.setenv("SMARTPORT_KAFKA__BROKERS", "3")
    settings = Settings()
    try:
        local_stack.up(settings)
        yield settings
    finally:
        for node in kafka_nodes(settings.state_dir, settings.kafka):
            process.stop(node.pid_path, timeout=60)
        monkeypatch.undo()
        local_stack.up(stack)


def test_three_broker_cluster_loses_a_broker_under_load(cluster: Settings) -> None:
    assert cluster.kafka.replication_factor == 3
    assert os.environ["SMARTPORT_KAFKA__BROKERS"] == "3"  # the pipeline's processes see it too
    second = kafka_nodes(cluster.state_dir, cluster.kafka)[1]

    def kill_a_broker(pipeline: Pipeline) -> None:
        time.sleep(FAULT_AT_S)
        pid = process.read_pid(second.pid_path)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # stays down: two in-sync replicas remain

    _run_with(cluster, kill_a_broker, seed=304)


def test_mosquitto_restart_loses_nothing_a_mqtt_3_device_published(
    stack: Settings, tmp_path: Path
) -> None:
    """An MQTT 3.1.1 device cannot see PUBACK 0x10: for it, any message the broker discards
    for want of a subscriber is lost. The device publishes, the broker restarts, and the device
    publishes again the moment the broker is back — before the gateway has reconnected. The
    gateway's plain persistent subscription survives the restart (a shared one does not), so
    those messages are queued for it: every acknowledged message arrives."""
    gateway = GatewayProcess(unique("gw-v3"), None, tmp_path).start()
    device = unique("v3")
    since = high_watermarks(stack, topics.TELEMETRY)
    broker = Mosquitto(stack.state_dir)
    published = _publish_v3(stack, device, range(1, 501))
    try:
        assert process.stop(broker.pid_path), "the test needs the stack's own Mosquitto"
        local_stack.up(stack)
        published += _publish_v3(stack, device, range(501, 1501))
        wait_until(lambda: len(_seqs_of(read_topic(stack, topics.TELEMETRY, since), device))
                   >= published, 90)
    finally:
        gateway.stop()
        gateway.forget_session(stack)
    assert published == 1500
    missing = set(range(1, 1501)) - _seqs_of(read_topic(stack, topics.TELEMETRY, since), device)
    assert not missing, f"{len(missing)} acknowledged messages lost, seqs {min(missing)} to " \
                        f"{max(missing)}"


def test_a_shared_connection_keeps_each_devices_order_across_a_broker_restart(
    stack: Settings, tmp_path: Path
) -> None:
    """The simulator publishes every device's readings over one connection. A reading sent
    while paho waited for the restarted broker's CONNACK overtook the unacknowledged ones it
    resends after it, so a device's readings reached Kafka out of order (a fault run missed a
    reefer excursion so). Each device's order must survive the restart, as over a connection
    of its own."""
    gateway = GatewayProcess(unique("gw-order"), None, tmp_path).start()
    device = unique("order")
    since = high_watermarks(stack, topics.TELEMETRY)
    broker = Mosquitto(stack.state_dir)
    total = 3000

    def restart_broker() -> None:
        time.sleep(1.5)
        assert process.stop(broker.pid_path), "the test needs the stack's own Mosquitto"
        local_stack.up(stack)

    publisher = MqttPublisher(edge_mqtt(stack))
    try:
        with ThreadPoolExecutor(1, "restart") as pool:
            restarted = pool.submit(restart_broker)
            started = time.monotonic()
            for seq in range(1, total + 1):
                publisher.publish(f"port/CNSHK/crane/{device}/telemetry",
                                  json.dumps(crane_reading(device_id=device, seq=seq)).encode())
                time.sleep(max(0.0, started + seq / 600 - time.monotonic()))
            restarted.result()
        publisher.close(total)
        wait_until(lambda: len(_seqs_of(read_topic(stack, topics.TELEMETRY, since), device))
                   >= total, 90)
    finally:
        gateway.stop()
        gateway.forget_session(stack)
    arrived = [r.value["reading"]["seq"] for r in read_topic(stack, topics.TELEMETRY, since)
               if r.value["reading"]["device_id"] == device]
    first_seen = list(dict.fromkeys(arrived))  # at-least-once: a redelivery is no reordering
    assert sorted(first_seen) == list(range(1, total + 1))
    overtaken = [(a, b) for a, b in itertools.pairwise(first_seen) if b < a]
    assert not overtaken, f"{len(overtaken)} readings overtaken, first {overtaken[:3]}"


def _publish_v3(settings: Settings, device: str, seqs: range) -> int:
    """Publish one reading per seq over MQTT 3.1.1 at QoS 1; how many the broker acknowledged."""
    acked: set[int] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("dev"),
                         protocol=mqtt.MQTTv311)
    edge = edge_mqtt(settings)
    client.username_pw_set(edge.username, edge.password.get_secret_value() if edge.password
                           else None)
    client.on_publish = lambda _c, _u, mid, _r, _p: acked.add(mid)
    client.connect(settings.mqtt.host, settings.mqtt.port)
    client.loop_start()
    mids = [client.publish(f"port/CNSHK/crane/{device}/telemetry",
                           json.dumps(crane_reading(device_id=device, seq=seq)), qos=1).mid
            for seq in seqs]
    wait_for(lambda: set(mids) <= acked, 60, "the broker to acknowledge every message")
    client.disconnect()
    client.loop_stop()
    return len(acked)


def _seqs_of(records: list[Record], device: str) -> set[int]:
    return {r.value["reading"]["seq"] for r in records
            if r.value["reading"]["device_id"] == device}
