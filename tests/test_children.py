"""gpg processes are reaped through pidfds on the event loop, not by a thread each.

Python 3.11's default child watcher starts a thread per child process; two per relayed
member mail (docs/performance.md). ``secir_bot.crypto.children`` installs a watcher that
waits on the child's pidfd on the loop that started it. These run real gpg processes.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

from secir_bot.crypto import gpg

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="3.12 reaps through pidfds by itself"
)


@pytest.fixture
def threads_started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads started while the test runs (each still starts)."""
    started: list[str] = []
    start = threading.Thread.start

    def recording(thread: threading.Thread) -> None:
        started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording)
    return started


async def test_a_gpg_run_starts_no_thread(tmp_path: Path, threads_started: list[str]) -> None:
    for _ in range(3):
        run = await gpg.run(tmp_path, ["--version"], deadline=60)
        assert run.returncode == 0
        assert b"gpg (GnuPG)" in run.output

    assert threads_started == []


async def test_the_exit_code_of_a_failing_gpg_arrives(tmp_path: Path) -> None:
    run = await gpg.run(tmp_path, ["--no-such-option-anywhere"], deadline=60)

    assert run.returncode == 2
    assert "no-such-option-anywhere" in run.stderr


def test_processes_are_reaped_on_each_new_loop(tmp_path: Path) -> None:
    """Each ``asyncio.run`` (a CLI command, a test) is a new loop; each must see its gpg end."""

    async def version() -> int:
        return (await gpg.run(tmp_path, ["--version"], deadline=60)).returncode

    assert [asyncio.run(version()) for _ in range(3)] == [0, 0, 0]
