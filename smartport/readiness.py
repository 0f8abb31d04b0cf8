"""Readiness that means it: one gauge per process, 1 only while every condition of its work
holds, a bound on how long a process may wait to join its consumer group before it exits
(alive but idle is worse than dead: a supervisor restarts the dead), and a watchdog that holds
the gauge at 0, saying where, while the work loop is stuck in a call that does not return."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from prometheus_client import Gauge

from smartport.errors import StackError

log = logging.getLogger(__name__)

GROUP = "group"  # the condition every consumer has: a member of its consumer group
LOOP = "loop"  # with a watchdog: the work loop came round within its bound
# No wait of our loops lasts this long without coming round (retries come round every <= 30 s).
STALL_S = 300.0


class NotWorking(StackError):
    """The process could not do its work within its bound; it exits for a supervisor."""


class Readiness:
    """A ``smartport_<process>_ready`` gauge: 1 while every condition is true.

    A consumer group member starts with the ``group`` condition false; ``check()`` raises
    ``NotWorking`` once it has been false for longer than ``join_timeout_s`` (never joined, or
    lost its partitions and never got them back). With ``stall_s``, ``watching()`` runs a thread
    that holds the gauge at 0 while the work loop (which calls ``check()`` or ``beat()`` each
    time round) has not come round for ``stall_s``: ``with readiness.watching(): ...``."""

    def __init__(self, gauge: Gauge, process: str, join_timeout_s: float,
                 conditions: tuple[str, ...] = (), *,
                 clock: Callable[[], float] = time.monotonic,
                 stall_s: float | None = None) -> None:
        self.process = process
        self._gauge = gauge  # module-level: a registry holds one metric of a name
        self._timeout = join_timeout_s
        self._clock = clock
        self._conditions = dict.fromkeys((GROUP, *conditions), False)
        self._waiting_since: float | None = clock()
        # The watchdog's view of the work loop (``stall_s`` None: no watchdog).
        self._stall_s = stall_s
        if stall_s is not None:
            self._conditions[LOOP] = True
        self._beat_at = clock()
        self._beating_thread = threading.get_ident()
        self._stalled = False
        self._lock = threading.Lock()  # the loop's thread and the watchdog's
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

    def beat(self) -> None:
        """The work loop came round (a retry loop inside it says so too)."""
        with self._lock:
            self._beat_at = self._clock()
            self._beating_thread = threading.get_ident()
            if self._stalled:
                self._stalled = False
                log.warning(f"the {self.process}'s work loop came round again")
                self.set(LOOP, True)

    @contextlib.contextmanager
    def watching(self, every_s: float = 1.0) -> Iterator[None]:
        """Run the watchdog, ``look_for_stall()`` every ``every_s``, around the work loop."""
        done = threading.Event()
        self.beat()  # the loop starts now, however long ago this object was made

        def run() -> None:
            while not done.wait(every_s):
                self.look_for_stall()

        watchdog = threading.Thread(target=run, name=f"{self.process}-watchdog", daemon=True)
        watchdog.start()
        try:
            yield
        finally:
            done.set()
            watchdog.join()

    def look_for_stall(self) -> None:
        """Gauge to 0, and one error saying where the loop's thread is, once the work loop has
        not come round for ``stall_s``: it is in a call that does not return."""
        with self._lock:
            stuck_for = self._clock() - self._beat_at
            if self._stall_s is None or self._stalled or stuck_for <= self._stall_s:
                return
            self._stalled = True
            self.set(LOOP, False)
            frame = sys._current_frames().get(self._beating_thread)
        stack = "".join(traceback.format_stack(frame)) if frame else "(the thread has ended)"
        log.error(f"the {self.process}'s work loop has not come round for {stuck_for:.0f} s "
                  f"(bound {self._stall_s:.0f} s): stuck in a call that does not return; "
                  "readiness 0 until it does", extra={"stack": stack})

    def check(self) -> None:
        """Note that the work loop came round; raise ``NotWorking`` when out of the group for
        longer than the bound."""
        self.beat()
        since = self._waiting_since
        if since is not None and self._clock() - since > self._timeout:
            raise NotWorking(
                f"the {self.process} has not been assigned its Kafka partitions for "
                f"{self._clock() - since:.0f} s (bound: kafka.join_timeout_s = "
                f"{self._timeout:.0f} s); exiting so that a supervisor restarts it — check "
                "that Kafka is reachable (`smartport stack status`)")
