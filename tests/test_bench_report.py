"""The benchmark's targets table (scripts/benchkit/report.py): what it prints for a figure
close to its target, on made-up results."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benchkit import report  # type: ignore[import-not-found]  # scripts/, not a package


def test_a_sandbox_latency_just_over_the_target_is_not_printed_as_the_target() -> None:
    latency = {"n": 5, "median": 0.1046, "p90": 0.1117, "p99": 0.1147}
    results = {"stages": {"10": {"n": 10, "mail2room_sandbox": {"latency": latency}}}}

    [row] = [r for r in report._targets(results) if "sandbox server" in r[0]]

    assert row[2] == "0.105 s (p90 0.112)"
    assert row[4] == "missed"
