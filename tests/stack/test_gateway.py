"""The gateway against real Mosquitto and Kafka: ordering, DLQ, crashes, outages, scale-out."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from deploy import process
from deploy.pipeline import SMARTPORT
from deploy.services import Kafka
from deploy.stack import up
from ingest import gateway as gateway_module
from ingest.fleet import Fleet, FleetConfig, SimMessage
from ingest.simulate import MqttPublisher
from schemas import topics
from smartport.mqtt import forget_session
from smartport.settings import Settings
from tests.helpers import hostile_payloads
from tests.stack.pipeline import (
    FirstProducerStuck,
    GatewayProcess,
    edge_mqtt,
    high_watermarks,
    read_topic,
    telemetry_ids,
    unique,
    wait_for,
)

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(stack: Settings, tmp_path: Path) -> Iterator[StartGateway]:
    group = unique("test")
    started: list[GatewayProcess] = []

    def start(name: str = "gw", extra: tuple[str, ...] = ()) -> GatewayProcess:
        gateway = GatewayProcess(f"{group}-{name}", group, tmp_path, extra).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.alive:
            gateway.stop()
        gateway.forget_session(stack)


def fleet_messages(count: int, seed: int, prefix: str, **config: object) -> list[SimMessage]:
    """``count`` valid messages of a fleet whose device ids start with ``prefix``."""
    fleet = Fleet(FleetConfig(devices=30, seed=seed, **config))  # type: ignore[arg-type]
    renamed = []
    for message in islice(fleet.messages(), count):
        device = f"{prefix}-{message.device_id}"
        topic = message.topic.replace(f"/{message.device_id}/", f"/{device}/")
        payload = message.payload.replace(f'"{message.device_id}"'.encode(), f'"{device}"'.encode())
        renamed.append(SimMessage(topic, payload, device, message.seq, message.invalid_kind))
    return renamed


def publish(settings: Settings, messages: list[SimMessage], rate: float = 0) -> None:
    publisher = MqttPublisher(edge_mqtt(settings))
    started = time.monotonic()
    for index, message in enumerate(messages):
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        publisher.publish(message.topic, message.payload)
    publisher.close(len(messages))
    assert publisher.acknowledged == len(messages)


def expected_ids(messages: list[SimMessage]) -> set[tuple[str, int]]:
    return {(m.device_id, m.seq) for m in messages if m.seq is not None}


def ids_of(message: SimMessage) -> set[tuple[str, int]]:
    return expected_ids([message])


def wait_until_in_kafka(settings: Settings, since: dict[int, int], want: set[tuple[str, int]],
                        timeout: float = 90) -> list:  # type: ignore[type-arg]
    found: list = []  # type: ignore[type-arg]

    def arrived() -> bool:
        found[:] = read_topic(settings, topics.TELEMETRY, since)
        return want <= telemetry_ids(found)

    try:
        wait_for(arrived, timeout, "every published reading in telemetry.v1")
    except AssertionError:
        missing = want - telemetry_ids(found)
        raise AssertionError(f"{len(missing)} of {len(want)} readings missing, e.g. "
                             f"{sorted(missing)[:5]}") from None
    return found


def forwarded_by_successor(stack: Settings, gateway_id: str, log_dir: Path,
                           since: dict[int, int], want: set[tuple[str, int]]) -> None:
    """A gateway process with ``gateway_id`` (and its session) forwards ``want``: what the
    gateway before it left unacknowledged."""
    successor = GatewayProcess(gateway_id, gateway_id, log_dir).start()
    try:
        wait_until_in_kafka(stack, since, want)
    finally:
        successor.stop()
        successor.forget_session(stack)


def test_mosquitto_pub_payloads_arrive_in_order(stack: Settings, start_gateway: StartGateway,
                                                 tmp_path: Path) -> None:
    start_gateway()
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(1500, seed=11, prefix=unique("mp"))
    by_topic: dict[str, list[bytes]] = defaultdict(list)
    for message in messages:
        by_topic[message.topic].append(message.payload)
    edge = edge_mqtt(stack)
    assert edge.username
    assert edge.password
    for topic, payloads in by_topic.items():  # a client we did not write, one topic per call
        lines = tmp_path / "lines.txt"
        lines.write_bytes(b"\n".join(payloads) + b"\n")
        subprocess.run(["mosquitto_pub", "-h", stack.mqtt.host, "-p", str(stack.mqtt.port),
                        "-u", edge.username, "-P", edge.password.get_secret_value(),
                        "-q", "1", "-t", topic, "-l"], stdin=lines.open("rb"), check=True,
                       timeout=60)

    records = wait_until_in_kafka(stack, since, expected_ids(messages))
    # Kafka orders per partition; a key lives in one partition, so per (key, device) the
    # readings must appear in the order the device sent them.
    seqs_by_key: dict[tuple[bytes, str], list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        reading = record.value["reading"]
        assert record.key == (reading.get("container_no") or reading["device_id"]).encode()
        seqs_by_key[record.key, reading["device_id"]].append(reading["seq"])
    for (key, device), seqs in seqs_by_key.items():
        assert seqs == sorted(seqs), f"{device} readings of key {key!r} out of order in Kafka"


def test_qos_0_messages_are_forwarded_without_a_puback(
    stack: Settings, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A device may publish at QoS 0: the broker then delivers it at QoS 0, without a packet
    id. A PUBACK for it is a protocol error for which the broker drops the gateway's
    connection, so one such device would keep every gateway reconnecting."""
    gateway = start_gateway()
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(40, seed=12, prefix=unique("q0"))
    edge = edge_mqtt(stack)
    assert edge.username
    assert edge.password
    for message in messages:
        subprocess.run(["mosquitto_pub", "-h", stack.mqtt.host, "-p", str(stack.mqtt.port),
                        "-u", edge.username, "-P", edge.password.get_secret_value(),
                        "-q", "0", "-t", message.topic, "-m", message.payload.decode()],
                       check=True, timeout=30)
    wait_until_in_kafka(stack, since, expected_ids(messages))
    then = fleet_messages(20, seed=13, prefix=unique("q1"))
    publish(stack, then)
    wait_until_in_kafka(stack, since, expected_ids(then))
    log = gateway.log_path.read_text()
    assert "MQTT disconnected" not in log, log[-2000:]
    assert log.count(gateway_module.READY) == 1  # subscribed once: never reconnected


