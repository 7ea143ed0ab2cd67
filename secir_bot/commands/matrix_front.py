"""The Matrix front end: a ``!command`` message becomes an Invocation, its Reply a notice.

Where a command arrives decides its front: the control room (admin commands), the incident
room or a direct chat with the bot (member commands). Who sent it is established from what
the bot itself knows, never from what the message claims:

- ``listed_admin``: the sender is named in ``matrix.admins``;
- ``power_ok``: the sender holds ``commands.admin_power_level`` in the control room, as the
  homeserver reports the room's state at that moment (a demoted admin loses it at once);
- ``device_trusted``: the Matrix intake's verdict on the sending device (``parked.py``,
  from what decryption proved) is "trusted";
- ``member``: the roster's entry for the sender's Matrix id.

A command that did not arrive end-to-end encrypted, or that came from a device the bot does
not trust, is refused with one line and changes nothing. The answer is an ``m.notice``
that replies to the command in its thread, mentions no one, and goes out through the
outbox (so it survives a restart), recorded with the item's decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from secir_bot.bridges import RoomRenderer, RoomState
from secir_bot.commands import subscription
from secir_bot.commands.base import Actor, Front, Invocation, Reply, refuse
from secir_bot.commands.dispatch import Dispatcher
from secir_bot.commands.parse import ParseError, matrix_command
from secir_bot.config import Config
from secir_bot.model import DeviceVerdict
from secir_bot.store import NewDelivery, Store

log = logging.getLogger(__name__)

_TEXT_ATTACHMENTS = ("application/pgp-keys", "text/plain")


class MatrixFront:
    def __init__(
        self,
        config: Config,
        store: Store,
        dispatcher: Dispatcher,
        rooms: RoomState,
        render: RoomRenderer,
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.rooms = rooms
        self.render = render

    def front_of(self, room_id: str, sender: str) -> Front | None:
        m = self.config.matrix
        if room_id == m.control_room:
            return Front.CONTROL_ROOM
        if room_id == m.incident_room:
            return Front.INCIDENT_ROOM
        if self.rooms.direct_room_of(room_id) == sender:
            return Front.DIRECT
        return None

    async def handle(
        self,
        event: Mapping[str, Any],
        room_id: str,
        *,
        encrypted: bool,
        device: str | None,
    ) -> list[NewDelivery]:
        """Answer one command event; the deliveries to record with the item's decision."""
        sender = str(event.get("sender", ""))
        front = self.front_of(room_id, sender)
        if front is None:
            return []  # a room that is not the list's: nobody to answer
        if event.get("type") == "m.room.member":
            return self._joined(room_id, sender, str(event.get("event_id", "")))
        reply = await self._reply(event, sender, front, encrypted=encrypted, device=device)
        text = reply.text
        for attachment in reply.attachments:
            # A notice carries text only: a public key or a listing is shown inline.
            if attachment.content_type in _TEXT_ATTACHMENTS:
                text += f"\n\n{attachment.filename}:\n" + attachment.data.decode("utf-8", "replace")
        return [self.render.notice(room_id, text, answering=event, threaded=True)]

    def _joined(self, room_id: str, user_id: str, ref: str) -> list[NewDelivery]:
        """A nominee accepted the bot's invitation: their Matrix proof, thanked in the room
        (the admins hear of a case that became ready through its own effect)."""
        replies = subscription.matrix_joined(self.dispatcher.ctx, user_id, ref)
        return [self.render.notice(room_id, r.text) for r in replies]

    async def _reply(
        self,
        event: Mapping[str, Any],
        sender: str,
        front: Front,
        *,
        encrypted: bool,
        device: str | None,
    ) -> Reply:
        content = event.get("content") or {}
        try:
            line = matrix_command(str(content.get("body", "")))
        except ParseError as exc:
            return refuse(f"{exc}; nothing was done")
        if line is None:  # pragma: no cover - the intake only hands over commands
            return refuse("not a command")
        trusted = device == DeviceVerdict.TRUSTED
        # "refused": the sender may not read this room (a non-admin in the control room);
        # the dispatcher tells them the command is not theirs, which says more.
        if encrypted and not trusted and device != DeviceVerdict.REFUSED:
            log.warning("command !%s from %s refused: device %s", line.name, sender, device)
            return refuse(
                "commands are accepted only from a device the bot trusts (this one: "
                f"{device or 'unknown'}); verify it, or use a trusted one. Nothing was done."
            )
        ref = str(event.get("event_id", ""))
        done = self.store.audit.by_ref(ref) if ref else None
        if done is not None:
            # Carried out before the bot stopped, but not yet marked as answered: the change
            # and its effects are in the store already; doing it again would double it.
            return Reply(
                f"{line.text} was carried out already ({done.action} {done.target}, audit "
                f"entry {done.seq}); nothing more was done."
            )
        m = self.config.matrix
        listed = sender in m.admins
        power_ok = False
        if listed and encrypted:
            try:
                level = await self.rooms.power_level(m.control_room, sender)
            except Exception as exc:  # the homeserver did not answer: decide nothing
                log.warning("power level of %s not read: %s", sender, type(exc).__name__)
                return refuse(
                    "the bot could not read the control room's power levels just now; "
                    "send the command again. Nothing was done."
                )
            power_ok = level >= self.config.commands.admin_power_level
        actor = Actor(
            sender,
            member=self.store.members.by_matrix_id(sender),
            listed_admin=listed,
            power_ok=power_ok,
            device_trusted=trusted,
        )
        inv = Invocation(
            name=line.name,
            args=line.args,
            actor=actor,
            front=front,
            text=line.text,
            body=line.body,
            encrypted=encrypted,
            ref=ref,
        )
        return await self.dispatcher.handle(inv)
