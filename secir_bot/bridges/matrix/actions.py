"""What the command effects ask of Matrix: invite, kick, a new room key, a direct room.

The ``RoomActions`` of the Matrix channel (see ``bridges/__init__.py``). Each action is
idempotent, because the effects executor may repeat one after a crash: an invitation to
someone invited or joined already, or a kick of someone who is gone, is done. A refusal is
judged by the member's state in the room as the homeserver reports it then, not by the
error text.
"""

from __future__ import annotations

import logging

from secir_bot.bridges.matrix.client import ApiError, MatrixClient, quoted
from secir_bot.bridges.matrix.send import Sender
from secir_bot.bridges.matrix.trust import Trust
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

CREATOR_LEVEL = 2**53  # above any power level a room can list (JSON's exact integers)


class Actions:
    def __init__(self, client: MatrixClient, sender: Sender, trust: Trust) -> None:
        self.client = client
        self.sender = sender
        self.trust = trust

    async def membership(self, room_id: str, user_id: str) -> str:
        """``user_id``'s membership in ``room_id`` as the homeserver has it ("" for none)."""
        path = f"/v3/rooms/{quoted(room_id)}/state/m.room.member/{quoted(user_id)}"
        try:
            state = await self.client.api("GET", path, what="membership")
        except ApiError as exc:
            if exc.status == 404:
                return ""
            raise _failure(exc) from exc
        return str(state.get("membership", ""))

    async def invite(self, room_id: str, user_id: str) -> None:
        path = f"/v3/rooms/{quoted(room_id)}/invite"
        try:
            await self.client.api("POST", path, {"user_id": user_id}, what="invite")
        except ApiError as exc:
            if await self.membership(room_id, user_id) in ("invite", "join"):
                return  # done before (a repeated effect)
            raise _failure(exc) from exc
        log.info("invited %s to %s", user_id, room_id)

    async def kick(self, room_id: str, user_id: str, reason: str) -> None:
        self.trust.mark_dirty([user_id])
        if await self.membership(room_id, user_id) in ("", "leave", "ban"):
            return
        path = f"/v3/rooms/{quoted(room_id)}/kick"
        try:
            await self.client.api(
                "POST", path, {"user_id": user_id, "reason": reason[:200]}, what="kick"
            )
        except ApiError as exc:
            if await self.membership(room_id, user_id) in ("", "leave", "ban"):
                return
            raise _failure(exc) from exc
        log.info("removed %s from %s", user_id, room_id)

    async def rotate(self, room_id: str) -> None:
        await self.sender.rotate(room_id)

    async def open_direct(self, user_id: str) -> str:
        room_id = await self.trust.audience.direct_room(user_id)
        if room_id is None:
            raise TransientDeliveryError(f"could not open a direct room with {user_id}")
        return room_id

    def recheck(self, user_id: str) -> None:
        self.trust.mark_dirty([user_id])

    # -- what the command front end asks (``RoomState``) -------------------------------------

    async def power_level(self, room_id: str, user_id: str) -> int:
        """``user_id``'s power level in ``room_id`` as the homeserver has it now.

        From room version 12 on, the room's creators hold a level above every number and
        are not listed in the power levels (MSC4289); they count as ``CREATOR_LEVEL``.
        """
        base = f"/v3/rooms/{quoted(room_id)}/state"
        try:
            create = await self.client.api(
                "GET", f"{base}/m.room.create/?format=event", what="room create event"
            )
            levels = await self.client.api("GET", f"{base}/m.room.power_levels/", what="levels")
        except ApiError as exc:
            raise _failure(exc) from exc
        content = create.get("content", create)
        version = str(content.get("room_version", "1"))
        creators = {
            str(create.get("sender", "")),
            str(content.get("creator", "")),  # room versions up to 10 name it
            *map(str, content.get("additional_creators", [])),
        }
        if user_id in creators and not (version.isdigit() and int(version) < 12):
            return CREATOR_LEVEL
        users = levels.get("users") or {}
        default = levels.get("users_default", 0)
        level = users.get(user_id, default) if isinstance(users, dict) else default
        return int(level) if isinstance(level, int) else 0

    def direct_room_of(self, room_id: str) -> str | None:
        return self.trust.audience.direct_room_of(room_id)


def _failure(exc: ApiError) -> Exception:
    """A refused action that the member's state does not explain."""
    if exc.status in (0, 429) or exc.status >= 500:
        return TransientDeliveryError(str(exc))
    return PermanentDeliveryError(str(exc))