BAD_PAYLOADS: dict[str, tuple[bytes, str, str]] = {
    # name: (payload, reason, words in the detail)
    "not_json": (b"{temperature: 5", "not_json", "not JSON"),
    "not_utf8": (b"\xff\xfe\x00garbage", "not_utf8", "not UTF-8"),
    "wrong_schema": (b'{"kind":"crane","device_id":"DEV","seq":"x"}', "schema", "seq"),
    "bad_container": (
        b'{"kind":"container","device_id":"DEV","seq":1,"ts":"2026-11-24T00:00:00Z",'
        b'"port":"CNSHK","container_no":"CSQU3054384"}', "schema", "want 3"),
    "spoofed_device": (
        b'{"kind":"container","device_id":"someone-else","seq":1,"ts":"2026-11-24T00:00:00Z",'
        b'"port":"CNSHK","container_no":"CSQU3054383"}', "spoofed_topic", "someone-else"),
    "oversized": (b'{"pad":"' + b"x" * 70_000 + b'"}', "oversized", "limit is 65536"),
}


def test_bad_input_goes_to_the_dlq_with_reasons(stack: Settings,
                                                 start_gateway: StartGateway) -> None:
    metrics_port = 19_101
    start_gateway(extra=("--metrics-port", str(metrics_port)))
    since_dlq = high_watermarks(stack, topics.TELEMETRY_DLQ)
    since = high_watermarks(stack, topics.TELEMETRY)
    device = unique("bad")
    topic = f"port/CNSHK/container/{device}/telemetry"
    publisher = MqttPublisher(edge_mqtt(stack))
    for payload, _, _ in BAD_PAYLOADS.values():
        publisher.publish(topic, payload.replace(b"DEV", device.encode()))
    spoofed_kind = BAD_PAYLOADS["bad_container"][0].replace(b"CSQU3054384", b"CSQU3054383")
    publisher.publish(f"port/CNSHK/drone/{device}/telemetry", spoofed_kind.replace(
        b"DEV", device.encode()))
    good = fleet_messages(1, seed=5, prefix=device)
    publisher.publish(good[0].topic, good[0].payload)
    publisher.close(len(BAD_PAYLOADS) + 2)

    wait_until_in_kafka(stack, since, expected_ids(good))  # the gateway kept running
    dlq = {r.value["payload_b64"]: r for r in read_topic(stack, topics.TELEMETRY_DLQ, since_dlq)}
    for name, (payload, reason, words) in BAD_PAYLOADS.items():
        raw = payload.replace(b"DEV", device.encode())
        record = dlq.get(base64.b64encode(raw).decode())
        assert record is not None, f"{name} not in the DLQ"
        assert record.value["reason"] == reason, name
        assert words in record.value["detail"], (name, record.value["detail"])
        assert record.value["payload_size"] == len(raw)
        assert record.value["mqtt_topic"] == topic
        assert record.key == device.encode()

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
        text = response.read().decode()
    assert 'smartport_gateway_dlq_total{reason="oversized"} 1.0' in text
    assert 'smartport_gateway_dlq_total{reason="schema"} 2.0' in text
    assert 'smartport_gateway_dlq_total{reason="spoofed_topic"} 2.0' in text
    assert 'smartport_gateway_dlq_total{reason="not_json"} 1.0' in text


