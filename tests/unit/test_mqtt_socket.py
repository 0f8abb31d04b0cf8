"""The gateway's MQTT socket: reads ahead, writes in bulk, and never loses or reorders a byte."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt_socket import READ_AHEAD, BufferedClient, BufferedSocket, variable_byte_integer
from smartport.mqtt import new_client
from smartport.settings import MqttSettings


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    buffered = BufferedSocket(ours)
    yield buffered, peer
    buffered.close()
    peer.close()


def _receive_all(sock: BufferedSocket, sizes: list[int]) -> list[bytes]:
    """What paho would read: each size in turn, waiting for the network only when needed."""
    got = []
    for size in sizes:
        chunk = b""
        while len(chunk) < size:
            if not sock.pending():
                select.select([sock], [], [], 5)
            chunk += sock.recv(size - len(chunk))
        got.append(chunk)
    return got


def test_a_packet_read_byte_by_byte_is_served_from_one_read(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    publish = b"\x32\x0a" + b"\x00\x03a/b\x00\x07" + b"{}\x00"  # type, length, body
    peer.sendall(publish * 3)
    select.select([sock], [], [], 5)
    assert sock.recv(1) == b"\x32"
    assert sock.pending() == len(publish) * 3 - 1  # the rest came with the first read
    assert sock.recv(1) == b"\x0a"
    assert sock.recv(10) == publish[2:]
    assert _receive_all(sock, [len(publish)] * 2) == [publish] * 2
    assert sock.pending() == 0
    with pytest.raises(BlockingIOError):
        sock.recv(1)  # nothing buffered, nothing on the wire: paho's "try again later"


def test_a_packet_larger_than_the_read_ahead_arrives_whole_and_in_order(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    big = bytes(range(256)) * (3 * READ_AHEAD // 256 + 7)
    small = b"after"
    peer.sendall(big + small)
    assert _receive_all(sock, [1, len(big) - 1, len(small)]) == [big[:1], big[1:], small]


def test_writes_wait_for_flush_and_leave_in_order(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    acks = [b"\x40\x02" + i.to_bytes(2, "big") for i in range(1, 501)]
    for ack in acks:
        assert sock.send(ack) == len(ack)
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # nothing written yet
    assert sock.wants_write
    sock.flush()
    assert not sock.wants_write
    peer.setblocking(True)
    assert peer.recv(65536) == b"".join(acks)


def test_what_the_kernel_refuses_waits_for_the_next_flush(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    payload = bytes(range(256)) * 40_000  # 10 MB: more than both kernel buffers hold
    sock.send(payload)
    sock.flush()
    assert sock.wants_write  # the rest is kept, not dropped
    received = bytearray()
    peer.settimeout(5)
    while len(received) < len(payload):
        received += peer.recv(1 << 20)
        sock.flush()
    assert bytes(received) == payload
    assert not sock.wants_write


def test_a_write_error_is_reported_by_the_next_read(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    peer.close()
    sock.send(b"\x40\x02\x00\x01")
    sock.flush()
    assert not sock.wants_write  # nothing more is attempted on a broken connection
    assert sock.pending() > 0  # so that the loop reads at once and learns of it
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        sock.recv(1)


def test_close_writes_what_is_buffered(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    sock.send(b"\xe0\x00")  # DISCONNECT
    sock.close()
    peer.settimeout(5)
    assert peer.recv(16) == b"\xe0\x00"
    assert peer.recv(16) == b""


def test_paho_connects_through_the_buffered_socket() -> None:
    """paho 2.x's ``_create_socket`` hook is in place: its CONNECT leaves on our socket."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = new_client(MqttSettings(url=f"mqtt://127.0.0.1:{port}"), "buffered-test",
                            client_class=BufferedClient)
        client.connect_async("127.0.0.1", port)
        client.reconnect()
        sock = client.buffered_socket()
        assert isinstance(sock, BufferedSocket)
        broker, _ = server.accept()
        with broker:
            broker.settimeout(0.5)
            with pytest.raises(TimeoutError):
                broker.recv(1)  # CONNECT is buffered until the loop flushes
            sock.flush()
            broker.settimeout(5)
            assert broker.recv(1) == bytes([mqtt.CONNECT])
            broker.sendall(b"\x20\x03\x00\x00\x00")  # CONNACK, MQTT 5, no properties
            select.select([sock], [], [], 5)
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
            assert client.is_connected()
            broker.sendall(b"\x32" + b"\xff" * 5)  # a remaining length of five bytes
            select.select([sock], [], [], 5)
            assert client.loop_read() != mqtt.MQTT_ERR_SUCCESS  # refused, connection closed
            assert client.socket() is None


