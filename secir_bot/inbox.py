"""The inbox runner: every received item decided, in order, apart from its bridge.

The bridges only make what they receive durable and wake the runner of their channel; the
runner decides each pending item in its own long-lived task, so that a slow decision (gpg
over a large list today, a whois lookup tomorrow) never stalls a Matrix sync or the IMAP
intake. A decision is: count the attempt, run the channel's intake stage (which ends in an
``Inbound``), then the policy steps on that, and record the outcome in one store
transaction: an accepted message becomes a ``Post`` with its outbox rows (``posts``,
``fanout``), a refused one its notices (``notices``).

An accepted post's room event is queued (and the outbox woken) before its list mail is
encrypted: the decision is recorded with the room's rows and a mark (``MAIL_PENDING``), the
runner waits until the outbox has the room event on its way (``Outbox.handed_over``; at
once if the outbox is busy), then the list mail is rendered one recipient group at a time,
each group's row committed (and the outbox woken) as soon as it is encrypted, and the mark
cleared at the end. A stop in between leaves the mark, and ``Decider.resume`` renders, at
the next start and before anything new is decided, the groups of the members who have no
row yet (same Message-ID).

A file posted in the room without a caption is decided together with the text its sender
posts next in its thread, as one post (``captions``: the runner holds the file a little).

An item whose processing raises is *shunted*: kept in the store with the error, reported
to the admins, and not retried automatically, so that one poisonous message cannot stop the
list (Mailman's shunt queue). The attempt is counted before the work, so an item that kills
or hangs the process is set aside after a few restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Protocol

from secir_bot import captions, posts
from secir_bot.commands.matrix_front import MatrixFront
from secir_bot.crypto import GpgTimeout
from secir_bot.errors import SignatureSeen
from secir_bot.fanout import Fanout
from secir_bot.lanes import mail_keys, run_in_lanes
from secir_bot.model import Channel, Inbound, InboxState, LinkKind, Outcome, Post
from secir_bot.notices import Notices
from secir_bot.pipeline import EMAIL_STEPS, MATRIX_STEPS, POLICY_STEPS
from secir_bot.steps import (
    Decision,
    MailItem,
    MatrixItem,
    PolicyItem,
    Services,
    Verdict,
    reject,
)
from secir_bot.steps import email as email_steps
from secir_bot.steps import matrix as matrix_steps
from secir_bot.store import InboxItem, NewDelivery, Store
from secir_bot.tasks import work_loop

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # times an item may be started before it is shunted unprocessed
MAIL_PENDING = "fanout.mail-pending:"  # kv mark + post uid: its list mail is not queued yet


class Requests(Protocol):
    """The command front end by mail (``mailfront.MailFront``), wired by the app."""

    def addressed(self, item: InboxItem) -> bool: ...

    def decide(self, item: InboxItem) -> Awaitable[Outcome]: ...

    def commands(self, ctx: MailItem, text: str) -> Awaitable[Outcome]: ...


class Decider:
    """Decides inbox items and turns them into posts and deliveries."""

    def __init__(
        self,
        services: Services,
        fanout: Fanout,
        notices: Notices,
        requests: Requests | None = None,
        commands: MatrixFront | None = None,
    ) -> None:
        self.s = services
        self.fanout = fanout
        self.notices = notices
        self.on_queued: Callable[[], None] = lambda: None  # wakes the outbox (set by the app)
        # Returns once the outbox has the room event on its way (set by the app).
        self.room_handed_over: Callable[[], Awaitable[None]] = _at_once
        self._resumed: asyncio.Task[None] | None = None
        self.requests = requests  # mail on the request address, and command words
        self.commands = commands  # the Matrix front end of the commands (wired by the app)

    async def decide(self, item: InboxItem, caption: InboxItem | None = None) -> Outcome:
        """Decide one inbox item (idempotent: a decided item keeps its outcome); a room
        file with the ``caption`` its sender posted next (which stays new if unused)."""
        if item.state != InboxState.NEW:
            return Outcome(item.state, item.reason or "")
        attempts = self.s.store.inbox.begin_attempt(item.id)
        if attempts > MAX_ATTEMPTS:
            return self._shunt(
                item,
                f"processing did not finish in {MAX_ATTEMPTS} attempts "
                "(the bot stopped or hung while handling it)",
            )
        try:
            if item.source == Channel.EMAIL:
                return await self._mail(item)
            return await self._matrix(item, caption)
        except GpgTimeout as exc:
            # gpg hung on this item (and was killed): set it aside now rather than let the
            # next item wait behind it again.
            log.error("inbox item %s: gpg did not finish; shunted", item.id)
            return self._shunt(item, str(exc))
        except Exception as exc:
            # Type and place only: an exception's text may quote what was being parsed
            # (decrypted content), which belongs neither in logs nor in notices.
            log.error(
                "inbox item %s could not be processed (%s); shunted\n%s",
                item.id,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            return self._shunt(item, f"internal error ({type(exc).__name__})")

    def _shunt(self, item: InboxItem, reason: str) -> Outcome:
        """Set an item aside: kept with its reason, reported, never relayed (Mailman's shunt)."""
        notice = self.notices.shunted(item, reason)
        self.s.store.decide(item.id, InboxState.SHUNTED, reason, deliveries=[notice])
        return Outcome(InboxState.SHUNTED, reason)

    def _settle(self, item: InboxItem, decision: Decision, rejected: list[NewDelivery]) -> Outcome:
        """Record a drop or a rejection (with its notices) as the item's outcome."""
        if decision.verdict is Verdict.DROP:
            self.s.store.decide(item.id, InboxState.DROPPED, decision.reason)
            return Outcome(InboxState.DROPPED, decision.reason)
        self.s.store.decide(item.id, InboxState.REJECTED, decision.reason, deliveries=rejected)
        return Outcome(InboxState.REJECTED, decision.reason)

    async def _mail(self, item: InboxItem) -> Outcome:
        if self.requests is not None and self.requests.addressed(item):
            return await self.requests.decide(item)
        ctx = MailItem(item)
        decision = await EMAIL_STEPS.run(ctx, self.s)
        if decision.verdict is Verdict.CONTINUE:
            inbound = email_steps.inbound_of(ctx)
            decision = await POLICY_STEPS.run(PolicyItem(item, inbound), self.s)
            if decision.verdict is Verdict.CONTINUE:
                try:
                    return await self._relay(item, inbound)
                except SignatureSeen:
                    # Its original was decided at the same time and committed first.
                    decision = reject("replayed")
            if decision.verdict is Verdict.COMMAND and self.requests is not None:
                return await self.requests.commands(ctx, str(decision.params["word"]))
        rejected = (
            []
            if decision.verdict is Verdict.DROP
            else await self.notices.mail_rejected(ctx, decision)
        )
        return self._settle(item, decision, rejected)

    async def _matrix(self, item: InboxItem, caption: InboxItem | None) -> Outcome:
        ctx = MatrixItem(item)
        decision = await MATRIX_STEPS.run(ctx, self.s)
        if decision.verdict is Verdict.COMMAND:
            return await self._command(item, ctx, decision)
        if decision.verdict is Verdict.CONTINUE:
            inbound = matrix_steps.inbound_of(ctx)
            text = await self._caption(ctx, caption) if caption is not None else None
            if text is not None:
                inbound = matrix_steps.with_caption(inbound, text)
            decision = await POLICY_STEPS.run(PolicyItem(item, inbound), self.s)
            if decision.verdict is Verdict.CONTINUE:
                joined = caption if text is not None else None
                return await self._relay(item, inbound, joined)
        rejected = (
            [] if decision.verdict is Verdict.DROP else self.notices.matrix_rejected(ctx, decision)
        )
        return self._settle(item, decision, rejected)

    async def _caption(self, file: MatrixItem, caption: InboxItem) -> Inbound | None:
        """The caption's message, if it passes the intake as a plain text from the file's
        sender (same checks as any event: encrypted, trusted device, member)."""
        if not file.files or file.sender is None:
            return None
        ctx = MatrixItem(caption)
        if (await MATRIX_STEPS.run(ctx, self.s)).verdict is not Verdict.CONTINUE:
            return None
        if ctx.files or ctx.edit or ctx.redacts or ctx.sender is None:
            return None
        if ctx.sender.id != file.sender.id:
            return None
        return matrix_steps.inbound_of(ctx)

    async def _command(self, item: InboxItem, ctx: MatrixItem, decision: Decision) -> Outcome:
        """A command: the dispatcher answers it (and commits what it changes); the answer
        is recorded with the item's decision. Without a front end wired, nothing is done."""
        answer = []
        if self.commands is not None:
            answer = await self.commands.handle(
                ctx.event, ctx.room_id, encrypted=ctx.facts.encrypted, device=ctx.facts.device
            )
        self.s.store.decide(item.id, InboxState.COMMAND, decision.reason, deliveries=answer)
        return Outcome(InboxState.COMMAND, decision.reason)

    async def _relay(
        self, item: InboxItem, inbound: Inbound, joined: InboxItem | None = None
    ) -> Outcome:
        """An accepted message becomes a post, with a delivery to each of its audiences.

        The room's rows first, in the decision's commit; the list mail after, in its own.
        A ``joined`` item (a file's caption) is decided in the same commit, as part of the
        post, and its event id names the post too (replies, edits and redactions of it)."""
        lst = self.s.config.list
        new = posts.of_inbound(self.s.store, inbound, lst.subject_tag, lst.domain)
        first = self.fanout.first(new.post)
        later = self.fanout.has_later(new.post)
        mark = MAIL_PENDING + new.post.uid
        self.s.store.decide(
            item.id,
            InboxState.RELAYED,
            post=new.post,
            links=(*new.links, *(((LinkKind.EVENT, joined.source_id),) if joined else ())),
            joined=(joined.id,) if joined else (),
            deliveries=first,
            signature=new.signature,
            # The notes are not stored with the post: kept for a list mail made after a stop.
            marks={mark: json.dumps(list(new.post.notes))} if later else None,
        )
        if first:
            self.on_queued()
            # The room's send first: composing the list mail and starting gpg on it take the
            # event loop for milliseconds, and gpg works on it while the room event goes out.
            await self.room_handed_over()
        if later:
            await self._mail_later(new.post, mark)
        return Outcome(InboxState.RELAYED)

    async def _mail_later(self, post: Post, mark: str) -> None:
        """Render and queue a relayed post's list mail, a commit per recipient group (and
        the outbox woken for each), then clear its mark.

        Only the members without a row yet are mailed, so that after a stop the groups
        already made are not made (or sent) again. A failure is reported to the admins (the
        post is in the room, not on the list, or on part of it) and not retried, like a
        shunted item; a stop (cancellation) leaves the mark."""
        mailed = self.fanout.mailed(post)
        rows: list[NewDelivery] = []
        try:
            async for group in self.fanout.later_each(post, mailed):
                self.s.store.queue(group)
                self.on_queued()  # this group's SMTP overlaps gpg of the next ones
        except Exception as exc:
            reason = str(exc) if isinstance(exc, GpgTimeout) else type(exc).__name__
            log.error("post %s: its list mail could not be made (%s)", post.uid, reason)
            reached = (
                "it was mailed only to the members of the groups encrypted before"
                if self.fanout.mailed(post)
                else "it was not mailed to the list"
            )
            rows = [
                self.notices.admins(
                    f"Post {post.uid} was relayed to the room, but its list mail could not be "
                    f"made ({reason}); {reached}."
                )
            ]
        self.s.store.complete(mark, rows)

    async def resume(self) -> None:
        """List mail that a stop left unmade (marked), made now; once, before new work.

        Every inbox runner awaits this before deciding, so a resumed post's mail is queued
        before the mail of anything decided after the restart."""
        if self._resumed is None:
            self._resumed = asyncio.create_task(self._resume())
        await asyncio.shield(self._resumed)

    async def _resume(self) -> None:
        for mark, notes in self.s.store.kv.prefixed(MAIL_PENDING).items():
            post = self.s.store.posts.get(mark.removeprefix(MAIL_PENDING))
            if post is None:  # cannot happen (same commit); never block the list on it
                self.s.store.complete(mark, [])
                continue
            log.info("post %s: making the list mail that a stop left unmade", post.uid)
            await self._mail_later(dataclasses.replace(post, notes=tuple(json.loads(notes))), mark)


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
        await run_in_lanes(items, _lane_keys, self._decide_one, self.parallel)

    async def _decide_planned(self, first: int, wait: float) -> None:
        """Room events in order, a caption-less file held for its text (``captions``)."""
        now = time.time()
        window = self.store.inbox.window(self.channel, first, now - wait)
        s = self.decider.s
        room = s.config.matrix.incident_room
        plan = captions.plan(window, room, s.bot_user_id, wait, now, s.store.media.fetched)
        self._due = plan.due
        for unit in plan.units:
            await self._decide_one(unit.item, unit.caption)

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


async def _at_once() -> None:
    return None


def _lane_keys(item: InboxItem) -> frozenset[str]:
    """What an item must stay in order with: a mail's sender and thread; Matrix in one lane."""
    return mail_keys(item.raw) if item.source == Channel.EMAIL else frozenset({"matrix"})