def test_sigkill_mid_stream_loses_nothing(stack: Settings, start_gateway: StartGateway) -> None:
    gateway = start_gateway()
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(6000, seed=12, prefix=unique("kill"))
    publishing = threading.Thread(target=publish, args=(stack, messages, 1500))
    publishing.start()
    time.sleep(1.5)
    gateway.kill()  # mid-stream: some messages in flight, some queued at the broker
    time.sleep(1.0)
    gateway.start()
    publishing.join()
    wait_until_in_kafka(stack, since, expected_ids(messages))


def test_kafka_outage_is_survived(stack: Settings, start_gateway: StartGateway) -> None:
    start_gateway()
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(6000, seed=13, prefix=unique("outage"))
    publishing = threading.Thread(target=publish, args=(stack, messages, 200))
    publishing.start()
    kafka = Kafka(stack.state_dir, stack.kafka.partitions)
    try:
        time.sleep(3)
        assert process.stop(kafka.pid_path), "the test needs the stack's own Kafka"
        time.sleep(15)
    finally:
        up(stack)  # restart Kafka; the gateway must recover by itself
    publishing.join()
    wait_until_in_kafka(stack, since, expected_ids(messages), timeout=120)


def test_two_gateways_split_the_load_and_a_killed_one_loses_nothing(
    stack: Settings, start_gateway: StartGateway
) -> None:
    first, second = start_gateway("a"), start_gateway("b")
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(6000, seed=14, prefix=unique("pair"))
    publishing = threading.Thread(target=publish, args=(stack, messages, 1500))
    publishing.start()
    time.sleep(1.5)
    first.kill()
    publishing.join()
    # Mosquitto keeps the dead gateway's share queued in its persistent session: the first
    # gateway's messages arrive when it comes back under the same id.
    first.start()
    records = wait_until_in_kafka(stack, since, expected_ids(messages))
    by_gateway: dict[str, int] = defaultdict(int)
    for record in records:
        by_gateway[record.value["gateway_id"]] += 1
    assert by_gateway[first.gateway_id] > 500
    assert by_gateway[second.gateway_id] > 500
    assert second.alive


fuzz_payloads = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.builds(lambda v: json.dumps(v).encode(), st.dictionaries(
            st.sampled_from(["kind", "device_id", "seq", "ts", "port", "container_no", "door",
                             "reefer_temp_c", "event", "x"]),
            st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=16),
                      st.sampled_from(["container", "crane", "CSQU3054383", "CNSHK"])))),
    ),
    min_size=50, max_size=50, unique=True,
)


def test_arbitrary_payloads_never_crash_the_gateway(
    stack: Settings, start_gateway: StartGateway
) -> None:
    gateway = start_gateway("fuzz")

    @hypothesis_settings(max_examples=3, deadline=None)
    @given(payloads=fuzz_payloads)
    def every_payload_is_accounted_for(payloads: list[bytes]) -> None:
        since_dlq = high_watermarks(stack, topics.TELEMETRY_DLQ)
        since = high_watermarks(stack, topics.TELEMETRY)
        device = unique("fuzz")
        topic = f"port/CNSHK/container/{device}/telemetry"
        publisher = MqttPublisher(edge_mqtt(stack))
        for payload in payloads:
            publisher.publish(topic, payload)
        sentinel = fleet_messages(1, seed=6, prefix=device)[0]
        publisher.publish(sentinel.topic, sentinel.payload)
        publisher.close(len(payloads) + 1)

        wait_until_in_kafka(stack, since, ids_of(sentinel))
        assert gateway.alive
        rejected = {base64.b64decode(r.value["payload_b64"])
                    for r in read_topic(stack, topics.TELEMETRY_DLQ, since_dlq)
                    if r.value.get("mqtt_topic") == topic}
        accepted = [r for r in read_topic(stack, topics.TELEMETRY, since)
                    if r.value["mqtt_topic"] == topic]
        assert len(rejected) + len(accepted) == len(payloads)

    every_payload_is_accounted_for()


