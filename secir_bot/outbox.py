"""Durable delivery: drain the outbox, one worker per channel.

Mail rows for one destination (the list's mail, one member's mail) go out one at a time in
creation order. The room's events are sent several at once (``delivery.matrix_parallel``,
each send waits for the homeserver's answer): each row waits for every earlier row it
shares a lane key with (``matrix_keys``: its thread, its post, the post it edits, its
author), so a thread's events keep their order and a reply never starts before its root
and its parent are in the room; events of other threads and authors overtake each other.
A row that fails transiently holds back the later rows of its destination that have not
started yet (a thread reply must not overtake its root) and is retried with exponential
backoff.
Retries are idempotent: Matrix sends reuse the row's transaction id, mail reuses its fixed
Message-ID and skips recipients already accepted. A permanent failure, or one that
lasts longer than ``delivery.give_up_after``, makes the row a dead letter and the admins
get a notice in the control room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping

from secir_bot.bridges import Bridge
from secir_bot.config import DeliveryConfig
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.lanes import run_in_lanes
from secir_bot.model import Channel
from secir_bot.store import NewDelivery, OutboxRow, Store
from secir_bot.tasks import work_loop

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 30.0  # seconds an in-flight delivery may take to finish on shutdown


def matrix_keys(store: Store, row: OutboxRow) -> frozenset[str]:
    """The lane keys of a room event, all of its room: what it must stay in order with.

    Its thread (a reply's relation is made at send time from its root's and parent's
    events, and the parent is in the root's thread), its post (a post's files follow its
    text), the post it edits and that one's thread (an edit names the original's event),
    and its post's author (one sender's posts stay in the order the inbox decided them).
    Rows without a post (notices) share one lane per room.
    """
    room = row.target
    if row.post_uid is None:
        return frozenset({f"{room} notices"})
    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    post = store.posts.get(row.post_uid)
    thread = payload.get("root_uid") or (post.root_uid if post else None) or row.post_uid
    keys = {f"{room} post:{row.post_uid}", f"{room} thread:{thread}"}
    if post is not None:
        keys.add(f"{room} author:{post.author.id}")
    replaced = payload.get("replaces_uid")
    if isinstance(replaced, str):
        original = store.posts.get(replaced)
        keys.add(f"{room} post:{replaced}")
        keys.add(f"{room} thread:{(original.root_uid if original else None) or replaced}")
    return frozenset(keys)


class Outbox:
    def __init__(
        self,
        store: Store,
        bridges: Mapping[Channel, Bridge],
        cfg: DeliveryConfig,
        notice: Callable[[str], NewDelivery],
        control_room: str,
    ) -> None:
        self.store = store
        self.bridges = bridges
        self.cfg = cfg
        self.notice = notice
        self.control_room = control_room
        self._wake = {channel: asyncio.Event() for channel in bridges}
        # Per channel: whether its worker is in a round (until its first round ends, it is
        # taken to be), and who waits for its next round to hand a row over (``handed_over``).
        self._busy = dict.fromkeys(bridges, True)
        self._handover: dict[Channel, list[asyncio.Future[None]]] = {c: [] for c in bridges}

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def handed_over(self, channel: Channel) -> None:
        """Wait until the worker of ``channel``, woken just before, has handed the first due
        row of its round to the bridge, or found none to deliver.

        The bridge then runs on until it waits (for the network), before the caller goes on:
        the decider calls this after queueing a post's room event and before it composes the
        list mail and starts gpg on it, so that the room's send is on its way first. At once
        when the worker is in a round already: its next round takes the new rows, after the
        rows it is delivering, and the caller must not wait for those.
        """
        if channel not in self._busy or self._busy[channel]:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._handover[channel].append(waiter)
        await waiter

    def idle(self, channel: Channel) -> bool:
        """Whether the worker of ``channel`` waits for work (between rounds)."""
        return not self._busy.get(channel, True)

    def _hand_over(self, channel: Channel) -> None:
        """Release whoever waits for this round of ``channel`` to hand a row over."""
        waiting, self._handover[channel] = self._handover[channel], []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    def notify(self, text: str) -> None:
        """Queue a notice for the admins (used by bridges and workers)."""
        self.store.outbox.enqueue(self.notice(text))
        self.wake()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for channel in self.bridges:
                tg.create_task(self._worker(channel), name=f"outbox-{channel}")

    async def _worker(self, channel: Channel) -> None:
        await work_loop(
            lambda: self.drain(channel), self._wake[channel], self.store.outbox.next_time
        )

    async def drain(self, channel: Channel) -> None:
        """Deliver every due row of ``channel``: mail in order, the room's events several
        at once, each after the earlier rows it shares a lane with (``matrix_keys``).

        A row waiting for its retry, or failing transiently now, holds back the later rows
        of the same target that have not started (a thread reply must not overtake its
        root); other targets, such as the control room next to the incident room, go on.
        """
        now = time.time()
        self._busy[channel] = True
        try:
            due: list[OutboxRow] = []
            waiting: set[str] = set()
            for row in self.store.outbox.pending(channel):
                if row.target in waiting:
                    continue
                if row.due_at > now:
                    waiting.add(row.target)  # the rows after it for this target wait too
                else:
                    due.append(row)
            held: set[str] = set()

            async def deliver(row: OutboxRow) -> None:
                if row.target not in held and not await self._deliver(row):
                    held.add(row.target)

            parallel = self.cfg.matrix_parallel if channel is Channel.MATRIX else 1
            await run_in_lanes(due, lambda row: matrix_keys(self.store, row), deliver, parallel)
        finally:
            self._busy[channel] = False
            self._hand_over(channel)  # nothing (more) to hand over in this round

    async def _deliver(self, row: OutboxRow) -> bool:
        # A delivery is not abandoned half-way on shutdown: an SMTP server that has taken
        # the data must see it recorded as sent, or a restart would send it again.
        attempt = asyncio.ensure_future(self._attempt(row))
        try:
            return await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(attempt, SHUTDOWN_GRACE)
            raise

    async def _attempt(self, row: OutboxRow) -> bool:
        bridge = self.bridges[row.channel]
        # The decision that made this row (and anything it depends on) on the disk before
        # the row leaves: a machine crash must not undo a decision whose message went out.
        await self.store.durable()
        self._hand_over(row.channel)  # its waiters go on once the bridge waits
        try:
            receipt = await bridge.deliver(row)
        except TransientDeliveryError as exc:
            return self._later(row, str(exc))
        except PermanentDeliveryError as exc:
            self._dead(row, str(exc))
            return True
        except Exception as exc:
            # A bug or a library's surprise must not stop every delivery (and the bot): the
            # row is retried like a transient failure, and the log says what it was.
            log.exception("outbox %s (%s): unexpected %s", row.id, row.channel, type(exc).__name__)
            return self._later(row, f"unexpected {type(exc).__name__}")
        log.info("outbox %s (%s %s) delivered: %s", row.id, row.channel, row.kind, receipt.result)
        self.store.outbox.delivered(
            row.id, receipt.result, link=receipt.link, post_uid=row.post_uid
        )
        await self.store.durable()  # a delivery recorded is never made again
        if receipt.refused:
            self.notify(f"Some recipients refused delivery {row.id}: {receipt.result}")
        return True

    def _later(self, row: OutboxRow, why: str) -> bool:
        """A failed attempt: retried after a growing delay, or given up when too old."""
        age = time.time() - row.created_at
        if age > self.cfg.give_up_after:
            self._dead(row, f"gave up after {age / 3600:.1f} h: {why}")
            return True
        delay = min(self.cfg.retry_base * 2**row.attempts, self.cfg.retry_max)
        log.warning("outbox %s (%s) failed, retry in %.0fs: %s", row.id, row.channel, delay, why)
        self.store.outbox.retry_later(row.id, why, time.time() + delay)
        return False

    def _dead(self, row: OutboxRow, why: str) -> None:
        log.error("outbox %s (%s to %s) is a dead letter: %s", row.id, row.channel, row.target, why)
        self.store.outbox.dead(row.id, why)
        if not (row.channel is Channel.MATRIX and row.target == self.control_room):
            self.notify(
                f"Delivery {row.id} ({row.kind} via {row.channel} to {row.target}) "
                f"failed for good: {why}"
            )
