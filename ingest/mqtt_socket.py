"""An MQTT client socket that reads ahead, frames the gateway's PUBLISHes itself and writes in
bulk, for one thread driving paho's external-loop API.

paho reads a packet with three ``recv`` calls or more (its type byte, each byte of its length,
its body), builds a dict, a message object and a ``Properties`` object for each, takes two
locks, and queues each PUBACK as a packet of its own: two thirds of the gateway's CPU at a few
thousand messages a second. Here the loop reads up to 64 KB at once (``fill``), takes each
whole QoS 0/1 PUBLISH of MQTT 5 straight from that buffer (``next_publish``) and writes its
PUBACK into a buffer that leaves in one ``send`` per wake-up (``acknowledge``, ``flush``).
Every other packet (CONNACK, SUBACK, PINGRESP, DISCONNECT, QoS 2, anything malformed) is left
whole at the head of the buffer for paho's ``loop_read``, which handles or refuses it as it
always does: paho still owns the connection, its keepalive and its state.
"""

from __future__ import annotations

import ssl
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

READ_AHEAD = 64 * 1024
# Never offer a send more than this: a TLS write refused with "want write" must be retried
# with at least the bytes it was offered, and the buffer only grows at its end.
WRITE_CHUNK = 256 * 1024
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_PUBLISH = 0x30
MALFORMED = -2  # packet_bounds' end of a packet whose length is malformed
_PUBACK = b"\x40\x02"  # MQTT 5: reason code and properties omitted mean "success"


class Publish(NamedTuple):
    topic: str
    mid: int  # 0 at QoS 0: there is nothing to acknowledge
    payload: bytes


class BufferedSocket:
    """A connected, non-blocking socket (plain or TLS) that paho sees as an ordinary one.

    The loop reads (``fill``); paho's ``recv`` only ever serves what was read, so paho never
    holds half a packet. ``send`` only buffers; ``flush`` writes. An error of the real socket,
    or its end, is kept and reported by paho's next ``recv`` once what came before it is read,
    so that paho handles it as the lost connection it is.
    """

    def __init__(self, sock: Any, publishes: bool = False) -> None:
        self._sock = sock
        self._publishes = publishes  # MQTT 5: frame QoS 0/1 PUBLISHes in next_publish
        self._inbox = b""
        self._read = 0
        self._outbox = bytearray()
        self._broken: OSError | None = None
        self._ended = False  # the broker closed the connection

    # -- what paho calls --------------------------------------------------------------------

    def recv(self, size: int) -> bytes:
        start = self._read
        if start == len(self._inbox):
            if self._broken is not None:
                raise self._broken
            if self._ended:
                return b""
            raise BlockingIOError  # paho's "try again later"
        self._read = min(start + size, len(self._inbox))
        return self._inbox[start:self._read]

    def send(self, data: bytes | bytearray) -> int:
        self._outbox += data
        return len(data)

    def setblocking(self, flag: bool) -> None:
        self._sock.setblocking(flag)

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def close(self) -> None:
        """Close after a last attempt to write what is buffered (a DISCONNECT, the last acks)."""
        try:
            self.flush()
        finally:
            self._sock.close()

    # -- what the loop calls ---------------------------------------------------------------

    def fill(self) -> bool:
        """Read what the network holds now, once; False when it holds nothing yet."""
        if self._broken is not None or self._ended:
            return False
        try:
            data = self._sock.recv(READ_AHEAD)
        except _WOULD_BLOCK:
            return False
        except OSError as exc:
            self._broken = exc
            return True
        if not data:
            self._ended = True
            return True
        self._inbox = self._inbox[self._read:] + data  # the head of a packet, if any, and more
        self._read = 0
        return True

    def next_publish(self) -> Publish | None:
        """The whole QoS 0/1 PUBLISH at the head of what was read, taken; None when the head is
        anything else or not whole yet."""
        if not self._publishes:
            return None
        inbox, start = self._inbox, self._read
        body, end = packet_bounds(inbox, start)
        if end < 0:
            return None
        publish = decode_publish(inbox[start], inbox[body:end])
        if publish is not None:
            self._read = end
        return publish

    def has_packet(self) -> bool:
        """Whether paho has something to read: a whole packet, or the connection's end."""
        return (self._broken is not None or self._ended
                or packet_bounds(self._inbox, self._read)[1] != -1)

    def ready(self) -> bool:
        """Whether there is work without waiting for the network."""
        return self.has_packet() or (isinstance(self._sock, ssl.SSLSocket)
                                     and self._sock.pending() > 0)

    def acknowledge(self, mid: int) -> None:
        self._outbox += _PUBACK + mid.to_bytes(2, "big")

    @property
    def wants_write(self) -> bool:
        return bool(self._outbox) and self._broken is None

    def flush(self) -> None:
        """Write what the socket takes now; the rest waits for the socket to be writable."""
        while self._outbox and self._broken is None:
            try:
                written = self._sock.send(self._outbox[:WRITE_CHUNK])
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                self._broken = exc
                return
            del self._outbox[:written]


class BufferedClient(mqtt.Client):
    """paho's client on a ``BufferedSocket``. One of paho's (2.x) private names is overridden:
    ``_create_socket``, its hook between connecting and its first write
    (tests/unit/test_mqtt_socket.py checks it against a real paho client)."""

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket(), publishes=self._protocol == mqtt.MQTTv5)

    def buffered_socket(self) -> BufferedSocket | None:
        sock = self.socket()
        return sock if isinstance(sock, BufferedSocket) else None


def packet_bounds(data: bytes, start: int) -> tuple[int, int]:
    """Where the body of the MQTT packet at ``start`` starts and where the packet ends; the
    end is -1 while the packet is not whole yet, ``MALFORMED`` when its length is (paho then
    reads it, and refuses it)."""
    length, body = variable_byte_integer(data, start + 1)
    if length < 0:
        return body, MALFORMED if len(data) - start > 4 else -1
    return body, body + length if body + length <= len(data) else -1


def decode_publish(command: int, body: bytes) -> Publish | None:
    """The QoS 0/1 PUBLISH of MQTT 5 with this first byte and body, or None for any other
    packet and for a PUBLISH paho must see (an empty topic name: a topic alias) or refuse."""
    qos = (command >> 1) & 0x03
    if command & 0xF0 != _PUBLISH or qos > 1:
        return None
    topic_end = 2 + int.from_bytes(body[:2], "big")
    after_id = topic_end + 2 * qos
    properties_length, properties_start = variable_byte_integer(body, after_id)
    if topic_end == 2 or properties_length < 0 or properties_start + properties_length > len(
            body):
        return None
    mid = int.from_bytes(body[topic_end:after_id], "big") if qos else 0
    if qos and not mid:
        return None  # a packet id of 0 is a protocol error
    # A broker checks that topic names are UTF-8; should one not be, its message still
    # reaches the DLQ (as a topic no device publishes on) instead of costing the connection.
    topic = body[2:topic_end].decode("utf-8", "replace")
    return Publish(topic, mid, body[properties_start + properties_length:])


def variable_byte_integer(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """MQTT's variable byte integer at ``start``: (value, where what follows starts), or
    (-1, start) when it is truncated or longer than its four bytes."""
    value = 0
    for index in range(4):
        if start + index >= len(data):
            break
        byte = data[start + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, start + index + 1
    return -1, start
