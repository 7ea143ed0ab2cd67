"""Receiving: the bot's own sync loop, written durably to the inbox before anything else.

The events of each sync are written to the inbox together with the sync position, in one
commit, before anything is decided; nio's own token store is off (it saves the token
before callbacks run, which would lose events on a crash). The first sync after start asks
for full state, so room and member data are complete. When a sync leaves out events (a
long downtime), the gap is fetched page by page from the server (``/messages``) before the
timeline, so nothing sent meanwhile is skipped. Encrypted events are stored as they came
(parked) and decrypted by the bridge itself right after (``parked.py``). Nothing is decided
here: the inbox runner is woken and decides in its own task, so the sync goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from nio import MegolmEvent, MessageDirection, RoomMessagesResponse, SyncResponse

from secir_bot.bridges import Intake
from secir_bot.bridges.matrix.client import ApiError, MatrixClient
from secir_bot.bridges.matrix.parked import Parked
from secir_bot.bridges.matrix.trust import Trust
from secir_bot.config import Config
from secir_bot.model import Channel, InboxState, MatrixFacts
from secir_bot.store import Store
from secir_bot.tasks import raise_if_cancelled

log = logging.getLogger(__name__)

BACKFILL_PAGES = 50  # pages of 100 events fetched to fill a sync gap after long downtime
SYNC_DEADLINE = 120.0  # seconds; a sync long-polls for 30 s at most, so this means a dead link
SYNC_FILTER = {"room": {"timeline": {"limit": 500}, "state": {"lazy_load_members": False}}}

Item = tuple[str, bytes, dict[str, Any], InboxState]
# Clear events taken into the inbox: messages (refused unless encrypted), redactions (never
# encrypted: a member withdrawing a post) and reactions (sent in the clear by clients;
# recorded, not mirrored one by one).
RECEIVED = frozenset({"m.room.message", "m.room.redaction", "m.reaction"})


class Receiver:
    def __init__(
        self,
        config: Config,
        store: Store,
        client: MatrixClient,
        trust: Trust,
        intake: Intake,
        on_work: Callable[[], None],
        notify: Callable[[str], None],
        check_identity: Callable[[], Awaitable[None]],
        link: Callable[[bool, str], None] = lambda works, reason: None,
    ) -> None:
        self.config = config
        self.link = link  # told whether the homeserver answers (for the outage notices)
        self.check_identity = check_identity  # the bot's cross-signing, once per start
        self._identity_checked = False
        self.store = store
        self.client = client
        self.trust = trust
        self.intake = intake  # woken once a sync's events are durable, to decide them
        self.on_work = on_work
        self.notify = notify
        # Parked events released later (a file fetched off this loop) are decided at once.
        self.parked = Parked(config, store, client, trust, notify, self._released)
        self._looked: set[str] = set()  # rooms whose members' devices the bot fetched
        # Set once the bot is in both rooms and has fetched their members' devices.
        self.synced = asyncio.Event()
        self.rooms = (config.matrix.incident_room, config.matrix.control_room)

    @property
    def user_id(self) -> str:
        return str(self.client.user_id)

    def _released(self) -> None:
        self.intake.wake()
        self.on_work()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.parked.close()

    async def _run(self) -> None:
        token = self.store.kv.get("matrix.sync_token")
        first = True
        backoff = 1.0
        while True:
            raise_if_cancelled()
            # The events and position of the last sync on the disk before the homeserver
            # is told (by the next sync's position) that they arrived.
            await self.store.durable()
            try:
                resp = await asyncio.wait_for(
                    self.client.sync(
                        timeout=self._poll_ms(),
                        since=token,
                        full_state=first,
                        sync_filter=SYNC_FILTER,
                    ),
                    SYNC_DEADLINE,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                resp = exc  # the homeserver is away: back off below, never stop the bot
            if not isinstance(resp, SyncResponse):
                log.warning("Matrix sync failed (%s); retrying in %.0fs", resp, backoff)
                code = getattr(resp, "status_code", None)
                self.link(False, f"sync failed: {type(resp).__name__} {code or ''}".strip())
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            self.link(True, "")
            backoff = 1.0
            first = False
            self.parked.record_withheld(resp.to_device_events)
            self.store.inbox.accept_sync(await self._items(resp, token), resp.next_batch)
            token = resp.next_batch
            self.trust.mark_dirty(resp.device_list.changed)
            try:
                if not self._identity_checked:
                    await self.check_identity()
                    self._identity_checked = True
                await self._joins(resp)
                await self._housekeeping()
                fresh = [r for r in self.rooms if r in self.client.rooms and r not in self._looked]
                await self.trust.look_at_rooms(fresh)
                self._looked.update(fresh)
                await self.trust.refresh_changed()
            except (aiohttp.ClientError, TimeoutError, ApiError) as exc:
                log.warning("Matrix key or join request failed (%s); next sync retries", exc)
            await self.parked.open_all()
            self.intake.wake()
            if len(self._looked) == len(self.rooms):
                self.synced.set()
            self.on_work()

    def _poll_ms(self) -> int:
        """Long-poll for 30 s, or shorter while parked events wait for their report."""
        parked = self.store.inbox.pending(Channel.MATRIX, InboxState.PARKED)
        if all(MatrixFacts.from_meta(p.meta).reported for p in parked):
            return 30000
        return int(min(30.0, max(0.5, self.config.matrix.undecryptable_report_after / 2)) * 1000)

    async def _items(self, resp: SyncResponse, since: str | None) -> list[Item]:
        items = []
        for room_id, info in resp.rooms.join.items():
            log.debug(
                "sync: room %s, %d timeline events (limited: %s)",
                room_id,
                len(info.timeline.events),
                info.timeline.limited,
            )
            if not self._ours(room_id):
                continue  # a room the bot was invited to by someone else: not the list's
            # A room just joined always starts "limited"; a gap in a room we follow is real.
            events = list(info.timeline.events)
            if info.timeline.limited and since is not None and not self._just_joined(info):
                # The server left out events between our last position and this timeline.
                events = await self._backfill(room_id, info.timeline.prev_batch, since) + events
            joined_at = [i for i, e in enumerate(events) if self._is_own_join(e)]
            if joined_at:
                # History from before the bot joined is not ours to relay (and its keys
                # were never shared with the bot).
                events = events[joined_at[-1] + 1 :]
            for event in events:
                item = self._item_of(event, room_id)
                if item is not None:
                    items.append(item)
        return items

    def _ours(self, room_id: str) -> bool:
        """The incident room (posts and member commands), the control room (admin
        commands) and the direct rooms the bot opened (a member's commands)."""
        return room_id in self.rooms or self.trust.audience.direct_room_of(room_id) is not None

    async def _backfill(self, room_id: str, start: str, until: str) -> list[Any]:
        """The events of a sync gap, oldest first, fetched page by page from the server."""
        gap: list[Any] = []
        for _ in range(BACKFILL_PAGES):
            try:
                page = await self.client.room_messages(
                    room_id,
                    start=start,
                    end=until,
                    direction=MessageDirection.back,
                    limit=100,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                page = exc
            if not isinstance(page, RoomMessagesResponse):
                break
            gap.extend(page.chunk)
            if not page.chunk or not page.end or page.end == start:
                log.info("back-filled %d events of a sync gap in %s", len(gap), room_id)
                return list(reversed(gap))
            start = page.end
        log.warning("Matrix sync gap in %s could not be filled completely", room_id)
        self.notify(
            f"Warning: the Matrix sync for {room_id} skipped older events that the bot could "
            f"not fetch completely ({len(gap)} fetched); check the room history."
        )
        return list(reversed(gap))

    def _item_of(self, event: Any, room_id: str) -> Item | None:
        """An inbox row for a timeline event, or None for events that are not messages.

        Works from ``event.source`` only, so that malformed events (nio's BadEvent and
        UnknownBadEvent lack the usual attributes) are stored and judged by the pipeline.
        """
        source = getattr(event, "source", None)
        if not isinstance(source, dict):
            return None
        event_id = source.get("event_id") or getattr(event, "event_id", None)
        if not isinstance(event_id, str) or not event_id:
            log.warning("event without an id in %s ignored", room_id)
            return None
        if source.get("sender") == self.user_id:
            # The bot's own posts and notices come back in its sync: nothing to relay or
            # to judge, and its own device is no member's (it was decrypted, judged
            # "refused" and dropped, with a line in the log for each).
            log.debug("own event %s in %s skipped", event_id, room_id)
            return None
        if isinstance(event, MegolmEvent):
            facts = MatrixFacts(
                room_id=room_id,
                encrypted=True,
                parked_at=time.time(),
                session_id=event.session_id,
            )
            return event_id, json.dumps(source).encode(), facts.to_meta(), InboxState.PARKED
        if self._accepted_invitation(source, room_id):
            # A nominee accepted the bot's invitation (the D2 procedure's Matrix proof): a
            # state event, never encrypted, that only the joining account can send.
            raw = {k: source.get(k) for k in ("type", "content", "sender", "state_key")}
            facts = MatrixFacts(room_id=room_id, encrypted=False)
            raw["event_id"] = event_id
            return event_id, json.dumps(raw, default=str).encode(), facts.to_meta(), InboxState.NEW
        if source.get("type") not in RECEIVED:
            return None
        raw = {
            "type": source.get("type"),
            "content": source.get("content"),
            "event_id": event_id,
            "sender": source.get("sender"),
            "origin_server_ts": source.get("origin_server_ts"),
        }
        if isinstance(source.get("redacts"), str):
            raw["redacts"] = source["redacts"]  # where room versions before 11 keep it
        # Encrypted events are MegolmEvents above (the client does not decrypt them).
        facts = MatrixFacts(room_id=room_id, encrypted=False)
        return event_id, json.dumps(raw, default=str).encode(), facts.to_meta(), InboxState.NEW

    def _accepted_invitation(self, source: dict[str, Any], room_id: str) -> bool:
        """Someone's own join to a direct room the bot opened for them."""
        content = source.get("content") or {}
        return (
            source.get("type") == "m.room.member"
            and source.get("state_key") == source.get("sender")
            and isinstance(content, dict)
            and content.get("membership") == "join"
            and self.trust.audience.direct_room_of(room_id) == source.get("sender")
        )

    def _is_own_join(self, event: Any) -> bool:
        """The bot's own join (not a profile change, which is also a "join" event)."""
        return (
            getattr(event, "state_key", None) == self.user_id
            and getattr(event, "membership", None) == "join"
            and getattr(event, "prev_membership", None) != "join"
        )

    def _just_joined(self, info: Any) -> bool:
        # Only the timeline counts: a full-state sync always carries our join in its state.
        return any(self._is_own_join(e) for e in info.timeline.events)

    async def _joins(self, resp: SyncResponse) -> None:
        for room_id in resp.rooms.invite:
            if room_id in self.rooms:
                log.info("joining %s", room_id)
                await self.client.join(room_id)

    async def _housekeeping(self) -> None:
        c = self.client
        if c.should_upload_keys:
            await c.keys_upload()
        if c.should_query_keys:
            await c.keys_query()
        if c.should_claim_keys:
            await c.keys_claim(c.get_users_for_key_claiming())
        await c.send_to_device_messages()
