"""The room's events sent several at once (``delivery.matrix_parallel``): their lane keys,
what overlaps and what keeps its order, and what a failing row still holds back. The
bridge is a recording one (a seam we own); the rows are the Matrix renderer's."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from secir_bot.bridges import Receipt
from secir_bot.bridges.matrix.render import MatrixRenderer
from secir_bot.config import DeliveryConfig
from secir_bot.errors import TransientDeliveryError
from secir_bot.model import Channel, File, LinkKind, Member, Post
from secir_bot.outbox import Outbox, matrix_keys
from secir_bot.store import NewDelivery, OutboxRow, Store
from secir_bot.store import posts as posts_table

ROOM = "!incident:test"
CONTROL = "!control:test"
GATE = 5.0  # seconds a send waits for a second one to be under way (a ceiling)


@pytest.fixture
def store() -> Iterator[Store]:
    d = Path(tempfile.mkdtemp(prefix="ol"))
    s = Store.open(d / "store", create=True)
    yield s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def member(store: Store, n: int) -> Member:
    return store.members.add(
        tld="nl",
        tld_display=".nl",
        name=f"M {n}",
        email=f"m{n}@test",
        fingerprint=f"{n:02d}" * 20,
        matrix_id=None,
        channels=frozenset({Channel.EMAIL}),
    )


def post(
    store: Store, uid: str, author: Member, parent: Post | None = None, **more: object
) -> Post:
    made = Post(
        uid=uid,
        origin=Channel.EMAIL,
        author=author,
        subject=uid,
        body=f"text of {uid}",
        parent_uid=parent.uid if parent else None,
        root_uid=(parent.root_uid or parent.uid) if parent else None,
        **more,  # type: ignore[arg-type]
    )
    with store.transaction() as tx:
        posts_table.insert(tx, made, time.time())
    return made


def queue(store: Store, *deliveries: NewDelivery) -> list[OutboxRow]:
    for d in deliveries:
        store.outbox.enqueue(d)
    return store.outbox.pending(Channel.MATRIX)[-len(deliveries) :]


def notice(text: str, room: str = CONTROL) -> NewDelivery:
    return MatrixRenderer().notice(room, text)


def test_lane_keys_name_thread_post_edit_and_author(store: Store) -> None:
    m1, m2, m3 = member(store, 1), member(store, 2), member(store, 3)
    root = post(store, "a1", m1)
    reply = post(store, "a2", m2, root, files=(File("log.txt", "text/plain", b"log"),))
    other = post(store, "b1", m3)
    same_author = post(store, "c1", m1)
    edit = post(store, "a2fix", m2, reply, corrects="a2")
    r = MatrixRenderer()
    rows = queue(
        store,
        r.post(root, ROOM),
        r.post(reply, ROOM),
        *r.files(reply, ROOM),
        r.post(other, ROOM),
        r.post(same_author, ROOM),
        r.post(edit, ROOM),
        notice("one", ROOM),
        notice("two", ROOM),
        notice("three", CONTROL),
    )
    k_root, k_reply, k_file, k_other, k_same, k_edit, k_n1, k_n2, k_n3 = (
        matrix_keys(store, row) for row in rows
    )
    assert f"{ROOM} thread:a1" in k_root & k_reply  # a reply waits for its root
    assert f"{ROOM} post:a2" in k_reply & k_file  # a post's files follow it
    assert f"{ROOM} post:a2" in k_edit  # an edit waits for the post it edits
    assert f"{ROOM} author:{m1.id}" in k_root & k_same  # one sender's posts in order
    assert not k_other & (k_root | k_reply | k_edit | k_same)  # another thread and author
    assert not k_same & k_reply
    assert k_n1 == k_n2 == {f"{ROOM} notices"}  # notices of a room in order
    assert not k_n3 & k_n1  # the control room's are not held by the incident room's
    assert all(key.startswith(ROOM) for key in k_root | k_reply | k_file | k_edit)


class GatedBridge:
    """Records each send's start and end; a send waits (up to GATE) for a second one to be
    under way, so sends that may overlap do. ``fail`` raises for a payload's first try
    and sets ``failed``; a send in ``after_failure`` starts only once that happened."""

    channel = Channel.MATRIX

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.in_flight = 0
        self.most = 0
        self.two = asyncio.Event()
        self.fail: set[str] = set()
        self.failed = asyncio.Event()
        self.after_failure: set[str] = set()

    async def run(self) -> None:  # pragma: no cover - not used by these tests
        raise NotImplementedError

    async def deliver(self, row: OutboxRow) -> Receipt:
        name = row.post_uid or "notice"
        if name in self.after_failure:
            await asyncio.wait_for(self.failed.wait(), GATE)
            self.two.set()  # the send it overlapped with is over: no need to wait
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.log.append(("start", name))
        try:
            if name in self.fail:
                self.fail.discard(name)
                self.failed.set()
                raise TransientDeliveryError("503")
            if self.in_flight >= 2:
                self.two.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.two.wait(), GATE)
            self.two.set()  # one wait is enough: alone, the others go on at once
            self.log.append(("end", name))
            event = f"${name}-{len(self.log)}"
            return Receipt(event, link=(LinkKind.EVENT, event))
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass

    def ended(self) -> list[str]:
        return [name for what, name in self.log if what == "end"]


def outbox(store: Store, bridge: GatedBridge, parallel: int) -> Outbox:
    cfg = DeliveryConfig(
        retry_base=0.01, retry_max=0.02, give_up_after=3600, matrix_parallel=parallel
    )
    return Outbox(store, {Channel.MATRIX: bridge}, cfg, notice, CONTROL)


def two_threads(store: Store) -> list[Post]:
    """a1 <- a2 (thread a, by m1 then m2), b1 <- b2 (thread b, by m3 then m4)."""
    m1, m2, m3, m4 = (member(store, n) for n in (1, 2, 3, 4))
    a1, b1 = post(store, "a1", m1), post(store, "b1", m3)
    a2, b2 = post(store, "a2", m2, a1), post(store, "b2", m4, b1)
    r = MatrixRenderer()
    queue(store, *(r.post(p, ROOM) for p in (a1, b1, a2, b2)))
    return [a1, b1, a2, b2]


async def test_threads_are_sent_at_once_each_in_order(store: Store) -> None:
    two_threads(store)
    bridge = GatedBridge()
    await outbox(store, bridge, 4).drain(Channel.MATRIX)
    assert store.outbox.counts() == {"sent": 4}
    assert bridge.most >= 2  # the two threads' sends overlapped
    log = bridge.log
    # Within a thread, a reply started only after its root's send had ended.
    assert log.index(("end", "a1")) < log.index(("start", "a2"))
    assert log.index(("end", "b1")) < log.index(("start", "b2"))
    # The reply's relation was made from its root's event, recorded before it was sent.
    assert store.posts.links_of("a1", LinkKind.EVENT)


async def test_parallel_one_sends_one_at_a_time_in_creation_order(store: Store) -> None:
    two_threads(store)
    bridge = GatedBridge()
    await outbox(store, bridge, 1).drain(Channel.MATRIX)
    assert bridge.most == 1
    assert bridge.ended() == ["a1", "b1", "a2", "b2"]


async def test_a_failing_row_holds_back_its_rooms_rows_not_yet_started(store: Store) -> None:
    """a1 fails while b1 is under way: b1 is delivered, but neither a2 (its thread) nor b2
    (another thread, not started yet) overtake a1 in this round; the next rounds send
    them, a2 after a1."""
    two_threads(store)
    bridge = GatedBridge()
    bridge.fail.add("a1")
    bridge.after_failure.add("b1")
    box = outbox(store, bridge, 2)
    await box.drain(Channel.MATRIX)
    assert bridge.ended() == ["b1"]
    assert store.outbox.counts() == {"pending": 3, "sent": 1}
    deadline = time.monotonic() + 10
    while store.outbox.counts().get("pending"):
        assert time.monotonic() < deadline, store.outbox.counts()
        await box.drain(Channel.MATRIX)
    ended = bridge.ended()
    assert sorted(ended) == ["a1", "a2", "b1", "b2"]
    assert ended.index("a1") < ended.index("a2")
