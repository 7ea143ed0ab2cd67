"""Backscatter (issue 6): refused mail cannot flood the control room or a member's mailbox.

Forged and replayed mail used to make the list send one notice (and, for a signer, one
encrypted answer) per mail: 199 notices and 109 answers in one black-box run. Now at most
``delivery.notices_per_hour`` go out per sender and hour; the rest are counted, and the last
one allowed says that more are held back.
"""

from __future__ import annotations

from test_rejections import positive_control

from secir_bot.model import Channel, InboxState
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World

# Ceilings for a loaded machine, not measurements: the bot works off a backlog here.
BACKLOG = 120.0


def _all_decided(world: World, message_ids: list[str]) -> bool:
    """Whether every mail of ``message_ids`` is in the inbox and decided."""
    assert world.app is not None
    inbox = world.app.store.inbox
    items = [inbox.item(Channel.EMAIL, mid) for mid in message_ids]
    return all(
        item is not None and inbox.state(item.id)[0] not in (InboxState.NEW, InboxState.PARKED)
        for item in items
    )


def _outbox(world: World, needle: bytes = b"") -> list[tuple[str, bytes]]:
    """(target, payload) of every outbox row, sent or not, whose payload holds ``needle``."""
    assert world.app is not None
    rows = world.app.store.db.execute(
        "SELECT target, payload FROM outbox WHERE instr(payload, ?) > 0 ORDER BY id", [needle]
    )
    return [(str(target), bytes(payload)) for target, payload in rows.fetchall()]


async def test_notices_and_answers_are_limited_per_sender(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup(delivery_extra="notices_per_hour = 2")
    await world.start_bot()
    alice, bob = world.mail["alice"], world.mail["bob"]

    sent: list[str] = []
    # Five unencrypted mails with Bob's address forged in From: two notices, no answer.
    for n in range(5):
        sent.append(f"<BS-FORGED-{n}@attacker.test>")
        forgery = (
            f"From: {bob.name} <{bob.address}>\r\nTo: {world.list_address}\r\n"
            f"Subject: s\r\nMessage-ID: {sent[-1]}\r\n\r\nforged {n}\r\n"
        ).encode()
        await alice.send_raw(world.list_address, forgery)

    # One of Bob's signed mails, captured and replayed four times under new Message-IDs:
    # each replay is refused, and Bob, whose signature it is, hears of it twice at most.
    msgid, data = await bob.compose(world.list_address, world.list_fpr, "s", "BS-ORIGINAL")
    await bob.send_raw(world.list_address, data)
    sent.append(msgid)
    # Captured, then replayed: the original is in before the copies. (Sent back to back,
    # Postfix may hand a copy to Dovecot first; the copy is then the one relayed and the
    # original the refused "replay", which this test does not count as one.)
    await wait_until(lambda: _all_decided(world, [msgid]), BACKLOG, "the original decided")
    for n in range(4):
        sent.append(f"<BS-REPLAY-{n}@attacker.test>")
        replay = data.replace(msgid.encode(), sent[-1].encode())
        await bob.send_raw(world.list_address, replay)

    # Mails of different senders are decided side by side (imap.parallel_decisions), so the
    # good mail below may be out before the flood is decided: wait for the flood itself.
    await wait_until(lambda: _all_decided(world, sent), BACKLOG, "the flood decided")
    await positive_control(world, "all clear after the flood", timeout=BACKLOG)

    forged = _outbox(world, b"BS-FORGED-")
    assert [target for target, _ in forged] == [world.control_room] * 2
    assert b"Further notices about refused mail from this sender are held back" in forged[-1][1]
    replayed = _outbox(world, b"BS-REPLAY-")
    assert [target for target, _ in replayed] == [world.control_room] * 2
    # The answers are encrypted to Bob: count them by their target, then read them as Bob.
    assert len([t for t, _ in _outbox(world) if t == bob.address]) == 2

    def answers() -> list[str]:
        return [m.text for m in bob.seen if "was not relayed" in m.text]

    await bob.wait_for_mail(lambda _m: len(answers()) >= 2, BACKLOG, "two answers")
    assert len(answers()) == 2
    assert all("received before" in text for text in answers())
    assert "Further answers like this one are held back for an hour" in answers()[-1]
