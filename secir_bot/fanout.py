"""Who gets a post: its audiences, each reached over one channel, rendered by that channel.

An *audience* is a set of readers: the incident room, the list's members by mail (later:
the members of one restricted incident, a peer list). Which audiences a post goes to is
decided here and nowhere else; the channel's renderer (handed in by the app) only makes the
payload. A post never goes back to where it came from: a Matrix post is in the room
already, and a mail's author gets no copy unless ``list.echo_to_sender``.

Mail to the list is one row per recipient group of its readers (one signature and one
ciphertext per group, ``delivery.encrypt_group_size``); members whose key cannot encrypt
are left out of it, and the admins are told who.

The rooms are reached without any encryption at decision time (``first``), the list's
members only after gpg has signed and encrypted their mail (``later``, or ``later_each``
one recipient group at a time): the inbox runner queues the first before it asks for the
later, so a room never waits on gpg, and queues each group's mail as soon as it is made,
so that SMTP of the first group overlaps gpg of the others.

To add an audience: a member of ``Audience``, the posts it gets in ``audiences``, and how
it is reached in ``Fanout._reach`` (a room audience also in ``ROOMS``).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Collection

from secir_bot.bridges import MailRenderer, RoomRenderer
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.model import Channel, DeliveryKind, Member, Post
from secir_bot.notices import Notices
from secir_bot.store import NewDelivery, Store


class Audience(enum.StrEnum):
    INCIDENT_ROOM = "incident room"  # everyone in the room, over Matrix
    LIST_MEMBERS = "list members by mail"  # the active members who read mail


ROOMS = frozenset({Audience.INCIDENT_ROOM})  # reached at once, with no encryption to wait for


def audiences(post: Post) -> tuple[Audience, ...]:
    """The audiences of a post, in the order their deliveries are queued."""
    if post.origin is Channel.MATRIX:
        return (Audience.LIST_MEMBERS,)
    return (Audience.INCIDENT_ROOM, Audience.LIST_MEMBERS)


class Fanout:
    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: Keyring,
        room: RoomRenderer,
        mail: MailRenderer,
        notices: Notices,
    ) -> None:
        self.config = config
        self.store = store
        self.keyring = keyring
        self.room = room
        self.mail = mail
        self.notices = notices

    async def deliveries(self, post: Post) -> list[NewDelivery]:
        """Every outbox row of a post (and the notices its fan-out calls for)."""
        return self.first(post) + await self.later(post)

    def first(self, post: Post) -> list[NewDelivery]:
        """The rows of the post's room audiences: rendered at once, no gpg involved."""
        room = self.config.matrix.incident_room
        out: list[NewDelivery] = []
        for audience in audiences(post):
            if audience in ROOMS:
                out += [self.room.post(post, room), *self.room.files(post, room)]
        return out

    def has_later(self, post: Post) -> bool:
        """Whether the post has audiences that ``later`` renders (the list's members)."""
        return any(audience not in ROOMS for audience in audiences(post))

    async def later(self, post: Post) -> list[NewDelivery]:
        """The rows of the post's other audiences (the list mail, signed and encrypted)."""
        out: list[NewDelivery] = []
        for audience in audiences(post):
            if audience not in ROOMS:
                out += await self._reach(audience, post)
        return out

    async def later_each(
        self, post: Post, mailed: Collection[str] = ()
    ) -> AsyncIterator[list[NewDelivery]]:
        """The rows of ``later``, one commit's worth at a time: each recipient group's row
        as soon as it is encrypted, the notice of members left out with the first one.

        ``mailed`` are the addresses the post's list mail already has rows for (made
        before a stop): they are not mailed again, and the notice, which went with the
        first row, is not repeated."""
        for audience in audiences(post):
            if audience in ROOMS:
                continue
            members = [m for m in self.email_members(exclude=post.author) if m.email not in mailed]
            usable = await self.keyring.usable_for_encryption([m.fingerprint for m in members])
            skipped = [m for m in members if m.fingerprint not in usable]
            notice = [self.notices.not_mailed(post, skipped)] if skipped and not mailed else []
            members = [m for m in members if m.fingerprint in usable]
            if members:
                async for row in self.mail.post_each(post, members):
                    yield [*notice, row]
                    notice = []
            if notice:
                yield notice

    def mailed(self, post: Post) -> set[str]:
        """The addresses that already have a row of the post's list mail."""
        return {
            address
            for row in self.store.outbox.of_post(post.uid)
            if row.channel == Channel.EMAIL and row.kind == DeliveryKind.POST
            for address in row.recipients
        }

    async def _reach(self, audience: Audience, post: Post) -> list[NewDelivery]:
        return await self._to_members(post, self.email_members(exclude=post.author))

    def email_members(self, exclude: Member | None) -> list[Member]:
        """The active members who read the list by mail (without ``exclude``, the author,
        unless the list echoes posts to their senders)."""
        return [
            m
            for m in self.store.members.all()
            if Channel.EMAIL in m.channels
            and (exclude is None or m.id != exclude.id or self.config.list.echo_to_sender)
        ]

    async def _to_members(self, post: Post, members: list[Member]) -> list[NewDelivery]:
        out: list[NewDelivery] = []
        usable = await self.keyring.usable_for_encryption([m.fingerprint for m in members])
        skipped = [m for m in members if m.fingerprint not in usable]
        if skipped:
            members = [m for m in members if m.fingerprint in usable]
            out.append(self.notices.not_mailed(post, skipped))
        if members:
            out += await self.mail.post(post, members)
        return out
