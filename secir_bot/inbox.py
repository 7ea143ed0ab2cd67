"""Deciding one received item: intake, policy, and the outcome recorded.

The inbox runners (``runner``) call :meth:`Decider.decide` for each pending item of their
channel. A decision is: count the attempt, run the channel's intake stage (which ends in an
``Inbound``), then the policy steps on that, and record the outcome in one store
transaction: an accepted message becomes a ``Post`` with its outbox rows (``posts``,
``fanout``), a refused one its notices (``notices``).

An accepted post's room event never waits on its list mail: the decision is recorded with
the room's rows and a mark (``MAIL_PENDING``), and ends there (its lane and whoever waits
for its outcome are released) once the outbox has the room event on its way
(``Outbox.handed_over``; at once if the outbox is busy). The list mail is made after, by
the follow-on stage (``listmail``: in decision order within each thread and sender), one
recipient group at a time, each group's row committed (and the outbox woken) as soon as it
is encrypted, and the mark cleared at the end. A stop in between leaves the mark, and
``Decider.resume`` renders, at the next start and before anything new is decided, the
groups of the members who have no row yet (same Message-ID), post after post in the order
they were decided.

A file posted in the room without a caption is decided together with the text its sender
posts next in its thread, as one post (the runner hands the caption over).

An item whose processing raises is *shunted*: kept in the store with the error, reported
to the admins, and not retried automatically, so that one poisonous message cannot stop the
list (Mailman's shunt queue). The attempt is counted before the work, so an item that kills
or hangs the process is set aside after a few restarts.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Protocol

from secir_bot import posts
from secir_bot.commands.matrix_front import MatrixFront
from secir_bot.crypto import GpgTimeout
from secir_bot.errors import SignatureSeen
from secir_bot.fanout import Fanout
from secir_bot.lanes import lane_keys
from secir_bot.listmail import ListMail, pending_post, pending_value
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
from secir_bot.store import InboxItem, NewDelivery

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
        self.list_mail = ListMail(self._mail_later)  # the list mail, after the decisions

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

        The room's rows in the decision's commit, which ends the decision; the list mail
        after, by the follow-on stage (in order with the item's lane), in its own commits.
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
            # What the post's row lacks (notes, formatting, files, corrects): kept for a
            # list mail made after a stop.
            marks={mark: pending_value(new.post)} if later else None,
        )
        if first:
            self.on_queued()
            # The room's send first: composing the list mail and starting gpg on it take the
            # event loop for milliseconds, and gpg works on it while the room event goes out.
            await self.room_handed_over()
        if later:  # waits only while the stage's backlog is full
            await self.list_mail.add(new.post, mark, lane_keys(item.source, item.raw))
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

    async def aclose(self) -> None:
        """Stop the list mail being made (its marks stay; ``resume`` makes it next time)."""
        await self.list_mail.aclose()

    async def resume(self) -> None:
        """List mail that a stop left unmade (marked), made now; once, before new work.

        Every inbox runner awaits this before deciding, so a resumed post's mail is queued
        before the mail of anything decided after the restart."""
        if self._resumed is None:
            self._resumed = asyncio.create_task(self._resume())
        await asyncio.shield(self._resumed)

    async def _resume(self) -> None:
        # Oldest mark first, which is the order the posts were decided: each mark is a new
        # kv row of the decision's commit, and a new row's rowid is above every existing
        # one (the store never VACUUMs, which could renumber them).
        for mark, kept in self.s.store.kv.prefixed(MAIL_PENDING).items():
            post = self.s.store.posts.get(mark.removeprefix(MAIL_PENDING))
            if post is None:  # cannot happen (same commit); never block the list on it
                self.s.store.complete(mark, [])
                continue
            log.info("post %s: making the list mail that a stop left unmade", post.uid)
            await self._mail_later(pending_post(post, kept), mark)


async def _at_once() -> None:
    return None