# -- hostile input and a dead network loop ---------------------------------------------------


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        return str(response.read().decode())


def test_hostile_payloads_then_valid_traffic_all_arrive(
    stack: Settings, start_gateway: StartGateway
) -> None:
    """Each adversarial payload is kept in the DLQ with its reason (a bounded prefix, the whole
    size and SHA-256), and the gateway goes on receiving: every valid reading after them
    arrives. Before the fix the first of them (20,000 '[') ended paho's thread for good."""
    metrics_port = 19_102
    gateway = start_gateway("hostile", extra=("--metrics-port", str(metrics_port)))
    since_dlq = high_watermarks(stack, topics.TELEMETRY_DLQ)
    since = high_watermarks(stack, topics.TELEMETRY)
    device = unique("hostile")
    topic = f"port/CNSHK/crane/{device}/telemetry"
    hostile = {name: (payload.replace(b'"qc-01', f'"{device}'.encode()), reason, words)
               for name, (payload, reason, words) in hostile_payloads(datetime.now(UTC)).items()}
    good = fleet_messages(300, seed=7, prefix=device)
    publisher = MqttPublisher(edge_mqtt(stack))
    for payload, _, _ in hostile.values():
        publisher.publish(topic, payload)
    for message in good:
        publisher.publish(message.topic, message.payload)
    publisher.close(len(hostile) + len(good))

    wait_until_in_kafka(stack, since, expected_ids(good))
    assert gateway.alive
    dlq = {r.value["payload_sha256"]: r.value for r in read_topic(
        stack, topics.TELEMETRY_DLQ, since_dlq) if r.value.get("mqtt_topic") == topic}
    for name, (payload, reason, words) in hostile.items():
        record = dlq.get(hashlib.sha256(payload).hexdigest())
        assert record is not None, f"{name} is not in the DLQ"
        assert (record["reason"], record["payload_size"]) == (reason.value, len(payload)), name
        assert words in record["detail"], (name, record["detail"])
        assert payload.startswith(base64.b64decode(record["payload_b64"])), name
    text = _metrics(metrics_port)
    assert "smartport_gateway_ready 1.0" in text
    assert 'smartport_gateway_dlq_total{reason="internal"}' not in text


class _ThreadKiller(BaseException):
    """Not an Exception: nothing of ours catches it, as with a bug in paho itself."""


