"""What the benchmarks measure about processes, and how they summarise samples.

CPU time and resident memory come from ``/proc/<pid>/stat`` and ``/proc/<pid>/status`` (Linux), so
any process the benchmark can see is measured the same way: the gateway, each worker, the Redis
server, the baseline app, and the load client itself. Percentiles are nearest-rank.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: CPU seconds used so far (user + system, all threads) and RSS."""

    cpu_s: float
    rss_kib: int


def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime, in clock ticks, from the text of ``/proc/<pid>/stat``.

    Field 2 (the command name) is in parentheses and may itself hold spaces or ``)``, so the fields
    are counted from after the *last* ``)``: there, field 3 (state) comes first and utime, stime are
    fields 14 and 15.
    """
    fields = stat[stat.rindex(")") + 1 :].split()
    return int(fields[11]) + int(fields[12])


def parse_status_rss_kib(status: str) -> int:
    """``VmRSS`` in KiB from the text of ``/proc/<pid>/status`` (0 when absent, e.g. a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sample(pid: int) -> ProcSample | None:
    """The process's CPU and RSS now, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return ProcSample(parse_stat_cpu_ticks(stat) / CLK_TCK, parse_status_rss_kib(status))


def cpu_seconds(pid: int) -> float:
    found = sample(pid)
    return found.cpu_s if found else math.nan


def rss_kib(pid: int) -> int:
    found = sample(pid)
    return found.rss_kib if found else 0


class CpuWindow:
    """CPU used by named processes between :meth:`start` and :meth:`stop`, plus their RSS at the end."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, ProcSample | None] = {}
        self._stop: dict[str, ProcSample | None] = {}

    def start(self) -> None:
        self._start = {name: sample(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        self._stop = {name: sample(pid) for name, pid in self.pids.items()}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds per process over the window (NaN for a process that was not there throughout)."""
        out = {}
        for name in self.pids:
            before, after = self._start.get(name), self._stop.get(name)
            out[name] = after.cpu_s - before.cpu_s if before and after else math.nan
        return out

    def rss_kib(self) -> dict[str, int]:
        return {name: (s.rss_kib if (s := self._stop.get(name)) else 0) for name in self.pids}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def p50_p99(values: Sequence[float], digits: int = 2) -> dict[str, float | None]:
    """``{"p50": …, "p99": …}`` rounded, with None (JSON null) when there were no samples."""
    return {f"p{q}": (None if math.isnan(v := percentile(values, q)) else round(v, digits)) for q in (50, 99)}
