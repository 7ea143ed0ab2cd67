"""A gpg run that is cancelled, wherever the cancellation lands, leaves no gpg behind.

The cancellation is moved through the run one turn of the event loop at a time, so that it
lands once at each of the run's awaits (starting gpg, connecting its pipes, the reads, the
reaping), without depending on how fast gpg is; a second cancellation follows the first
after none, one or two turns (a task group cancelled twice, a test's loop closing).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from pathlib import Path

import pytest
from test_crypto import _gpg_children

from secir_bot.crypto import gpg
from secir_bot.sandbox.operators import wait_until

DATA = b"x" * 4_000_000  # keeps gpg busy for far more turns than are tried


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("again", [0, 1, 2])
async def test_a_cancelled_gpg_is_killed_and_reaped_wherever_the_cancel_lands(
    tmp_path: Path, again: int, caplog: pytest.LogCaptureFixture
) -> None:
    gc.collect()  # what earlier tests left for the collector is not counted below
    caplog.clear()
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    for turns in range(40):
        children, fds = set(_gpg_children()), _open_fds()
        run = asyncio.create_task(gpg.run(home, ["--store"], DATA, deadline=120))
        for _ in range(turns):
            await asyncio.sleep(0)
        run.cancel()
        for _ in range(again):  # and once more while gpg is being killed
            await asyncio.sleep(0)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        left = set(_gpg_children()) - children
        assert left == set(), f"gpg {left} left behind by a cancellation after {turns} turns"
        # A pipe's transport closes its file a turn or two after close(), or once asyncio
        # hears of the killed process's end when the cancellation came while starting it.
        await wait_until(
            lambda fds=fds: _open_fds() <= fds,
            10,
            f"the pipes closed after a cancel at turn {turns}",
        )
    # Nor an error that nobody heard: gpg killed with its input unread ends its stdin pipe
    # with a BrokenPipeError, which asyncio logs when the run did not wait for it.
    gc.collect()
    unheard = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert unheard == []
