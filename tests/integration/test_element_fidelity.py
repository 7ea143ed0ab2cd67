"""Message fidelity (issue 10) as an Element user meets it: files, formatting, mentions,
edits and redactions sent and read by matrix-js-sdk with its Rust crypto, the stack of
Element Web, and attachments encrypted by ``matrix-encrypt-attachment`` as Element Web
does. The mail side is Bob, a mail member with his own key, reading the list's mail over
IMAP and decrypting it himself.
"""

from __future__ import annotations

import email
import email.policy
import secrets
import shutil
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from element_client import ElementEvent, ElementOperator, available
from test_element import ERIN, element
from test_fidelity_wired import CSV, PNG, send_entity, with_files

from secir_bot.model import Channel, InboxState
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import DEFAULT_PEOPLE, World

HTML = "org.matrix.custom.html"


def png(width: int, height: int, size: int) -> bytes:
    """The bytes of a PNG as far as a client reads them (signature, IHDR), then noise."""
    head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + width.to_bytes(4) + height.to_bytes(4)
    return head + b"\x08\x06\x00\x00\x00" + secrets.token_bytes(size - len(head) - 5)


# Over 32 KiB: Element Web sends a thumbnail beside it.
SCREENSHOT = png(1600, 900, 48_000)


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if (why := available()) is not None:
        pytest.fail(f"the Element-grade client cannot run: {why}")


@pytest_asyncio.fixture
async def erin(world_unstarted: World) -> AsyncIterator[tuple[World, ElementOperator]]:
    """A world with Erin, whose only client is Element (its default, legacy mode), in the
    incident room and known to the bot."""
    world = world_unstarted
    await world.setup(people=(*DEFAULT_PEOPLE, ERIN))
    await world.start_bot()
    assert world.admin is not None
    op = await element(world, "erin", "legacy")
    try:
        await world.admin.wait_joined(world.incident_room, [op.user_id])
        yield world, op
    finally:
        await op.stop()


def from_bot(world: World, text: str) -> Callable[[ElementEvent], bool]:
    assert world.config is not None
    bot = world.config.matrix.user_id
    return lambda e: e.sender == bot and e.kind == "message" and text in e.body


def files_of(raw: bytes) -> dict[str, tuple[str, bytes]]:
    """The files of a decrypted list mail: name -> (content type, bytes)."""
    inner = email.message_from_bytes(raw, policy=email.policy.default)
    return {
        str(p.get_filename()): (p.get_content_type(), p.get_payload(decode=True))
        for p in inner.walk()
        if p.get_filename()
    }


async def test_element_files_reach_the_mail_member_byte_for_byte(
    erin: tuple[World, ElementOperator],
) -> None:
    world, op = erin
    bob = world.mail["bob"]
    room = world.incident_room
    await op.send_file(room, "zone-report.csv", "text/csv", CSV, caption="Lame delegations in .nl")
    await op.send_file(
        room,
        "traffic.png",
        "image/png",
        PNG,
        caption="**Peak** at 13:05",
        html="<strong>Peak</strong> at 13:05",
    )
    await op.send_file(
        room,
        "screenshot.png",
        "image/png",
        SCREENSHOT,
        caption="The registrar panel",
        thumbnail=png(800, 450, 3000),
    )
    report = await bob.wait_for_mail(lambda m: "Lame delegations" in m.text, what="the CSV")
    graph = await bob.wait_for_mail(lambda m: "*Peak* at 13:05" in m.text, what="the image")
    shot = await bob.wait_for_mail(lambda m: "registrar panel" in m.text, what="the screenshot")
    for mail in (report, graph, shot):
        assert mail.decrypted and mail.signer == world.list_fpr
    assert files_of(report.plaintext) == {"zone-report.csv": ("text/csv", CSV)}
    assert files_of(graph.plaintext) == {"traffic.png": ("image/png", PNG)}
    # The image itself, not its thumbnail.
    assert files_of(shot.plaintext) == {"screenshot.png": ("image/png", SCREENSHOT)}
    # Element's own view of what it sent: the shapes the bot read.
    sent = await op.wait_for(lambda e: e.content.get("filename") == "traffic.png")
    assert sent.content["msgtype"] == "m.image"
    assert sent.content["info"] == {"size": len(PNG), "mimetype": "image/png", "w": 64, "h": 32}
    assert set(sent.content["file"]) >= {"url", "key", "iv", "hashes", "v"}
    thumbnailed = await op.wait_for(lambda e: e.content.get("filename") == "screenshot.png")
    assert thumbnailed.content["info"]["thumbnail_info"]["w"] == 800
    assert (
        thumbnailed.content["info"]["thumbnail_file"]["url"] != thumbnailed.content["file"]["url"]
    )


