"""Smoke tests over real sockets against the local stack."""

from __future__ import annotations

import subprocess
import threading
import uuid

import paho.mqtt.client as mqtt
from clickhouse_driver import Client
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from paho.mqtt.reasoncodes import ReasonCode

from deploy import services
from deploy.services import Mosquitto, chain_id
from schemas import topics
from smartport.kafka import committed_offsets, consumer_config, start_at_end
from smartport.mqtt import GATEWAY_USER, OFFICER_USER, STREAMS_USER, mqtt_as, new_client
from smartport.settings import Settings
from tests.stack.pipeline import edge_mqtt, wait_for


def test_every_service_is_healthy(stack: Settings) -> None:
    from deploy.stack import status

    assert {s.name: s.healthy for s in status(stack)} == {
        "kafka": True, "mosquitto": True, "clickhouse": True, "anvil": True,
    }


def test_topics_exist_co_partitioned_and_compacted(stack: Settings) -> None:
    admin = AdminClient(stack.kafka.client_config())
    metadata = admin.list_topics(timeout=10).topics
    for name in topics.KAFKA_TOPICS:
        assert len(metadata[name].partitions) == stack.kafka.partitions, name
    resource = ConfigResource("topic", topics.DECLARATIONS)
    config = admin.describe_configs([resource])[resource].result()
    assert config["cleanup.policy"].value == "compact"


def test_kcat_lists_the_project_topics(stack: Settings) -> None:
    listing = subprocess.run(
        ["kcat", "-b", stack.kafka.bootstrap_servers, "-L"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    for name in topics.KAFKA_TOPICS:
        assert f'topic "{name}"' in listing


SMOKE_TOPIC = "smoke.v1"  # a scratch topic: the project's topics only hold valid messages


def test_kafka_produce_consume(stack: Settings) -> None:
    admin = AdminClient(stack.kafka.client_config())
    if SMOKE_TOPIC not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(SMOKE_TOPIC, 1, 1)])[SMOKE_TOPIC].result()
    key = uuid.uuid4().hex.encode()
    producer = Producer({**stack.kafka.client_config(), "enable.idempotence": True})
    delivered = []
    producer.produce(SMOKE_TOPIC, key=key, value=b"smoke",
                     on_delivery=lambda err, msg: delivered.append((err, msg.partition(),
                                                                    msg.offset())))
    producer.flush(30)
    assert delivered
    assert delivered[0][0] is None
    _, partition, offset = delivered[0]
    assert partition is not None
    assert offset is not None

    from confluent_kafka import TopicPartition

    consumer = Consumer(consumer_config(stack.kafka, f"smoke-{key.decode()}"))
    consumer.assign([TopicPartition(SMOKE_TOPIC, partition, offset)])
    try:
        message = consumer.poll(30)
        assert message is not None
        assert message.error() is None
        assert (message.key(), message.value()) == (key, b"smoke")
    finally:
        consumer.close()


def test_a_new_group_starts_at_the_end_as_of_its_first_start(stack: Settings) -> None:
    """start_at_end commits the ends a new group starts from, only where it has no offset, and
    leaves a group with members alone."""
    topic, group = f"smoke-start-{uuid.uuid4().hex[:8]}", f"smoke-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    producer = Producer(stack.kafka.client_config())

    def produce(count: int) -> None:
        for i in range(count):
            producer.produce(topic, value=b"%d" % i, partition=i % 2)
        assert producer.flush(30) == 0

    try:
        produce(6)
        assert start_at_end(stack.kafka, group, [topic]) == 2
        assert committed_offsets(stack.kafka, group, topic, 2) == {0: 3, 1: 3}
        produce(4)
        assert start_at_end(stack.kafka, group, [topic]) == 0  # it has offsets: kept
        assert committed_offsets(stack.kafka, group, topic, 2) == {0: 3, 1: 3}
        member = Consumer(consumer_config(stack.kafka, f"{group}-active"))
        member.subscribe([topic])
        try:
            wait_for(lambda: bool(member.poll(0.5) or member.assignment()), 60, "assignment")
            assert start_at_end(stack.kafka, f"{group}-active", [topic]) == 0
        finally:
            member.close()
        assert committed_offsets(stack.kafka, f"{group}-active", topic, 2) == {0: 0, 1: 0}
    finally:
        admin.delete_topics([topic])


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv5)


