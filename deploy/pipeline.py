"""Our four long-running processes as one pipeline: started, killed, restarted and stopped.

The demo, the fault suite and the full-pipeline benchmark run the same processes the same
way: ``python -m deploy.cli <command>``, each logging to its own file and serving its metrics on
a port of its own, each ready once its ``smartport_<name>_ready`` gauge says 1 — the gauge an
operator's readiness probe reads, not a log line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from deploy.process import tail
from deploy.topics import delete_app_topics
from smartport.errors import StackError
from smartport.mqtt import GATEWAY_USER, connect_properties, mqtt_as, new_client
from smartport.settings import Settings

SMARTPORT = [sys.executable, "-m", "deploy.cli"]  # the CLI, in this interpreter
START_TIMEOUT_S = 120.0  # a faust worker creates its changelog topics first


def free_port() -> int:
    """A port nothing listens on now, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PipelineProcess:
    """One of our processes (``name``: gateway, streams, anchorer or sink), ready once its
    ``smartport_<name>_ready`` gauge is 1 after it was (re)started."""

    def __init__(self, name: str, args: list[str], log_path: Path,
                 env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._args = args
        self._env = env
        self.metrics_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready(self) -> bool:
        """What the process's readiness gauge says now (False while it does not answer)."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return False
        return f"smartport_{self.name}_ready 1.0" in text.splitlines()

    def start(self) -> PipelineProcess:
        self.metrics_port = free_port()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*SMARTPORT, *self._args, "--metrics-port", str(self.metrics_port)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self._env})
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StackError(f"{self.name} did not start; see {self.log_path}:\n"
                                 f"{tail(self.log_path)}")
            time.sleep(0.2)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        self.stop(signal.SIGKILL)


def streams_worker(app_id: str, log_path: Path, env: dict[str, str] | None = None, *,
                   instance_id: str | None = None) -> PipelineProcess:
    """A streams worker with a faust app id of its own, reading from the end of the topics;
    with ``instance_id``, a static member of its groups (restarted, it takes its place back)."""
    static = ["--instance-id", instance_id] if instance_id else []
    return PipelineProcess(
        "streams", ["streams", "--app-id", app_id, "--offset-reset", "latest", *static],
        log_path, env or {})


class Pipeline:
    """Streams worker, gateway, anchorer and sink of one run.

    The gateway and the streams worker get ids of their own (``run_id``): the gateway's MQTT
    session (with a plain subscription, which the broker keeps across its restarts), and the
    faust app (reading from the end of the
    topics, a static member of its groups: restarted, it takes its partitions back at once), so
    that a run's alerts are its own. The anchorer and the sink use their usual
    consumer groups: they carry on where the last ones stopped.
    """

    def __init__(self, settings: Settings, run_id: str, work: Path,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.run_id = run_id
        self.gateway_id = self.streams_id = run_id

        def process(name: str, args: list[str]) -> PipelineProcess:
            return PipelineProcess(name, args, work / f"{name}.log", env or {})

        self.streams = streams_worker(self.streams_id, work / "streams.log", env,
                                      instance_id=f"{self.streams_id}-1")
        self.gateway = process("gateway", ["gateway", "--gateway-id", self.gateway_id])
        self.anchorer = process("anchorer", ["anchor"])
        self.sink = process("sink", ["sink"])

    @property
    def processes(self) -> tuple[PipelineProcess, ...]:
        return self.streams, self.gateway, self.anchorer, self.sink

    def __enter__(self) -> Pipeline:
        try:
            for process in self.processes:
                process.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def clean_up(self) -> None:
        """Forget what only this run used: the gateway's MQTT session, the faust app's topics,
        consumer group and local state."""
        client = new_client(mqtt_as(self.settings, GATEWAY_USER), self.gateway_id)
        try:
            client.connect(self.settings.mqtt.host, self.settings.mqtt.port, clean_start=True,
                           properties=connect_properties(session_expiry_s=0))
            client.disconnect()
        except OSError:
            pass
        delete_app_topics(self.settings.kafka, self.streams_id)
        shutil.rmtree(self.settings.state_dir / "streams" / self.streams_id, ignore_errors=True)
