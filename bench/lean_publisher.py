"""A load generator that does not eat the budget it measures: MQTT 3.1.1 QoS 1 over a plain
socket, every PUBLISH encoded before the clock starts, the packets due written together every
``TICK_S``, PUBACKs counted in bulk by a reader thread (``publish_together`` runs several, a
process each, on one clock). A fraction of a paho publisher's CPU per message (which took a
third of a core per 1,000 msg/s), so the two cores go to the pipeline under test; the benches
report it apart.

Bench-only: no TLS, no reconnection (a lost connection fails the run, with what was
acknowledged so far).
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier, Event
from typing import Any

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


def encode(messages: Sequence[tuple[str, bytes, float]]) -> list[bytes]:
    """The PUBLISH packets of (topic, payload, _) messages."""
    return [publish_packet(topic, payload, index % 65535 + 1)
            for index, (topic, payload, _) in enumerate(messages)]


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

    def send(self, packets: Sequence[bytes], offsets: Sequence[float], start_at: float) -> None:
        """Write each encoded PUBLISH at ``start_at`` plus its offset (seconds), in order."""
        sent = 0
        while sent < len(packets):
            now = time.time() - start_at
            due = sent
            while due < len(packets) and offsets[due] <= now:
                due += 1
            if due > sent:
                self._sock.sendall(b"".join(packets[sent:due]))
                sent = due
            else:
                time.sleep(min(TICK_S, max(0.0, offsets[sent] - now)))

    def close(self, expected: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for ``expected`` PUBACKs; disconnect; what was acknowledged."""
        deadline = time.monotonic() + timeout
        with self._acked:
            while self.acknowledged < expected and time.monotonic() < deadline:
                self._acked.wait(0.1)
        self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        self._sock.close()
        return self.acknowledged


Share = Sequence[tuple[str, bytes, float]]  # (topic, payload, seconds after the start)


@dataclass
class Published:
    start_at: float  # the wall-clock time offsets count from
    acknowledged: int
    cpu_s: float  # the publishers' CPU, connecting and encoding included


def publish_together(settings: MqttSettings, shares: Sequence[Share],
                     on_start: Callable[[], None] = lambda: None,
                     timeout_s: float = 300) -> Published:
    """Publish each share from its own process, each message at its offset after one start.

    The start is set only when every publisher is connected and has encoded its share: with
    a clock set before (a million messages take seconds to hand over and encode), a run began
    seconds late, in a burst, and that burst was measured as the pipeline's latency. Forked:
    each process inherits its share, nothing is pickled. ``on_start`` is called as the clock
    starts (to start the meters)."""
    context = multiprocessing.get_context("fork")
    ready, go = context.Barrier(len(shares) + 1), context.Event()
    start_at = context.Value("d", 0.0)
    results: Any = context.Queue()
    processes = [context.Process(target=_publish_share, daemon=True, args=(share, settings),
                                 kwargs={"ready": ready, "go": go, "start_at": start_at,
                                         "results": results, "timeout_s": timeout_s})
                 for share in shares]
    for process in processes:
        process.start()
    ready.wait(timeout=600)  # BrokenBarrierError when a publisher could not get ready
    on_start()
    start_at.value = time.time() + 0.1
    go.set()
    last = max((share[-1][2] for share in shares if share), default=0.0)
    outcomes = [results.get(timeout=last + timeout_s + 60) for _ in processes]
    for process in processes:
        process.join()
    return Published(start_at.value, sum(count for count, _ in outcomes),
                     sum(cpu for _, cpu in outcomes))


def _publish_share(share: Share, settings: MqttSettings, *, ready: Barrier, go: Event,
                   start_at: Any, results: Any, timeout_s: float) -> None:
    started = time.process_time()
    try:
        publisher = LeanPublisher(settings, f"bench-pub-{uuid.uuid4().hex[:8]}")
        packets = encode(share)
    except BaseException:
        ready.abort()  # the others, and the parent, stop waiting for this one
        raise
    ready.wait()
    go.wait()
    publisher.send(packets, [offset for _, _, offset in share], start_at.value)
    results.put((publisher.close(len(share), timeout_s), time.process_time() - started))
