"""The effects executor: carries out what committed commands asked for, once each.

A change and its effects commit together (``dispatch.commit`` writes them to
``store.effects``). This long-lived task takes the pending effects in order and does each:

- ``SendMail``: the mail, signed by the list key and encrypted to ``encrypt_to`` (signed
  only when there is no key to encrypt to: the D2 invitation to a ccTLD's administrative
  contact), as an outbox row;
- ``Announce``: a notice in the incident room and one mail to the members who read mail,
  as outbox rows;
- ``NotifyAdmins``: a notice in the control room, as an outbox row;
- ``InviteToRoom``, ``RemoveFromRooms``, ``RotateRoomKeys``, ``TrustDevice``: through the
  Matrix side's ``RoomActions``;
- ``WakeOutbox``: wakes the outbox.

An effect that makes deliveries is marked done in the same transaction as its outbox rows,
so a crash before that commit makes them again (the same bytes: a mail's Message-ID comes
from the effect's id) and a crash after it never twice. The Matrix actions are idempotent
(an invitation to someone already invited is done), so repeating one after a crash between
doing it and marking it done changes nothing. A failure is retried with backoff, never
dropped; the admins are told once when an effect keeps failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from secir_bot.bridges import MailRenderer, RoomActions, RoomRenderer
from secir_bot.commands.base import (
    Announce,
    Effect,
    Front,
    InviteToRoom,
    NotifyAdmins,
    RemoveFromRooms,
    RotateRoomKeys,
    SendMail,
    TrustDevice,
    WakeOutbox,
)
from secir_bot.commands.effects import loads
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.errors import PermanentDeliveryError
from secir_bot.model import Channel
from secir_bot.store import NewDelivery, Store
from secir_bot.store.effects import EffectRow
from secir_bot.store.outbox import enqueue_in
from secir_bot.tasks import work_loop

log = logging.getLogger(__name__)

TELL_AFTER = 3  # failed attempts of one effect before the admins are told (once)


class Executor:
    def __init__(
        self,
        config: Config,
        store: Store,
        keyring: Keyring,
        room: RoomRenderer,
        mail: MailRenderer,
        actions: RoomActions,
        wake_outbox: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.keyring = keyring
        self.room = room
        self.mail = mail
        self.actions = actions
        self.wake_outbox = wake_outbox
        self.clock = clock
        self._wake = asyncio.Event()
        # Per pending effect that failed: (attempts, when to try again). Kept in memory: after
        # a restart every pending effect is simply tried again.
        self._failed: dict[int, tuple[int, float]] = {}

    def wake(self) -> None:
        """New effects were committed: carry them out."""
        self._wake.set()

    async def run(self) -> None:
        await work_loop(self.drain, self._wake, self._next_due)

    def _next_due(self) -> float | None:
        return min((due for _, due in self._failed.values()), default=None)

    async def drain(self) -> None:
        """Carry out every pending effect that is due, in the order they were committed."""
        for row in self.store.effects.pending():
            attempts, due = self._failed.get(row.id, (0, 0.0))
            if due > self.clock():
                continue
            await self.store.durable()  # the command's commit before its effect
            try:
                deliveries = await self._perform(row)
            except Exception as exc:  # any failure: kept, retried, told about; never lost
                self._retry_later(row, attempts + 1, exc)
                continue
            now = self.clock()
            with self.store.transaction() as tx:
                for delivery in deliveries:
                    enqueue_in(tx, delivery, now)
                self.store.effects.done(tx, row.id, now)
            self._failed.pop(row.id, None)
            log.info("effect %s (%s) done: %d deliveries", row.id, row.action, len(deliveries))
            if deliveries:
                self.wake_outbox()

    def _retry_later(self, row: EffectRow, attempts: int, exc: Exception) -> None:
        cfg = self.config.delivery
        delay = min(cfg.retry_base * 2 ** (attempts - 1), cfg.retry_max)
        self._failed[row.id] = (attempts, self.clock() + delay)
        # Type and text of our own errors only: a library's text is not for the control room.
        why = str(exc) if isinstance(exc, PermanentDeliveryError) else type(exc).__name__
        log.warning(
            "effect %s of %s failed (attempt %d, %s: %s); retry in %.0fs",
            row.id,
            row.action,
            attempts,
            type(exc).__name__,
            exc,
            delay,
        )
        if attempts == TELL_AFTER or (attempts == 1 and isinstance(exc, PermanentDeliveryError)):
            self.store.outbox.enqueue(
                self.room.notice(
                    self.config.matrix.control_room,
                    f"Warning: effect {row.id} of {row.action} by {row.actor} keeps failing "
                    f"({why}); the bot keeps trying. The bot's log has the details.",
                )
            )
            self.wake_outbox()

    async def _perform(self, row: EffectRow) -> list[NewDelivery]:
        """Do one effect; the deliveries to queue with its being marked done."""
        effect: Effect = loads(row.effect)
        uid = f"effect-{row.id}-{int(row.created_at * 1000)}"  # the same on every attempt
        m = self.config.matrix
        if isinstance(effect, SendMail):
            return await self._send_mail(effect, uid)
        if isinstance(effect, Announce):
            return await self._announce(effect, uid)
        if isinstance(effect, NotifyAdmins):
            return [self.room.notice(m.control_room, effect.text)]
        if isinstance(effect, InviteToRoom):
            if effect.room is Front.DIRECT:
                await self.actions.open_direct(effect.user_id)
            else:
                await self.actions.invite(self._room_id(effect.room), effect.user_id)
        elif isinstance(effect, RemoveFromRooms):
            for room_id in (m.incident_room, m.control_room):
                await self.actions.kick(room_id, effect.user_id, effect.reason)
            self.actions.recheck(effect.user_id)
        elif isinstance(effect, RotateRoomKeys):
            await self.actions.rotate(self._room_id(effect.room))
        elif isinstance(effect, TrustDevice):
            self.actions.recheck(effect.user_id)
        elif isinstance(effect, WakeOutbox):
            self.wake_outbox()
        return []

    def _room_id(self, front: Front) -> str:
        m = self.config.matrix
        if front is Front.CONTROL_ROOM:
            return m.control_room
        if front is Front.INCIDENT_ROOM:
            return m.incident_room
        raise PermanentDeliveryError(f"no room of the list is the {front}")

    async def _send_mail(self, effect: SendMail, uid: str) -> list[NewDelivery]:
        encrypt_to = list(effect.encrypt_to)
        if encrypt_to:
            usable = await self.keyring.usable_for_encryption(encrypt_to)
            missing = [f for f in encrypt_to if f not in usable]
            if missing:
                # Never fall back to plain text: the mail waits until an admin fixes the key.
                raise PermanentDeliveryError(
                    f"the key {', '.join(missing)} of {', '.join(effect.to)} cannot encrypt"
                )
        return [
            await self.mail.letter(
                to=to,
                subject=effect.subject,
                text=effect.body,
                uid=f"{uid}-{i}" if i else uid,
                encrypt_to=encrypt_to,
                attachments=[(a.filename, a.content_type, a.data) for a in effect.attachments],
                reply_to=effect.reply_to,
            )
            for i, to in enumerate(effect.to)
        ]

    async def _announce(self, effect: Announce, uid: str) -> list[NewDelivery]:
        out = [self.room.notice(self.config.matrix.incident_room, effect.text)]
        readers = [m for m in self.store.members.all() if Channel.EMAIL in m.channels]
        usable = await self.keyring.usable_for_encryption([m.fingerprint for m in readers])
        skipped = [m for m in readers if m.fingerprint not in usable]
        readers = [m for m in readers if m.fingerprint in usable]
        if readers:
            text = f"{effect.text}\n\n-- \nAn announcement of {self.config.list.name}."
            out.extend(await self.mail.announcement(readers, effect.text[:120], text, uid))
        if skipped:
            out.append(
                self.room.notice(
                    self.config.matrix.control_room,
                    "Announcement not mailed to "
                    + ", ".join(f"{m.label} <{m.email}>" for m in skipped)
                    + ": their key is expired, revoked or cannot encrypt.",
                )
            )
        return out
