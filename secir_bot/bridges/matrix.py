"""The Matrix bridge: matrix-nio with end-to-end encryption (vodozemac).

Receiving: the bot runs its own sync loop. The events of each sync are written to the inbox
together with the sync position, in one commit, before anything is decided; nio's own token
store is off (it saves the token before callbacks run, which would lose events on a crash).
The first sync after start asks for full state, so room and member data are complete.
When a sync leaves out events (a long downtime), the gap is fetched page by page from the
server (``/messages``) before the timeline, so nothing sent meanwhile is skipped.
Events that cannot be decrypted yet are parked and retried when keys arrive; after
``matrix.undecryptable_report_after`` seconds the admins are told.

Sending: device trust is trust-on-first-use. Before each send the devices in the room are
checked: a new device of an active member or of a configured admin is trusted and
recorded; a device whose key changed, and every device of anyone else, is blacklisted and
never gets room keys. ``ignore_unverified_devices`` stays False, so a device that slipped
past this is an error, not a silent leak. The bot refuses to send into an unencrypted room.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    LocalProtocolError,
    LoginResponse,
    MegolmEvent,
    MessageDirection,
    OlmUnverifiedDeviceError,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
)

from secir_bot.config import Config
from secir_bot.errors import (
    PermanentDeliveryError,
    ServiceError,
    StoreError,
    StoreMissing,
    TransientDeliveryError,
    raise_if_cancelled,
)
from secir_bot.model import Channel
from secir_bot.relay import Outcome
from secir_bot.store import InboxItem, OutboxRow, Store

log = logging.getLogger(__name__)

PARK_GIVE_UP = 7 * 86400.0  # seconds a parked event waits for its key before it is closed
BACKFILL_PAGES = 50  # pages of 100 events fetched to fill a sync gap after long downtime
SYNC_DEADLINE = 120.0  # seconds; a sync long-polls for 30 s at most, so this means a dead link
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

CREDENTIALS = "credentials.json"
SYNC_FILTER = {"room": {"timeline": {"limit": 500}, "state": {"lazy_load_members": False}}}


@dataclass(frozen=True)
class Credentials:
    user_id: str
    device_id: str
    access_token: str
    pickle_key: str

    @staticmethod
    def exist(directory: Path) -> bool:
        """Whether ``directory`` holds a login; creates the directory (0700) if missing."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return (directory / CREDENTIALS).exists()

    @classmethod
    def load(cls, directory: Path) -> Credentials:
        path = directory / CREDENTIALS
        if not path.exists():
            raise StoreMissing(f"no Matrix login in {directory}: run 'secir-bot init' first")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**data)

    def save(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / CREDENTIALS
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.__dict__, fh)


class _GuardedClient(AsyncClient):  # type: ignore[misc]
    """An AsyncClient that never lets hostile input escape ``sync()``.

    nio decrypts while it digests a sync response; a malformed to-device message or room
    event (sent by anyone on any homeserver) makes it raise from inside ``sync()``, which
    would stop the bot on every restart. Such an event is logged by id and left
    undecrypted instead.
    """

    def _handle_decrypt_to_device(self, to_device_event: Any) -> Any:
        try:
            return super()._handle_decrypt_to_device(to_device_event)
        except Exception as exc:
            log.warning(
                "undecryptable to-device message from %s ignored: %s",
                getattr(to_device_event, "sender", "?"),
                type(exc).__name__,
            )
            return None

    def _handle_timeline_event(
        self, event: Any, room_id: str, room: Any, encrypted_rooms: set[str]
    ) -> Any:
        try:
            return super()._handle_timeline_event(event, room_id, room, encrypted_rooms)
        except Exception as exc:
            log.warning(
                "event %s in %s could not be handled: %s",
                getattr(event, "event_id", "?"),
                room_id,
                type(exc).__name__,
            )
            return None


