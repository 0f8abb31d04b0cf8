"""The production-shaped listeners of the local stack: Kafka's TLS + SASL/PLAIN (9192) and
Mosquitto's TLS with per-user passwords (8883), every client configured by the settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from deploy.pipeline import PipelineProcess, streams_worker
from deploy.services import (
    HOST,
    KAFKA_SECURE_PORT_OFFSET,
    MQTT_TLS_PORT,
    Mosquitto,
    kafka_port,
    kafka_sasl_password,
)
from ingest import declarations
from ingest.simulate import MqttPublisher
from schemas import Alert, topics
from smartport.errors import StackError
from smartport.kafka import high_watermarks, read_range
from smartport.mqtt import GATEWAY_USER, forget_session
from smartport.settings import Settings
from tests.helpers import container_reading, declaration
from tests.stack.pipeline import edge_mqtt, unique, wait_for


def _secure(stack: Settings, password: str) -> dict[str, str]:
    return {
        "SMARTPORT_KAFKA__BOOTSTRAP_SERVERS": f"{HOST}:{kafka_port(1) + KAFKA_SECURE_PORT_OFFSET}",
        "SMARTPORT_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "SMARTPORT_KAFKA__SASL_MECHANISM": "PLAIN",
        "SMARTPORT_KAFKA__SASL_USERNAME": "smartport",
        "SMARTPORT_KAFKA__SASL_PASSWORD": password,
        "SMARTPORT_KAFKA__SSL_CA_LOCATION": str(stack.state_dir / "tls" / "ca.pem"),
    }


def _kafka_settings(stack: Settings, env: dict[str, str]) -> Settings:
    return stack.model_copy(update={"kafka": stack.kafka.model_copy(update={
        "bootstrap_servers": env["SMARTPORT_KAFKA__BOOTSTRAP_SERVERS"],
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
        "sasl_username": "smartport",
        "sasl_password": SecretStr(env["SMARTPORT_KAFKA__SASL_PASSWORD"]),
        "ssl_ca_location": Path(env["SMARTPORT_KAFKA__SSL_CA_LOCATION"])})})


def test_the_pipeline_runs_on_the_sasl_ssl_listener(stack: Settings, tmp_path: Path) -> None:
    """Gateway and streams worker over TLS + SASL: a reading with a broken seal goes through
    and raises its alert, all of it on the secure listener."""
    env = _secure(stack, kafka_sasl_password(stack.state_dir))
    secure = _kafka_settings(stack, env)
    run = unique("sasl")
    container = container_reading()["container_no"]
    worker = streams_worker(run, tmp_path / "streams.log", env).start()
    gateway = PipelineProcess("gateway", ["gateway", "--gateway-id", run],
                              tmp_path / "gateway.log", env).start()
    publisher = MqttPublisher(edge_mqtt(stack))
    since = high_watermarks(secure.kafka, topics.ALERTS)
    try:
        path = tmp_path / "declarations.jsonl"
        path.write_text(json.dumps(declaration(container_no=container, version=7)) + "\n")
        declarations.load(secure, path)
        device = unique("tracker")
        reading = container_reading(device_id=device, seal_state="broken",
                                    ts="2026-11-30T02:00:00Z")
        publisher.publish(f"port/CNSHK/container/{device}/telemetry",
                          json.dumps(reading).encode())

        def raised() -> bool:
            return any(
                (alert.container_no, alert.rule.value, alert.evidence[0].device_id)
                == (container, "seal_broken", device)
                for alert in (Alert.model_validate_json(m.value() or b"")
                              for m in read_range(secure.kafka, topics.ALERTS, since)))

        wait_for(raised, 90, "the seal alert, through the SASL_SSL listener")
    finally:
        publisher.close(1)
        gateway.stop()
        worker.stop()
        forget_session(stack, run)


def test_the_secure_listener_wants_the_password(stack: Settings) -> None:
    def metadata(password: str) -> object:
        config = _kafka_settings(stack, _secure(stack, password)).kafka.client_config()
        return AdminClient({**config, "log_level": 0}).list_topics(timeout=5)

    assert topics.ALERTS in metadata(kafka_sasl_password(stack.state_dir)).topics  # type: ignore[attr-defined]
    with pytest.raises(KafkaException):
        metadata("not-the-password")


def test_devices_and_the_gateway_speak_mqtts_with_their_own_credentials(
    stack: Settings, tmp_path: Path
) -> None:
    """The TLS listener (8883, the stack's CA): the gateway logs in as its role, a device as
    itself; the reading reaches Kafka. Without the CA, or with a wrong password, no session."""
    broker = Mosquitto(stack.state_dir)
    ca = stack.state_dir / "tls" / "ca.pem"
    url = f"mqtts://127.0.0.1:{MQTT_TLS_PORT}"
    run, device, password = unique("tls-gw"), unique("tracker"), unique("pw")
    broker.add_device(device, password, port="CNSHK", kind="container")
    gateway_env = {"SMARTPORT_MQTT__URL": url, "SMARTPORT_MQTT__TLS_CA": str(ca),
                   "SMARTPORT_MQTT__USERNAME": GATEWAY_USER,
                   "SMARTPORT_MQTT__PASSWORD": broker.password_file_of(GATEWAY_USER)
                   .read_text()}
    device_mqtt = stack.mqtt.model_copy(update={
        "url": url, "tls_ca": ca, "username": device, "password": SecretStr(password)})
    since = high_watermarks(stack.kafka, topics.TELEMETRY)
    gateway = PipelineProcess("gateway", ["gateway", "--gateway-id", run],
                              tmp_path / "gateway.log", gateway_env).start()
    try:
        publisher = MqttPublisher(device_mqtt)
        reading = container_reading(device_id=device)
        publisher.publish(f"port/CNSHK/container/{device}/telemetry",
                          json.dumps(reading).encode())
        publisher.close(1)

        def arrived() -> bool:
            return any(json.loads(m.value() or b"{}")["reading"]["device_id"] == device
                       for m in read_range(stack.kafka, topics.TELEMETRY, since))

        wait_for(arrived, 60, "the reading sent over mqtts")
    finally:
        gateway.stop()
        forget_session(stack, run)
    for wrong in ({"tls_ca": None}, {"password": SecretStr("not-it")}):
        with pytest.raises(StackError):
            MqttPublisher(device_mqtt.model_copy(update=wrong))
