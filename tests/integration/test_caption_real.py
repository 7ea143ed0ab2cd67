"""A room file without a caption and the text its sender types next: one list mail (issue 10).

Element has no caption field: a responder uploads ``capture.pcap``, then types what it is.
Real servers: the member's nio client uploads the file encrypted and posts the events, the
mail member reads the list's mail over IMAP, decrypts it with their key and compares the
attachment byte for byte. Absence of a mail is proved by a later marker post, never by
waiting.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import sqlite3

import pytest
from nio import UploadResponse

from secir_bot.bridges.matrix.media import encrypt_media, media_content
from secir_bot.model import Channel, InboxState
from secir_bot.sandbox.operators import MailOperator, ReceivedMail, wait_until
from secir_bot.sandbox.world import World
from tests.integration.test_faults import BotProcess
from tests.integration.test_fidelity_wired import PNG, hold_downloads, post_file

PCAP = b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + secrets.token_bytes(20_000)
PCAP_TYPE = "application/vnd.tcpdump.pcap"
LONG = 300.0  # a wait that only the sender's next event ends within any test's ceiling


async def _world(world: World, wait: float) -> World:
    await world.setup(matrix_extra=f"caption_wait_seconds = {wait}")
    await world.start_bot()
    return world


def files_of(mail: ReceivedMail) -> list[tuple[str | None, bytes]]:
    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    parts = [p for p in inner.walk() if p.get_filename()]
    return [(p.get_filename(), p.get_payload(decode=True)) for p in parts]


async def marker(world: World, bob: MailOperator, text: str) -> None:
    """A later post of the same member, mailed: everything before it was decided."""
    await world.mx["alice"].send(world.incident_room, text)
    await bob.wait_for_mail(lambda m: text in m.text, timeout=60, what=text)


async def waiting_file(world: World, name: str) -> str:
    """The event id of a room file once fetched and decrypted (waiting for its text)."""
    app = world.app
    assert app is not None
    found: str = await wait_until(
        lambda: next(
            (
                i.source_id
                for i in app.store.inbox.pending(Channel.MATRIX)
                if name.encode() in i.raw
            ),
            None,
        ),
        60,
        f"{name} fetched and waiting",
    )
    return found


def mails_with(bob: MailOperator, text: str) -> list[ReceivedMail]:
    return [m for m in bob.seen if text in m.text]


async def test_issue10_a_file_and_the_text_after_it_in_the_thread_are_one_mail(
    world_unstarted: World,
) -> None:
    world = await _world(world_unstarted, LONG)
    alice, bob = world.mx["alice"], world.mail["bob"]
    root = await alice.send(world.incident_room, "Attack on ns1 this morning")
    await bob.wait_for_mail(lambda m: "Attack on ns1" in m.text)
    await post_file(alice, world.incident_room, "capture.pcap", PCAP_TYPE, PCAP, None, root)
    said = "pcap of the attack on ns1, 10:02-10:05 UTC"
    await alice.send(world.incident_room, said, thread_root=root)

    mail = await bob.wait_for_mail(lambda m: said in m.text, timeout=120, what="the file")
    assert mail.signer == world.list_fpr
    assert mail.subject == "Re: Attack on ns1 this morning"
    assert files_of(mail) == [("capture.pcap", PCAP)]
    assert "File: capture.pcap" not in mail.text
    await marker(world, bob, "marker after the capture")
    assert len(mails_with(bob, said)) == 1  # the text is not mailed again on its own
    assert not mails_with(bob, "File: capture.pcap")


async def test_issue10_when_the_wait_ends_the_file_goes_alone_and_a_late_text_apart(
    world_unstarted: World,
) -> None:
    world = await _world(world_unstarted, 1.0)
    alice, bob = world.mx["alice"], world.mail["bob"]
    await post_file(alice, world.incident_room, "resolver.log", "text/plain", PCAP[:4000])
    alone = await bob.wait_for_mail(lambda m: "File: resolver.log" in m.text, timeout=60)
    assert files_of(alone) == [("resolver.log", PCAP[:4000])]
    await alice.send(world.incident_room, "the log of the resolver, much later")
    late = await bob.wait_for_mail(lambda m: "resolver, much later" in m.text)
    assert files_of(late) == []


async def test_issue10_another_members_post_is_not_held_behind_a_waiting_file(
    world_unstarted: World,
) -> None:
    world = await _world(world_unstarted, LONG)
    alice, carol, bob = world.mx["alice"], world.mx["carol"], world.mail["bob"]
    await post_file(alice, world.incident_room, "zone.txt", "text/plain", PCAP[:3000])
    file_id = await waiting_file(world, "zone.txt")
    await carol.send(world.incident_room, "Urgent: ns2 stopped answering")
    await bob.wait_for_mail(lambda m: "ns2 stopped answering" in m.text)
    assert world.app is not None
    item = world.app.store.inbox.item(Channel.MATRIX, file_id)
    assert item is not None and item.state is InboxState.NEW  # still waiting for its text
    assert not mails_with(bob, "zone.txt")
    await alice.send(world.incident_room, "zone excerpt of .nl at 10:00")
    mail = await bob.wait_for_mail(lambda m: "zone excerpt" in m.text, timeout=120)
    assert files_of(mail) == [("zone.txt", PCAP[:3000])]


async def test_issue10_a_command_or_another_file_next_sends_the_file_alone(
    world_unstarted: World,
) -> None:
    world = await _world(world_unstarted, LONG)
    alice, bob = world.mx["alice"], world.mail["bob"]
    await post_file(alice, world.incident_room, "first.log", "text/plain", b"first\n" * 50)
    await alice.send(world.incident_room, "!help")
    first = await bob.wait_for_mail(lambda m: "File: first.log" in m.text, timeout=120)
    assert files_of(first) == [("first.log", b"first\n" * 50)]
    await post_file(alice, world.incident_room, "second.log", "text/plain", b"second\n" * 50)
    await post_file(alice, world.incident_room, "third.log", "text/plain", b"third\n" * 50)
    second = await bob.wait_for_mail(lambda m: "File: second.log" in m.text, timeout=120)
    assert files_of(second) == [("second.log", b"second\n" * 50)]
    await alice.send(world.incident_room, "and the third one is the resolver's")
    third = await bob.wait_for_mail(lambda m: "the third one" in m.text, timeout=120)
    assert files_of(third) == [("third.log", b"third\n" * 50)]
    assert not mails_with(bob, "!help")


async def test_issue10_a_restart_during_the_wait_loses_and_repeats_nothing(
    world_unstarted: World,
) -> None:
    world = await _world(world_unstarted, LONG)
    alice, bob = world.mx["alice"], world.mail["bob"]
    await post_file(alice, world.incident_room, "before.pcap", PCAP_TYPE, PCAP)
    await waiting_file(world, "before.pcap")
    await world.stop_bot()
    await alice.send(world.incident_room, "capture taken before the restart")
    await world.start_bot()
    mail = await bob.wait_for_mail(lambda m: "before the restart" in m.text, timeout=120)
    assert files_of(mail) == [("before.pcap", PCAP)]
    await marker(world, bob, "marker after the restart")
    assert len(mails_with(bob, "before the restart")) == 1
    assert not mails_with(bob, "File: before.pcap")


async def _upload(world: World, data: bytes) -> dict[str, object]:
    """``data`` uploaded encrypted by Alice's client; its ``file`` object."""
    encrypted = encrypt_media(data)
    resp, _ = await world.mx["alice"].client.upload(
        lambda *_: encrypted.ciphertext,
        content_type="application/octet-stream",
        filesize=len(encrypted.ciphertext),
    )
    assert isinstance(resp, UploadResponse), resp
    return encrypted.file(str(resp.content_uri))


