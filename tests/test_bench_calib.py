"""The benchmark's machine-speed probe (scripts/benchkit/calib.py): its arithmetic.

The shares of the cores' time come from two /proc/stat snapshots, and the speed index from
the probes' CPU seconds; both are pure functions, checked here on made-up numbers. The probe
itself runs in tests/test_bench_smoke.py, inside a real benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benchkit import calib  # type: ignore[import-not-found]  # scripts/, not a package

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
    shares = calib.cpu_shares(before, after)
    assert shares == pytest.approx({"busy_pct": 50.0, "steal_pct": 5.0})


def test_no_time_between_two_snapshots_gives_zero_shares_not_a_division_error() -> None:
    same = snapshot(1, 2, 3, 4, 5)
    assert calib.cpu_shares(same, same) == {"busy_pct": 0.0, "steal_pct": 0.0}


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
