"""An MQTT client whose socket reads ahead and writes in bulk, for one thread driving paho's
external-loop API (``loop_read`` / ``loop_write`` / ``loop_misc``).

paho reads a packet with three ``recv`` calls or more (its type byte, each byte of its length,
its body) and sends each packet, a PUBACK included, with its own ``send``. Behind this socket
those calls are slices of one 64 KB ``recv``, and everything paho writes between two
``flush`` calls leaves in one ``send``: at thousands of messages a second that is a few
system calls per wake-up instead of several per message.
"""

from __future__ import annotations

import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt

READ_AHEAD = 64 * 1024
# Never offer a send more than this: a TLS write refused with "want write" must be retried
# with at least the bytes it was offered, and the buffer only grows at its end.
WRITE_CHUNK = 256 * 1024
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class BufferedSocket:
    """A connected, non-blocking socket (plain or TLS) seen by paho as an ordinary one.

    ``recv`` serves from what the last real read brought and reads again only once that is
    used up, so a packet split over two reads is finished by the next. ``send`` only buffers;
    ``flush`` writes. An error of the real socket while flushing is kept and reported by the
    next ``recv``, so that paho handles it as the lost connection it is.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._inbox = b""
        self._read = 0
        self._outbox = bytearray()
        self._broken: OSError | None = None

    # -- what paho calls --------------------------------------------------------------------

    def recv(self, size: int) -> bytes:
        if self._broken is not None:
            raise self._broken
        if self._read == len(self._inbox):
            data: bytes = self._sock.recv(READ_AHEAD)
            if len(data) <= size:
                return data  # b"" included: the broker closed the connection
            self._inbox, self._read = data, 0
        start = self._read
        self._read = min(start + size, len(self._inbox))
        return self._inbox[start:self._read]

    def send(self, data: bytes | bytearray) -> int:
        self._outbox += data
        return len(data)

    def pending(self) -> int:
        """Bytes readable without waiting for the network (paho's name, from ssl.SSLSocket)."""
        if self._broken is not None:
            return 1  # so that the caller reads, and learns of it
        buffered = len(self._inbox) - self._read
        inner = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return buffered + inner

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
    """paho's client on a ``BufferedSocket``, decoding the gateway's PUBLISHes itself.

    Two of paho's (2.x) private names are overridden: ``_create_socket``, its hook between
    connecting and its first write, and ``_handle_publish``; tests/unit/test_mqtt_socket.py
    checks both against a real paho client.
    """

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def buffered_socket(self) -> BufferedSocket | None:
        sock = self.socket()
        return sock if isinstance(sock, BufferedSocket) else None

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        """A QoS 1 PUBLISH of MQTT 5, without decoding its properties (the gateway reads none:
        paho builds a ``Properties`` per message, a sixth of the gateway's CPU). Anything else
        (QoS 0, MQTT 3, an empty topic name, a malformed packet) is decoded, or refused, by paho.
        """
        command: int = self._in_packet["command"]
        body: bytearray = self._in_packet["packet"]
        if command & 0x06 != 0x02 or self._protocol != mqtt.MQTTv5:
            return super()._handle_publish()
        topic_end = 2 + int.from_bytes(body[:2], "big")
        properties_length, properties_start = variable_byte_integer(body, topic_end + 2)
        payload_start = properties_start + properties_length
        if topic_end == 2 or properties_length < 0 or payload_start > len(body):
            return super()._handle_publish()
        message = mqtt.MQTTMessage(int.from_bytes(body[topic_end:topic_end + 2], "big"),
                                   bytes(body[2:topic_end]))
        message.qos = 1
        message.dup = bool(command & 0x08)
        message.retain = bool(command & 0x01)
        message.payload = bytes(body[payload_start:])
        message.timestamp = time.monotonic()
        self._handle_on_message(message)
        if self._manual_ack:
            return mqtt.MQTT_ERR_SUCCESS
        return self._send_puback(message.mid)


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
