"""The fault suite's corpus run: every hostile mail, a good one after every twenty.

``secir-bot run`` runs as a process (as in production) while the whole hostile corpus goes
through Postfix and Dovecot, and after every twenty hostile mails a good member mail follows.
Every good mail must reach the room, in order, and nothing hostile may; the bot's memory is
read from ``/proc`` before, during and after, and reported (docs/reliability.md).
Marked slow: ``make faults`` runs it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import aiosmtplib
import pytest
from conftest import outsider_of
from test_faults import BotProcess

from secir_bot.sandbox.hostile import MARKER, crypto_cases, read_corpus
from secir_bot.sandbox.operators import MailOperator, wait_until
from secir_bot.sandbox.world import World

CORPUS = Path(__file__).parent.parent / "corpus" / "hostile"
GOOD_EVERY = 20


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_hostile_corpus_with_a_good_mail_after_every_twenty(
    world_unstarted: World,
) -> None:
    world = world_unstarted
    await world.setup()
    assert world.config is not None and world.admin is not None
    async with outsider_of(world) as outsider:
        await _run(world, outsider)


async def _run(world: World, outsider: MailOperator) -> None:
    assert world.config is not None and world.admin is not None
    bot = BotProcess(world)
    bot.start()
    bot_id = world.config.matrix.user_id
    try:
        await world.admin.wait_joined(world.incident_room, [bot_id], timeout=60)
        for op in world.mx.values():
            await op.wait_joined(world.incident_room, [bot_id], timeout=60)
            await op.know_devices_of(bot_id, timeout=60)
        alice, bob, carol = world.mail["alice"], world.mail["bob"], world.mx["carol"]
        _, relayed = await alice.compose(world.list_address, world.list_fpr, "r", "FC-FIRST")
        await alice.send_raw(world.list_address, relayed)
        list_copy = await bob.wait_for_mail(lambda m: "FC-FIRST" in m.text)
        assert bot.proc is not None
        idle = _memory(bot.proc.pid)
        cases = [
            *read_corpus(CORPUS),
            *await crypto_cases(
                list_address=world.list_address,
                list_fpr=world.list_fpr,
                alice=alice,
                bob=bob,
                outsider=outsider,
                relayed=relayed,
                list_copy=list_copy.raw,
            ),
        ]
        good: list[str] = []
        started = time.monotonic()
        samples = [idle]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=world.smtp_port) as smtp:
            for n, case in enumerate(cases, 1):
                data = case.filled(bob.address, world.list_address, world.config.list.list_id)
                try:
                    await smtp.sendmail(outsider.address, [world.list_address], data)
                except aiosmtplib.SMTPResponseException:
                    pass  # Postfix itself refused it: not the bot's to judge
                if n % GOOD_EVERY == 0:
                    tag = f"FC-GOOD-{n // GOOD_EVERY:03d}"
                    _, mail = await alice.compose(world.list_address, world.list_fpr, "g", tag)
                    await smtp.sendmail(alice.address, [world.list_address], mail)
                    good.append(tag)
                    samples.append(_memory(bot.proc.pid))

        def arrived() -> list[str]:
            return [w for e in carol.events for w in e.body.split() if w.startswith("FC-GOOD-")]

        await wait_until(lambda: set(good) <= set(arrived()), 600, "every good mail in the room")
        elapsed = time.monotonic() - started
        after = _memory(bot.proc.pid)
        assert bot.alive()
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- bot log ---\n{bot.tail()}") from None
    finally:
        if bot.alive():
            await bot.stop()
    assert arrived() == good  # each once, in the order sent
    assert not [e for e in carol.events if MARKER in e.body]
    figures = {
        "hostile": len(cases),
        "good": len(good),
        "seconds": round(elapsed, 1),
        "rss_idle_kib": idle[0],
        "rss_max_sampled_kib": max(s[0] for s in samples),
        "rss_after_kib": after[0],
        "peak_kib": after[1],
    }
    report = os.environ.get("SECIR_FAULT_REPORT")
    if report:
        Path(report).with_suffix(".corpus.json").write_text(json.dumps(figures, indent=2))
    print("fault corpus:", json.dumps(figures))
