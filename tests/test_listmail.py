"""The list mail after the decisions (issue 11): the room leg of a burst never waits on the
encryption of list copies, and the list copies keep each thread's order (real gpg; the list
mail's backend, a seam we own, held by the test)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence

import pytest_asyncio
from relay_support import (
    HeldBackend,
    Setup,
    decider_of,
    hold_mail,
    queued,
    relay_setup,
    signed_mail,
)

from secir_bot.inbox import MAIL_PENDING, Decider
from secir_bot.listmail import ListMail
from secir_bot.model import Channel, Member, Post
from secir_bot.runner import InboxRunner
from secir_bot.sandbox.operators import wait_until
from secir_bot.store import OutboxRow

THREAD = "References: <root@relay.test>\r\n"


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[Setup]:
    async with relay_setup() as s:
        yield s


class FirstHeldBackend(HeldBackend):
    """Holds the first list mail's encryption only; every later one is made at once."""

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        self.calls += 1
        if self.calls == 1:
            await self.go.wait()
        return await self.ring.sign_encrypt(data, list(recipients), signer)


async def _thread(setup: Setup, mails: int, senders: int) -> tuple[Decider, InboxRunner]:
    """``mails`` posts to one thread by ``senders`` members in turn, received, not decided;
    the decider (list mail made by the test's backend) and the email runner (4 at once)."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(4)
    processor = decider_of(setup, list_fpr)
    now = int(time.time())
    for j in range(mails):
        text = f"thread mail {j}\n".encode()
        raw = await signed_mail(setup, list_fpr, now, text, by=j % senders, header=THREAD)
        setup.store.inbox.accept("email", f"<t{j}@relay.test>", raw)
    return processor, InboxRunner(setup.store, processor, Channel.EMAIL, lambda: None, 4)


def _numbers(setup: Setup, rows: list[OutboxRow]) -> list[int]:
    """The mail number of each row's post, in queue order (room rows carry the text)."""
    room = {
        r.post_uid: int(found[1])
        for r in queued(setup, Channel.MATRIX)
        if (found := re.search(rb"thread mail (\d+)", r.payload))
    }
    return [room[r.post_uid] for r in rows if r.post_uid in room]


def _room_rows(setup: Setup) -> list[OutboxRow]:
    return [r for r in queued(setup, Channel.MATRIX) if b"thread mail" in r.payload]


async def test_the_next_mail_of_a_thread_is_in_the_room_while_the_first_is_encrypted(
    setup: Setup,
) -> None:
    processor, runner = await _thread(setup, mails=3, senders=1)  # one sender, one thread
    held = HeldBackend(setup.ring)  # no list copy can be made until the test says so
    hold_mail(processor, held)

    deciding = asyncio.create_task(runner._decide_pending())
    # All three decided (in the room, in order) while the first list mail is still held.
    await wait_until(lambda: len(_room_rows(setup)) == 3, 60, "all three posts in the room")
    await asyncio.wait_for(deciding, 60)
    assert _numbers(setup, _room_rows(setup)) == [0, 1, 2]
    assert held.calls == 1 and queued(setup, Channel.EMAIL) == []
    assert setup.store.inbox.pending(Channel.EMAIL) == []
    assert len(setup.store.kv.prefixed(MAIL_PENDING)) == 3

    held.go.set()
    await asyncio.wait_for(processor.list_mail.idle(), 60)
    assert _numbers(setup, queued(setup, Channel.EMAIL)) == [0, 1, 2]
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}


async def test_a_threads_list_mail_keeps_its_order_when_a_later_one_is_ready_first(
    setup: Setup,
) -> None:
    # Two senders, one thread: only the thread orders them. The first post's encryption is
    # held, the second's would be made at once.
    processor, runner = await _thread(setup, mails=2, senders=2)
    held = FirstHeldBackend(setup.ring)
    hold_mail(processor, held)

    await asyncio.wait_for(runner._decide_pending(), 60)
    assert _numbers(setup, _room_rows(setup)) == [0, 1]
    await wait_until(lambda: held.calls >= 1, 60, "the first list mail's encryption")
    assert queued(setup, Channel.EMAIL) == []  # the second waits for the first

    held.go.set()
    await asyncio.wait_for(processor.list_mail.idle(), 60)
    assert _numbers(setup, queued(setup, Channel.EMAIL)) == [0, 1]


