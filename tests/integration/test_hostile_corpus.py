"""The hostile corpus through the real stack: Postfix -> Dovecot -> the bot -> Synapse.

Every case (tests/corpus/hostile/, plus the cases built with this world's keys) must end
rejected or dropped with its reason; nothing of any case may reach the room or a member's
mailbox; the bot keeps running; and a good mail sent after them all still arrives.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import aiosmtplib
import pytest
from test_rejections import positive_control

from secir_bot.sandbox.hostile import MARKER, Case, crypto_cases, read_corpus, static_cases
from secir_bot.sandbox.operators import MailOperator, wait_until
from secir_bot.sandbox.world import World

CORPUS = Path(__file__).parent.parent / "corpus" / "hostile"
CASE_LINE = re.compile(rb"(?m)^X-Corpus-Case: ([\w.-]+)\r?$")


def test_the_stored_corpus_is_what_the_script_makes() -> None:
    stored = {c.name: c for c in read_corpus(CORPUS)}
    made = {c.name: c for c in static_cases()}
    assert stored == made  # regenerate with scripts/gen_hostile_corpus.py


@pytest.mark.timeout(600)  # a ceiling for a loaded machine: the waits below add up
async def test_hostile_corpus_is_refused_and_the_list_keeps_working(
    world: World, outsider: MailOperator
) -> None:
    assert world.config is not None and world.app is not None
    alice, bob = world.mail["alice"], world.mail["bob"]
    # A mail the list relays (its copy is replayed below) and one the list sent (a loop).
    _, relayed = await alice.compose(world.list_address, world.list_fpr, "r", "CORPUS-FIRST")
    await alice.send_raw(world.list_address, relayed)
    list_copy = await bob.wait_for_mail(lambda m: "CORPUS-FIRST" in m.text)
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
    assert len(cases) >= 200
    list_id = world.config.list.list_id

    started = time.monotonic()
    refused_by_postfix: list[str] = []
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=world.smtp_port, timeout=60) as smtp:
        for case in cases:
            data = case.filled(bob.address, world.list_address, list_id)
            try:
                await smtp.sendmail(outsider.address, [world.list_address], data)
            except aiosmtplib.SMTPResponseException:
                refused_by_postfix.append(case.name)
    assert len(refused_by_postfix) <= len(cases) // 20, refused_by_postfix

    store = world.app.store

    def outcomes() -> dict[str, tuple[str, str]]:
        rows = store.db.execute("SELECT raw, state, reason FROM inbox WHERE source = 'email'")
        found = {}
        for raw, state, reason in rows.fetchall():
            # The servers put Return-Path, Delivered-To and Received lines before it.
            case = CASE_LINE.search(bytes(raw)[:4096])
            if case and state != "new":
                found[case.group(1).decode()] = (state, reason or "")
        return found

    expected = {c.name for c in cases} - set(refused_by_postfix)

    def all_decided() -> dict[str, tuple[str, str]] | None:
        found = outcomes()
        return found if expected <= found.keys() else None

    try:
        decided = await wait_until(all_decided, 240, "every case decided")
    except TimeoutError:
        missing = sorted(expected - outcomes().keys())
        raise AssertionError(f"not decided: {missing}") from None
    elapsed = time.monotonic() - started

    def wrong(case: Case) -> str | None:
        state, reason = decided[case.name]
        if state not in case.outcome.split("|") or not any(r in reason for r in case.reasons):
            return f"{case.name}: {state} ({reason})"
        return None

    failures = [w for c in cases if c.name in expected and (w := wrong(c))]
    assert not failures, "\n".join(failures)

    assert world.app_task is not None and not world.app_task.done()
    # The bot may still be sending the corpus' notices and answers: a ceiling for a
    # loaded machine, not a measurement.
    await positive_control(world, "all clear after the hostile corpus", timeout=120)
    assert not [e for e in world.mx["carol"].events if MARKER in e.body]
    for key in ("alice", "bob"):
        member = world.mail[key]
        texts = [(await member.read(raw)).text for raw in await member.fetch_all()]
        assert not [t for t in texts if MARKER in t]  # answers quote no sender text either
    print(f"\n{len(cases)} hostile mails decided in {elapsed:.1f} s")
