"""The machine-speed probe's Python loop, and a sampler that runs a short one every second.

Standard library only: the sampler is started as a process of its own during each part of
the benchmark (``python speedloop.py INTERVAL``), so it must start fast. It prints one line
per sample, ``<time> <CPU seconds>``, and stops when its stdin is closed.
"""

from __future__ import annotations

import select
import sys
import time

SAMPLE_ROUNDS = 80_000  # a tenth of the probe's loop: 10–25 ms of CPU on the bench VM


def python_work(rounds: int) -> float:
    """Run the fixed Python loop; the CPU seconds this thread spent on it."""
    start = time.thread_time()
    table: dict[int, str] = {}
    acc = 0
    for i in range(rounds):
        acc = (acc * 31 + i) % 1_000_003
        table[i & 1023] = str(acc)
    if len(table) != min(rounds, 1024):  # uses the result: the loop is never skipped
        raise AssertionError("the probe's loop went wrong")
    return time.thread_time() - start


def sample(interval: float) -> None:
    while True:
        print(f"{time.time():.3f} {python_work(SAMPLE_ROUNDS):.6f}", flush=True)
        ready, _, _ = select.select([sys.stdin], [], [], interval)
        if ready:  # closed: the part is over
            return


if __name__ == "__main__":
    sample(float(sys.argv[1]))