async def test_issue10_an_image_with_a_thumbnail_is_mailed_whole_with_the_text_after_it(
    world_unstarted: World,
) -> None:
    """Element sends a picture with an encrypted thumbnail (``info.thumbnail_file``): the
    mail carries the picture itself, byte for byte, and not the thumbnail."""
    world = await _world(world_unstarted, LONG)
    alice, bob = world.mx["alice"], world.mail["bob"]
    thumbnail = PNG[:16] + secrets.token_bytes(500)
    content = media_content(
        filename="graph.png", content_type="image/png", data=PNG, file=await _upload(world, PNG)
    )
    content["info"]["thumbnail_file"] = await _upload(world, thumbnail)
    content["info"]["thumbnail_info"] = {"mimetype": "image/png", "size": len(thumbnail)}
    content.pop("m.mentions")
    sent = await alice.client.room_send(
        world.incident_room, "m.room.message", content, ignore_unverified_devices=True
    )
    assert getattr(sent, "event_id", None), sent
    await alice.send(world.incident_room, "queries per second at ns1, the peak at 13:05")
    mail = await bob.wait_for_mail(lambda m: "the peak at 13:05" in m.text, timeout=120)
    assert files_of(mail) == [("graph.png", PNG)]


async def test_issue10_the_text_typed_while_the_file_downloads_waits_for_it(
    world_unstarted: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's download is held at the bridge's own seam (``fetch._read_capped``): the
    text its sender posts meanwhile must not go out alone, but with the file."""
    world = await _world(world_unstarted, LONG)
    gate, started = hold_downloads(monkeypatch)
    alice, bob = world.mx["alice"], world.mail["bob"]
    try:
        await post_file(alice, world.incident_room, "slow.pcap", PCAP_TYPE, PCAP)
        await asyncio.wait_for(started.wait(), 60)
        text = await alice.send(world.incident_room, "capture of the slow resolver")
        app = world.app
        assert app is not None
        await wait_until(
            lambda: (
                (item := app.store.inbox.item(Channel.MATRIX, text)) is not None
                and item.state is InboxState.NEW
            ),
            60,
            "the text decrypted, waiting behind the file",
        )
    finally:
        gate.set()
    mail = await bob.wait_for_mail(lambda m: "slow resolver" in m.text, timeout=120)
    assert files_of(mail) == [("slow.pcap", PCAP)]
    await marker(world, bob, "marker after the slow capture")
    assert len(mails_with(bob, "slow resolver")) == 1
    assert not mails_with(bob, "File: slow.pcap")


def _file_state(world: World, name: str) -> str | None:
    """The inbox state of a room file, read from the store of a bot in another process."""
    assert world.config is not None
    db = sqlite3.connect(world.config.store_path / "secir.sqlite")
    try:
        row = db.execute(
            "SELECT state FROM inbox WHERE source = 'matrix' AND state != 'parked'"
            " AND instr(CAST(raw AS TEXT), ?) > 0",
            [name],
        ).fetchone()
    finally:
        db.close()
    return None if row is None else str(row[0])


@pytest.mark.timeout(300)
async def test_issue10_secir_bot_run_killed_during_the_wait_loses_and_repeats_nothing(
    world_unstarted: World,
) -> None:
    """``secir-bot run`` is killed (SIGKILL) while a file waits for its text; the text is
    posted while the bot is down. After the start: one mail, the file byte for byte."""
    world = world_unstarted
    await world.setup(matrix_extra=f"caption_wait_seconds = {LONG}")
    assert world.config is not None and world.admin is not None
    bot_id = world.config.matrix.user_id
    bot = BotProcess(world)
    alice, bob = world.mx["alice"], world.mail["bob"]
    bot.start()
    try:
        for op in (world.admin, *world.mx.values()):
            await op.wait_joined(world.incident_room, [bot_id], timeout=60)
        await alice.know_devices_of(bot_id, timeout=60)
        await post_file(alice, world.incident_room, "killed.pcap", PCAP_TYPE, PCAP)
        await wait_until(lambda: _file_state(world, "killed.pcap") == "new", 60, "the file held")
        bot.kill()
        await alice.send(world.incident_room, "capture from before the kill")
        bot.start()
        mail = await bob.wait_for_mail(lambda m: "before the kill" in m.text, timeout=120)
        assert files_of(mail) == [("killed.pcap", PCAP)]
        await alice.send(world.incident_room, "marker after the kill")
        await bob.wait_for_mail(lambda m: "marker after the kill" in m.text, timeout=60)
        assert len(mails_with(bob, "before the kill")) == 1
        assert not mails_with(bob, "File: killed.pcap")
        assert await bot.stop() == 0
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- bot log ---\n{bot.tail()}") from None
    finally:
        await bot.end()