def _publish_body(topic: bytes, mid: int, properties: bytes, payload: bytes) -> bytes:
    return len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + properties + payload


def _properties(**values: object) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return bytes(properties.pack())  # type: ignore[no-untyped-call]


def _handled(client_class: type[mqtt.Client], command: int, body: bytes) -> mqtt.MQTTMessage:
    client = new_client(MqttSettings(), "decode-test", manual_ack=True, client_class=client_class)
    got: list[mqtt.MQTTMessage] = []
    client.on_message = lambda client, userdata, message: got.append(message)
    client._in_packet["command"] = command  # what paho's reader sets
    client._in_packet["packet"] = bytearray(body)
    assert client._handle_publish() == mqtt.MQTT_ERR_SUCCESS
    (message,) = got
    return message


PUBLISHES = {
    "plain": (0x32, _publish_body(b"port/CNSHK/rtg/r-1/telemetry", 7, b"\x00", b'{"seq":1}')),
    "dup and retain": (0x3B, _publish_body(b"a/b", 65535, b"\x00", b"x")),
    "empty payload": (0x32, _publish_body(b"a/b", 1, b"\x00", b"")),
    "non-ASCII topic": (0x32, _publish_body("港/货柜".encode(), 2, b"\x00", b"{}")),
    "70 KB payload": (0x32, _publish_body(b"a/b", 3, b"\x00", b"[" * 70_000)),
    "every property a broker forwards": (0x32, _publish_body(b"a/b", 4, _properties(
        PayloadFormatIndicator=1, MessageExpiryInterval=60, ContentType="application/json",
        ResponseTopic="r/t", CorrelationData=b"\x00\x01", UserProperty=[("k", "v" * 300)],
        SubscriptionIdentifier=[268_435_455]), b'{"a":1}')),
    "payload that looks like properties": (0x32, _publish_body(b"a/b", 5, b"\x00", b"\x80\x80")),
}


@pytest.mark.parametrize("name", PUBLISHES)
def test_publishes_decode_as_paho_decodes_them(name: str) -> None:
    command, body = PUBLISHES[name]
    ours = _handled(BufferedClient, command, body)
    pahos = _handled(mqtt.Client, command, body)
    assert (ours.topic, ours.mid, ours.qos, ours.dup, ours.retain, ours.payload) == (
        pahos.topic, pahos.mid, pahos.qos, pahos.dup, pahos.retain, pahos.payload)


MALFORMED = {
    "properties length truncated": _publish_body(b"a/b", 1, b"\x80", b""),
    "properties length of five bytes": _publish_body(b"a/b", 1, b"\xff\xff\xff\xff\x7f", b""),
    "properties longer than the packet": _publish_body(b"a/b", 1, b"\x10", b"abc"),
    "topic longer than the packet": b"\x00\x40a/b\x00\x01\x00",
    "no packet id": b"\x00\x03a/b",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_publish_is_refused_as_paho_refuses_it(name: str) -> None:
    """paho's MalformedPacket makes its reader close the connection (a protocol error)."""
    for client_class in (BufferedClient, mqtt.Client):
        client = new_client(MqttSettings(), "malformed", manual_ack=True,
                            client_class=client_class)
        client.on_message = lambda *args: pytest.fail("a malformed PUBLISH was delivered")
        client._in_packet["command"] = 0x32
        client._in_packet["packet"] = bytearray(MALFORMED[name])
        with pytest.raises(MalformedPacket):
            client._handle_publish()


@pytest.mark.parametrize(("encoded", "value"), [
    (b"\x00", 0), (b"\x7f", 127), (b"\x80\x01", 128), (b"\xff\x7f", 16_383),
    (b"\xff\xff\xff\x7f", 268_435_455), (b"\xff\xff\xff\xff\x01", -1), (b"\x80", -1), (b"", -1),
])
def test_variable_byte_integers(encoded: bytes, value: int) -> None:
    after = 2 + len(encoded) if value >= 0 else 2
    assert variable_byte_integer(b"xx" + encoded, 2) == (value, after)