def test_mqtt_round_trip(stack: Settings) -> None:
    """The stack's own users: its port's edge gateway publishes, the gateway role reads."""
    topic = f"port/CNSHK/crane/smoke-{uuid.uuid4().hex[:8]}/telemetry"
    received = threading.Event()
    payloads: list[bytes] = []
    subscriber = new_client(mqtt_as(stack, GATEWAY_USER), f"smoke-sub-{uuid.uuid4().hex[:6]}")

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        payloads.append(bytes(message.payload))
        received.set()

    subscribed = threading.Event()
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.connect(stack.mqtt.host, stack.mqtt.port)
    subscriber.loop_start()
    try:
        subscriber.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        publisher = new_client(edge_mqtt(stack), f"smoke-pub-{uuid.uuid4().hex[:6]}")
        publisher.connect(stack.mqtt.host, stack.mqtt.port)
        publisher.loop_start()
        publisher.publish(topic, b'{"hello":1}', qos=1).wait_for_publish(10)
        publisher.loop_stop()
        publisher.disconnect()
        assert received.wait(10)
        assert payloads == [b'{"hello":1}']
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()


def _publish_as(user: str, password: str, topics_to_try: list[str]) -> list[int]:
    """The PUBACK reason code of one QoS 1 publish to each topic, as ``user``."""
    client = _client(f"{user}-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(user, password)
    results: dict[int, int] = {}
    acked = threading.Event()

    def on_publish(client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
                   properties: object) -> None:
        results[mid] = reason.value
        if len(results) == len(topics_to_try):
            acked.set()

    client.on_publish = on_publish
    client.connect(services.HOST, services.MQTT_PORT)
    client.loop_start()
    try:
        mids = [client.publish(topic, b"{}", qos=1).mid for topic in topics_to_try]
        assert acked.wait(10)
        return [results[mid] for mid in mids]
    finally:
        client.loop_stop()
        client.disconnect()


ACCEPTED = (0x00, 0x10)  # "no matching subscribers" is accepted too
NOT_AUTHORIZED = 0x87


def test_a_device_publishes_only_its_own_topic_port_and_kind_bound(stack: Settings) -> None:
    device, password = f"dev-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    Mosquitto(stack.state_dir).add_device(device, password, port="CNSHK", kind="container")
    own, *others = _publish_as(device, password, [
        f"port/CNSHK/container/{device}/telemetry",
        "port/CNSHK/container/someone-else/telemetry",
        f"port/CNSHK/crane/{device}/telemetry",  # its id, another kind
        f"port/CNSZX/container/{device}/telemetry",  # its id, another port
        "port/CNSHK/alerts/critical/CSQU3054383",  # a fake field alert
    ])
    assert own in ACCEPTED
    assert others == [NOT_AUTHORIZED] * 4


def test_roles_publish_only_what_they_are_for(stack: Settings) -> None:
    """Gateways read telemetry and publish nothing, the streams worker publishes alerts,
    officers read alerts."""
    broker = Mosquitto(stack.state_dir)
    alert = "port/CNSHK/alerts/critical/CSQU3054383"
    telemetry = "port/CNSHK/crane/qc-01/telemetry"
    for user in (GATEWAY_USER, STREAMS_USER):
        password = broker.password_file_of(user).read_text()
        codes = _publish_as(user, password, [alert, telemetry])
        if user == STREAMS_USER:
            assert codes[0] in ACCEPTED
            assert codes[1] == NOT_AUTHORIZED
        else:
            assert codes == [NOT_AUTHORIZED] * 2
    officer_password = uuid.uuid4().hex
    broker.add_user(OFFICER_USER, officer_password)
    assert _publish_as(OFFICER_USER, officer_password, [alert, telemetry]) == [
        NOT_AUTHORIZED] * 2


def test_an_edge_gateway_publishes_only_its_ports_telemetry(stack: Settings) -> None:
    """`stack up` makes the home port's edge gateway (the simulator logs in as it): any device
    of its port, no other port, no alerts; it cannot take telemetry through $share either."""
    edge = edge_mqtt(stack)
    assert edge.username == "edge-cnshk"
    assert edge.password
    password = edge.password.get_secret_value()
    own_crane, own_tracker, *others = _publish_as(edge.username, password, [
        "port/CNSHK/crane/qc-07/telemetry",
        f"port/CNSHK/container/{uuid.uuid4().hex[:8]}/telemetry",
        "port/CNSZX/crane/qc-07/telemetry",  # another port
        "port/CNSHK/alerts/critical/CSQU3054383",  # a fake field alert
    ])
    assert (own_crane in ACCEPTED, own_tracker in ACCEPTED) == (True, True)
    assert others == [NOT_AUTHORIZED] * 2
    for telemetry in ("port/+/+/+/telemetry", "$share/smartport/port/+/+/+/telemetry"):
        assert _subscribe_as(edge.username, password, telemetry) == NOT_AUTHORIZED


def test_only_gateways_join_a_telemetry_share(stack: Settings) -> None:
    """An acl_file lets anyone subscribe and only filters delivery: a device joining the
    gateways' $share group made the broker drop, unread, half of the group's telemetry. Now
    the subscription is refused and the gateways receive every message."""
    device = f"qc-{uuid.uuid4().hex[:6]}"
    topic = f"port/CNSHK/crane/{device}/telemetry"
    share = f"$share/g{device}/{topic}"
    received: list[bytes] = []
    gateway = new_client(mqtt_as(stack, GATEWAY_USER), f"gw-{device}")
    gateway.on_message = lambda client, userdata, message: received.append(
        bytes(message.payload))
    subscribed = threading.Event()
    gateway.on_subscribe = lambda *args: subscribed.set()
    gateway.connect(services.HOST, services.MQTT_PORT)
    gateway.loop_start()
    try:
        gateway.subscribe(share, qos=1)
        assert subscribed.wait(10)
        edge = edge_mqtt(stack)
        assert edge.username
        assert edge.password
        assert _subscribe_as(edge.username, edge.password.get_secret_value(), share) \
            == NOT_AUTHORIZED
        codes = _publish_as(edge.username, edge.password.get_secret_value(), [topic] * 20)
        assert codes == [0x00] * 20
        wait_for(lambda: len(received) == 20, 10, "every message at the gateway")
    finally:
        gateway.loop_stop()
        gateway.disconnect()


def _subscribe_as(user: str, password: str, topic_filter: str) -> int:
    """The SUBACK reason code of one QoS 1 subscription, as ``user``."""
    client = _client(f"{user}-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(user, password)
    granted: list[int] = []
    done = threading.Event()

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int,
                     reasons: list[ReasonCode], properties: object) -> None:
        granted.append(reasons[0].value)
        done.set()

    client.on_subscribe = on_subscribe
    client.connect(services.HOST, services.MQTT_PORT)
    client.loop_start()
    try:
        client.subscribe(topic_filter, qos=1)
        assert done.wait(10)
        return granted[0]
    finally:
        client.loop_stop()
        client.disconnect()


def test_the_default_listener_refuses_anonymous_clients(stack: Settings) -> None:
    """Secure by default: 127.0.0.1:1883 wants a user (SMARTPORT_MQTT_ANONYMOUS opens it)."""
    client = _client(f"anon-{uuid.uuid4().hex[:6]}")
    result: list[int] = []
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode,
                   properties: object) -> None:
        result.append(reason.value)
        connected.set()

    client.on_connect = on_connect
    client.connect(services.HOST, services.MQTT_PORT)
    client.loop_start()
    try:
        assert connected.wait(10)
        assert result[0] != 0
    finally:
        client.loop_stop()
        client.disconnect()


def test_clickhouse_select_one(stack: Settings) -> None:
    client = Client(services.HOST, port=services.CLICKHOUSE_PORT)
    assert client.execute("SELECT 1") == [(1,)]
    assert client.execute("SELECT version()")[0][0].startswith("18.16")


def test_anvil_chain_id(stack: Settings) -> None:
    assert chain_id(f"http://{services.HOST}:{services.ANVIL_PORT}") == services.ANVIL_CHAIN_ID
