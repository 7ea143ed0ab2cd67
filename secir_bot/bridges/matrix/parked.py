"""Encrypted room events between the inbox and the pipeline: decrypted here, by the bridge.

Every encrypted event is stored as it came (parked) before anything else. Then the bridge
decrypts it itself with the room key nio keeps, so that it sees the encrypted envelope (the
device the sender's client named, the Olm-authenticated sender key, the key's claimed
signing key) next to the clear text, and can judge the sending device on what the crypto
proved (``trust.sender_verdict``). Only then does the clear event go to the pipeline;
a trusted member's file message stays parked until a task beside the sync has fetched its
file (``fetch.py``), so that a slow download holds up nothing else.

An event whose key has not arrived stays parked and is tried again after each sync; after
``matrix.undecryptable_report_after`` seconds the admins are told, and after a week it is
closed. An event whose key the sender's client withheld (``m.room_key.withheld``) is
closed at once, and the sender told in its thread (``lost.py``); so is an event that no
key can ever open (the key held starts after it, a replayed index, a broken payload). At
most ``matrix.max_parked`` events wait at a time: beyond that, the oldest are closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import vodozemac
from nio import MegolmEvent

from secir_bot.bridges.matrix.client import ApiError, MatrixClient
from secir_bot.bridges.matrix.fetch import fetch_media
from secir_bot.bridges.matrix.lost import admin_never_came, admin_withheld, member_notice
from secir_bot.bridges.matrix.media import MediaRef, parse_media
from secir_bot.bridges.matrix.trust import Trust
from secir_bot.config import Config
from secir_bot.model import Channel, DeviceVerdict, InboxState, MatrixFacts
from secir_bot.store import InboxItem, Store

log = logging.getLogger(__name__)

PARK_GIVE_UP = 7 * 86400.0  # seconds a parked event waits for its key before it is closed
FETCHES_AT_ONCE = 4  # members' files downloaded at the same time


@dataclass(frozen=True)
class Opened:
    """A decrypted room event and what the decryption proved about its sender."""

    clear: dict[str, Any]  # {"type": ..., "content": {...}}
    sender_key: str  # the curve25519 key Olm authenticated when the room key came
    session_ed25519: str  # the signing key claimed with the room key
    claimed_device: str | None  # the device id written in the envelope
    forwarded: bool  # the room key came forwarded, not from the sender's device


@dataclass(frozen=True)
class Failed:
    reason: str
    permanent: bool = False  # no key can ever decrypt it


def open_megolm(client: MatrixClient, event: MegolmEvent) -> Opened | Failed:
    """Decrypt one Megolm event with the room keys the bot holds."""
    olm = client.olm
    assert olm is not None
    session = olm.inbound_group_store.get(event.room_id, event.sender_key, event.session_id)
    if session is None:
        olm.check_if_wedged(event)  # asks the sender again if an Olm session was wedged
        return Failed("no room key")
    try:
        index = vodozemac.MegolmMessage.from_base64(event.ciphertext).message_index()
        if index < session.first_known_index:
            return Failed("the room key held starts after this message", permanent=True)
        plaintext, index = session.decrypt(event.ciphertext)
    except (vodozemac.MegolmDecryptionException, vodozemac.DecodeException, ValueError):
        return Failed("the message does not decrypt with its room key", permanent=True)
    if not olm.message_index_ok(index, event):
        return Failed("a message index used twice (a replay)", permanent=True)
    try:
        clear = json.loads(plaintext)
    except ValueError:
        return Failed("the decrypted payload is not JSON", permanent=True)
    if (
        not isinstance(clear, dict)
        or not isinstance(clear.get("content"), dict)
        or clear.get("room_id", event.room_id) != event.room_id
    ):
        return Failed("the decrypted payload is not an event of this room", permanent=True)
    content = dict(clear["content"])
    outer = event.source.get("content") or {}
    if "m.relates_to" not in content and isinstance(outer.get("m.relates_to"), dict):
        # Relations travel in the clear (the spec wants them readable by the server).
        content["m.relates_to"] = outer["m.relates_to"]
    return Opened(
        clear={"type": clear.get("type"), "content": content},
        sender_key=event.sender_key,
        session_ed25519=session.ed25519,
        claimed_device=event.device_id or None,
        forwarded=bool(session.forwarding_chain),
    )


class Parked:
    """Opens parked events, judges their senders, and reports the ones that stay shut."""

    def __init__(
        self,
        config: Config,
        store: Store,
        client: MatrixClient,
        trust: Trust,
        notify: Callable[[str], None],
        on_work: Callable[[], None],
    ) -> None:
        self.config = config
        self.store = store
        self.client = client
        self.trust = trust
        self.notify = notify
        self.on_work = on_work
        self._fetching: dict[str, asyncio.Task[None]] = {}  # event id -> its file's fetch
        # A burst of files is fetched a few at a time: memory stays a few files' worth.
        self._fetch_slots = asyncio.Semaphore(FETCHES_AT_ONCE)

    def record_withheld(self, to_device_events: list[Any]) -> None:
        """Keep every ``m.room_key.withheld`` addressed to the bot (before the sync
        position that carried it is committed, so none is lost)."""
        for event in to_device_events:
            source = getattr(event, "source", None)
            if not isinstance(source, dict) or source.get("type") != "m.room_key.withheld":
                continue
            content = source.get("content") or {}
            fields = (
                content.get("room_id"),
                content.get("session_id"),
                source.get("sender"),
                content.get("code"),
            )
            if not all(isinstance(v, str) and v for v in fields):
                continue
            room_id, session_id, sender, code = (str(v) for v in fields)
            reason = str(content.get("reason") or "")[:200]
            self.store.devices.record_withheld(room_id, session_id, sender, code[:60], reason)
            log.info("%s withheld the key of a session in %s (%s)", sender, room_id, code)

    def _cap(self) -> None:
        """Close the oldest waiting events beyond ``matrix.max_parked``."""
        waiting = self.store.inbox.pending(Channel.MATRIX, InboxState.PARKED)
        excess = len(waiting) - self.config.matrix.max_parked
        if excess <= 0:
            return
        for item in waiting[:excess]:
            self.store.decide(item.id, InboxState.UNDECRYPTABLE, "closed: too many events waiting")
        log.warning("%d undecryptable events closed: more than max_parked waited", excess)
        self.notify(
            f"{excess} undecryptable Matrix events were closed without being relayed: more "
            f"than matrix.max_parked ({self.config.matrix.max_parked}) were waiting for "
            "their keys. Someone may be flooding the incident room."
        )

    async def open_all(self) -> None:
        self._cap()
        opened: list[tuple[InboxItem, MegolmEvent, Opened]] = []
        for item in self.store.inbox.pending(Channel.MATRIX, InboxState.PARKED):
            event = MegolmEvent.from_dict(json.loads(item.raw))
            if not isinstance(event, MegolmEvent):
                self.store.decide(item.id, InboxState.DROPPED, "stored event is not a Megolm event")
                continue
            # Timeline events carry no room id; the room key is filed under it.
            event.room_id = MatrixFacts.from_meta(item.meta).room_id
            try:
                result = open_megolm(self.client, event)
            except Exception as exc:  # hostile input that the libraries choke on
                result = Failed(f"decryption failed ({type(exc).__name__})", permanent=True)
            if isinstance(result, Opened):
                opened.append((item, event, result))
            else:
                self._still_shut(item, event, result)
        if not opened:
            return
        # A device the bot has not fetched (or whose list changed) is fetched first.
        stale = {e.sender for _, e, o in opened if self.trust.needs_refresh(e.sender, o.sender_key)}
        try:
            await self.trust.refresh(stale)
        except ApiError as exc:
            log.warning("key query failed (%s); parked events wait for the next sync", exc)
            return
        for item, event, result in opened:
            verdict = self.trust.sender_verdict(
                event.room_id,
                event.sender,
                result.claimed_device,
                result.sender_key,
                result.session_ed25519,
            )
            if result.forwarded:
                verdict = DeviceVerdict.FORWARDED
            raw = {
                "type": result.clear["type"],
                "content": result.clear["content"],
                "event_id": event.event_id,
                "sender": event.sender,
                "origin_server_ts": event.server_timestamp,
            }
            facts = replace(MatrixFacts.from_meta(item.meta), encrypted=True, device=verdict)
            if verdict is DeviceVerdict.TRUSTED and self._needs_file(raw):
                # A trusted member's file is fetched before the event is decided, but off
                # the sync loop: the event stays parked (durable; a restart fetches again)
                # and is released when its file, or why there is none, is stored.
                self._mark_bare(item, raw)
                if event.event_id not in self._fetching:
                    self._fetching[event.event_id] = asyncio.create_task(
                        self._fetch_then_unpark(item, raw, facts), name=f"fetch {event.event_id}"
                    )
                continue
            self._unpark(item, raw, facts)

    def _mark_bare(self, item: InboxItem, raw: dict[str, Any]) -> None:
        """Note on a file without a caption, while it is fetched, that it is one: its
        sender's text typed meanwhile waits behind it for a while (``captions.py``)."""
        ref = parse_media(raw["content"])
        parked = MatrixFacts.from_meta(item.meta)
        if isinstance(ref, MediaRef) and ref.caption is None and not parked.bare_file:
            self.store.inbox.set_meta(item.id, replace(parked, bare_file=True).to_meta())

    def _needs_file(self, raw: dict[str, Any]) -> bool:
        content = raw.get("content")
        return (
            isinstance(content, dict)
            and parse_media(content) is not None
            and self.store.media.get(str(raw["event_id"])) is None
        )

    async def _fetch_then_unpark(
        self, item: InboxItem, raw: dict[str, Any], facts: MatrixFacts
    ) -> None:
        event_id = str(raw["event_id"])
        try:
            async with self._fetch_slots:
                await fetch_media(self.client, self.store, self.config, raw)
            self._unpark(item, raw, facts)
            self.on_work()
        except Exception:  # stays parked; the next sync fetches it again
            log.exception("fetching the file of %s failed", event_id)
        finally:
            self._fetching.pop(event_id, None)

    def _unpark(self, item: InboxItem, raw: dict[str, Any], facts: MatrixFacts) -> None:
        sender = str(raw["sender"])
        self.store.inbox.unpark(item.id, json.dumps(raw).encode(), facts.to_meta())
        if self.store.kv.get(f"matrix.withheld_told.{sender}"):
            self.store.kv.put(f"matrix.withheld_told.{sender}", "")
        log.info("event %s decrypted; sending device %s", raw["event_id"], facts.device)

    async def close(self) -> None:
        """Stop the fetches under way; their events stay parked for the next start."""
        tasks = list(self._fetching.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _still_shut(self, item: InboxItem, event: MegolmEvent, failed: Failed) -> None:
        if failed.permanent:
            self.store.decide(item.id, InboxState.UNDECRYPTABLE, failed.reason)
            self.notify(
                f"An event from {event.sender} ({event.event_id}) in the incident room "
                f"can never be decrypted: {failed.reason}. It was not relayed."
            )
            return
        withheld = self.store.devices.withheld(event.room_id, event.session_id, event.sender)
        if withheld is not None:
            self._withheld(item, event, withheld[0])
            return
        facts = MatrixFacts.from_meta(item.meta)
        waited = time.time() - (facts.parked_at or time.time())
        if waited > PARK_GIVE_UP:
            self.store.decide(item.id, InboxState.UNDECRYPTABLE, "no key arrived in time")
            return
        if waited > self.config.matrix.undecryptable_report_after and not facts.reported:
            self.notify(admin_never_came(event.sender, event.event_id, waited / 60))
            self.store.inbox.set_meta(item.id, replace(facts, reported=True).to_meta())

    def _withheld(self, item: InboxItem, event: MegolmEvent, code: str) -> None:
        """The sender's client kept the key from the bot: no key will come for this
        message. Closed at once; the sender is told in its thread, the admins once."""
        reason = f"the sender's client withheld the key ({code[:40]})"
        self.store.decide(
            item.id,
            InboxState.UNDECRYPTABLE,
            reason,
            deliveries=[member_notice(event.room_id, event.source, code)],
        )
        told = f"matrix.withheld_told.{event.sender}"
        if self.store.kv.get(told) != code:
            self.store.kv.put(told, code)
            self.notify(admin_withheld(event.sender, event.event_id, code))
        self.on_work()
