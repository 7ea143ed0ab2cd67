"""What the bot pinned about members' Matrix keys, and who is told when it changes.

Two kinds of pins, both in the store and in its trust log:

- a member's **cross-signing identity** (their master key), pinned on first sight. Devices
  their identity signed are then trusted without a notice. When the master key changes
  (the member reset their identity, or someone who took over the account did), the pin is
  marked "changed": every device of theirs is blocked until an admin confirms the new key
  (``secir-bot trust <mxid>``); the admins are told in the control room and the member in
  a direct message.
- each **device's identity keys** (ed25519 and curve25519), pinned the first time the bot
  sees the device. A device id that later shows other keys is blocked for good (M1).

This module only records and reports; ``trust.py`` turns pins into verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from secir_bot.bridges.matrix.keys import DeviceKeys, UserKeys
from secir_bot.store import DeviceRecord, Store

log = logging.getLogger(__name__)

PINNED = "pinned"
CHANGED = "changed"


@dataclass(frozen=True)
class MemberNotice:
    """A direct message for a member (sent by the bridge in a room of its own)."""

    user_id: str
    text: str


class Pins:
    def __init__(self, store: Store, notify: Callable[[str], None]) -> None:
        self.store = store
        self.notify = notify

    def judge(self, keys: UserKeys) -> list[MemberNotice]:
        """Record what is new in ``keys``; return the messages due to the member."""
        out = self._identity(keys)
        self._devices(keys)
        return out

    def _identity(self, keys: UserKeys) -> list[MemberNotice]:
        user_id, served = keys.user_id, keys.master
        pin = self.store.devices.identity(user_id)
        if pin is None:
            if served is not None:
                self.store.devices.record_identity(
                    user_id, served, PINNED, None, f"master key {served} pinned on first use"
                )
                log.info("cross-signing identity of %s pinned: %s", user_id, served)
            return []
        if pin.state == PINNED and served == pin.master_key:
            return []
        if pin.state == CHANGED and served == pin.pending_key:
            return []  # already reported; waits for an admin
        new = served or "none (the server serves no cross-signing keys)"
        self.store.devices.record_identity(
            user_id,
            pin.master_key,
            CHANGED,
            served,
            f"master key {pin.master_key} changed to {new}; devices blocked until confirmed",
        )
        log.warning("cross-signing identity of %s changed: %s -> %s", user_id, pin.master_key, new)
        self.notify(
            f"The Matrix identity (cross-signing master key) of {user_id} changed: "
            f"{pin.master_key} is now {new}. All their devices are blocked: they get no room "
            "keys and nothing they send is relayed. Ask the member, by another channel than "
            "Matrix, whether they reset their identity (a new login where they chose "
            "'reset', a lost recovery key). If they did, confirm it with "
            f"'secir-bot trust {user_id}'."
        )
        return [
            MemberNotice(
                user_id,
                "Your Matrix identity (your cross-signing keys) changed. Until an admin of "
                "the list confirms that you made this change, the bot sends you no room keys "
                "and relays nothing you post. If you reset your identity yourself, tell the "
                "admins by email or phone; if you did not, someone else may control your "
                "account: tell the admins at once.",
            )
        ]

    def _devices(self, keys: UserKeys) -> None:
        user_id = keys.user_id
        # The devices a member has when the bot first looks are their baseline; only
        # devices added later (and not signed by the member's identity) are news.
        first_look = not self.store.devices.of_user(user_id)
        for dev in keys.devices.values():
            how = "cross-signing" if keys.master and dev.cross_signed else "tofu"
            if keys.master and not dev.cross_signed:
                how = "unsigned"
            rec = self.store.devices.get(user_id, dev.device_id)
            if rec is None:
                self.store.devices.record(
                    user_id,
                    dev.device_id,
                    dev.ed25519,
                    "trusted",
                    dev.curve25519,
                    how,
                    log=f"first seen ({how}; ed25519 {dev.ed25519})",
                )
                log.info("device %s of %s first seen (%s)", dev.device_id, user_id, how)
                if how == "tofu" and not first_look:
                    self.notify(
                        f"New Matrix device {dev.device_id} of {user_id} trusted on "
                        f"first use (ed25519 {dev.ed25519})."
                    )
            elif rec.ed25519 != dev.ed25519 or rec.curve25519 not in (None, dev.curve25519):
                if rec.state != "blocked":
                    self._rekeyed(rec, dev)
            elif rec.curve25519 is None or rec.how != how:
                # Completes a pin made before curve25519 keys were recorded, and follows
                # a device that its owner signed (or no longer signs).
                self.store.devices.record(
                    user_id,
                    dev.device_id,
                    rec.ed25519,
                    rec.state,
                    dev.curve25519,
                    how,
                    log=None if rec.how == how else f"now {how}",
                )

    def _rekeyed(self, rec: DeviceRecord, dev: DeviceKeys) -> None:
        self.store.devices.record(
            rec.user_id,
            rec.device_id,
            rec.ed25519,
            "blocked",
            rec.curve25519,
            rec.how,
            log=(
                f"keys changed: the server now serves ed25519 {dev.ed25519}, "
                f"curve25519 {dev.curve25519}"
            ),
        )
        log.warning("keys of device %s of %s changed; blocked", rec.device_id, rec.user_id)
        self.notify(
            f"The keys of Matrix device {rec.device_id} of {rec.user_id} changed "
            f"(ed25519 {rec.ed25519} is now {dev.ed25519}); the device is "
            "blocked: it gets no room keys and its messages are not relayed. "
            "If the member reinstalled the device, they should log in anew "
            "(a new device id)."
        )

    def confirm(self, user_id: str, by: str) -> tuple[bool, str]:
        """An admin confirmed a changed identity: the new master key becomes the pin.
        Returns whether something was confirmed, and what to tell the admin."""
        pin = self.store.devices.identity(user_id)
        if pin is None:
            return False, f"{user_id} has no pinned Matrix identity; nothing to confirm"
        if pin.state != CHANGED:
            return False, f"the Matrix identity of {user_id} ({pin.master_key}) is unchanged"
        if not pin.pending_key:
            return False, f"{user_id} has no cross-signing identity now; nothing to confirm"
        self.store.devices.record_identity(
            user_id, pin.pending_key, PINNED, None, f"new master key confirmed by {by}"
        )
        return True, f"the Matrix identity of {user_id} is now {pin.pending_key} (confirmed)"
