"""The subscription cases' durable timer: each open case expires on time, restart or not.

The timer keeps nothing in memory: the cases table is its list of timers (each open case's
``expires_at``). The task expires every case that is due (``subscription.expire_due``:
one audited change per case, the admins told through the effect queue), then sleeps until
the next case falls due, or until woken (a decision may have opened a case). After a stop,
its first round expires whatever fell due meanwhile. It never sleeps longer than
``MAX_SLEEP``, so a clock set back or forward is caught up with within the hour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from secir_bot.commands import Context
from secir_bot.commands.subscription import expire_due
from secir_bot.tasks import work_loop

log = logging.getLogger(__name__)

MAX_SLEEP = 3600.0  # seconds


class CaseExpiry:
    """The long-lived task that closes expired cases (``App.tasks``: "case-expiry")."""

    def __init__(self, ctx: Context, on_effects: Callable[[], None]) -> None:
        self.ctx = ctx
        self.on_effects = on_effects  # the executor: the admins' notices were queued
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await work_loop(self.expire, self._wake, self.next_due)

    async def expire(self) -> None:
        replies = expire_due(self.ctx)
        for reply in replies:
            log.info("%s", reply.text)
        if replies:
            self.on_effects()

    def next_due(self) -> float:
        """When the next open case expires (at the latest, ``MAX_SLEEP`` from now)."""
        latest = self.ctx.clock() + MAX_SLEEP
        due = [case.expires_at for case in self.ctx.store.cases.open_cases()]
        return min([*due, latest])
