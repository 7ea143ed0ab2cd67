"""Helpers for the long-lived tasks: a cancellation that a library lost, and waiting for work.

Every long-lived task of the bot (the bridges, the inbox runners, the outbox workers, the
health watch, housekeeping) runs in ``App``'s task group and loops: do the work that is
due, then sleep until there is more, which is when something wakes it (a new row, a
changed state) or when the next row falls due (a retry, an outage to tell), whichever comes
first. Durable timers (reminders, escalations) will loop the same way over their table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

MIN_SLEEP = 0.05  # seconds; a row that is due "now" is not busy-waited for


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library swallowed.

    On Python 3.11, ``asyncio.wait_for`` can lose a cancellation that arrives just as the
    awaited operation finishes (fixed in 3.12); a reconnect loop would then go on for ever
    and hold up shutdown. Loops call this at the top of each round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def sleep_until(wake: asyncio.Event, due: float | None, now: float | None = None) -> None:
    """Sleep until ``wake`` is set or the time ``due`` has come (never, when None).

    ``now`` is the caller's idea of the current time (``time.time()`` by default), so that
    a caller with its own clock compares like with like.
    """
    timeout = None if due is None else max(MIN_SLEEP, due - (time.time() if now is None else now))
    try:
        await asyncio.wait_for(wake.wait(), timeout)
    except TimeoutError:
        pass


async def work_loop(
    work: Callable[[], Awaitable[None]],
    wake: asyncio.Event,
    next_due: Callable[[], float | None] = lambda: None,
) -> None:
    """Run ``work``, then sleep until woken or until ``next_due()``; for as long as the task
    runs. A wake that comes while ``work`` runs is not lost: the next round starts at once."""
    while True:
        raise_if_cancelled()
        wake.clear()
        await work()
        await sleep_until(wake, next_due())