def _client(
    config: Config, directory: Path, pickle_key: str, device_id: str | None = None
) -> AsyncClient:
    cfg = AsyncClientConfig(
        encryption_enabled=True,
        store_sync_tokens=False,
        pickle_key=pickle_key,
        max_limit_exceeded=10,
        max_timeouts=3,
        request_timeout=60,
    )
    return _GuardedClient(
        config.matrix.homeserver,
        config.matrix.user_id,
        device_id=device_id,
        store_path=str(directory),
        config=cfg,
    )


async def login_once(
    config: Config, directory: Path, password: str, pickle_key: str
) -> Credentials:
    """Log the bot's device in (``secir-bot init``); the device id is then kept for ever."""
    if Credentials.exist(directory):
        return Credentials.load(directory)
    client = _client(config, directory, pickle_key)
    try:
        resp = await client.login(password, device_name=config.matrix.device_name)
        if not isinstance(resp, LoginResponse):
            raise ServiceError(
                f"the homeserver refused the login of {config.matrix.user_id}: {resp}"
            )
        if client.olm is None:
            raise StoreError("Matrix login gave no encryption store; refusing to continue")
        creds = Credentials(resp.user_id, resp.device_id, resp.access_token, pickle_key)
        creds.save(directory)
        if client.should_upload_keys:
            await client.keys_upload()
        return creds
    finally:
        await client.close()


