"""The gateway's MQTT socket: reads ahead, frames PUBLISHes as paho would, leaves every other
packet whole to paho, writes in bulk, and never loses or reorders a byte."""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.mqtt_socket import (
    MALFORMED,
    READ_AHEAD,
    BufferedClient,
    BufferedSocket,
    Publish,
    decode_publish,
    packet_bounds,
    variable_byte_integer,
)
from smartport.mqtt import new_client
from smartport.settings import MqttSettings


@pytest.fixture
def pair() -> Iterator[tuple[BufferedSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    buffered = BufferedSocket(ours, publishes=True)
    yield buffered, peer
    buffered.close()
    peer.close()


def _length(value: int) -> bytes:
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        encoded.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def _publish_body(topic: bytes, mid: int | None, properties: bytes, payload: bytes) -> bytes:
    packet_id = b"" if mid is None else mid.to_bytes(2, "big")
    return len(topic).to_bytes(2, "big") + topic + packet_id + properties + payload


def _packet(command: int, body: bytes) -> bytes:
    return bytes([command]) + _length(len(body)) + body


def _fill_until(sock: BufferedSocket) -> None:
    """Read from the network until the socket holds a whole packet (or the timeout)."""
    for _ in range(100):
        if sock.has_packet():
            return
        select.select([sock], [], [], 0.05)
        sock.fill()


def test_publishes_are_taken_from_one_read(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    bodies = [_publish_body(b"a/b", mid, b"\x00", b'{"seq":%d}' % mid) for mid in (1, 2, 3)]
    peer.sendall(b"".join(_packet(0x32, body) for body in bodies))
    select.select([sock], [], [], 5)
    assert sock.fill()
    assert [sock.next_publish() for _ in range(4)] == [
        Publish("a/b", 1, b'{"seq":1}'), Publish("a/b", 2, b'{"seq":2}'),
        Publish("a/b", 3, b'{"seq":3}'), None]
    assert not sock.fill()  # nothing more on the wire
    with pytest.raises(BlockingIOError):
        sock.recv(1)  # paho is never served more than was read: "try again later"


def test_a_packet_split_across_reads_is_taken_once_whole(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    packet = _packet(0x32, _publish_body(b"port/x", 9, b"\x00", b"{}" * 100))
    for cut in (1, 2, 5, len(packet) - 1):
        peer.sendall(packet[:cut])
        select.select([sock], [], [], 5)
        assert sock.fill()
        assert sock.next_publish() is None
        assert not sock.has_packet()
        assert not sock.ready()
        peer.sendall(packet[cut:])
        _fill_until(sock)
        assert sock.next_publish() == Publish("port/x", 9, b"{}" * 100)


def test_a_packet_larger_than_the_read_ahead_arrives_whole_and_in_order(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    big = bytes(range(256)) * (3 * READ_AHEAD // 256 + 7)
    packets = [_packet(0x32, _publish_body(b"a/b", 1, b"\x00", big)),
               _packet(0x30, _publish_body(b"a/c", None, b"\x00", b"after"))]
    peer.setblocking(False)
    sent = 0
    wire = b"".join(packets)
    got: list[Publish] = []
    while len(got) < 2:
        if sent < len(wire):
            with contextlib.suppress(BlockingIOError):
                sent += peer.send(wire[sent:sent + 50_000])
        sock.fill()
        publish = sock.next_publish()
        if publish is not None:
            got.append(publish)
    assert got == [Publish("a/b", 1, big), Publish("a/c", 0, b"after")]


def test_other_packets_are_left_whole_for_paho(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    pingresp, publish = b"\xd0\x00", _packet(0x32, _publish_body(b"a/b", 4, b"\x00", b"x"))
    peer.sendall(pingresp + publish)
    _fill_until(sock)
    assert sock.next_publish() is None  # not a PUBLISH: untouched
    assert sock.has_packet()
    assert (sock.recv(1), sock.recv(1)) == (b"\xd0", b"\x00")  # what paho reads
    assert sock.next_publish() == Publish("a/b", 4, b"x")


def test_writes_wait_for_flush_and_leave_in_order(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    for mid in range(1, 501):
        sock.acknowledge(mid)
    sock.send(b"\xc0\x00")  # a PINGREQ paho writes between them
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # nothing written yet
    assert sock.wants_write
    sock.flush()
    assert not sock.wants_write
    peer.setblocking(True)
    expected = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in range(1, 501))
    received = b""
    while len(received) < len(expected) + 2:
        received += peer.recv(65536)
    assert received == expected + b"\xc0\x00"


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
    sock.acknowledge(1)
    sock.flush()
    assert not sock.wants_write  # nothing more is attempted on a broken connection
    assert sock.has_packet()
    assert sock.ready()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        sock.recv(1)


def test_the_end_of_the_connection_follows_what_came_before_it(
    pair: tuple[BufferedSocket, socket.socket]
) -> None:
    sock, peer = pair
    peer.sendall(b"\xd0")  # half a PINGRESP, then the broker closes
    peer.close()
    _fill_until(sock)
    assert sock.fill() is False  # nothing is read after the end
    assert sock.has_packet()  # paho's to read: the half packet, then the end
    assert (sock.recv(1), sock.recv(1)) == (b"\xd0", b"")


def test_close_writes_what_is_buffered(pair: tuple[BufferedSocket, socket.socket]) -> None:
    sock, peer = pair
    sock.send(b"\xe0\x00")  # DISCONNECT
    sock.close()
    peer.settimeout(5)
    assert peer.recv(16) == b"\xe0\x00"
    assert peer.recv(16) == b""


def test_paho_connects_and_keeps_every_packet_but_publishes() -> None:
    """paho 2.x's ``_create_socket`` hook is in place: its CONNECT leaves on our socket, it
    reads the CONNACK and refuses a malformed packet, and the socket frames the PUBLISHes."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = new_client(MqttSettings(url=f"mqtt://127.0.0.1:{port}"), "buffered-test",
                            manual_ack=True, client_class=BufferedClient)
        client.on_message = lambda *args: pytest.fail("paho decoded a QoS 1 PUBLISH")
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
            broker.sendall(b"\x20\x03\x00\x00\x00"  # CONNACK, MQTT 5, no properties
                           + _packet(0x32, _publish_body(b"a/b", 7, b"\x00", b"{}")))
            _fill_until(sock)
            assert sock.next_publish() is None
            assert client.loop_read() == mqtt.MQTT_ERR_SUCCESS
            assert client.is_connected()
            assert sock.next_publish() == Publish("a/b", 7, b"{}")
            broker.sendall(b"\x32" + b"\xff" * 5)  # a remaining length of five bytes
            _fill_until(sock)
            assert sock.next_publish() is None
            assert client.loop_read() != mqtt.MQTT_ERR_SUCCESS  # refused, connection closed
            assert client.socket() is None


def _properties(**values: object) -> bytes:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(properties, name, value)
    return bytes(properties.pack())  # type: ignore[no-untyped-call]


def _paho_decodes(command: int, body: bytes) -> mqtt.MQTTMessage:
    client = new_client(MqttSettings(), "decode-test", manual_ack=True)
    got: list[mqtt.MQTTMessage] = []
    client.on_message = lambda client, userdata, message: got.append(message)
    client._in_packet["command"] = command  # what paho's reader sets
    client._in_packet["packet"] = bytearray(body)
    client._handle_publish()
    (message,) = got
    return message


PUBLISHES = {
    "plain": (0x32, _publish_body(b"port/CNSHK/rtg/r-1/telemetry", 7, b"\x00", b'{"seq":1}')),
    "QoS 0": (0x30, _publish_body(b"port/CNSHK/rtg/r-1/telemetry", None, b"\x00", b"{}")),
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
    ours = decode_publish(command, body)
    pahos = _paho_decodes(command, body)
    assert ours == Publish(pahos.topic, pahos.mid, bytes(pahos.payload))


MALFORMED_PUBLISHES = {
    "properties length truncated": _publish_body(b"a/b", 1, b"\x80", b""),
    "properties length of five bytes": _publish_body(b"a/b", 1, b"\xff\xff\xff\xff\x7f", b""),
    "properties longer than the packet": _publish_body(b"a/b", 1, b"\x10", b"abc"),
    "topic longer than the packet": b"\x00\x40a/b\x00\x01\x00",
    "no packet id": b"\x00\x03a/b",
    "no topic length": b"\x00",
    "empty": b"",
}


@pytest.mark.parametrize("name", MALFORMED_PUBLISHES)
def test_a_malformed_publish_is_left_to_paho_which_refuses_it(name: str) -> None:
    """paho's MalformedPacket makes its reader close the connection (a protocol error)."""
    body = MALFORMED_PUBLISHES[name]
    assert decode_publish(0x32, body) is None
    client = new_client(MqttSettings(), "malformed", manual_ack=True)
    client.on_message = lambda *args: pytest.fail("a malformed PUBLISH was delivered")
    client._in_packet["command"] = 0x32
    client._in_packet["packet"] = bytearray(body)
    with pytest.raises((MalformedPacket, IndexError, ValueError)):
        client._handle_publish()


@pytest.mark.parametrize(("command", "body"), [
    (0x34, _publish_body(b"a/b", 1, b"\x00", b"{}")),  # QoS 2: paho's handshake
    (0x32, _publish_body(b"", 1, b"\x03\x23\x00\x01", b"{}")),  # a topic alias
    (0x32, _publish_body(b"a/b", 0, b"\x00", b"{}")),  # packet id 0
    (0x20, b"\x00\x00"),  # CONNACK
    (0x90, b"\x00\x01\x00\x01"),  # SUBACK
])
def test_every_other_packet_is_left_to_paho(command: int, body: bytes) -> None:
    assert decode_publish(command, body) is None


@pytest.mark.parametrize(("data", "bounds"), [
    (b"", (1, -1)), (b"\x32", (1, -1)), (b"\x32\x05abcd", (2, -1)), (b"\x32\x05abcde", (2, 7)),
    (b"\xd0\x00", (2, 2)), (b"\x32\x80\x01" + b"x" * 128, (3, 131)),
    (b"\x32\xff\xff\xff", (1, -1)), (b"\x32\xff\xff\xff\xff", (1, MALFORMED)),
])
def test_packet_bounds(data: bytes, bounds: tuple[int, int]) -> None:
    assert packet_bounds(data, 0) == bounds


@pytest.mark.parametrize(("encoded", "value"), [
    (b"\x00", 0), (b"\x7f", 127), (b"\x80\x01", 128), (b"\xff\x7f", 16_383),
    (b"\xff\xff\xff\x7f", 268_435_455), (b"\xff\xff\xff\xff\x01", -1), (b"\x80", -1), (b"", -1),
])
def test_variable_byte_integers(encoded: bytes, value: int) -> None:
    after = 2 + len(encoded) if value >= 0 else 2
    assert variable_byte_integer(b"xx" + encoded, 2) == (value, after)