def test_a_dead_network_loop_ends_the_gateway_and_loses_nothing(
    stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = unique("deaf")

    def explode(*args: object, **kwargs: object) -> None:
        raise _ThreadKiller("paho's network thread dies here")

    monkeypatch.setattr(gateway_module, "classify", explode)
    deaf = gateway_module.Gateway(stack, group, share_group=group)
    since = high_watermarks(stack, topics.TELEMETRY)
    with ThreadPoolExecutor(1) as runner:
        running = runner.submit(deaf.run, threading.Event())
        wait_for(lambda: REGISTRY.get_sample_value("smartport_gateway_ready") == 1.0, 30,
                 "the in-process gateway to subscribe")
        message = fleet_messages(1, seed=8, prefix=group)[0]
        publish(stack, [message])
        with pytest.raises(gateway_module.GatewayDeaf, match="network loop ended"):
            running.result(timeout=30)
    assert REGISTRY.get_sample_value("smartport_gateway_ready") == 0.0
    monkeypatch.undo()
    # The message that killed it was never acknowledged: the restarted gateway delivers it.
    forwarded_by_successor(stack, group, tmp_path, since, ids_of(message))


def test_a_producer_that_delivers_nothing_is_replaced_and_its_messages_follow(
        stack: Settings) -> None:
    """After a Kafka restart a librdkafka producer was seen left with no broker to ask, for
    good: the gateway would hold its acknowledgements while saying ready. Here its first
    producer talks to a port nothing listens on: it is replaced, what it held is produced
    again by the next one, once each, and acknowledged."""
    group = unique("stuck-producer")
    settings = stack.model_copy(update={
        "kafka": stack.kafka.model_copy(update={"replace_after_s": 3.0})})
    new_producer = FirstProducerStuck()

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    acknowledged = sample("smartport_gateway_acknowledged_total")
    gateway = gateway_module.Gateway(settings, group, share_group=group,
                                     new_producer=new_producer)
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(40, seed=21, prefix=group)
    stop = threading.Event()
    with ThreadPoolExecutor(1) as runner:
        running = runner.submit(gateway.run, stop)
        try:
            wait_for(lambda: sample("smartport_gateway_ready") == 1.0, 30,
                     "the in-process gateway to subscribe")
            publish(stack, messages)
            found = wait_until_in_kafka(stack, since, expected_ids(messages))
            wait_for(lambda: sample("smartport_gateway_in_flight") == 0, 30,
                     "every message acknowledged")
        finally:
            stop.set()
            running.result(timeout=60)
            forget_session(stack, group)
    assert new_producer.made == 2
    assert sample("smartport_kafka_producers_replaced_total", {"client": group}) == 1
    assert sample("smartport_gateway_acknowledged_total") == acknowledged + len(messages)
    ids = [(r.value["reading"]["device_id"], r.value["reading"]["seq"]) for r in found
           if r.value["reading"]["device_id"].startswith(group)]
    assert sorted(ids) == sorted(set(ids)), "a record was produced twice"


def _limit_telemetry_records(stack: Settings, max_bytes: str | None) -> None:
    """telemetry.v1's largest record batch: ``max_bytes``, or the broker's default."""
    admin = AdminClient(stack.kafka.client_config())
    entry = ConfigEntry("max.message.bytes", max_bytes, incremental_operation=(
        AlterConfigOpType.SET if max_bytes else AlterConfigOpType.DELETE))
    resource = ConfigResource(ResourceType.TOPIC, topics.TELEMETRY, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()


def test_a_gateway_whose_every_message_in_flight_kafka_refused_exits_and_loses_nothing(
        stack: Settings, tmp_path: Path) -> None:
    """A message Kafka refuses is left unacknowledged (the broker keeps it): it holds one
    place of the broker's in-flight window until the next connection. Once every place is so
    held the broker sends the gateway nothing more: alive, subscribed, ready, and deaf. It
    must say so and exit, for its successor to be given the messages again."""
    group = unique("refused")
    gateway = gateway_module.Gateway(stack, group, share_group=group, receive_maximum=3)
    since = high_watermarks(stack, topics.TELEMETRY)
    messages = fleet_messages(3, seed=31, prefix=group)
    stop = threading.Event()
    _limit_telemetry_records(stack, "64")
    try:
        with ThreadPoolExecutor(1) as runner:
            running = runner.submit(gateway.run, stop)
            try:
                wait_for(lambda: REGISTRY.get_sample_value("smartport_gateway_ready") == 1.0,
                         30, "the in-process gateway to subscribe")
                publish(stack, messages)
                with pytest.raises(gateway_module.GatewayBlocked,
                                   match=r"Kafka refused all 3 messages"):
                    running.result(timeout=60)
            finally:
                stop.set()  # should it still run
        assert REGISTRY.get_sample_value("smartport_gateway_ready") == 0.0
    finally:
        _limit_telemetry_records(stack, None)
    forwarded_by_successor(stack, group, tmp_path, since, expected_ids(messages))


def test_gateways_split_the_topics_without_sharing_a_subscription(
    stack: Settings, tmp_path: Path
) -> None:
    """Scale-out with plain subscriptions: disjoint filters, each reading in Kafka once."""
    cranes = GatewayProcess(unique("gw-cranes"), None, tmp_path,
                            ("--subscribe", "port/+/crane/+/telemetry")).start()
    others = GatewayProcess(unique("gw-others"), None, tmp_path,
                            ("--subscribe", "port/+/container/+/telemetry",
                             "--subscribe", "port/+/rtg/+/telemetry")).start()
    try:
        since = high_watermarks(stack, topics.TELEMETRY)
        prefix = unique("split")
        messages = fleet_messages(1500, seed=15, prefix=prefix)
        publish(stack, messages)
        records = wait_until_in_kafka(stack, since, expected_ids(messages))
        mine = [r for r in records if r.value["reading"]["device_id"].startswith(prefix)]
        assert {r.value["reading"]["kind"] for r in mine} == {"crane", "container", "rtg"}
        assert len(telemetry_ids(mine)) == len(mine)  # no reading written twice
        for record in mine:
            kind = record.value["reading"]["kind"]
            assert record.value["gateway_id"] == (
                cranes.gateway_id if kind == "crane" else others.gateway_id)
    finally:
        for gateway in (cranes, others):
            gateway.stop()
            gateway.forget_session(stack)


def test_a_bad_subscription_is_refused_with_the_reason() -> None:
    done = subprocess.run([*SMARTPORT, "gateway", "--subscribe", "port/#"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "not a telemetry filter" in done.stderr
