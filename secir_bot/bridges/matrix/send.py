"""Sending into a room: the outbox's Matrix deliveries.

``ignore_unverified_devices`` stays False, so a device that slipped past the trust check
is an error, not a silent leak. The bot refuses to send into an unencrypted room.

What must not interleave is done one send at a time, under a lock: the trust check, sharing
the room key, the withheld notices and the Megolm encryption (and ``rotate``). The
encrypted event then goes out outside the lock, so the outbox's sends of different threads
(``delivery.matrix_parallel``) wait for the homeserver side by side. Megolm receivers do not
need the message indices in order.

A device left without the room key is told so with ``m.room_key.withheld`` and a code
(nio does not send it): its client then shows why it cannot read the message instead of
waiting for a key that will never come.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from typing import Any

import aiohttp
from nio import (
    GroupEncryptionError,
    LocalProtocolError,
    OlmUnverifiedDeviceError,
    RoomSendResponse,
    UploadResponse,
)

from secir_bot.bridges import Receipt
from secir_bot.bridges.matrix.client import ApiError, MatrixClient, quoted
from secir_bot.bridges.matrix.compose import outgoing_content
from secir_bot.bridges.matrix.trust import Trust
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.model import DeliveryKind, DeviceVerdict, LinkKind
from secir_bot.store import OutboxRow, Store, upload_key

# Matrix errors that retrying cannot cure.
PERMANENT_ERRORS = frozenset(
    {
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_UNKNOWN_TOKEN",
        "M_TOO_LARGE",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_INVALID_PARAM",
    }
)


log = logging.getLogger(__name__)

# The withheld code (spec: m.room_key.withheld) for each reason the bot keeps a key back.
# Only m.blacklisted and m.unverified are kept by matrix-rust-sdk (Element) to explain a
# failed decryption (found with the Element-grade test client: m.unauthorised is taken as
# an answer to a key request and shown as a missing key), so a non-member's device is
# "blacklisted", which is what the bot does to it.
WITHHELD = {
    DeviceVerdict.REFUSED: ("m.blacklisted", "Only members of the list get this room's keys."),
    DeviceVerdict.BLOCKED: (
        "m.blacklisted",
        "This device's keys changed; the list bot blocked it.",
    ),
    DeviceVerdict.MISMATCH: (
        "m.blacklisted",
        "This device's keys do not match; the list bot blocked it.",
    ),
    DeviceVerdict.UNSIGNED: ("m.unverified", "This session is not verified by its owner."),
    DeviceVerdict.IDENTITY: (
        "m.unverified",
        "Your identity changed; a list admin must confirm it.",
    ),
    DeviceVerdict.NO_XSIGN: (
        "m.unverified",
        "The list accepts only sessions verified by their owner.",
    ),
    DeviceVerdict.UNKNOWN: ("m.unverified", "The list bot could not check this device's keys."),
}


class Sender:
    def __init__(self, store: Store, client: MatrixClient, trust: Trust) -> None:
        self.store = store
        self.client = client
        self.trust = trust
        self._lock = asyncio.Lock()
        # Per room: the current room key and the devices already told it is withheld.
        self._withheld: dict[str, tuple[str, set[tuple[str, str]]]] = {}
        # Encrypted events on their way to the homeserver now, and the most there were.
        self.in_flight = 0
        self.most_in_flight = 0

    async def deliver(self, row: OutboxRow) -> Receipt:
        payload = json.loads(row.payload)
        content = outgoing_content(self.store, payload, row.post_uid)
        if "upload" in payload:
            content["file"] = {**content["file"], "url": await self._upload(row, payload["upload"])}
        try:
            async with self._lock:
                event_type, encrypted = await self._encrypt(row.target, content)
            resp = await self._put(row, event_type, encrypted)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"Matrix unreachable: {exc!r}") from exc
        if isinstance(resp, RoomSendResponse):
            event_id = str(resp.event_id)
            # A post's event names it in the room: replies to it are threaded by it.
            link = (LinkKind.EVENT, event_id) if row.kind == DeliveryKind.POST else None
            return Receipt(event_id, link=link)
        status = str(getattr(resp, "status_code", "") or "")
        if status in PERMANENT_ERRORS:
            raise PermanentDeliveryError(f"Matrix refused: {resp}")
        raise TransientDeliveryError(f"Matrix send failed: {resp}")

    async def rotate(self, room_id: str) -> None:
        """Forget the room's outbound room key (between two encryptions, never during one):
        the next message starts a new one, shared only with the devices trusted then.
        Events encrypted before may still be on their way, with the key they were made
        with."""
        async with self._lock:
            olm = self.client.olm
            assert olm is not None
            if olm.outbound_group_sessions.pop(room_id, None) is not None:
                log.info("room key of %s discarded; the next message starts a new one", room_id)
            self._withheld.pop(room_id, None)

    async def _upload(self, row: OutboxRow, ciphertext_b64: str) -> str:
        """The mxc URL of the row's encrypted file, uploaded once: the URL is kept (by
        row), so a retry after a failed send posts the same upload."""
        key = upload_key(row)  # forgotten by the housekeeping once the row is not pending
        done = self.store.kv.get(key)
        if done is not None:
            return done
        data = base64.b64decode(ciphertext_b64)
        try:
            resp, _ = await self.client.upload(
                lambda *_: data,
                content_type="application/octet-stream",
                filename="encrypted",
                filesize=len(data),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"Matrix upload failed: {exc!r}") from exc
        if not isinstance(resp, UploadResponse):
            status = str(getattr(resp, "status_code", "") or "")
            if status in PERMANENT_ERRORS:
                raise PermanentDeliveryError(f"Matrix refused the upload: {resp}")
            raise TransientDeliveryError(f"Matrix upload failed: {resp}")
        url = str(resp.content_uri)
        self.store.kv.put(key, url)
        return url

    async def _encrypt(self, room_id: str, content: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The event to send (type and encrypted content), the room key shared first with
        the devices trusted now; called under the lock."""
        for attempt in (1, 2):
            left_out = await self.trust.trust_room_devices(room_id)
            try:
                olm = self.client.olm
                assert olm is not None
                if olm.should_share_group_session(room_id):
                    await self.client.share_group_session(room_id, ignore_unverified_devices=False)
                await self._withhold(room_id, left_out)
                event_type, encrypted = self.client.encrypt(room_id, "m.room.message", content)
                return str(event_type), dict(encrypted)
            except OlmUnverifiedDeviceError as exc:
                if attempt == 2:
                    raise TransientDeliveryError(f"unverified device: {exc}") from exc
            except (KeyError, GroupEncryptionError) as exc:
                # nio drops the room's outbound key when its sync sees a membership or
                # device change; if that lands while the key is being shared (nio's
                # share_group_session fails on the missing key) or before it is used (the
                # new one is not shared yet), start again with a new one.
                log.info("room key of %s replaced while it was shared; sharing again", room_id)
                if attempt == 2:
                    raise TransientDeliveryError(f"room key replaced while shared: {exc}") from exc
            except LocalProtocolError as exc:
                raise TransientDeliveryError(f"Matrix: {exc}") from exc
        raise AssertionError("unreachable")

    async def _put(self, row: OutboxRow, event_type: str, encrypted: dict[str, Any]) -> Any:
        """Send the encrypted event of ``row`` (outside the lock: several at once)."""
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self.client.send_encrypted(
                row.target,
                event_type,
                encrypted,
                # Stable across retries of this row; the creation time keeps it unique
                # even if a restored backup hands out the same row ids again.
                tx_id=f"secir-{row.id}-{int(row.created_at * 1000)}",
            )
        except LocalProtocolError as exc:
            raise TransientDeliveryError(f"Matrix: {exc}") from exc
        finally:
            self.in_flight -= 1

    async def _withhold(
        self, room_id: str, left_out: dict[str, list[tuple[Any, DeviceVerdict]]]
    ) -> None:
        """Tell each device left out of the current room key why (once per key)."""
        olm = self.client.olm
        assert olm is not None
        session = olm.outbound_group_sessions.get(room_id)
        if session is None or not left_out:
            return
        current, told = self._withheld.get(room_id, ("", set()))
        if current != session.id:
            told = set()
        messages: dict[str, dict[str, Any]] = {}
        for user_id, devices in left_out.items():
            for device, verdict in devices:
                if (user_id, device.id) in told:
                    continue
                code, reason = WITHHELD.get(verdict, WITHHELD[DeviceVerdict.UNKNOWN])
                messages.setdefault(user_id, {})[device.id] = {
                    "algorithm": "m.megolm.v1.aes-sha2",
                    "room_id": room_id,
                    "session_id": session.id,
                    "sender_key": olm.account.identity_keys["curve25519"],
                    "from_device": self.client.device_id,
                    "code": code,
                    "reason": reason,
                }
        if messages:
            txn = quoted(f"secir-withheld-{secrets.token_hex(8)}")
            try:
                await self.client.api(
                    "PUT",
                    f"/v3/sendToDevice/m.room_key.withheld/{txn}",
                    {"messages": messages},
                    what="withheld notice",
                )
            except ApiError as exc:
                log.warning("could not tell devices that the key is withheld: %s", exc)
                return
            told |= {(u, d) for u, by_id in messages.items() for d in by_id}
            log.info(
                "room key of %s withheld from %s",
                room_id,
                ", ".join(
                    f"{u}/{d} ({c['code']})" for u, by in messages.items() for d, c in by.items()
                ),
            )
        self._withheld[room_id] = (session.id, told)
