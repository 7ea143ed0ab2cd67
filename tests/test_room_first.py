"""A member's mail: its room event is on its way before the list mail takes the event loop.

The decider, the outbox worker and a recording Matrix bridge (a seam we own) run as in the
bot, with the store's syncs deferred as the running bot has them; the list's gpg backend
records when it is asked to encrypt (``HeldBackend``, also a seam we own).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from relay_support import HeldBackend, Setup
from relay_support import decider_of as _decider
from relay_support import hold_mail as _hold
from relay_support import signed_mail as _signed_at
from test_outbox import RecordingBridge, notice
from test_relay import setup as setup  # the fixture

from secir_bot.bridges import Receipt
from secir_bot.config import DeliveryConfig
from secir_bot.model import Channel, InboxState
from secir_bot.outbox import Outbox
from secir_bot.sandbox.operators import wait_until
from secir_bot.store import OutboxRow


class Recorder:
    """What happened, in order: the room's deliveries and the list mail's encryptions."""

    def __init__(self) -> None:
        self.order: list[str] = []


class RoomBridge(RecordingBridge):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    async def deliver(self, row: OutboxRow) -> Receipt:
        self.recorder.order.append(f"room send to {row.target}")
        return await super().deliver(row)


class ListBackend(HeldBackend):
    def __init__(self, setup: Setup, recorder: Recorder) -> None:
        super().__init__(setup.ring)
        self.recorder = recorder
        self.go.set()  # not held: only recorded

    async def sign_encrypt(self, data: bytes, recipients: Sequence[str], signer: str) -> bytes:
        self.recorder.order.append("list mail encrypted")
        return await super().sign_encrypt(data, recipients, signer)


async def test_i11_the_room_send_starts_before_the_list_mail_is_encrypted(setup: Setup) -> None:
    setup.store.defer_syncs()  # as in the running bot: the outbox syncs before each send
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(3)
    recorder = Recorder()
    processor = _decider(setup, list_fpr)
    _hold(processor, ListBackend(setup, recorder))
    await processor.fanout.keyring.usable_for_encryption([])  # the key listing cached
    cfg = DeliveryConfig(retry_base=0.01, retry_max=0.02, give_up_after=3600)
    outbox = Outbox(setup.store, {Channel.MATRIX: RoomBridge(recorder)}, cfg, notice, "!c:x")
    processor.on_queued = outbox.wake
    processor.room_handed_over = lambda: outbox.handed_over(Channel.MATRIX)
    worker = asyncio.create_task(outbox.run())
    try:
        await wait_until(lambda: outbox.idle(Channel.MATRIX) or None, 30, "the outbox idle")
        raw = await _signed_at(setup, list_fpr, int(time.time()), b"resolver down\n")
        item, _ = setup.store.inbox.accept("email", "<first@relay.test>", raw)

        assert (await processor.decide(item)).state == InboxState.RELAYED
        await processor.list_mail.idle()

        room = setup.config.matrix.incident_room
        assert recorder.order == [f"room send to {room}", "list mail encrypted"]
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def test_i11_a_busy_outbox_does_not_hold_the_list_mail(setup: Setup) -> None:
    """While the worker is delivering (here: held until the end), the decider does not wait."""
    list_fpr = await setup.ring.generate("list", "list@relay.test")
    await setup.add(2)
    recorder = Recorder()
    stuck, release = asyncio.Event(), asyncio.Event()

    class StuckBridge(RoomBridge):
        async def deliver(self, row: OutboxRow) -> Receipt:
            stuck.set()
            await release.wait()  # no answer until the test ends
            return await super().deliver(row)

    processor = _decider(setup, list_fpr)
    _hold(processor, ListBackend(setup, recorder))
    cfg = DeliveryConfig(retry_base=0.01, retry_max=0.02, give_up_after=3600)
    outbox = Outbox(setup.store, {Channel.MATRIX: StuckBridge(recorder)}, cfg, notice, "!c:x")
    setup.store.outbox.enqueue(notice("an earlier notice"))
    processor.on_queued = outbox.wake
    processor.room_handed_over = lambda: outbox.handed_over(Channel.MATRIX)
    worker = asyncio.create_task(outbox.run())
    try:
        await asyncio.wait_for(stuck.wait(), 30)
        raw = await _signed_at(setup, list_fpr, int(time.time()), b"resolver down\n")
        item, _ = setup.store.inbox.accept("email", "<second@relay.test>", raw)

        outcome = await asyncio.wait_for(processor.decide(item), 60)
        await asyncio.wait_for(processor.list_mail.idle(), 60)

        assert outcome.state == InboxState.RELAYED
        assert recorder.order == ["list mail encrypted"]
        assert len(setup.store.outbox.due(Channel.EMAIL, now=float("inf"))) == 1
    finally:
        release.set()
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
