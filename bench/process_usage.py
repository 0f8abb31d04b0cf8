"""CPU and peak memory of a process over a window, from /proc (the benches' meter; small on
purpose, so that a bench's publisher processes do not import the pipeline bench)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessUsage:
    """CPU and peak memory of one process over a window, from /proc."""

    pid: int
    started_ticks: int = 0
    cpu_percent: float = 0.0
    peak_rss_mb: float = 0.0

    def _ticks(self) -> int:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def start(self) -> None:
        self.started_ticks = self._ticks()

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
        except OSError:
            return  # the process is gone
        self.cpu_percent = 100 * used / seconds
        peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
        self.peak_rss_mb = int(peak.split()[1]) / 1024
