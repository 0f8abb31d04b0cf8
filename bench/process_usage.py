"""CPU and peak memory of a process over a window, from /proc (the benches' meter; small on
purpose, so that a bench's publisher processes do not import the pipeline bench)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessUsage:
    """CPU and peak memory of one process over a window, from /proc."""

    pid: int
    started_ticks: int = 0
    started_switches: tuple[int, int] = (0, 0)
    cpu_percent: float = 0.0
    peak_rss_mb: float = 0.0
    # Context switches in the window, summed over the threads alive at its end: voluntary
    # (a thread waited: a lock, the GIL, a socket) and involuntary (the scheduler took the core).
    voluntary_switches: int = 0
    involuntary_switches: int = 0

    def _ticks(self) -> int:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def _switches(self) -> tuple[int, int]:
        voluntary = involuntary = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                status = (task / "status").read_text()
            except OSError:
                continue  # the thread ended
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    involuntary += int(line.split()[1])
        return voluntary, involuntary

    def start(self) -> None:
        self.started_ticks = self._ticks()
        self.started_switches = self._switches()

    def used_s(self) -> float:
        """CPU seconds since ``start`` (0 when the process is gone)."""
        try:
            return (self._ticks() - self.started_ticks) / CLOCK_TICKS
        except OSError:
            return 0.0

    def stop(self, seconds: float) -> None:
        try:
            used = (self._ticks() - self.started_ticks) / CLOCK_TICKS
            status = Path(f"/proc/{self.pid}/status").read_text()
            voluntary, involuntary = self._switches()
        except OSError:
            return  # the process is gone
        self.cpu_percent = 100 * used / seconds
        self.voluntary_switches = max(0, voluntary - self.started_switches[0])
        self.involuntary_switches = max(0, involuntary - self.started_switches[1])
        peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        self.peak_rss_mb = int(peak.split()[1]) / 1024


@dataclass
class MachineUsage:
    """CPU of every process on the machine over a window (the brokers, the bench itself,
    whatever else runs), to tell what a stage leaves the others. Summed per process: the
    machine-wide ticks of /proc/stat are sampled at the timer tick and read a third of the
    truth here for processes that wake on timers of their own (the benches' publishers)."""

    started: dict[int, int] = field(default_factory=dict)
    latest: dict[int, int] = field(default_factory=dict)  # a process that ended: as last read

    @staticmethod
    def _ticks() -> dict[int, int]:
        ticks = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # the process ended
                ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
        return ticks

    def start(self) -> None:
        self.started = self._ticks()
        self.latest = dict(self.started)

    def used_s(self) -> float:
        """CPU seconds since ``start`` (a process started meanwhile counts whole, one that
        ended as it was last read: read often)."""
        self.latest.update(self._ticks())
        return sum(t - self.started.get(pid, 0) for pid, t in self.latest.items()) / CLOCK_TICKS
