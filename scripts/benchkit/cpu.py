"""CPU seconds of the processes that share the machine during a benchmark stage.

On two cores the bot competes with everything else the benchmark runs: Synapse, the
list's gpg-agent, and the benchmark's own process (the member clients and the SMTP sink).
Their CPU over a stage shows where the machine's time went (``/proc/PID/stat``).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` (0.0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime and stime, fields 14 and 15 of proc(5), counted from the state field (3).
    return (int(fields[11]) + int(fields[12])) / TICK


def agents_of(home: Path) -> list[int]:
    """Process ids of the gpg-agent serving the GnuPG home ``home``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if args and args[0].endswith(b"gpg-agent") and str(home).encode() in b" ".join(args):
                found.append(int(cmdline.parent.name))
    return found


def python_workers(pid: int) -> list[int]:
    """Process ids of ``pid``'s Python worker processes (the bot's Sequoia workers, started
    by multiprocessing); its gpg runs are not among them: they are counted in its children's
    CPU when they end."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                with contextlib.suppress(OSError):
                    if b"multiprocessing" in Path(f"/proc/{child}/cmdline").read_bytes():
                        found.append(int(child))
    return found


def sharers(synapse: int, bot: int, gnupg_home: Path) -> dict[str, list[int]]:
    """The groups of processes that share the cores with the bot's process."""
    return {
        "synapse": [synapse],
        "gpg_agent": agents_of(gnupg_home),
        "workers": python_workers(bot),
        "benchmark": [os.getpid()],
    }


def snapshot(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of processes (a group with none: left out)."""
    return {name: sum(process_cpu(p) for p in group) for name, group in pids.items() if group}


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (a group seen in either)."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in before.keys() | after.keys()}


def tree_snapshot(root: int, marker: str) -> dict[int, float]:
    """CPU seconds so far of every process in ``root``'s tree (its own and its reaped
    children's, so that a process that ends is still counted, by its parent) and of each
    gpg-agent whose command line holds ``marker`` (they leave the tree when they start)."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    agents: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            fields = text.rpartition(")")[2].split()
            pid = int(stat.parent.name)
            parents[pid] = int(fields[1])
            # utime, stime, cutime, cstime: fields 14 to 17 of proc(5).
            seconds[pid] = sum(int(f) for f in fields[11:15]) / TICK
            if "(gpg-agent)" in text and marker.encode() in (stat.parent / "cmdline").read_bytes():
                agents.append(pid)
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    ours, todo = set(agents), [root]
    while todo:
        pid = todo.pop()
        ours.add(pid)
        todo += children.get(pid, [])
    return {pid: seconds[pid] for pid in ours if pid in seconds}


def tree_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the tree used between two ``tree_snapshot``s: a process gone since the
    first is in its parent's reaped children's time, whole, so its time before is taken off;
    one that is new counts from zero."""
    return sum(after.values()) - sum(before.values())
