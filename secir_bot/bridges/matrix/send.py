"""Sending into a room: the outbox's Matrix deliveries.

``ignore_unverified_devices`` stays False, so a device that slipped past the trust check
is an error, not a silent leak. The bot refuses to send into an unencrypted room.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from nio import LocalProtocolError, OlmUnverifiedDeviceError, RoomSendResponse

from secir_bot.bridges.matrix.client import MatrixClient
from secir_bot.bridges.matrix.trust import Trust
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.store import OutboxRow, Store

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


class Sender:
    def __init__(self, store: Store, client: MatrixClient, trust: Trust) -> None:
        self.store = store
        self.client = client
        self.trust = trust
        self._lock = asyncio.Lock()

    async def deliver(self, row: OutboxRow) -> str:
        payload = json.loads(row.payload)
        content = dict(payload["content"])
        relation = self._relation(payload.get("root_uid"), payload.get("parent_uid"))
        if relation:
            content["m.relates_to"] = relation
        async with self._lock:
            try:
                resp = await self._send(row, content)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientDeliveryError(f"Matrix unreachable: {exc!r}") from exc
        if isinstance(resp, RoomSendResponse):
            return str(resp.event_id)
        status = str(getattr(resp, "status_code", "") or "")
        if status in PERMANENT_ERRORS:
            raise PermanentDeliveryError(f"Matrix refused: {resp}")
        raise TransientDeliveryError(f"Matrix send failed: {resp}")

    async def _send(self, row: OutboxRow, content: dict[str, Any]) -> Any:
        for attempt in (1, 2):
            await self.trust.trust_room_devices(row.target)
            try:
                return await self.client.room_send(
                    row.target,
                    "m.room.message",
                    content,
                    # Stable across retries of this row; the creation time keeps it unique
                    # even if a restored backup hands out the same row ids again.
                    tx_id=f"secir-{row.id}-{int(row.created_at * 1000)}",
                    ignore_unverified_devices=False,
                )
            except OlmUnverifiedDeviceError as exc:
                if attempt == 2:
                    raise TransientDeliveryError(f"unverified device: {exc}") from exc
            except LocalProtocolError as exc:
                raise TransientDeliveryError(f"Matrix: {exc}") from exc
        raise AssertionError("unreachable")

    def _relation(self, root_uid: str | None, parent_uid: str | None) -> dict[str, Any] | None:
        if not root_uid:
            return None
        root_events = self.store.links_of(root_uid, "event")
        if not root_events:
            return None
        parent_events = self.store.links_of(parent_uid, "event") if parent_uid else []
        parent_event = parent_events[0] if parent_events else root_events[0]
        return {
            "rel_type": "m.thread",
            "event_id": root_events[0],
            "is_falling_back": parent_event == root_events[0],
            "m.in_reply_to": {"event_id": parent_event},
        }
