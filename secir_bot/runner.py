"""The inbox runners: the pending items of one channel decided in order, in a task of its own.

The bridges only make what they receive durable and wake the runner of their channel; the
runner decides each pending item (``inbox.Decider``) in its own long-lived task, so that a
slow decision (gpg over a large list today, a whois lookup tomorrow) never stalls a Matrix
sync or the IMAP intake. Mail is decided several items at once, those of one thread or one
sender in order (``lanes``), except that items a stop interrupted are decided first, one
at a time (the crash guard's count is then theirs alone); room events in order, a file
without a caption held a little for the text its sender posts next (``captions``). Whoever
waits for an item's outcome (``decided``: the email bridge, before it moves the mail out of
the mailbox) is answered as soon as its decision is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from secir_bot import captions
from secir_bot.inbox import Decider
from secir_bot.lanes import lane_keys, run_in_lanes
from secir_bot.model import Channel, InboxState, Outcome
from secir_bot.steps.matrix import checked_file
from secir_bot.store import InboxItem, Store
from secir_bot.tasks import work_loop


class InboxRunner:
    """Decides the pending items of one channel, oldest first, as a long-lived task.

    With ``parallel`` above 1 (the email channel, ``imap.parallel_decisions``) several items
    are decided at once, those of one thread or one sender in order (``lanes``)."""

    def __init__(
        self,
        store: Store,
        decider: Decider,
        channel: Channel,
        on_work: Callable[[], None],
        parallel: int = 1,
    ) -> None:
        self.store = store
        self.decider = decider
        self.channel = channel
        self.on_work = on_work  # the outbox is woken after each decision
        self.parallel = parallel
        self._wake = asyncio.Event()
        self._waiting: dict[int, list[asyncio.Future[Outcome]]] = {}
        self._due: float | None = None  # when a held room file's wait for its text ends

    def wake(self) -> None:
        self._wake.set()

    async def decided(self, item_id: int) -> Outcome:
        """The outcome of an item of this channel, waiting for its decision if need be."""
        state, reason = self.store.inbox.state(item_id)
        if state not in (InboxState.NEW, InboxState.PARKED):
            return Outcome(state, reason or "")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(item_id, []).append(future)
        self.wake()
        try:
            return await future
        finally:
            waiters = self._waiting.get(item_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiting.pop(item_id, None)

    async def run(self) -> None:
        # List mail a stop left unmade first, then items accepted before a stop but not
        # decided.
        await self.decider.resume()
        await work_loop(self._decide_pending, self._wake, lambda: self._due)

    async def _decide_pending(self) -> None:
        items = self.store.inbox.pending(self.channel)
        wait = self.decider.s.config.matrix.caption_wait_seconds
        if self.channel is Channel.MATRIX and wait > 0 and items:
            await self._decide_planned(items[0].id, wait)
            return
        self._due = None
        if self.parallel > 1:
            # Items whose decision a stop interrupted first, each alone: should one of them
            # be what kills the process, the crash guard then charges it alone, not the
            # items decided beside it. (Each started after the earlier items of its lanes
            # were decided, so none overtakes one of those.)
            for item in [i for i in items if i.attempts]:
                await self._decide_one(item)
            items = [i for i in items if not i.attempts]
        await run_in_lanes(items, _lane_keys, self._decide_one, self.parallel)

    async def _decide_planned(self, first: int, wait: float) -> None:
        """Room events in order, a caption-less file held for its text (``captions``)."""
        now = time.time()
        window = self.store.inbox.window(self.channel, first, now - wait)
        s = self.decider.s
        room = s.config.matrix.incident_room
        plan = captions.plan(window, room, s.bot_user_id, wait, now, self._relayable)
        self._due = plan.due
        for unit in plan.units:
            await self._decide_one(unit.item, unit.caption)

    def _relayable(self, event_id: str) -> bool:
        """Whether a room file may wait for its caption: one that is refused (not had, too
        large, of a blocked type) is decided at once, so that its sender hears at once."""
        return not isinstance(checked_file(self.decider.s, event_id), str)

    async def _decide_one(self, item: InboxItem, caption: InboxItem | None = None) -> None:
        self._answer(item.id, await self.decider.decide(item, caption))
        if caption is not None:
            state, reason = self.store.inbox.state(caption.id)
            if state not in (InboxState.NEW, InboxState.PARKED):  # taken as the caption
                self._answer(caption.id, Outcome(state, reason or ""))
        self.on_work()

    def _answer(self, item_id: int, outcome: Outcome) -> None:
        for future in self._waiting.pop(item_id, []):
            if not future.done():
                future.set_result(outcome)


def _lane_keys(item: InboxItem) -> frozenset[str]:
    return lane_keys(item.source, item.raw)
