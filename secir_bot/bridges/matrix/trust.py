"""Which devices get the bot's room keys, and whose messages count as a member's.

The bot asks the homeserver for keys itself (``/keys/query``) and checks every signature
(``keys.py``); nio's own device list is not trusted for this, because it keeps a device's
old keys when the same device id shows new ones. What the bot pinned lives in ``pins.py``.

Trust is per room: only the room's audience (``audience.py``) gets its keys. Within the
audience, a device is trusted when:

- its owner has a cross-signing identity, that identity is the one the bot pinned, and it
  signed the device (no notice per device); an identity that changed blocks every device
  of its owner until an admin confirms it;
- its owner has no cross-signing (older clients) and ``matrix.unsigned_devices`` is
  "trust-on-first-use": the device was trusted the first time the bot saw it (the admins
  are told of every device after a member's first);

and, always, its keys are the ones pinned for its device id (a re-keyed device is blocked
for good). A direct room carries no list content, so the member's devices get its keys
whatever their state: the message there is how a blocked member learns why.

The verdict on a received message rests on what the crypto proved, not on what the
sender's client wrote in the clear: the curve25519 key that Olm authenticated when the room
key arrived names the device, the room key's claimed ed25519 key must be that device's,
and a device id named in the envelope must be that same device. A device the bot has not
fetched yet is fetched before the verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from secir_bot.bridges.matrix.audience import Audience
from secir_bot.bridges.matrix.client import ApiError, MatrixClient
from secir_bot.bridges.matrix.keys import UserKeys, user_keys
from secir_bot.bridges.matrix.pins import CHANGED, Pins
from secir_bot.config import Config
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.model import DeviceVerdict
from secir_bot.store import Store

log = logging.getLogger(__name__)


class Trust:
    def __init__(
        self,
        config: Config,
        store: Store,
        client: MatrixClient,
        notify: Callable[[str], None],
        on_work: Callable[[], None],
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.on_work = on_work
        self.pins = Pins(store, notify)
        self.audience = Audience(config, store, client, on_work)
        self._view: dict[str, UserKeys] = {}  # verified keys as last served, per user
        self._dirty: set[str] = set()  # users whose device list changed since

    # -- the homeserver's answer -------------------------------------------------------

    def mark_dirty(self, users: Iterable[str]) -> None:
        """The sync said these users' devices changed: fetch them again before use."""
        self._dirty.update(users)

    def needs_refresh(self, user_id: str, sender_key: str | None = None) -> bool:
        view = self._view.get(user_id)
        if view is None or user_id in self._dirty:
            return True
        return sender_key is not None and not any(
            d.curve25519 == sender_key for d in view.devices.values()
        )

    async def refresh(self, users: Iterable[str]) -> None:
        """Fetch and judge the keys of ``users`` (raises ``ApiError``)."""
        wanted = sorted(set(users))
        if not wanted:
            return
        answer = await self.client.api(
            "POST", "/v3/keys/query", {"device_keys": {u: [] for u in wanted}}, what="key query"
        )
        for user_id in wanted:
            keys = user_keys(answer, user_id)
            self._view[user_id] = keys
            self._dirty.discard(user_id)
            if self.audience.judged(user_id):
                for notice in self.pins.judge(keys):
                    await self.audience.tell(notice)

    async def look_at_rooms(self, rooms: Iterable[str]) -> None:
        """On joining: fetch everyone in the bot's rooms, so that the devices members have
        now are their baseline and a device added later is noticed as new."""
        users = {
            u
            for room_id in rooms
            if (room := self.client.rooms.get(room_id)) is not None
            for u in room.users
            if u != self.client.user_id and self.needs_refresh(u)
        }
        await self.refresh(users)

    async def refresh_changed(self) -> None:
        """Re-fetch the users whose devices changed, if the bot already judged them: a
        re-keyed device or a new identity is caught (and reported) when it happens."""
        changed = {u for u in self._dirty if u in self._view or self.store.devices.known(u)}
        await self.refresh(changed)

    # -- verdicts ------------------------------------------------------------------------

    def device_verdict(
        self, room_id: str, user_id: str, device_id: str, ed25519: str, curve25519: str
    ) -> DeviceVerdict:
        """The verdict on one device with these keys, for this room."""
        if not self.audience.allows(room_id, user_id):
            return DeviceVerdict.REFUSED
        served = self._view.get(user_id)
        dev = served.devices.get(device_id) if served else None
        if served is None or dev is None or (dev.ed25519, dev.curve25519) != (ed25519, curve25519):
            return DeviceVerdict.UNKNOWN
        if self.audience.direct_room_of(room_id) == user_id:
            return DeviceVerdict.TRUSTED  # nothing confidential goes there (module docstring)
        rec = self.store.devices.get(user_id, device_id)
        if rec is None:
            return DeviceVerdict.UNKNOWN
        if rec.state == DeviceVerdict.BLOCKED or rec.ed25519 != ed25519:
            return DeviceVerdict.BLOCKED
        if rec.curve25519 not in (None, curve25519):
            return DeviceVerdict.BLOCKED
        pin = self.store.devices.identity(user_id)
        if pin is not None and (pin.state == CHANGED or served.master != pin.master_key):
            return DeviceVerdict.IDENTITY
        if served.master is not None:
            return DeviceVerdict.TRUSTED if dev.cross_signed else DeviceVerdict.UNSIGNED
        if self.config.matrix.unsigned_devices == "refuse":
            return DeviceVerdict.NO_XSIGN
        return DeviceVerdict.TRUSTED

    def sender_verdict(
        self,
        room_id: str,
        sender: str,
        claimed_device: str | None,
        sender_key: str,
        session_ed25519: str,
    ) -> DeviceVerdict:
        """The verdict on the device that sent a message, from what decryption proved.

        ``sender_key`` is the curve25519 key Olm authenticated when the room key arrived,
        ``session_ed25519`` the signing key claimed inside that Olm message, and
        ``claimed_device`` the device id the sender's client wrote in the envelope.
        """
        if self.audience.direct_room_of(room_id) == sender:
            # What a member sends in their direct room is a command: their device is judged
            # as in the incident room (the direct room itself lets every device read).
            room_id = self.config.matrix.incident_room
        served = self._view.get(sender)
        dev = next(
            (d for d in (served.devices.values() if served else ()) if d.curve25519 == sender_key),
            None,
        )
        if dev is None:
            rec = self.store.devices.get(sender, claimed_device) if claimed_device else None
            return (
                DeviceVerdict.BLOCKED
                if rec is not None and rec.state == DeviceVerdict.BLOCKED
                else DeviceVerdict.UNKNOWN
            )
        if dev.ed25519 != session_ed25519 or (claimed_device and claimed_device != dev.device_id):
            log.warning(
                "message of %s names device %s but its keys are those of %s",
                sender,
                claimed_device,
                dev.device_id,
            )
            return DeviceVerdict.MISMATCH
        return self.device_verdict(room_id, sender, dev.device_id, dev.ed25519, dev.curve25519)

    # -- sending -------------------------------------------------------------------------

    async def trust_room_devices(self, room_id: str) -> dict[str, list[tuple[Any, DeviceVerdict]]]:
        """Before a send: mark every device in the room verified or blacklisted for nio.
        Returns the devices left out, per user, with their verdicts."""
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
        devices = {u: d for u, d in c.room_devices(room_id).items() if u != c.user_id}
        try:
            await self.refresh(u for u in devices if self.needs_refresh(u))
        except ApiError as exc:
            raise TransientDeliveryError(f"Matrix key query failed: {exc}") from exc
        left_out: dict[str, list[tuple[Any, DeviceVerdict]]] = {}
        for user_id, by_id in devices.items():
            for device in by_id.values():
                if device.deleted:
                    continue
                verdict = self._apply(room_id, user_id, device)
                if verdict != DeviceVerdict.TRUSTED:
                    left_out.setdefault(user_id, []).append((device, verdict))
        return left_out

    def _apply(self, room_id: str, user_id: str, device: Any) -> DeviceVerdict:
        """Tell nio the verdict. nio drops a room's current key whenever a device of that
        room changes between trusted and blocked, so a device that lost trust cannot read
        what follows, and one trusted again gets the next key."""
        verdict = self.device_verdict(
            room_id, user_id, device.id, device.ed25519, device.curve25519
        )
        olm = self.client.olm
        assert olm is not None
        if verdict == DeviceVerdict.TRUSTED:
            if not olm.is_device_verified(device):
                self.client.verify_device(device)
        elif not olm.is_device_blacklisted(device):
            self.client.blacklist_device(device)
        return verdict