async def test_mail_attachments_reach_element_byte_for_byte(
    erin: tuple[World, ElementOperator],
) -> None:
    world, op = erin
    bob = world.mail["bob"]
    files = [("zone-report.csv", "text/csv", CSV), ("graph.png", "image/png", PNG)]
    await send_entity(world, bob, with_files(bob, world, "Lame delegations", "See files.", files))
    await op.wait_for(from_bot(world, "Lame delegations"), what="the post's text")
    assert world.config is not None
    bot = world.config.matrix.user_id

    def file_event(name: str) -> Callable[[ElementEvent], bool]:
        return lambda e: e.sender == bot and "file" in e.content and e.body == name

    for name, ctype, data in files:
        event = await op.wait_for(file_event(name), what=name)
        assert event.encrypted
        content = event.content
        assert content["msgtype"] == ("m.image" if ctype.startswith("image/") else "m.file")
        assert content["info"]["mimetype"] == ctype
        assert content["info"]["size"] == len(data)
        assert "url" not in content  # only inside ``file``, with its key
        assert content["m.mentions"] == {} and not event.highlight
        assert await op.download_file(content["file"]) == data


async def test_element_formatting_and_mention_reach_mail_as_plain_text(
    erin: tuple[World, ElementOperator],
) -> None:
    """A bold word, a list and a mention pill, as Element's composer sends them: the mail
    reads the mention as the member's name and ccTLD, without Markdown or HTML."""
    world, op = erin
    carol = world.matrix_ids["carol"]
    await op.call(
        "send",
        room_id=world.incident_room,
        body="Carol Tanaka: **Urgent**: check the glue\n\n- ns1.example.jp\n- ns2.example.jp",
        html=(
            f'<a href="https://matrix.to/#/{carol}">Carol Tanaka</a>: '
            "<strong>Urgent</strong>: check the glue<ul><li>ns1.example.jp</li>"
            "<li>ns2.example.jp</li></ul>"
        ),
        mentions=[carol],
    )
    mail = await world.mail["bob"].wait_for_mail(lambda m: "check the glue" in m.text)
    said = mail.text.split("\n-- \n")[0].strip()  # before the list's signature
    assert said == (
        "Carol Tanaka (.jp): *Urgent*: check the glue\n\n- ns1.example.jp\n- ns2.example.jp"
    )
    assert mail.subject is not None and not mail.subject.startswith("Carol")


async def test_the_bots_posts_ping_nobody_in_element(erin: tuple[World, ElementOperator]) -> None:
    """A mail that names Erin (her display name in Element) is relayed with an explicit,
    empty ``m.mentions``: Element's push rules do not highlight it (without ``m.mentions``
    the legacy display-name rule would). A member's real mention of her is highlighted."""
    world, op = erin
    await op.call("set_name", room_id=world.incident_room, name="Erin Okafor")
    await world.mail["bob"].send(
        world.list_address, world.list_fpr, "Glue records", "Erin Okafor, can you check ns1?"
    )
    relayed = await op.wait_for(from_bot(world, "can you check ns1"), what="the relayed mail")
    assert not relayed.highlight, relayed.content
    assert relayed.content["m.mentions"] == {}
    await world.mx["alice"].send(
        world.incident_room,
        "Erin Okafor: ns2 too, please",
        extra={"m.mentions": {"user_ids": [op.user_id]}},
    )
    pinged = await op.wait_for(lambda e: "ns2 too" in e.body, what="alice's mention")
    assert pinged.highlight