async def test_a_stop_with_list_mail_pending_resumes_each_once_in_decision_order(
    setup: Setup,
) -> None:
    processor, runner = await _thread(setup, mails=3, senders=2)
    held = HeldBackend(setup.ring)
    hold_mail(processor, held)
    await asyncio.wait_for(runner._decide_pending(), 60)
    await wait_until(lambda: held.calls == 1, 60, "the first list mail's encryption")

    await processor.aclose()  # the bot stops: nothing of the list mail was queued
    assert queued(setup, Channel.EMAIL) == []
    assert len(setup.store.kv.prefixed(MAIL_PENDING)) == 3

    restarted = decider_of(setup, processor.s.list_fpr)
    counting = HeldBackend(setup.ring)
    counting.go.set()
    hold_mail(restarted, counting)
    await asyncio.wait_for(restarted.resume(), 60)

    assert counting.calls == 3  # each list mail made once
    assert _numbers(setup, queued(setup, Channel.EMAIL)) == [0, 1, 2]
    assert _numbers(setup, _room_rows(setup)) == [0, 1, 2]  # the room not posted again
    assert setup.store.kv.prefixed(MAIL_PENDING) == {}
    await restarted.resume()  # once only, even when asked again
    assert counting.calls == 3 and len(queued(setup, Channel.EMAIL)) == 3


# -- the stage itself, with a maker held by the test ----------------------------------------


def _post(uid: str, body: str = "b") -> Post:
    author = Member(1, "nl", ".nl", "M", "m@x", "F" * 40, None, frozenset({Channel.EMAIL}))
    return Post(uid=uid, origin=Channel.EMAIL, author=author, subject="s", body=body)


class Maker:
    """Records which list mails were made, each held until its event is set."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.made: list[str] = []
        self.go: dict[str, asyncio.Event] = {}

    async def __call__(self, post: Post, mark: str) -> None:
        self.started.append(post.uid)
        await self.go.setdefault(post.uid, asyncio.Event()).wait()
        self.made.append(post.uid)

    def release(self, uid: str) -> None:
        self.go.setdefault(uid, asyncio.Event()).set()


async def test_the_stage_keeps_order_within_a_lane_and_lets_other_lanes_overtake() -> None:
    maker = Maker()
    stage = ListMail(maker)
    await stage.add(_post("a1"), "m", {"thread:a"})
    await stage.add(_post("b1"), "m", {"thread:b"})
    await stage.add(_post("a2"), "m", {"thread:a", "from:x"})
    await stage.add(_post("x1"), "m", {"from:x"})
    maker.release("a2")
    maker.release("x1")
    maker.release("b1")
    await wait_until(lambda: maker.made == ["b1"], 30, "the other thread's list mail")
    assert maker.started == ["a1", "b1"]  # a2 waits for a1, x1 for a2
    maker.release("a1")
    await asyncio.wait_for(stage.idle(), 30)
    assert maker.made == ["b1", "a1", "a2", "x1"]


async def test_a_full_backlog_makes_the_next_hand_over_wait() -> None:
    maker = Maker()
    stage = ListMail(maker, backlog=2, backlog_bytes=10**6)
    await stage.add(_post("p1"), "m", {"a"})
    await stage.add(_post("p2"), "m", {"b"})
    third = asyncio.create_task(stage.add(_post("p3"), "m", {"c"}))
    await wait_until(lambda: maker.started == ["p1", "p2"], 30, "two list mails started")
    assert not third.done() and len(stage) == 2  # the decision handing it over waits
    maker.release("p2")
    await asyncio.wait_for(third, 30)
    assert len(stage) == 2
    for uid in ("p1", "p3"):
        maker.release(uid)
    await asyncio.wait_for(stage.idle(), 30)
    assert sorted(maker.made) == ["p1", "p2", "p3"]


async def test_the_backlog_is_bounded_in_bytes_but_always_takes_one_post() -> None:
    maker = Maker()
    stage = ListMail(maker, backlog=100, backlog_bytes=1000)
    await stage.add(_post("big", "x" * 5000), "m", {"a"})  # larger than the bound: taken
    second = asyncio.create_task(stage.add(_post("small"), "m", {"b"}))
    await wait_until(lambda: maker.started == ["big"], 30, "the large post's list mail")
    assert not second.done()
    maker.release("big")
    maker.release("small")
    await asyncio.wait_for(second, 30)
    await asyncio.wait_for(stage.idle(), 30)
    assert maker.made == ["big", "small"]


async def test_a_stop_cancels_what_waits_and_what_runs() -> None:
    maker = Maker()
    stage = ListMail(maker)
    await stage.add(_post("p1"), "m", {"a"})
    await stage.add(_post("p2"), "m", {"a"})
    await wait_until(lambda: maker.started == ["p1"], 30, "the first list mail")
    await stage.aclose()
    assert len(stage) == 0 and maker.made == [] and maker.started == ["p1"]
