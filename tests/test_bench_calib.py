"""The benchmark's machine-speed probe (scripts/benchkit/calib.py): its arithmetic.

The shares of the cores' time come from two /proc/stat snapshots, and the speed index from
the probes' CPU seconds; both are pure functions, checked here on made-up numbers. The probe
itself runs in tests/test_bench_smoke.py, inside a real benchmark.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benchkit import calib, cpu  # type: ignore[import-not-found]  # scripts/, not a package

STAT = """cpu  {user} 10 {system} {idle} 40 0 {softirq} {steal} 7 0
cpu0 1 2 3 4 5 6 7 8 9 10
intr 125164978 0 0
ctxt 281093783
"""


def snapshot(user: int, system: int, idle: int, softirq: int, steal: int) -> tuple[int, ...]:
    text = STAT.format(user=user, system=system, idle=idle, softirq=softirq, steal=steal)
    return calib.stat_snapshot(text)


def test_the_machine_wide_cpu_line_is_read_not_a_single_core() -> None:
    assert snapshot(100, 20, 300, 5, 9) == (100, 10, 20, 300, 40, 0, 5, 9)


def test_busy_and_steal_are_shares_of_all_the_cores_time_between_two_snapshots() -> None:
    before = snapshot(user=1000, system=200, idle=5000, softirq=10, steal=50)
    # 400 ticks in all: 150 user + 40 system + 10 softirq busy, 180 idle, 20 stolen;
    # iowait, nice and guest (inside user already) do not move.
    after = snapshot(user=1150, system=240, idle=5180, softirq=20, steal=70)
    # The benchmark's processes used 1.5 s of it, at 100 ticks a second: 150 ticks.
    shares = calib.cpu_shares(before, after, ours=1.5, tick=100)
    expected = {"busy_pct": 50.0, "steal_pct": 5.0, "ours_pct": 37.5, "others_pct": 12.5}
    assert shares == pytest.approx(expected)
    # Per-process ticks are rounded: the benchmark never gets more than the busy time.
    capped = calib.cpu_shares(before, after, ours=2.1, tick=100)
    assert (capped["ours_pct"], capped["others_pct"]) == pytest.approx((50.0, 0.0))


def test_no_time_between_two_snapshots_gives_zero_shares_not_a_division_error() -> None:
    same = snapshot(1, 2, 3, 4, 5)
    shares = calib.cpu_shares(same, same, ours=1.0)
    assert shares == {"busy_pct": 0.0, "steal_pct": 0.0, "ours_pct": 0.0, "others_pct": 0.0}


def test_a_process_that_ended_counts_once_through_its_parent() -> None:
    # 1 is the benchmark, 2 a child alive at both snapshots, 3 a child that ended and was
    # reaped (its 4.0 s whole now in 1's reaped time: 10 + 4), 4 a new child.
    before = {1: 10.0, 2: 1.0, 3: 3.0}
    after = {1: 14.5, 2: 2.0, 4: 0.25}
    assert cpu.tree_used(before, after) == pytest.approx(0.5 + 1.0 + 1.0 + 0.25)


def test_the_cpu_of_an_ended_child_is_counted_in_the_benchmarks_tree() -> None:
    before = cpu.tree_snapshot(os.getpid(), "no gpg-agent here")
    child = subprocess.Popen([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    used = cpu.tree_used(before, cpu.tree_snapshot(os.getpid(), "no gpg-agent here"))
    # Two readings of clock ticks (10 ms): each may round down by one.
    assert used >= usage.ru_utime + usage.ru_stime - 2 / cpu.TICK > 0


def test_the_speed_index_is_the_reference_over_the_mean_of_the_probes() -> None:
    ref_py, ref_gpg = calib.REFERENCE_PYTHON, calib.REFERENCE_GPG
    as_fast = {"python_s": ref_py, "gpg_s": ref_gpg}
    assert calib.speed_index([as_fast, as_fast]) == pytest.approx(1.0)
    # Before: a third more CPU for the same work; after: as fast as the reference.
    slower = {"python_s": ref_py * 4 / 3, "gpg_s": ref_gpg * 4 / 3}
    expected = (ref_py + ref_gpg) / ((ref_py + ref_gpg) * (4 / 3 + 1) / 2)
    assert calib.speed_index([slower, as_fast]) == pytest.approx(expected)
    assert calib.speed_index([slower]) == pytest.approx(0.75)


def test_the_index_during_a_part_is_the_reference_over_the_mean_sample() -> None:
    ref = calib.REFERENCE_SAMPLE
    assert calib.sampled_index([ref, ref * 2, ref * 3]) == pytest.approx(0.5)
    assert calib.sampled_index([]) is None  # no sample: no index, rather than a guess


def test_the_python_probe_counts_cpu_seconds() -> None:
    assert calib.python_work(rounds=20_000) > 0
