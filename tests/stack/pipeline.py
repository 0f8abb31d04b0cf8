"""Helpers for integration tests: run our processes, read back what reached Kafka."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from deploy.pipeline import SMARTPORT, free_port
from ingest import gateway
from ingest.fleet import HOME_PORT
from schemas import topics
from smartport import kafka, logs
from smartport.mqtt import edge_user, forget_session, mqtt_as
from smartport.polling import wait_until
from smartport.settings import MqttSettings, Settings


class FirstProducerStuck:
    """A producer factory whose first producer talks to a port nothing listens on: what a
    producer left with no broker to ask looks like (seen of librdkafka after a Kafka restart).
    The next ones are real."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self, config: dict[str, Any]) -> Producer:
        self.made += 1
        if self.made == 1:
            return Producer({**config, "bootstrap.servers": f"127.0.0.1:{free_port()}"})
        return Producer(config)


def edge_mqtt(settings: Settings) -> MqttSettings:
    """MQTT settings of the simulated terminal's edge gateway: it publishes any telemetry of
    its port, as the tests' devices do."""
    return mqtt_as(settings, edge_user(HOME_PORT))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes
    value: dict[str, Any]


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    return kafka.high_watermarks(settings.kafka, topic)


def read_topic(settings: Settings, topic: str, since: dict[int, int]) -> list[Record]:
    """Every record of ``topic`` from the ``since`` offsets up to the current end."""
    records = []
    for message in kafka.read_range(settings.kafka, topic, since):
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        records.append(Record(partition, offset, message.key() or b"",
                              json.loads(message.value() or b"null")))
    return records


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    if not wait_until(condition, timeout):
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class GatewayProcess:
    """A real `smartport gateway` process with its own id and shared-subscription group (or
    none: plain subscriptions)."""

    def __init__(self, gateway_id: str, share_group: str | None, log_dir: Path,
                 extra: tuple[str, ...] = ()) -> None:
        self.gateway_id = gateway_id
        self.share_group = share_group
        self.log_path = log_dir / f"{gateway_id}.log"
        self._extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*SMARTPORT, "gateway", "--gateway-id", self.gateway_id,
                 *(["--share-group", self.share_group] if self.share_group else []),
                 *self._extra],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(lambda: logs.marker(gateway.READY) in self.log_path.read_text()[offset:], 30,
                 f"gateway {self.gateway_id} to subscribe (log {self.log_path})")
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)
        return self.process.returncode

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def forget_session(self, settings: Settings) -> None:
        """Delete the broker's persistent session of this gateway (test clean-up)."""
        forget_session(settings, self.gateway_id)


def telemetry_ids(records: list[Record]) -> set[tuple[str, int]]:
    return {(r.value["reading"]["device_id"], r.value["reading"]["seq"]) for r in records}


def pids_of(pattern: str) -> list[int]:
    result = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in result.stdout.split() if int(pid) != os.getpid()]


def run_scratch_worker(app_id: str, telemetry: str,
                       prelude: str = "") -> subprocess.CompletedProcess[str]:
    """A streams worker reading ``telemetry`` (``prelude``: Python run before it starts, with
    ``streams_app`` imported), until it exits; fails the test if it has not within 180 s."""
    worker = (
        "from smartport.settings import Settings\n"
        "from streams import app as streams_app\n"
        "from streams.rules.thresholds import Thresholds\n"
        f"{prelude}"
        "settings = Settings()\n"
        f"app = streams_app.create_app(settings, Thresholds(), app_id={app_id!r}, "
        f"topic_names=({telemetry!r}, {topics.DECLARATIONS!r}, {topics.ALERTS!r}))\n"
        "streams_app.run_worker(app, settings)\n")
    try:
        return subprocess.run([sys.executable, "-c", worker], capture_output=True, text=True,
                              timeout=180, check=False)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the worker did not exit within 180 s; its log ends:\n"
                    f"{(hung.stderr or b'')[-4000:]!r}")
