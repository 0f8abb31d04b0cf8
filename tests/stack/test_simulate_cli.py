"""`smartport simulate` publishing over real MQTT and counting acknowledgements."""

from __future__ import annotations

import json
from pathlib import Path

from deploy.cli import main
from ingest.simulate import MqttPublisher
from smartport.mqtt import OFFICER_USER, STREAMS_USER, mqtt_as, new_client
from smartport.settings import Settings
from tests.stack.pipeline import GatewayProcess, unique, wait_for


def test_publishes_over_mqtt_and_counts_acks(stack: Settings, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    group = unique("sim")
    gateway = GatewayProcess(group, group, tmp_path).start()  # someone to deliver to
    try:
        assert main(["simulate", "--count", "500", "--rate", "0", "--seed", "2",
                     "--report", str(report)]) == 0
    finally:
        gateway.stop()
        gateway.forget_session(stack)
    summary = json.loads(report.read_text())
    assert summary["acknowledged"] == 500
    assert summary["refused"] == 0


def test_no_matching_subscribers_is_not_a_delivery(stack: Settings) -> None:
    """Mosquitto answers 0x10 "no matching subscribers" and discards the message (as it does
    while a gateway's shared subscription is gone after a broker restart); the publisher
    publishes it again until a subscriber takes it."""
    topic = f"port/ZZTST/alerts/info/{unique('unmatched')}"  # nobody subscribes there
    received: list[bytes] = []
    subscriber = new_client(mqtt_as(stack, OFFICER_USER), unique("officer"))
    subscriber.on_message = lambda client, userdata, message: received.append(
        bytes(message.payload))
    publisher = MqttPublisher(mqtt_as(stack, STREAMS_USER))
    for n in range(5):
        publisher.publish(topic, f"m{n}".encode())
    wait_for(lambda: publisher.unmatched >= 5, 10, "the broker to say nobody listens")
    assert publisher.acknowledged == 0
    subscriber.connect(stack.mqtt.host, stack.mqtt.port)
    subscriber.subscribe(topic, qos=1)
    subscriber.loop_start()
    try:
        publisher.close(5)
        assert (publisher.acknowledged, publisher.undelivered) == (5, 0)
        wait_for(lambda: len(set(received)) == 5, 10, "every message at the subscriber")
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
