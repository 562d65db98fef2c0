"""What `make bench` measures, read from the kernel and from lists of times (no Kafka, no HTTP here).

CPU comes from /proc: a process's utime+stime, plus cutime+cstime (what its reaped children used), summed
over the process and everything under it, so PostgreSQL's per-connection backends count towards the
postmaster even when they exit between two samples. Whole-machine CPU is the busy share of /proc/stat.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.runtime.lag import lag_by_topic

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def output_rate(times: Iterable[float]) -> float:
    """Events per second coming out, from the first to the last of them: for a fixed-rate input this is
    the input rate while the system keeps up and its capacity when it does not, without the latency of
    the first event in the denominator. 0 for fewer than two events."""
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] <= ordered[0]:
        return 0.0
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: reaped children's


def parse_proc_stat(text: str) -> ProcStat:
    """One /proc/<pid>/stat line. The command name (field 2) may hold spaces and parentheses, so the
    numeric fields are the ones after its last ')'."""
    head, _, rest = text.rpartition(")")
    fields = rest.split()  # fields[0] is field 3 (state)
    return ProcStat(pid=int(head.split("(", 1)[0]), ppid=int(fields[1]),
                    ticks=int(fields[11]) + int(fields[12]), child_ticks=int(fields[13]) + int(fields[14]))


def read_processes(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat now (processes that exit while being read are skipped)."""
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                stat = parse_proc_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue
            stats[stat.pid] = stat
    return stats


def tree_ticks(root: int, stats: Mapping[int, ProcStat], exclude: frozenset[int] = frozenset()) -> int:
    """CPU ticks of `root` and all its descendants, with what each has reaped; 0 if root is gone.
    The subtrees of `exclude` are left out (processes counted under their own name)."""
    if root not in stats:
        return 0
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += stats[pid].ticks + stats[pid].child_ticks
        todo.extend(child for child in children.get(pid, ()) if child not in exclude)
    return total


def backend_ticks(roles: Mapping[int, str], stats: Mapping[int, ProcStat]) -> dict[int, tuple[str, int]]:
    """PostgreSQL client backends (pid -> the role it logged in as, from pg_stat_activity) with the CPU
    ticks each has used so far; backends gone from /proc are left out."""
    return {pid: (role, stats[pid].ticks) for pid, role in roles.items() if pid in stats}


def backend_cpu_ms_by_role(before: Mapping[int, tuple[str, int]],
                           after: Mapping[int, tuple[str, int]]) -> dict[str, float]:
    """CPU ms each role's backends used between two `backend_ticks` snapshots. A backend first seen in
    `after` counts from its start; one that exited in between is lost (its CPU is still in the
    postmaster's tree, under `postgres`), so the roles sum to at most PostgreSQL's total."""
    used: dict[str, float] = {}
    for pid, (role, ticks) in after.items():
        earlier_role, earlier = before.get(pid, (role, 0))
        used[role] = used.get(role, 0.0) + ticks_to_ms(max(ticks - (earlier if earlier_role == role else 0), 0))
    return used


@dataclass(frozen=True)
class MachineCpu:
    busy: int  # ticks in user, nice, system, irq, softirq, steal (guest time is inside user already)
    total: int  # busy + idle + iowait


def parse_machine_cpu(text: str) -> MachineCpu:
    """The aggregate `cpu` line of /proc/stat."""
    line = next(line for line in text.splitlines() if line.startswith("cpu "))
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
    busy = user + nice + system + irq + softirq + steal
    return MachineCpu(busy=busy, total=busy + idle + iowait)


def read_machine_cpu(proc: Path = PROC) -> MachineCpu:
    return parse_machine_cpu((proc / "stat").read_text())


def ticks_to_ms(ticks: int) -> float:
    return ticks * 1000 / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    """CPU ticks per named process tree, and of the machine, at one moment."""

    per_process: dict[str, int]
    machine: MachineCpu

    @classmethod
    def take(cls, roots: Mapping[str, int]) -> CpuSample:
        stats, named = read_processes(), frozenset(roots.values())
        # A named process under another (the relays under the bench that started them) counts once, as itself.
        return cls({name: tree_ticks(pid, stats, named - {pid}) for name, pid in roots.items()}, read_machine_cpu())


def cpu_ms_between(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU milliseconds each process tree used between two samples, plus `machine` (all CPUs' busy time)."""
    used = {name: ticks_to_ms(max(after.per_process.get(name, 0) - ticks, 0))
            for name, ticks in before.per_process.items()}
    used["machine"] = ticks_to_ms(after.machine.busy - before.machine.busy)
    return used


def machine_busy_share(before: CpuSample, after: CpuSample) -> float:
    """How busy all CPUs were between the samples, 0..1."""
    total = after.machine.total - before.machine.total
    return (after.machine.busy - before.machine.busy) / total if total > 0 else 0.0


def rss_mb(pid: int, proc: Path = PROC) -> float | None:
    """Resident set size of one process in MB (None if it is gone)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), None)


def group_lag(end: Mapping, committed: Mapping) -> int:
    """Records on a group's partitions it has not committed (shared/runtime/lag.py's rule, summed over topics)."""
    return sum(lag_by_topic(end, committed).values())
