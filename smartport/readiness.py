"""Readiness that means it: one gauge per process, 1 only while every condition of its work
holds, and a bound on how long a process may wait to join its consumer group before it exits
(alive but idle is worse than dead: a supervisor restarts the dead)."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Gauge

from smartport.errors import StackError

GROUP = "group"  # the condition every consumer has: a member of its consumer group


class NotWorking(StackError):
    """The process could not do its work within its bound; it exits for a supervisor."""


class Readiness:
    """A ``smartport_<process>_ready`` gauge: 1 while every condition is true.

    A consumer group member starts with the ``group`` condition false; ``check()`` raises
    ``NotWorking`` once it has been false for longer than ``join_timeout_s`` (never joined, or
    lost its partitions and never got them back)."""

    def __init__(self, gauge: Gauge, process: str, join_timeout_s: float,
                 conditions: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.process = process
        self._gauge = gauge  # module-level: a registry holds one metric of a name
        self._timeout = join_timeout_s
        self._clock = clock
        self._conditions = dict.fromkeys((GROUP, *conditions), False)
        self._waiting_since: float | None = clock()
        self._gauge.set(0)

    @property
    def ready(self) -> bool:
        return all(self._conditions.values())

    def holds(self, condition: str) -> bool:
        return self._conditions[condition]

    def set(self, condition: str, holds: bool) -> None:
        self._conditions[condition] = holds
        if condition == GROUP:
            if holds:
                self._waiting_since = None
            elif self._waiting_since is None:
                self._waiting_since = self._clock()
        self._gauge.set(1 if self.ready else 0)

    def check(self) -> None:
        """Raise ``NotWorking`` when out of the group for longer than the bound."""
        since = self._waiting_since
        if since is not None and self._clock() - since > self._timeout:
            raise NotWorking(
                f"the {self.process} has not been assigned its Kafka partitions for "
                f"{self._clock() - since:.0f} s (bound: kafka.join_timeout_s = "
                f"{self._timeout:.0f} s); exiting so that a supervisor restarts it — check "
                "that Kafka is reachable (`smartport stack status`)")
