"""A load generator that does not eat the budget it measures: MQTT 3.1.1 QoS 1 over a plain
socket, every PUBLISH encoded before the clock starts, the packets due written together every
``TICK_S``, PUBACKs counted in bulk by a reader thread. A fraction of a paho publisher's CPU
per message (which took a third of a core per 1,000 msg/s), so the two cores go to the
pipeline under test; the benches report it apart.

Bench-only: no TLS, no reconnection (a lost connection fails the run, with what was
acknowledged so far).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence

from smartport.settings import MqttSettings

TICK_S = 0.002
_CONNACK_ACCEPTED = b"\x20\x02"


def _length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)  # clean session
    body = _string(b"MQTT") + bytes([4, flags]) + (0).to_bytes(2, "big")  # no keepalive
    body += _string(client_id.encode())
    body += _string(username.encode()) if username else b""
    body += _string(password.encode()) if password else b""
    return b"\x10" + _length(len(body)) + body


def publish_packet(topic: str, payload: bytes, mid: int) -> bytes:
    body = _string(topic.encode()) + mid.to_bytes(2, "big") + payload
    return b"\x32" + _length(len(body)) + body


class LeanPublisher:
    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        password = settings.password.get_secret_value() if settings.password else None
        self._sock = socket.create_connection((settings.host, settings.port), timeout=10)
        self._sock.sendall(connect_packet(client_id, settings.username, password))
        connack = self._sock.recv(4)
        if not connack.startswith(_CONNACK_ACCEPTED) or connack[3:4] != b"\x00":
            raise RuntimeError(f"the broker refused the bench publisher: CONNACK {connack!r}")
        self._sock.settimeout(None)
        self.acknowledged = 0
        self._acked = threading.Condition()
        self._reader = threading.Thread(target=self._count_pubacks, daemon=True)
        self._reader.start()

    def _count_pubacks(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                return  # closed by us, or by the broker: close() reports what was counted
            pending += chunk
            count, used = 0, 0
            while len(pending) - used >= 4:  # a PUBACK is 4 bytes; the broker sends no other
                count += pending[used] >> 4 == 4
                used += 4
            pending = pending[used:]
            with self._acked:
                self.acknowledged += count
                self._acked.notify_all()
            time.sleep(TICK_S)  # PUBACKs in bulk: one wake-up per tick, not per message

    def publish(self, messages: Sequence[tuple[str, bytes, float]]) -> None:
        """Publish each (topic, payload, due wall-clock time) at its time, in order."""
        packets = [publish_packet(topic, payload, index % 65535 + 1)
                   for index, (topic, payload, _) in enumerate(messages)]
        sent = 0
        while sent < len(packets):
            now = time.time()
            due = sent
            while due < len(packets) and messages[due][2] <= now:
                due += 1
            if due > sent:
                self._sock.sendall(b"".join(packets[sent:due]))
                sent = due
            else:
                time.sleep(min(TICK_S, max(0.0, messages[sent][2] - now)))

    def close(self, expected: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for ``expected`` PUBACKs; disconnect; what was acknowledged."""
        deadline = time.monotonic() + timeout
        with self._acked:
            while self.acknowledged < expected and time.monotonic() < deadline:
                self._acked.wait(0.1)
        self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()
        return self.acknowledged
