"""Processes that cannot work exit, for a supervisor to restart them; ready means working."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from deploy.pipeline import SMARTPORT, PipelineProcess, free_port


@pytest.mark.parametrize("command", [["sink"], ["anchor"]], ids=["sink", "anchor"])
def test_a_consumer_never_assigned_its_partitions_exits_non_zero(
    command: list[str], tmp_path: Path
) -> None:
    """Kafka never answers (nothing listens on its port): the process must not idle on."""
    env = {**os.environ, "SMARTPORT_STATE_DIR": str(tmp_path),
           "SMARTPORT_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
           "SMARTPORT_KAFKA__JOIN_TIMEOUT_S": "5", "SMARTPORT_QUERY_PORT": str(free_port())}
    started = time.monotonic()
    done = subprocess.run([*SMARTPORT, *command], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "not been assigned its Kafka partitions" in done.stderr
    assert "kafka.join_timeout_s" in done.stderr  # says which setting bounds it
    assert time.monotonic() - started < 60


def test_ready_gauges_say_one_only_once_working(stack: object, tmp_path: Path) -> None:
    sink = PipelineProcess("sink", ["sink", "--group", f"ready-{os.getpid()}"],
                           tmp_path / "sink.log", {"SMARTPORT_CLICKHOUSE_URL":
                                                   f"chdb://{tmp_path / 'chdb'}",
                                                   "SMARTPORT_QUERY_PORT": str(free_port())})
    assert not sink.ready  # not started: nothing answers
    sink.start()  # returns once smartport_sink_ready is 1
    try:
        assert sink.ready
    finally:
        sink.stop()
    assert not sink.running