async def test_element_edit_and_redaction_reach_mail_in_the_thread(
    erin: tuple[World, ElementOperator],
) -> None:
    world, op = erin
    bob = world.mail["bob"]
    room = world.incident_room
    original = await op.call("send", room_id=room, body="Resolver outage in AMS since 09:00")
    first = await bob.wait_for_mail(lambda m: "Resolver outage in AMS" in m.text)
    await op.call(
        "edit",
        room_id=room,
        event_id=original,
        body="Resolver outage in **FRA** since 09:00",
        html="Resolver outage in <strong>FRA</strong> since 09:00",
    )
    fixed = await bob.wait_for_mail(lambda m: "FRA" in m.text, what="the correction")
    assert fixed.subject == "[corrected] Resolver outage in AMS since 09:00"
    assert "Erin Okafor (.ng) corrected this message" in fixed.text
    assert "Resolver outage in *FRA* since 09:00" in fixed.text
    assert "* Resolver" not in fixed.text  # the new content, not Element's fallback
    assert fixed.headers["In-Reply-To"] == first.headers["Message-ID"]
    # A reaction is recorded with who reacted how, never mirrored nor answered.
    reaction = await op.call("react", room_id=room, event_id=original, key="👀")
    app = world.app
    assert app is not None

    def decided() -> tuple[InboxState, str | None] | None:
        item = app.store.inbox.item(Channel.MATRIX, reaction)
        state = app.store.inbox.state(item.id) if item else None
        return state if state and state[0] is not InboxState.NEW else None

    state, reason = await wait_until(decided, 30, "the reaction recorded")
    assert state is InboxState.DROPPED and reason is not None and "👀" in reason
    await op.call("redact", room_id=room, event_id=original, reason="wrong site")
    withdrawn = await bob.wait_for_mail(lambda m: "withdrew" in m.text, what="the retraction")
    assert withdrawn.subject == "[withdrawn] Resolver outage in AMS since 09:00"
    assert withdrawn.headers["In-Reply-To"] == first.headers["Message-ID"]
    assert not [e for e in op.events if e.content.get("msgtype") == "m.notice"]


async def test_mail_reaches_element_as_paragraphs_and_a_quote(
    erin: tuple[World, ElementOperator],
) -> None:
    world, op = erin
    text = (
        "Hi all,\n\nwe confirm the hijack of three delegations.\nDetails follow.\n\n"
        "> Did anyone else see NS changes at 06:00?\n> We did.\n\nBob"
    )
    await world.mail["bob"].send(world.list_address, world.list_fpr, "NS hijack", text)
    event = await op.wait_for(from_bot(world, "hijack of three"), what="the mail in Element")
    assert event.encrypted and event.content["format"] == HTML
    html = str(event.content["formatted_body"])
    assert "<pre>" not in html
    assert "<p>we confirm the hijack of three delegations.<br" in html
    assert "<blockquote>" in html and "Did anyone else see NS changes" in html


async def test_element_reply_to_a_relayed_mail_reaches_its_author_in_the_thread(
    erin: tuple[World, ElementOperator],
) -> None:
    """Element's reply (no quoted fallback, the answered event's sender, here the bot, in
    ``m.mentions``) reaches the mail's author as an answer to his mail, without the bot's
    Matrix ID in the text."""
    world, op = erin
    bob = world.mail["bob"]
    assert world.config is not None
    asked = await bob.send(
        world.list_address, world.list_fpr, "Registrar contact", "Who has the contact?"
    )
    relayed = await op.wait_for(from_bot(world, "Who has the contact"), what="the relayed mail")
    await op.call(
        "send", room_id=world.incident_room, body="I do, calling now.", reply_to=relayed.event_id
    )
    sent = await op.wait_for(lambda e: e.body == "I do, calling now.", what="the reply")
    assert sent.content["m.mentions"] == {"user_ids": [world.config.matrix.user_id]}
    answer = await bob.wait_for_mail(lambda m: "calling now" in m.text, what="the answer")
    # It answers the list's copy of the mail, and names Bob's own in its References.
    references = str(answer.headers.get("References", "")).split()
    assert answer.headers["In-Reply-To"] in references and asked in references
    assert answer.subject == "Re: Registrar contact"
    assert world.config.matrix.user_id not in answer.text


