"""What the bot tells people about items: the admins in the control room, and members.

Every text the bot writes about an item it received is here: the admins' notices (an item
set aside, members a post could not be mailed to, a refused mail or event) and the
explanations a member gets (an encrypted answer by mail, a reply in the room). Notices
about one sender and answers to one member are limited to ``delivery.notices_per_hour``;
the ones held back are counted and said in the next one (a forged or looping flood
cannot turn the list into a source of backscatter).

An answer by mail goes only to a member that a valid signature proved to be the sender,
and quotes nothing the sender chose: only the reason, the date and the list's item id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from secir_bot import mime
from secir_bot.bridges import MailRenderer, RoomRenderer
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.model import Member, Post
from secir_bot.steps import Decision, MailItem, MatrixItem
from secir_bot.store import InboxItem, NewDelivery, Rate, Store

RATE_WINDOW = 3600.0  # seconds over which delivery.notices_per_hour is counted


class Notices:
    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: Keyring,
        room: RoomRenderer,
        mail: MailRenderer,
    ) -> None:
        self.config = config
        self.store = store
        self.keyring = keyring
        self.room = room
        self.mail = mail

    def admins(self, text: str) -> NewDelivery:
        """A notice for the admins in the control room."""
        return self.room.notice(self.config.matrix.control_room, text)

    def admins_limited(self, key: str, text: str, kind: str) -> list[NewDelivery]:
        """A notice for the admins, within ``delivery.notices_per_hour`` per ``key``."""
        return self._limited(key, text, kind)

    def shunted(self, item: InboxItem, reason: str) -> NewDelivery:
        return self.admins(
            f"Inbox item {item.id} ({item.source} {item.source_id}) could not be "
            f"processed and was set aside: {reason}. Nothing was relayed."
        )

    def not_mailed(self, post: Post, skipped: Sequence[Member]) -> NewDelivery:
        return self.admins(
            "Not mailed to "
            + ", ".join(f"{m.label} <{m.email}>" for m in skipped)
            + f" (post {post.uid}): their key is expired, revoked or cannot encrypt."
        )

    # -- refusals ----------------------------------------------------------------------

    async def mail_rejected(self, ctx: MailItem, decision: Decision) -> list[NewDelivery]:
        """A notice for the admins, and an answer to the sender only when a valid signature
        proved who that is: a forged From gets nothing, and the answer (which the list
        signs) quotes nothing the sender chose, only the reason and our own item id."""
        env = ctx.envelope
        sender = env.from_addr if env else mime.from_address(ctx.item.raw) or "(unreadable)"
        mid = env.message_id if env and env.message_id else ctx.item.source_id
        signer = f"; signed by {ctx.signer.label}" if ctx.signer else ""
        who = ctx.signer.fingerprint if ctx.signer else sender.lower()
        out = self._limited(
            f"notice:{who}",
            f"Mail rejected and quarantined: {decision.reason}. "
            f"From: {mime.neutral(sender)[:200]}{signer}; "
            f"Message-ID: {mime.neutral(mid)[:200]}; inbox item {ctx.item.id}.",
            "refused mail from this sender",
        )
        member = ctx.signer
        if (
            member is None
            or not member.active
            or not await self.keyring.usable_for_encryption([member.fingerprint])
        ):
            return out
        rate = self._rate(f"answer:{member.fingerprint}")
        if rate.allowed:
            received = datetime.fromtimestamp(ctx.item.received_at, UTC)
            text = (
                f"Your mail to {self.config.list.address} received on "
                f"{received:%Y-%m-%d %H:%M} UTC (the list's item {ctx.item.id}) was not "
                f"relayed to the list:\n\n    {decision.reason}.\n\nNothing was sent to the "
                f"other members. Mail to the list must be encrypted to the list key and "
                f"signed with the key registered for you ({member.fingerprint}).\nThe list "
                f"admins have been told. This is an automatic answer."
                + held_note(rate, "answers like this one")
            )
            out.append(await self.mail.answer(member, "Your mail was not relayed", text))
        return out

    def matrix_rejected(self, ctx: MatrixItem, decision: Decision) -> list[NewDelivery]:
        """A notice for the admins, and a reply to the sender in the room (in the thread of
        what they sent), except in the control room."""
        event_id = ctx.event.get("event_id", "?")
        sender = ctx.event.get("sender", "?")
        out = self._limited(
            f"notice:{sender}",
            f"Matrix event not relayed: {decision.reason}. Sender: {sender}; "
            f"event: {event_id}; room: {ctx.room_id}.",
            "refused messages from this sender",
        )
        if (
            ctx.room_id
            and ctx.room_id != self.config.matrix.control_room
            and self._rate(f"answer:{sender}").allowed
        ):
            text = f"Not mirrored to the mailing list: {decision.reason}."
            out.append(self.room.notice(ctx.room_id, text, answering=ctx.event))
        return out

    # -- limits ------------------------------------------------------------------------

    def _rate(self, key: str) -> Rate:
        return self.store.rates.take(
            key, self.config.delivery.notices_per_hour, RATE_WINDOW, time.time()
        )

    def _limited(self, key: str, text: str, kind: str) -> list[NewDelivery]:
        """A notice for the admins, unless too many about ``key`` went out this hour."""
        rate = self._rate(key)
        if not rate.allowed:
            return []
        return [self.admins(text + held_note(rate, f"notices about {kind}"))]


def held_note(rate: Rate, what: str) -> str:
    """What a rate-limited notice adds: how many were held back, and when more will be."""
    note = ""
    if rate.held_before:
        note += f" ({rate.held_before} more {what} were held back in the hour before.)"
    if rate.last:
        note += f" Further {what} are held back for an hour and counted."
    return note
