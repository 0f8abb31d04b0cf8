"""Readiness gauges that mean it, and the bound on waiting for a consumer group (pure)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry, Gauge

from smartport.polling import wait_until
from smartport.readiness import GROUP, NotWorking, Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _readiness(clock: Clock, *conditions: str, stall_s: float | None = None
               ) -> tuple[Readiness, Gauge]:
    gauge = Gauge("smartport_test_ready", "test", registry=CollectorRegistry())
    return Readiness(gauge, "test", 60.0, conditions, clock=clock, stall_s=stall_s), gauge


def _value(gauge: Gauge) -> float:
    return float(next(iter(gauge.collect())).samples[0].value)


def test_ready_only_while_every_condition_holds() -> None:
    readiness, gauge = _readiness(Clock(), "store")
    assert _value(gauge) == 0
    readiness.set(GROUP, True)
    assert _value(gauge) == 0  # the store is not known to work yet
    readiness.set("store", True)
    assert _value(gauge) == 1
    readiness.set("store", False)  # an outage of what it writes to: not ready, not exiting
    assert _value(gauge) == 0
    readiness.check()


def test_a_consumer_never_assigned_exits_after_the_bound() -> None:
    clock = Clock()
    readiness, _ = _readiness(clock)
    clock.now = 59.0
    readiness.check()
    clock.now = 61.0
    with pytest.raises(NotWorking, match="not been assigned its Kafka partitions for 61 s"):
        readiness.check()


def test_the_bound_counts_from_losing_the_partitions() -> None:
    clock = Clock()
    readiness, gauge = _readiness(clock)
    clock.now = 50.0
    readiness.set(GROUP, True)
    clock.now = 500.0
    readiness.check()  # assigned all along
    readiness.set(GROUP, False)  # a rebalance took them
    assert _value(gauge) == 0
    clock.now = 550.0
    readiness.check()
    readiness.set(GROUP, True)  # and gave them back
    clock.now = 1000.0
    readiness.check()
    readiness.set(GROUP, False)
    clock.now = 1061.0
    with pytest.raises(NotWorking):
        readiness.check()


def test_a_work_loop_stuck_in_a_call_is_not_ready_until_it_comes_round(
        caplog: pytest.LogCaptureFixture) -> None:
    """A sink held in a call that did not return (a synchronous offset commit, in CI) kept
    its gauge at 1 for minutes while storing nothing."""
    clock = Clock()
    readiness, gauge = _readiness(clock, stall_s=300.0)
    readiness.set(GROUP, True)
    readiness.check()  # the loop comes round
    clock.now = 299.0
    readiness.look_for_stall()
    assert _value(gauge) == 1
    clock.now = 301.0
    with caplog.at_level(logging.ERROR):
        readiness.look_for_stall()
        readiness.look_for_stall()  # said once per stall
    assert _value(gauge) == 0
    [stalled] = [r for r in caplog.records if "has not come round" in r.getMessage()]
    assert "for 301 s" in stalled.getMessage()
    assert "test_a_work_loop_stuck_in_a_call" in stalled.__dict__["stack"]  # where it is
    clock.now = 400.0
    readiness.check()  # it came round again
    assert _value(gauge) == 1


def test_a_retry_loop_that_comes_round_is_not_a_stall() -> None:
    clock = Clock()
    readiness, gauge = _readiness(clock, stall_s=300.0)
    readiness.set(GROUP, True)
    for clock.now in range(0, 3000, 30):
        readiness.beat()  # e.g. the sink retrying an insert every 30 s, its own gauge says why
        readiness.look_for_stall()
    assert _value(gauge) == 1


def test_the_watchdog_thread_notices_a_stall_by_itself() -> None:
    gauge = Gauge("smartport_test_ready", "test", registry=CollectorRegistry())
    readiness = Readiness(gauge, "test", 60.0, stall_s=0.2)
    readiness.set(GROUP, True)
    release = threading.Event()

    def work_loop() -> None:
        readiness.check()
        release.wait(30)  # a call that does not return
        readiness.check()

    worker = threading.Thread(target=work_loop, daemon=True)
    with readiness.watching(every_s=0.05):
        worker.start()
        assert wait_until(lambda: _value(gauge) == 0, 10, interval=0.05)
        release.set()
        worker.join(10)
        assert _value(gauge) == 1
    assert not [t for t in threading.enumerate() if t.name == "test-watchdog"]


def test_a_worker_whose_stop_hangs_after_a_crash_exits_anyway() -> None:
    """aiokafka's consumer stop hung about 1 crash in 5: the process must end regardless."""
    program = (
        "import time, types\n"
        "from streams.app import _exit_if_stop_hangs\n"
        "app = types.SimpleNamespace(crash_reason=None)\n"
        "_exit_if_stop_hangs(app, grace_s=0.5)\n"
        "app.crash_reason = RuntimeError('a bug in a rule')\n"
        "time.sleep(60)  # stopping hangs\n")
    finished = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                              timeout=30, check=False)
    assert finished.returncode == 3
    assert "an agent crashed with RuntimeError('a bug in a rule')" in finished.stderr
