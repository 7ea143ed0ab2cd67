"""The benchmark harness still runs end to end (``make bench`` at N=3), so it cannot rot.

The tests check that every figure was produced from real deliveries, never how fast they
were: timings are the benchmark's business, not a test's. The first test (one bot run, in
the default suite) covers the fan-out and mail → room paths; the second, marked slow,
covers every part, with the bot restarted for each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benchkit import calib  # type: ignore[import-not-found]  # scripts/, not a package

ROOT = Path(__file__).resolve().parents[1]


def _bench(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Run scripts/bench.py at N=3 with ``args``; (the stage's results, the page)."""
    out = tmp_path / "results.json"
    page = tmp_path / "performance.md"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    # Synchronous on purpose: the test only waits for the benchmark process.
    command = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--sizes", "3"]
    command += ["--posts", "1", "--mail-samples", "1", "--json", str(out), "--write", str(page)]
    result = subprocess.run(
        [*command, *args], capture_output=True, env=env, timeout=280, check=False
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output[-4000:]
    return json.loads(out.read_text())["stages"]["3"], page.read_text()


def _check_core(stage: dict[str, Any], page: str) -> None:
    fanout = stage["fanout"]
    assert fanout["check"]["ok"], fanout["check"]  # a real list mail, decrypted by a member
    (sample,) = fanout["samples"]
    assert sample["recipients"] == 3
    assert sample["gpg_kinds"].get("sign+encrypt") == 1  # the wrapper saw the bot's gpg
    assert sample["bytes"] > 1000
    # Who used the cores during the post: the bot's ended gpg runs and Synapse are counted.
    assert {"cpu_gpg", "cpu_synapse", "cpu_benchmark"} <= sample.keys()
    assert sample["cpu_gpg"] >= 0 and sample["cpu_synapse"] >= 0
    assert "CPU per post while it fans out" in page
    assert stage["mail2room"]["latency"]["n"] == 1
    assert stage["start"]["synced"] > 0 and stage["import"]["members"] == 5
    assert "## Targets of issue 11" in page and "| fan-out, 1 post → 3 email members" in page
    _check_speed(stage, page, ["start", "fanout", "mail2room"])


def _check_speed(stage: dict[str, Any], page: str, parts: list[str]) -> None:
    """The machine-speed probe ran before and after each part, and its index is reported."""
    speed = stage["speed"]
    assert set(parts) <= speed.keys()
    for name in parts:
        record = speed[name]
        before, after = record["probes"]
        assert before["python_s"] > 0 and before["gpg_s"] > 0, record
        assert after["python_s"] > 0 and after["gpg_s"] > 0, record
        assert after["at"] >= record["start"] + record["seconds"]  # taken after the part
        assert record["index"] == pytest.approx(calib.speed_index([before, after]))
        # The sampler's first loop runs as the part starts: every part has one at least.
        assert record["samples"] and all(s > 0 for s in record["samples"]), record
        assert record["index_during"] == pytest.approx(calib.sampled_index(record["samples"]))
        assert 0 <= record["steal_pct"] <= record["busy_pct"] + record["steal_pct"] <= 100
        # The bot, Synapse, the mail servers, the benchmark: the part's work was counted.
        assert 0 < record["ours_pct"] <= record["busy_pct"], record
        row = next(line for line in page.splitlines() if line.startswith(f"| {name} | 3 |"))
        assert f"| {record['index']:.2f} |" in row and f"| {record['index_during']:.2f} |" in row
    fanout_row = next(line for line in page.splitlines() if line.startswith("| fan-out, 1 post"))
    fanout = speed["fanout"]
    assert f"| {fanout['index_during']:.2f} / {fanout['index']:.2f} |" in fanout_row


@pytest.mark.timeout(300)
def test_bench_fanout_and_mail_to_room_at_three_members(tmp_path: Path) -> None:
    stage, page = _bench(tmp_path, "--parts", "fanout,mail2room")
    _check_core(stage, page)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_every_part_at_three_members(tmp_path: Path) -> None:
    stage, page = _bench(
        tmp_path, "--burst", "4", "--burst-at", "3", "--mailboxes-at", "3", "--stored-posts", "50"
    )
    _check_core(stage, page)
    assert stage["mail2room_sandbox"]["latency"]["n"] == 1
    assert stage["mailboxes"]["check"]["ok"]
    assert stage["mailboxes"]["every_mailbox"]["n"] == 3
    burst = stage["burst"]
    assert (burst["in_room"], burst["lost"], burst["duplicates"]) == (4, 0, 0)
    assert burst["out_of_order"] == 0 and burst["wrong_thread"] == 0
    assert burst["mailed"] == 4  # each post's list copy, to everyone but its author
    assert stage["stored"]["posts"] == 50 and stage["stored"]["start"]["rss_mib"] > 0
    _check_speed(stage, page, ["sandbox", "mailboxes", "burst", "gpgscale", "stored"])
