"""The outbox worker with a recording bridge (a seam we own): order, retries, dead letters."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from secir_bot.bridges import Receipt
from secir_bot.config import DeliveryConfig
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.model import Channel, LinkKind
from secir_bot.outbox import Outbox
from secir_bot.store import NewDelivery, OutboxRow, Store

CONTROL = "!control:test"


class RecordingBridge:
    """Delivers by recording; ``failures`` maps a payload to the errors to raise first."""

    channel = Channel.MATRIX

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.failures: dict[bytes, list[Exception]] = {}

    async def run(self) -> None:  # pragma: no cover - not used by these tests
        raise NotImplementedError

    async def deliver(self, row: OutboxRow) -> Receipt:
        errors = self.failures.get(row.payload)
        if errors:
            raise errors.pop(0)
        self.sent.append((row.target, row.payload))
        event_id = f"$event{len(self.sent)}"
        # As the Matrix bridge does: a post's event id is its link.
        return Receipt(event_id, link=(LinkKind.EVENT, event_id) if row.kind == "post" else None)

    async def close(self) -> None:
        pass


@pytest.fixture
def store() -> Iterator[Store]:
    d = Path(tempfile.mkdtemp(prefix="ob"))
    s = Store.open(d / "store", create=True)
    yield s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def notice(text: str) -> NewDelivery:
    return NewDelivery(
        channel=Channel.MATRIX,
        target=CONTROL,
        kind="notice",
        payload=json.dumps({"content": {"body": text}}).encode(),
    )


def make(store: Store, bridge: RecordingBridge, give_up: float = 3600) -> Outbox:
    cfg = DeliveryConfig(retry_base=0.01, retry_max=0.02, give_up_after=give_up)
    return Outbox(store, {Channel.MATRIX: bridge}, cfg, notice, CONTROL)


def row(store: Store, target: str, payload: bytes) -> None:
    store.outbox.enqueue(
        NewDelivery(channel=Channel.MATRIX, target=target, kind="post", payload=payload)
    )


async def drain_until_empty(outbox: Outbox, store: Store) -> None:
    deadline = time.monotonic() + 5
    while store.outbox.counts().get("pending"):
        assert time.monotonic() < deadline, store.outbox.counts()
        await outbox.drain(Channel.MATRIX)


async def test_transient_failure_holds_its_target_only_and_is_retried(store: Store) -> None:
    bridge = RecordingBridge()
    bridge.failures[b"root"] = [TransientDeliveryError("503")]
    row(store, "!incident", b"root")
    row(store, "!incident", b"reply")
    row(store, CONTROL, b"other room")
    outbox = make(store, bridge)
    await outbox.drain(Channel.MATRIX)
    # The reply waits behind its root; the other room goes on.
    assert bridge.sent == [(CONTROL, b"other room")]
    await drain_until_empty(outbox, store)
    assert [p for _, p in bridge.sent] == [b"other room", b"root", b"reply"]
    assert store.outbox.counts() == {"sent": 3}


async def test_an_unexpected_error_is_retried_and_stops_nothing(store: Store) -> None:
    """A library's surprise (nio's KeyError when a room key is replaced while it is shared,
    seen in a full run) is retried like a transient failure instead of ending the worker."""
    bridge = RecordingBridge()
    bridge.failures[b"root"] = [KeyError("!incident")]
    row(store, "!incident", b"root")
    row(store, CONTROL, b"other room")
    outbox = make(store, bridge)
    await outbox.drain(Channel.MATRIX)
    assert bridge.sent == [(CONTROL, b"other room")]
    await drain_until_empty(outbox, store)
    assert [p for _, p in bridge.sent] == [b"other room", b"root"]
    assert store.outbox.counts() == {"sent": 2}


async def test_permanent_failure_is_a_dead_letter_with_a_notice(store: Store) -> None:
    bridge = RecordingBridge()
    bridge.failures[b"doomed"] = [PermanentDeliveryError("M_FORBIDDEN")]
    row(store, "!incident", b"doomed")
    row(store, "!incident", b"next")
    outbox = make(store, bridge)
    await drain_until_empty(outbox, store)
    assert store.outbox.counts() == {"dead": 1, "sent": 2}
    notices = [json.loads(p)["content"]["body"] for t, p in bridge.sent if t == CONTROL]
    assert len(notices) == 1
    assert "failed for good" in notices[0] and "M_FORBIDDEN" in notices[0]
    assert (("!incident", b"next")) in bridge.sent


async def test_a_transient_failure_past_the_deadline_becomes_dead(store: Store) -> None:
    bridge = RecordingBridge()
    bridge.failures[b"old"] = [TransientDeliveryError("timeout")] * 3
    row(store, "!incident", b"old")
    outbox = make(store, bridge, give_up=0.0)
    await drain_until_empty(outbox, store)
    assert store.outbox.counts().get("dead") == 1
    assert not [p for _, p in bridge.sent if p == b"old"]


async def test_a_dead_control_room_notice_does_not_notify_again(store: Store) -> None:
    bridge = RecordingBridge()
    store.outbox.enqueue(notice("first"))
    bridge.failures[json.dumps({"content": {"body": "first"}}).encode()] = [
        PermanentDeliveryError("not in room")
    ]
    outbox = make(store, bridge)
    await drain_until_empty(outbox, store)
    assert store.outbox.counts() == {"dead": 1}
    assert bridge.sent == []


async def test_delivered_post_is_linked_to_its_event(store: Store) -> None:
    bridge = RecordingBridge()
    store.outbox.enqueue(
        NewDelivery(
            channel=Channel.MATRIX, target="!incident", kind="post", payload=b"x", post_uid="p1"
        )
    )
    await make(store, bridge).drain(Channel.MATRIX)
    assert store.posts.links_of("p1", "event") == ["$event1"]
