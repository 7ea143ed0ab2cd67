"""The inbox runner after a stop: mails whose decision the stop interrupted are decided
first and one at a time, so that the crash guard's count of starts (``MAX_ATTEMPTS``) is
the count of the mail that was being decided when the process died, not of its
neighbours' (real gpg, no servers; the real-server case is test_killburst_guard)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest_asyncio
from relay_support import Setup, decider_of, relay_setup, signed_mail

from secir_bot.model import Channel, Outcome
from secir_bot.runner import InboxRunner
from secir_bot.store import InboxItem


@pytest_asyncio.fixture
async def setup() -> AsyncIterator[Setup]:
    async with relay_setup() as s:
        yield s


async def test_interrupted_mails_are_decided_first_and_alone(setup: Setup) -> None:
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(4)
    processor = decider_of(setup, list_fpr)
    for j in range(8):  # four senders, each mail its own thread: decided four at once
        raw = await signed_mail(
            setup, list_fpr, int(time.time()) + j, f"m {j}\n".encode(), by=j % 4
        )
        setup.store.inbox.accept("email", f"<g-{j}@relay.test>", raw)
    interrupted = [3, 6]  # started before a stop, not finished
    for item_id in interrupted:
        setup.store.inbox.begin_attempt(item_id)
    order: list[int] = []
    beside: dict[int, int] = {}  # item -> most other decisions running during its own
    active: set[int] = set()
    decide = processor.decide

    async def watched(item: InboxItem, caption: InboxItem | None = None) -> Outcome:
        order.append(item.id)
        active.add(item.id)
        for other in active:
            beside[other] = max(beside.get(other, 0), len(active) - 1)
        try:
            return await decide(item, caption)
        finally:
            active.discard(item.id)

    processor.decide = watched  # type: ignore[method-assign]
    runner = InboxRunner(setup.store, processor, Channel.EMAIL, lambda: None, parallel=4)

    await runner._decide_pending()
    await processor.list_mail.idle()

    assert order[:2] == interrupted
    assert all(beside[i] == 0 for i in interrupted), beside
    assert max(beside.values()) > 0  # the others were decided several at once, as before
    assert [setup.store.inbox.state(i)[0] for i in range(1, 9)] == ["relayed"] * 8
