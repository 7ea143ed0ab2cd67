"""Sampling the running bot with py-spy: where its own Python time goes.

py-spy attaches to the bot's process (root may ptrace it) without stopping it
(``--nonblocking``) and records only the threads that run, so the samples show where the
bot spends CPU itself, apart from the time it waits for gpg, the servers or the network.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

RATE = 200  # samples per second

# Frames of the event loop, threads and start-up: on most stacks, and saying nothing.
_PLUMBING = re.compile(
    r"\((asyncio/|threading\.py|concurrent/|selectors\.py|runpy\.py|secir-bot\)|"
    r"secir_bot/cli\.py|secir_bot/app\.py|<frozen)"
)


def _program() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Spy:
    """One py-spy recording of one process; ``start``, do the work, ``stop``."""

    def __init__(self, pid: int, raw: Path) -> None:
        self.pid = pid
        self.raw = raw
        self.errors = raw.with_suffix(".log")
        self.process: asyncio.subprocess.Process | None = None
        self.skipped = ""
        self.started = 0.0

    async def start(self) -> Spy:
        program = _program()
        if program is None:
            self.skipped = "py-spy is not installed (pip install -e '.[test]')"
            return self
        self.started = time.perf_counter()
        with open(self.errors, "wb") as log:  # noqa: ASYNC230 - a moment's set-up
            self.process = await asyncio.create_subprocess_exec(
                program, "record", "--pid", str(self.pid), "--rate", str(RATE),
                "--format", "raw", "--output", str(self.raw), "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        # py-spy says nothing when it has attached (not on a pipe); give it a moment.
        await asyncio.sleep(1.0)
        if self.process.returncode is not None:
            self.skipped = f"py-spy failed: {self.errors.read_text(errors='replace')[-300:]}"
        return self

    async def stop(self) -> dict[str, Any]:
        """Stop recording; the top frames (inclusive and own) and the CPU seconds seen."""
        seconds = time.perf_counter() - self.started
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            await asyncio.wait_for(self.process.wait(), 60)
        if self.skipped:
            return {"skipped": self.skipped}
        if not self.raw.exists():
            return {"skipped": f"py-spy wrote nothing: {self.errors.read_text()[-300:]}"}
        inclusive: dict[str, int] = {}
        own: dict[str, int] = {}
        total = 0
        for line in self.raw.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
            own[frames[-1]] = own.get(frames[-1], 0) + count
        useful = [(f, c) for f, c in inclusive.items() if not _PLUMBING.search(f)]
        return {
            "seconds": seconds,
            "samples": total,
            "inclusive": _top(useful, total, 14),
            "own": _top(list(own.items()), total, 10),
        }


def _top(counts: list[tuple[str, int]], total: int, limit: int) -> list[dict[str, Any]]:
    ranked = sorted(counts, key=lambda item: -item[1])[:limit]
    return [{"frame": frame, "share": c / max(1, total)} for frame, c in ranked]
