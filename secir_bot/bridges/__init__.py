"""Bridges: one adapter per channel, sharing small Protocols and nothing else.

A bridge turns its outside world into inbox items (``run``) and delivers outbox rows
(``deliver``), answering with a ``Receipt``. Failures of delivery are reported as
``TransientDeliveryError`` (retry later) or ``PermanentDeliveryError`` (dead letter);
library errors never escape.

Each channel also owns its format: a *renderer* turns a ``Post`` (or a notice) into the
payload of an outbox row, at decision time, so that a retry sends the same bytes and one
ciphertext serves every recipient of a mail. The core chooses who gets what (``fanout``,
``notices``) and is handed the two renderers by the app; it never imports a bridge package.
There are two channels, rooms and mail, and every audience (a room, the list's members,
one incident's members, a peer list) is reached over one of them.

email/    IMAP in, SMTP out, PGP/MIME rendering
matrix/   the bot's Matrix device: sync, trust, sending, content JSON rendering
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from secir_bot.model import Channel, LinkKind, Member, Outcome, Post
from secir_bot.store import NewDelivery, OutboxRow


@dataclass(frozen=True)
class Receipt:
    """What one delivery achieved, in fields the outbox reads (never a sentence to parse)."""

    summary: str  # for the log and the row: "sent to 3 recipient(s)", a Matrix event id
    link: tuple[LinkKind, str] | None = None  # the post's own id on this channel, if any
    refused: tuple[str, ...] = ()  # recipients refused for good, each with the server's answer

    @property
    def result(self) -> str:
        """The text recorded with the row (and told to the admins when some refused)."""
        if not self.refused:
            return self.summary
        return f"{self.summary}; refused: " + ", ".join(self.refused)


class Bridge(Protocol):
    channel: Channel

    async def run(self) -> None:
        """Receive for as long as the app runs (reconnecting by itself)."""

    async def deliver(self, row: OutboxRow) -> Receipt:
        """Deliver one outbox row."""

    async def close(self) -> None:
        """Let go of connections and stores (the app calls it once, at the end)."""


class Intake(Protocol):
    """The inbox runner of one channel, as its bridge sees it (``runner.InboxRunner``).

    A bridge only makes what it receives durable and wakes the runner; it never decides.
    The email bridge waits for a decision before it moves a mail out of the mailbox.
    """

    def wake(self) -> None:
        """New items are in the inbox: decide them."""

    async def decided(self, item_id: int) -> Outcome:
        """The outcome of an inbox item, once it is decided."""


class RoomRenderer(Protocol):
    """Matrix: a post or a notice as the content of a room event."""

    def post(self, post: Post, room: str) -> NewDelivery:
        """A post relayed into ``room`` (threaded at delivery, when its root has an event)."""

    def files(self, post: Post, room: str) -> list[NewDelivery]:
        """The post's files, each an encrypted file event after the post's text."""

    def notice(
        self,
        room: str,
        text: str,
        *,
        answering: Mapping[str, Any] | None = None,
        threaded: bool = False,
    ) -> NewDelivery:
        """Bot text in ``room``; with ``answering``, a reply to that event (as received),
        and with ``threaded`` in the thread of that event (a command's answer)."""


class MailRenderer(Protocol):
    """Email: a post or an answer as a signed and encrypted PGP/MIME mail."""

    async def post(self, post: Post, to: Sequence[Member]) -> list[NewDelivery]:
        """The list's mail of a post: one row per recipient group of ``to``, each signed
        and encrypted once to its group (``delivery.encrypt_group_size``)."""

    def post_each(self, post: Post, to: Sequence[Member]) -> AsyncIterator[NewDelivery]:
        """The rows of ``post``, each as soon as its group is encrypted (any order)."""

    async def answer(self, member: Member, subject: str, text: str) -> NewDelivery:
        """An automatic answer from the list to one member, encrypted to them alone."""

    async def aclose(self) -> None:
        """Stop what the renderer started (an OpenPGP backend's worker processes)."""

    async def letter(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        uid: str,
        encrypt_to: Sequence[str] = (),
        attachments: Sequence[tuple[str, str, bytes]] = (),
        reply_to: str = "",
    ) -> NewDelivery:
        """A command's mail to one address (signed; encrypted when ``encrypt_to``)."""

    async def announcement(
        self, to: Sequence[Member], subject: str, text: str, uid: str
    ) -> list[NewDelivery]:
        """A notice from the list to ``to``: one row per recipient group, each signed and
        encrypted once to its group."""


class RoomActions(Protocol):
    """What the core may ask of the Matrix side beyond sending (the command effects).

    Each action is idempotent: asked twice (a crash before it was recorded as done), it
    does nothing more the second time. Failures are ``TransientDeliveryError`` (try again
    later) or ``PermanentDeliveryError``.
    """

    async def invite(self, room_id: str, user_id: str) -> None:
        """Invite ``user_id`` to ``room_id`` (done when they are invited or in it already)."""

    async def kick(self, room_id: str, user_id: str, reason: str) -> None:
        """Remove ``user_id`` from ``room_id`` (done when they are not in it)."""

    async def rotate(self, room_id: str) -> None:
        """Drop the room's outbound room key: the next message starts a new one, shared
        only with the devices the room's audience allows then."""

    async def open_direct(self, user_id: str) -> str:
        """The bot's direct room with ``user_id`` (opened and invited the first time)."""

    def recheck(self, user_id: str) -> None:
        """Fetch and judge ``user_id``'s devices again before the next send (a device an
        admin trusted or blocked, an account removed)."""


class RoomState(Protocol):
    """What the command front end reads of the Matrix side (the bridge's ``Actions``)."""

    async def power_level(self, room_id: str, user_id: str) -> int:
        """``user_id``'s power level in ``room_id``, as the homeserver has it now."""

    def direct_room_of(self, room_id: str) -> str | None:
        """The user whose direct room with the bot ``room_id`` is, if it is one."""
