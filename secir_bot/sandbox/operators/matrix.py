"""The operator on Matrix: a matrix-nio client with its own device and crypto store.

A ``MatrixOperator`` syncs in the background and records the decrypted messages it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    MatrixRoom,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageNotice,
    RoomMessageText,
)
from nio.event_builders import EnableEncryptionBuilder

from secir_bot.sandbox.operators.base import SeenEvent, wait_until

# Synapse puts at most 10 of a room's new events in a sync answer unless asked for more,
# and marks the timeline "limited"; nio does not fetch the gap. The bot's sends of a burst
# (several at once, delivery.matrix_parallel) can outpace a client on a loaded machine by
# more than that between two of its syncs: the operator asks for more.
SYNC_FILTER = {"room": {"timeline": {"limit": 200}}}


class MatrixOperator:
    """A Matrix user with their own E2E device, syncing in the background."""

    def __init__(
        self, homeserver: str, user_id: str, device_id: str, access_token: str, store_path: Path
    ) -> None:
        store_path.mkdir(parents=True, exist_ok=True)
        self.client = AsyncClient(
            homeserver,
            user_id,
            device_id=device_id,
            store_path=str(store_path),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True),
        )
        self.client.restore_login(user_id, device_id, access_token)
        assert self.client.olm is not None, "no crypto store: E2E would be off"
        self.events: list[SeenEvent] = []
        self.auto_join = True
        self.undecryptable: list[MegolmEvent] = []
        self.client.add_event_callback(self._on_message, (RoomMessageText, RoomMessageNotice))
        self.client.add_event_callback(self._on_undecryptable, MegolmEvent)
        self.client.add_event_callback(self._on_invite, InviteMemberEvent)
        self._task: asyncio.Task[None] | None = None

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    async def _on_message(self, room: MatrixRoom, event: Any) -> None:
        self.events.append(
            SeenEvent(
                room.room_id,
                event.event_id,
                event.sender,
                event.body,
                event.source.get("content", {}).get("msgtype", ""),
                bool(getattr(event, "decrypted", False)),
                event.source.get("content", {}),
            )
        )

    async def _on_undecryptable(self, room: MatrixRoom, event: MegolmEvent) -> None:
        self.undecryptable.append(event)

    async def _on_invite(self, room: MatrixRoom, event: InviteMemberEvent) -> None:
        if self.auto_join and event.state_key == self.user_id and event.membership == "invite":
            await self.client.join(room.room_id)

    async def start(self) -> None:
        await self.client.sync(timeout=0, full_state=True)
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        self._task = asyncio.create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        await self.client.sync_forever(timeout=1000, full_state=True, sync_filter=SYNC_FILTER)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()

    async def create_room(
        self,
        name: str,
        invite: list[str],
        encrypted: bool = True,
        power: dict[str, int] | None = None,
    ) -> str:
        """A room made by this user; ``power``: the levels of others in it. (The creator's
        own level is implied: from room version 12 on it must not be listed.)"""
        state = [EnableEncryptionBuilder().as_dict()] if encrypted else []
        override = {"users": dict(power)} if power else None
        resp = await self.client.room_create(
            name=name, invite=invite, initial_state=state, power_level_override=override
        )
        assert isinstance(resp, RoomCreateResponse), resp
        await wait_until(lambda: resp.room_id in self.client.rooms, 10, f"room {name} synced")
        return str(resp.room_id)

    async def wait_joined(self, room_id: str, users: list[str], timeout: float = 15) -> None:
        def joined() -> bool:
            room = self.client.rooms.get(room_id)
            # nio lists invited users in room.users too: joined means not (still) invited.
            return room is not None and all(
                u in room.users and u not in room.invited_users for u in users
            )

        await wait_until(joined, timeout, f"{users} joined {room_id}")

    async def know_devices_of(self, user_id: str, timeout: float = 10) -> None:
        """Wait until this client has fetched ``user_id``'s device keys.

        A message sent before that is not encrypted for those devices: a real client race,
        which tests avoid by waiting here once after the bot joins.
        """
        olm = self.client.olm
        assert olm is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while not list(olm.device_store.active_user_devices(user_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{self.user_id} never learnt the devices of {user_id}")
            olm.users_for_key_query.add(user_id)
            await self.client.keys_query()
            await asyncio.sleep(0.05)

    async def send(
        self,
        room_id: str,
        body: str,
        *,
        reply_to: str | None = None,
        thread_root: str | None = None,
        msgtype: str = "m.text",
        extra: dict[str, Any] | None = None,
    ) -> str:
        content: dict[str, Any] = {"msgtype": msgtype, "body": body}
        if thread_root:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread_root,
                "is_falling_back": reply_to is None,
                "m.in_reply_to": {"event_id": reply_to or thread_root},
            }
        elif reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        content.update(extra or {})
        resp = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        event_id = getattr(resp, "event_id", None)
        assert event_id, resp
        return str(event_id)

    async def wait_for_event(
        self, predicate: Callable[[SeenEvent], bool], timeout: float = 20.0, what: str = "an event"
    ) -> SeenEvent:
        def found() -> SeenEvent | None:
            return next((e for e in self.events if predicate(e)), None)

        try:
            return await wait_until(found, timeout, what)
        except TimeoutError as exc:
            seen = [(e.sender, e.body[:60]) for e in self.events]
            raise TimeoutError(f"{self.user_id}: {exc}; saw {seen}") from None