@pytest.mark.parametrize("shown", ["display name", "user ID"])
async def test_a_pill_reads_as_the_members_name_whatever_element_showed(
    erin: tuple[World, ElementOperator], shown: str
) -> None:
    """Element writes a pill with the member's display name, or their user ID when they
    set none: either way the mail names the member with their ccTLD."""
    world, op = erin
    carol = world.matrix_ids["carol"]
    label = "Carol Tanaka" if shown == "display name" else carol
    await op.call(
        "send",
        room_id=world.incident_room,
        body=f"{label}: the DS record is back",
        html=f'<a href="https://matrix.to/#/{carol}">{label}</a>: the DS record is back',
        mentions=[carol],
    )
    mail = await world.mail["bob"].wait_for_mail(lambda m: "DS record is back" in m.text)
    assert mail.text.startswith("Carol Tanaka (.jp): the DS record is back"), mail.text
    assert carol not in mail.text


async def test_a_mail_correction_shows_in_element_as_an_edit(
    erin: tuple[World, ElementOperator],
) -> None:
    """A mail member's ``[correction]`` of their own post edits the relayed event: Element
    accepts the bot's edit and shows the corrected text in place of the first."""
    world, op = erin
    bob = world.mail["bob"]
    assert world.config is not None
    msgid = await bob.send(
        world.list_address, world.list_fpr, "Phishing domains", "Block phish-a.example now."
    )
    relayed = await op.wait_for(from_bot(world, "phish-a.example"), what="the relayed mail")
    await bob.send(
        world.list_address,
        world.list_fpr,
        "[correction] Phishing domains",
        "Block phish-b.example now (not phish-a).",
        in_reply_to=msgid,
        references=(msgid,),
    )
    await op.wait_for(from_bot(world, "phish-b.example"), what="the edit")
    view = await op.call(
        "shown", room_id=world.incident_room, event_id=relayed.event_id, edited=True, timeout=30
    )
    assert view["edited_by"] == world.config.matrix.user_id
    assert "phish-b.example" in view["content"]["body"]
    assert "phish-b.example" in view["content"]["formatted_body"]


async def test_a_mail_answering_an_element_post_pings_its_author_in_element(
    erin: tuple[World, ElementOperator],
) -> None:
    """Bob answers Erin's post by mail: the bot's reply in her thread names her in
    ``m.mentions`` and Element highlights it for her, as it does a native reply. A mail that
    answers nobody's post, or Bob's answer to his own post, pings nobody."""
    world, op = erin
    bob = world.mail["bob"]
    erins = await op.call("send", room_id=world.incident_room, body="Is ns1.example.ng lame?")
    asked = await bob.wait_for_mail(lambda m: "ns1.example.ng lame" in m.text, what="her post")
    msgid = asked.headers["Message-ID"]
    await bob.send(
        world.list_address,
        world.list_fpr,
        "Re: Is ns1.example.ng lame?",
        "Yes, since 09:00; ns2 answers.",
        in_reply_to=msgid,
        references=(msgid,),
    )
    answer = await op.wait_for(from_bot(world, "ns2 answers"), what="Bob's answer")
    assert answer.content["m.relates_to"]["m.in_reply_to"] == {"event_id": erins}
    assert answer.highlight, answer.content
    assert answer.content["m.mentions"] == {"user_ids": [op.user_id]}
    # A new thread, and Bob answering himself in it: Erin is not pinged.
    own = await bob.send(world.list_address, world.list_fpr, "Zone walk", "Walking .example.")
    first = await op.wait_for(from_bot(world, "Walking .example"), what="Bob's post")
    await bob.send(
        world.list_address,
        world.list_fpr,
        "Re: Zone walk",
        "Done, nothing odd.",
        in_reply_to=own,
        references=(own,),
    )
    again = await op.wait_for(from_bot(world, "nothing odd"), what="Bob's answer to himself")
    assert again.content["m.relates_to"]["m.in_reply_to"] == {"event_id": first.event_id}
    for event in (first, again):
        assert event.content["m.mentions"] == {} and not event.highlight, event.content
