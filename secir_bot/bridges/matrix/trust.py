"""Which devices get the bot's room keys, and whose messages count as a member's.

The bot asks the homeserver for keys itself (``/keys/query``) and checks every signature
(``keys.py``); nio's own device list is not trusted for this, because it keeps a device's
old keys when the same device id shows new ones.

Trust on first use, per device: the first time the bot sees a device of an active member
or of an admin it pins both identity keys (ed25519 and curve25519) in the store; the
admins are told of every device after a member's first. A device id that later shows
other keys is blocked, for good, and the admins are told. Everyone else (non-members,
revoked members) is refused.

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

from secir_bot.bridges.matrix.client import ApiError, MatrixClient
from secir_bot.bridges.matrix.keys import UserKeys, user_keys
from secir_bot.config import Config
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.store import Store

log = logging.getLogger(__name__)

# Verdicts on a device (stored in an inbox item's meta as "device").
TRUSTED = "trusted"
BLOCKED = "blocked"  # its keys changed under a known device id
REFUSED = "refused"  # its owner may not have this room's keys
UNKNOWN = "unknown"  # the homeserver lists no such device for the sender
MISMATCH = "mismatch"  # the message's envelope and its keys name different devices


class Trust:
    def __init__(
        self, config: Config, store: Store, client: MatrixClient, notify: Callable[[str], None]
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.notify = notify
        self._view: dict[str, UserKeys] = {}  # verified keys as last served, per user
        self._dirty: set[str] = set()  # users whose device list changed since

    # -- who may have keys ---------------------------------------------------------------

    def allowed(self, room_id: str, user_id: str) -> bool:
        """Active members get room keys everywhere; the configured admins too.

        Anyone else in a room (a non-member invited by mistake, a revoked member not yet
        kicked) gets no keys, so cannot read what the bot sends.
        """
        if user_id in self.config.matrix.admins:
            return True
        member = self.store.member_by_matrix_id(user_id)
        return member is not None and member.active

    def _judged(self, user_id: str) -> bool:
        """Whose devices the bot pins (others are refused without a record)."""
        return self.allowed("", user_id)

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
        """Fetch and judge the devices of ``users`` (raises ``ApiError``)."""
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
            if self._judged(user_id):
                self._judge_user(keys)

    async def look_at_rooms(self, rooms: Iterable[str]) -> None:
        """At start: fetch everyone in the bot's rooms, so that the devices members have
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
        re-keyed device is caught (and reported) when it happens, not at its first use."""
        changed = {u for u in self._dirty if u in self._view or self.store.known_devices(u)}
        await self.refresh(changed)

    def _judge_user(self, keys: UserKeys) -> None:
        user_id = keys.user_id
        # The devices a member has when the bot first looks are their baseline; only
        # devices added later are news for the admins.
        first_look = not self.store.devices_of(user_id)
        for dev in keys.devices.values():
            rec = self.store.device(user_id, dev.device_id)
            if rec is None:
                self.store.record_device(
                    user_id,
                    dev.device_id,
                    dev.ed25519,
                    TRUSTED,
                    dev.curve25519,
                    "tofu",
                    log=f"trusted on first use (ed25519 {dev.ed25519})",
                )
                log.info("device %s of %s trusted on first use", dev.device_id, user_id)
                if not first_look:
                    self.notify(
                        f"New Matrix device {dev.device_id} of {user_id} trusted on "
                        f"first use (ed25519 {dev.ed25519})."
                    )
            elif rec.ed25519 != dev.ed25519 or rec.curve25519 not in (None, dev.curve25519):
                if rec.state != BLOCKED:
                    self.store.record_device(
                        user_id,
                        dev.device_id,
                        rec.ed25519,
                        BLOCKED,
                        rec.curve25519,
                        rec.how,
                        log=(
                            f"keys changed: the server now serves ed25519 {dev.ed25519}, "
                            f"curve25519 {dev.curve25519}"
                        ),
                    )
                    log.warning("keys of device %s of %s changed; blocked", dev.device_id, user_id)
                    self.notify(
                        f"The keys of Matrix device {dev.device_id} of {user_id} changed "
                        f"(ed25519 {rec.ed25519} is now {dev.ed25519}); the device is "
                        "blocked: it gets no room keys and its messages are not relayed. "
                        "If the member reinstalled the device, they should log in anew "
                        "(a new device id)."
                    )
            elif rec.curve25519 is None:
                # Pinned before curve25519 keys were recorded: complete the pin.
                self.store.record_device(
                    user_id, dev.device_id, rec.ed25519, rec.state, dev.curve25519, rec.how
                )

    # -- verdicts ------------------------------------------------------------------------

    def device_verdict(
        self, room_id: str, user_id: str, device_id: str, ed25519: str, curve25519: str
    ) -> str:
        """The verdict on one device with these keys, for this room."""
        if not self.allowed(room_id, user_id):
            return REFUSED
        rec = self.store.device(user_id, device_id)
        if rec is None:
            return UNKNOWN
        if rec.ed25519 != ed25519 or rec.curve25519 not in (None, curve25519):
            return BLOCKED
        if rec.state != TRUSTED:
            return rec.state
        served = self._view.get(user_id)
        dev = served.devices.get(device_id) if served else None
        if dev is None or (dev.ed25519, dev.curve25519) != (ed25519, curve25519):
            return UNKNOWN
        return TRUSTED

    def sender_verdict(
        self,
        room_id: str,
        sender: str,
        claimed_device: str | None,
        sender_key: str,
        session_ed25519: str,
    ) -> str:
        """The verdict on the device that sent a message, from what decryption proved.

        ``sender_key`` is the curve25519 key Olm authenticated when the room key arrived,
        ``session_ed25519`` the signing key claimed inside that Olm message, and
        ``claimed_device`` the device id the sender's client wrote in the envelope.
        """
        served = self._view.get(sender)
        dev = next(
            (d for d in (served.devices.values() if served else ()) if d.curve25519 == sender_key),
            None,
        )
        if dev is None:
            rec = self.store.device(sender, claimed_device) if claimed_device else None
            return BLOCKED if rec is not None and rec.state == BLOCKED else UNKNOWN
        if dev.ed25519 != session_ed25519 or (claimed_device and claimed_device != dev.device_id):
            log.warning(
                "message of %s names device %s but its keys are those of %s",
                sender,
                claimed_device,
                dev.device_id,
            )
            return MISMATCH
        return self.device_verdict(room_id, sender, dev.device_id, dev.ed25519, dev.curve25519)

    # -- sending -------------------------------------------------------------------------

    async def trust_room_devices(self, room_id: str) -> None:
        """Before a send: mark every device in the room verified or blacklisted for nio."""
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
        for user_id, by_id in devices.items():
            for device in by_id.values():
                if not device.deleted:
                    self._apply(room_id, user_id, device)

    def _apply(self, room_id: str, user_id: str, device: Any) -> str:
        verdict = self.device_verdict(
            room_id, user_id, device.id, device.ed25519, device.curve25519
        )
        olm = self.client.olm
        assert olm is not None
        if verdict == TRUSTED:
            if not olm.is_device_verified(device):
                self.client.verify_device(device)
        elif not olm.is_device_blacklisted(device):
            self.client.blacklist_device(device)
        return verdict
