"""Which devices get the bot's room keys, and whose messages count as a member's.

Trust on first use: before each send the devices in the room are checked: a new device of
an active member or of a configured admin is trusted and recorded; a device whose key
changed, and every device of anyone else, is blacklisted and never gets room keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secir_bot.bridges.matrix.client import MatrixClient
from secir_bot.config import Config
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.store import Store


class Trust:
    def __init__(
        self, config: Config, store: Store, client: MatrixClient, notify: Callable[[str], None]
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.notify = notify

    def _allowed(self, room_id: str, user_id: str) -> bool:
        """Active members get room keys everywhere; the configured admins too.

        Anyone else in a room (a non-member invited by mistake, a revoked member not yet
        kicked) gets no keys, so cannot read what the bot sends.
        """
        if user_id in self.config.matrix.admins:
            return True
        member = self.store.member_by_matrix_id(user_id)
        return member is not None and member.active

    async def trust_room_devices(self, room_id: str) -> None:
        """Trust on first use for the devices of a room (see the module docstring)."""
        c = self.client
        room = c.rooms.get(room_id)
        if room is None:
            raise TransientDeliveryError(f"the bot is not (yet) in room {room_id}")
        if not room.encrypted:
            raise PermanentDeliveryError(f"room {room_id} is not encrypted; refusing to send")
        if not room.members_synced:
            await c.joined_members(room_id)
        if c.should_query_keys:
            await c.keys_query()
        for user_id, devices in c.room_devices(room_id).items():
            if user_id == c.user_id:
                continue
            for device in devices.values():
                if not device.deleted:
                    self._judge_device(room_id, user_id, device)

    def _judge_device(self, room_id: str, user_id: str, device: Any) -> str:
        """Trust on first use for one device; returns "trusted", "blocked" or "refused"."""
        c = self.client
        if not self._allowed(room_id, user_id):
            if not c.olm or not c.olm.is_device_blacklisted(device):
                c.blacklist_device(device)
            return "refused"
        known = self.store.device_state(user_id, device.id)
        if known is None:
            first = self.store.known_devices(user_id) == 0
            self.store.record_device(user_id, device.id, device.ed25519, "trusted")
            c.verify_device(device)
            if not first:
                self.notify(
                    f"New Matrix device {device.id} of {user_id} trusted on "
                    f"first use (ed25519 {device.ed25519})."
                )
            return "trusted"
        if known[1] != device.ed25519 or known[0] != "trusted":
            if known[0] == "trusted":
                self.store.record_device(user_id, device.id, device.ed25519, "blocked")
                self.notify(
                    f"The keys of Matrix device {device.id} of {user_id} "
                    "changed; the device is blocked and gets no room keys."
                )
            c.blacklist_device(device)
            return "blocked"
        if c.olm is not None and not c.olm.is_device_verified(device):
            c.verify_device(device)
        return "trusted"

    def sender_device(self, room_id: str, sender: str, sender_key: str | None) -> str:
        """Judge the device a message came from, found by its Curve25519 key.

        "unknown" when the bot has not fetched that device's keys yet (it will before
        sending anything to the room).
        """
        if not sender_key or self.client.olm is None:
            return "unknown"
        for device in self.client.device_store.active_user_devices(sender):
            if device.curve25519 == sender_key:
                return self._judge_device(room_id, sender, device)
        return "unknown"
