"""Who may read each of the bot's rooms: the audience that gets the room's keys.

The incident room's audience is the active members and the admins; the control room's is
the admins; a direct room that the bot opened to tell a member something has that member
alone. Anyone else in a room (a non-member invited by mistake, a revoked member not yet
kicked, a member in the control room) gets no keys, so cannot read what the bot sends
there. A room with another audience (one restricted incident, say) is one more branch of
``allows``.

Direct rooms are opened here, the first time the bot must tell a member something.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from nio import RoomCreateResponse
from nio.event_builders import EnableEncryptionBuilder

from secir_bot.bridges.matrix.client import MatrixClient
from secir_bot.bridges.matrix.pins import MemberNotice
from secir_bot.config import Config
from secir_bot.model import Channel, DeliveryKind
from secir_bot.store import NewDelivery, Store

log = logging.getLogger(__name__)


class Audience:
    def __init__(
        self, config: Config, store: Store, client: MatrixClient, on_work: Callable[[], None]
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.on_work = on_work

    def allows(self, room_id: str, user_id: str) -> bool:
        """Whether ``user_id`` is in the audience of ``room_id``."""
        admin = user_id in self.config.matrix.admins
        if room_id == self.config.matrix.control_room:
            return admin
        if room_id == self.config.matrix.incident_room:
            return admin or self._active_member(user_id)
        return self.direct_room_of(room_id) == user_id

    def judged(self, user_id: str) -> bool:
        """Whose keys the bot pins (others are refused without a record)."""
        return user_id in self.config.matrix.admins or self._active_member(user_id)

    def _active_member(self, user_id: str) -> bool:
        member = self.store.members.by_matrix_id(user_id)
        return member is not None and member.active

    # -- direct rooms ----------------------------------------------------------------------

    def direct_room_of(self, room_id: str) -> str | None:
        """The member whose direct room ``room_id`` is, if it is one."""
        return self.store.kv.get(f"matrix.direct_room.{room_id}")

    async def direct_room(self, user_id: str) -> str | None:
        """The bot's direct room with ``user_id``, opened (and the user invited) the first
        time; None when the homeserver would not create it."""
        room_id = self.store.kv.get(f"matrix.direct_room_for.{user_id}")
        if room_id is None:
            resp = await self.client.room_create(
                name="SECIR list bot",
                topic="Messages from the SECIR list bot to you alone",
                invite=[user_id],
                is_direct=True,
                initial_state=[EnableEncryptionBuilder().as_dict()],
            )
            if not isinstance(resp, RoomCreateResponse):
                log.warning("could not open a direct room with %s: %s", user_id, resp)
                return None
            room_id = str(resp.room_id)
            self.store.kv.put(f"matrix.direct_room.{room_id}", user_id)
            self.store.kv.put(f"matrix.direct_room_for.{user_id}", room_id)
        return room_id

    async def tell(self, notice: MemberNotice) -> None:
        """Queue a direct message to a member, in a room the bot opens for that once."""
        room_id = await self.direct_room(notice.user_id)
        if room_id is None:
            return
        content = {"msgtype": "m.notice", "body": notice.text, "m.mentions": {}}
        self.store.outbox.enqueue(
            NewDelivery(
                channel=Channel.MATRIX,
                target=room_id,
                kind=DeliveryKind.NOTICE,
                payload=json.dumps({"content": content}).encode(),
            )
        )
        self.on_work()
