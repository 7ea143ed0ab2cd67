"""A room file is fetched off the Matrix sync loop (issue 10 follow-up), real servers.

The download is held at the bridge's own download seam (``fetch._read_capped``) until the
test lets it go: a text posted after the file must reach the list meanwhile, and the file
must still arrive once its download ends.
"""

from __future__ import annotations

import asyncio
import email
import email.policy

import pytest

from secir_bot.bridges.matrix import fetch
from secir_bot.sandbox.world import World
from tests.integration.test_fidelity_wired import LOG_4K, hold_downloads, post_file


async def test_f_media_slow_download_does_not_delay_later_text(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, started = hold_downloads(monkeypatch)
    alice, bob = world.mx["alice"], world.mail["bob"]
    try:
        await post_file(alice, world.incident_room, "slow.log", "text/plain", LOG_4K, "Slow file")
        await asyncio.wait_for(started.wait(), 20)
        await alice.send(world.incident_room, "Text after the slow file")
        await bob.wait_for_mail(lambda m: "Text after the slow file" in m.text)
        assert not [
            m for m in [await bob.read(r) for r in await bob.fetch_all()] if "Slow file" in m.text
        ]
    finally:
        gate.set()
    mail = await bob.wait_for_mail(lambda m: "Slow file" in m.text)
    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    files = [p.get_payload(decode=True) for p in inner.walk() if p.get_filename() == "slow.log"]
    assert files == [LOG_4K]


async def test_f_media_fetch_cut_by_a_stop_resumes_after_restart(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot stops while a file's download hangs: the event stays parked (durable), and
    the next start fetches the file again and relays it."""
    started = asyncio.Event()
    real = fetch._read_capped

    async def hanging(*args: object) -> bytes | None:
        started.set()
        await asyncio.Event().wait()  # never returns: only the stop ends it
        return None

    monkeypatch.setattr(fetch, "_read_capped", hanging)
    alice, bob = world.mx["alice"], world.mail["bob"]
    await post_file(alice, world.incident_room, "cut.log", "text/plain", LOG_4K, "Cut file")
    await asyncio.wait_for(started.wait(), 20)
    await world.stop_bot()
    monkeypatch.setattr(fetch, "_read_capped", real)
    await world.start_bot()
    mail = await bob.wait_for_mail(lambda m: "Cut file" in m.text)
    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    files = [p.get_payload(decode=True) for p in inner.walk() if p.get_filename() == "cut.log"]
    assert files == [LOG_4K]