class MatrixBridge:
    channel = Channel.MATRIX

    def __init__(
        self,
        config: Config,
        store: Store,
        directory: Path,
        process: Callable[[InboxItem], Awaitable[Outcome]],
        on_work: Callable[[], None],
        notify: Callable[[str], None],
        link: Callable[[bool, str], None] = lambda works, reason: None,
    ) -> None:
        self.config = config
        self.store = store
        self.directory = directory
        self.process = process
        self.on_work = on_work
        self.notify = notify
        self.link = link  # told whether the homeserver answers (for the outage notices)
        self.synced = asyncio.Event()
        creds = Credentials.load(directory)
        if creds.user_id != config.matrix.user_id:
            raise StoreError(
                f"the Matrix store belongs to {creds.user_id}, not to "
                f"{config.matrix.user_id}; refusing to start"
            )
        db = directory / f"{creds.user_id}_{creds.device_id}.db"
        if not db.exists():
            raise StoreError(
                f"the crypto store of device {creds.device_id} is missing ({db.name}); "
                "starting would give an existing device new identity keys. Restore "
                "store/matrix from backup, or remove credentials.json and run init again "
                "to register a new device."
            )
        self.creds = creds
        self.client = _client(config, directory, creds.pickle_key, creds.device_id)
        self.client.restore_login(creds.user_id, creds.device_id, creds.access_token)
        if self.client.olm is None:
            raise StoreError(
                "the Matrix crypto store could not be loaded; refusing to run "
                "without end-to-end encryption"
            )
        self.rooms = (config.matrix.incident_room, config.matrix.control_room)
        self._send_lock = asyncio.Lock()

    @property
    def user_id(self) -> str:
        return self.creds.user_id

    async def close(self) -> None:
        await self.client.close()

    # -- receiving ---------------------------------------------------------------------

    async def run(self) -> None:
        token = self.store.get("matrix.sync_token")
        first = True
        backoff = 1.0
        # Items decided before a crash but not yet processed.
        for item in self.store.inbox_pending("matrix"):
            await self.process(item)
        while True:
            raise_if_cancelled()
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
            self.store.accept_sync(await self._items(resp, token), resp.next_batch)
            token = resp.next_batch
            try:
                await self._joins(resp)
                await self._housekeeping()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("Matrix key or join request failed (%s); next sync retries", exc)
            await self._retry_parked()
            for item in self.store.inbox_pending("matrix"):
                await self.process(item)
            self.synced.set()
            self.on_work()

    def _poll_ms(self) -> int:
        """Long-poll for 30 s, or shorter while parked events wait for their report."""
        parked = self.store.inbox_pending("matrix", "parked")
        if not [p for p in parked if not p.meta.get("reported")]:
            return 30000
        return int(min(30.0, max(0.5, self.config.matrix.undecryptable_report_after / 2)) * 1000)

    async def _items(
        self, resp: SyncResponse, since: str | None
    ) -> list[tuple[str, bytes, dict[str, Any], str]]:
        items = []
        for room_id, info in resp.rooms.join.items():
            log.debug(
                "sync: room %s, %d timeline events (limited: %s)",
                room_id,
                len(info.timeline.events),
                info.timeline.limited,
            )
            if room_id != self.config.matrix.incident_room:
                continue  # the control room's commands arrive with a later release
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

    def _item_of(self, event: Any, room_id: str) -> tuple[str, bytes, dict[str, Any], str] | None:
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
        meta: dict[str, Any]
        if isinstance(event, MegolmEvent):
            meta = {
                "room_id": room_id,
                "encrypted": True,
                "parked_at": time.time(),
                "session_id": event.session_id,
            }
            return event_id, json.dumps(source).encode(), meta, "parked"
        if source.get("type") != "m.room.message":
            return None
        raw = {
            "type": source.get("type"),
            "content": source.get("content"),
            "event_id": event_id,
            "sender": source.get("sender"),
            "origin_server_ts": source.get("origin_server_ts"),
        }
        meta = {"room_id": room_id, "encrypted": bool(getattr(event, "decrypted", False))}
        if meta["encrypted"]:
            meta["device"] = self._sender_device(
                room_id, str(source.get("sender")), getattr(event, "sender_key", None)
            )
        return event_id, json.dumps(raw, default=str).encode(), meta, "new"

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

    async def _retry_parked(self) -> None:
        for item in self.store.inbox_pending("matrix", "parked"):
            event = MegolmEvent.from_dict(json.loads(item.raw))
            if not isinstance(event, MegolmEvent):
                self.store.decide(item.id, "dropped", "stored event is not a Megolm event")
                continue
            # Timeline events carry no room id; nio needs it to find the session.
            event.room_id = str(item.meta.get("room_id", ""))
            try:
                clear = self.client.decrypt_event(event)
            except Exception:  # EncryptionError, or hostile input nio chokes on
                clear = None
            if clear is not None and isinstance(clear.source, dict):
                raw = {
                    "type": clear.source.get("type"),
                    "content": clear.source.get("content", {}),
                    "event_id": event.event_id,
                    "sender": event.sender,
                    "origin_server_ts": event.server_timestamp,
                }
                meta = dict(item.meta, encrypted=True)
                meta["device"] = self._sender_device(
                    str(item.meta.get("room_id", "")), event.sender, event.sender_key
                )
                self.store.unpark(item.id, json.dumps(raw).encode(), meta)
                log.info("parked event %s decrypted", event.event_id)
                continue
            waited = time.time() - float(item.meta.get("parked_at", time.time()))
            if waited > PARK_GIVE_UP:
                self.store.decide(item.id, "undecryptable", "no key arrived in time")
                continue
            if waited > self.config.matrix.undecryptable_report_after and not item.meta.get(
                "reported"
            ):
                self.notify(
                    f"An event from {event.sender} ({event.event_id}) in the incident "
                    f"room could not be decrypted for {waited / 60:.0f} min; the bot "
                    "never received its key. Ask the sender to re-send it."
                )
                self.store.set_inbox_meta(item.id, dict(item.meta, reported=True))

    # -- sending -----------------------------------------------------------------------

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
            if user_id == self.user_id:
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

    def _sender_device(self, room_id: str, sender: str, sender_key: str | None) -> str:
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

    async def deliver(self, row: OutboxRow) -> str:
        payload = json.loads(row.payload)
        content = dict(payload["content"])
        relation = self._relation(payload.get("root_uid"), payload.get("parent_uid"))
        if relation:
            content["m.relates_to"] = relation
        async with self._send_lock:
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
            await self.trust_room_devices(row.target)
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
