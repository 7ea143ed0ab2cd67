"""Message fidelity wired into the mirror (issue 10), against the real servers.

Members are real clients: nio devices in the encrypted room, and mail signed with the
member's own key, sent through Postfix, read back over IMAP and decrypted with their key.
The mail that tests build here has shapes the sandbox operator does not write by itself
(legacy charsets, format=flowed, HTML only, files); ``send_entity`` signs and encrypts any
such MIME entity as a member's PGP/MIME mail.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from nio import RoomEncryptedMedia, UploadResponse

from secir_bot import mime
from secir_bot.bridges.matrix import fetch
from secir_bot.bridges.matrix.media import decrypt_media, encrypt_media, media_content
from secir_bot.fidelity.attachments import walk
from secir_bot.fidelity.fromtext import text_to_matrix
from secir_bot.model import Channel, InboxState, LinkKind
from secir_bot.sandbox.operators import MailOperator, MatrixOperator, wait_until
from secir_bot.sandbox.world import World


async def send_entity(world: World, op: MailOperator, entity: bytes) -> str:
    """``entity`` (a MIME entity with its protected headers) as ``op``'s signed and
    encrypted PGP/MIME mail to the list; returns its Message-ID."""
    msgid = make_msgid(domain=op.address.split("@")[1])
    outer = EmailMessage(policy=email.policy.SMTP)
    outer["From"] = f"{op.name} <{op.address}>"
    outer["To"] = world.list_address
    outer["Subject"] = "..."
    outer["Message-ID"] = msgid
    outer["Date"] = format_datetime(datetime.now(UTC))
    armored = await op.keyring.sign_encrypt(entity, [world.list_fpr], op.fingerprint)
    mime.make_pgp_mime(outer, armored)
    await op.send_raw(world.list_address, outer.as_bytes())
    return msgid


def admins_told(world: World, text: str) -> str | None:
    """The bot's notice in the control room that mentions ``text``, once the admin's
    client has it (it arrives after the decision that the test saw)."""
    assert world.admin is not None and world.config is not None
    bot = world.config.matrix.user_id
    return next(
        (
            e.body
            for e in world.admin.events
            if e.room_id == world.control_room and e.sender == bot and text in e.body
        ),
        None,
    )


def protected(op: MailOperator, world: World, subject: str) -> bytes:
    """The protected headers of a member's mail to the list (as Thunderbird writes them)."""
    return (
        f"Subject: {subject}\r\nFrom: {op.name} <{op.address}>\r\n"
        f"To: {world.list_address}\r\nMIME-Version: 1.0\r\n"
    ).encode()


async def test_issue10_mail_reaches_the_room_as_paragraphs_and_quotes_not_one_pre(
    world: World,
) -> None:
    """A mail showed in Element as one monospace block (``<pre>``), quotes and all."""
    bob = world.mail["bob"]
    text = (
        "Hi all,\n\nwe confirm the hijack of three delegations.\nDetails follow.\n\n"
        "> Did anyone else see NS changes at 06:00?\n> We did.\n\nBob"
    )
    await bob.send(world.list_address, world.list_fpr, "NS hijack confirmed", text)
    event = await world.mx["carol"].wait_for_event(
        lambda e: "hijack of three" in e.body, what="the mail in the room"
    )
    html = str(event.content["formatted_body"])
    assert "<pre>" not in html
    assert "<p>we confirm the hijack of three delegations.<br />" in html or (
        "<p>we confirm the hijack of three delegations.<br>" in html
    )
    assert "<blockquote>" in html and "Did anyone else see NS changes" in html
    assert event.content["m.mentions"] == {}
    assert "Bob Silva (.br) by email: NS hijack confirmed" in event.body


async def test_issue10_long_non_ascii_mail_is_cut_to_fit_not_a_dead_letter(world: World) -> None:
    """A long Russian mail became an event over 64 KiB (nio escapes every Cyrillic letter
    as six bytes): the homeserver refused it (M_TOO_LARGE) and nothing reached the room."""
    bob = world.mail["bob"]
    line = "Наблюдаем подмену делегирования нескольких доменов, подробности ниже.\n"
    text = "Коллеги,\n\n" + line * 200 + "\nконец"  # ~14,000 characters, all Cyrillic
    await bob.send(world.list_address, world.list_fpr, "Подмена делегирования", text)
    event = await world.mx["carol"].wait_for_event(
        lambda e: "Подмена делегирования" in e.body, what="the long mail in the room", timeout=30
    )
    assert "cut here: the whole text went out by mail" in event.body
    assert "Наблюдаем подмену" in event.body
    # The other mail member still gets the whole text.
    mail = await world.mail["alice"].wait_for_mail(lambda m: "конец" in m.text)
    assert mail.text.count("Наблюдаем подмену") == 200


@pytest.mark.parametrize(
    ("charset", "cte", "data", "expected"),
    [
        # Windows-1252 bytes labelled ISO-8859-1 (Outlook): the euro, curly quotes, en dash.
        ("iso-8859-1", "8bit", "Kosten 5 € – “dringend”".encode("cp1252"), "5 € – “dringend”"),
        # UTF-8 labelled ISO-8859-1 (mutt with a wrong locale).
        ("iso-8859-1", "8bit", "Zöne für .de – prüfen".encode(), "Zöne für .de – prüfen"),
    ],
)
async def test_issue10_mime_decoder_reads_mislabelled_charsets_without_mojibake(
    world: World, charset: str, cte: str, data: bytes, expected: str
) -> None:
    """The MIME decoder took a part's charset label at its word: Windows-1252 labelled
    Latin-1 showed C1 control characters, UTF-8 labelled Latin-1 showed "ZÃ¶ne"."""
    bob = world.mail["bob"]
    entity = (
        protected(bob, world, f"Charset {charset} {expected[:4]}")
        + f"Content-Type: text/plain; charset={charset}\r\n"
        f"Content-Transfer-Encoding: {cte}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    await send_entity(world, bob, entity)
    event = await world.mx["carol"].wait_for_event(
        lambda e: "Charset" in e.body, what="the mail in the room"
    )
    assert expected in event.body
    mail = await world.mail["alice"].wait_for_mail(lambda m: "Charset" in (m.subject or ""))
    assert expected in mail.text


async def test_issue10_text_csv_part_is_not_silently_dropped(world: World) -> None:
    """A ``text/csv`` part without ``Content-Disposition`` vanished from the relayed post
    without a trace (neither text nor attachment): it is a file now, relayed as one."""
    carol = Files(world.mx["carol"])
    bob = world.mail["bob"]
    entity = (
        protected(bob, world, "IOC table")
        + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe IOCs are attached.\r\n--b1\r\n"
        b"Content-Type: text/csv; charset=utf-8\r\n\r\nioc,kind\r\nbad.example,domain\r\n"
        b"--b1--\r\n"
    )
    await send_entity(world, bob, entity)
    await world.mx["carol"].wait_for_event(
        lambda e: "The IOCs are attached" in e.body, what="the mail in the room"
    )
    await wait_until(lambda: carol.events, 30, "the CSV as a file")
    assert carol.events[0]["content"]["info"]["mimetype"] == "text/csv"
    assert await carol.fetch(carol.events[0]) == b"ioc,kind\r\nbad.example,domain"


async def test_issue10_html_only_mail_shows_sanitised_html_in_the_room(world: World) -> None:
    """HTML-only mail (webmail) reached the room as text: now as Matrix HTML, sanitised,
    and the mail members get its plain text."""
    bob = world.mail["bob"]
    markup = (
        "<html><body><p>Please <b>block</b> these:</p><ul><li>bad.example</li>"
        "<li>worse.example</li></ul><script>alert(1)</script>"
        '<img src="https://tracker.example/p.gif"></body></html>'
    )
    entity = (
        protected(bob, world, "Blocklist update")
        + b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        + markup.encode()
        + b"\r\n"
    )
    await send_entity(world, bob, entity)
    event = await world.mx["carol"].wait_for_event(
        lambda e: "Blocklist update" in e.body, what="the HTML mail in the room"
    )
    html = str(event.content["formatted_body"])
    assert "<b>block</b>" in html or "<strong>block</strong>" in html
    assert "<li>bad.example</li>" in html
    assert "script" not in html and "tracker.example" not in html
    mail = await world.mail["alice"].wait_for_mail(
        lambda m: "Blocklist update" in (m.subject or "")
    )
    assert "bad.example" in mail.text and "<li>" not in mail.text


async def test_issue10_room_formatting_and_mentions_reach_mail_as_text(world: World) -> None:
    """Matrix formatting reached mail as raw Markdown (``**Urgent**``), and a mention became
    a "Carol Tanaka:" prefix that also landed in the mail's subject."""
    carol_id = world.matrix_ids["carol"]
    alice = world.mx["alice"]
    await alice.send(
        world.incident_room,
        "Carol Tanaka: **Urgent**: please check\n\n- ns1\n- ns2",
        extra={
            "format": "org.matrix.custom.html",
            "formatted_body": (
                f'<a href="https://matrix.to/#/{carol_id}">Carol Tanaka</a>: '
                "<strong>Urgent</strong>: please check<ul><li>ns1</li><li>ns2</li></ul>"
            ),
            "m.mentions": {"user_ids": [carol_id]},
        },
    )
    mail = await world.mail["bob"].wait_for_mail(lambda m: "please check" in m.text)
    assert "**Urgent**" not in mail.text
    assert "*Urgent*" in mail.text
    assert "Carol Tanaka (.jp)" in mail.text
    assert "- ns1" in mail.text
    assert mail.subject is not None and not mail.subject.startswith("Carol")
    assert "Urgent" in mail.subject


async def test_issue10_html_alternative_by_config(world_unstarted: World) -> None:
    """``list.html_alternative = true``: the list's mail of a formatted room message has a
    sanitised HTML part beside the text, inside the one encrypted part."""
    world = world_unstarted
    await world.setup(list_extra="html_alternative = true")
    await world.start_bot()
    await world.mx["alice"].send(
        world.incident_room,
        "**Urgent**: rotate keys",
        extra={
            "format": "org.matrix.custom.html",
            "formatted_body": '<strong>Urgent</strong>: rotate <a href="https://x.test/">keys</a>'
            '<img src="mxc://x.test/abc">',
        },
    )
    mail = await world.mail["bob"].wait_for_mail(lambda m: "rotate" in m.text)
    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    kinds = [p.get_content_type() for p in inner.walk()]
    assert kinds[:3] == ["multipart/alternative", "text/plain", "text/html"]
    html_part = next(p for p in inner.walk() if p.get_content_type() == "text/html")
    html = str(html_part.get_content())  # type: ignore[attr-defined]
    assert "<strong>Urgent</strong>" in html and 'href="https://x.test/"' in html
    assert "mxc://" not in html and "<img" not in html


# -- files, mail to the room ---------------------------------------------------------------

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000040000000200806000000"
) + secrets.token_bytes(3000)
CSV = b"tld,server,status\n.nl,ns1.example.nl,ok\n.br,a.dns.br.test,lame\n"
LOG_4K = b"".join(b"2025-03-04T09:00:00Z resolver SERVFAIL\n" for _ in range(100))
GZ = b"\x1f\x8b\x08\x00" + secrets.token_bytes(40_000)  # does not compress, like a real log


class Files:
    """The encrypted file events a member's nio client decrypts."""

    def __init__(self, op: MatrixOperator) -> None:
        self.op = op
        self.events: list[dict[str, Any]] = []

        async def on_media(room: Any, event: RoomEncryptedMedia) -> None:
            self.events.append(event.source)

        op.client.add_event_callback(on_media, RoomEncryptedMedia)

    async def fetch(self, event: dict[str, Any]) -> bytes:
        """The file of a media event, downloaded and decrypted as a member's client does."""
        file = event["content"]["file"]
        resp = await self.op.client.download(file["url"])
        body = getattr(resp, "body", None)
        assert isinstance(body, bytes), resp
        plain = decrypt_media(body, file)
        assert isinstance(plain, bytes), plain
        return plain


def with_files(
    op: MailOperator, world: World, subject: str, text: str, files: list[tuple[str, str, bytes]]
) -> bytes:
    """A Thunderbird-shaped signed entity: the text, then each file as an attachment."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["Subject"] = subject
    msg["From"] = f"{op.name} <{op.address}>"
    msg["To"] = world.list_address
    msg.set_content(text)
    for name, ctype, data in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    msg.set_param("protected-headers", "v1")
    return msg.as_bytes()


async def test_issue10_mail_attachments_reach_the_room_encrypted_and_the_members_by_mail(
    world: World,
) -> None:
    """zone-report.csv and roll-log.gz arrived as "[attachments not relayed: …]": now each
    file is an encrypted file event in the post's thread right after its text, and a file
    in the list's mail to the other mail members, byte for byte on the member side."""
    carol = Files(world.mx["carol"])
    bob = world.mail["bob"]
    files = [
        ("zone-report.csv", "text/csv", CSV),
        ("roll-log.gz", "application/gzip", GZ),
        ("graph.png", "image/png", PNG),
        ("OpenPGP_0xBOB.asc", "application/pgp-keys", b"-----BEGIN PGP PUBLIC KEY BLOCK-----"),
    ]
    entity = with_files(bob, world, "Lame delegations", "See the files.", files)
    await send_entity(world, bob, entity)
    text = await world.mx["carol"].wait_for_event(
        lambda e: "Lame delegations" in e.body, what="the post's text"
    )
    await wait_until(lambda: len(carol.events) >= 3, 30, "three file events")
    got = {e["content"]["body"]: e for e in carol.events}
    assert set(got) == {"zone-report.csv", "roll-log.gz", "graph.png"}  # the key is skipped
    assert got["graph.png"]["content"]["msgtype"] == "m.image"
    assert got["graph.png"]["content"]["info"]["w"] == 64
    assert got["roll-log.gz"]["content"]["msgtype"] == "m.file"
    for name, _, data in files[:3]:
        event = got[name]
        assert event["content"]["m.mentions"] == {}
        relation = event["content"]["m.relates_to"]
        assert relation["rel_type"] == "m.thread" and relation["event_id"] == text.event_id
        assert await carol.fetch(event) == data
    # The text came first: the file events follow it in the room.
    assert "attachments not relayed" not in text.body
    # Alice reads mail: the list's one signed and encrypted mail carries the files.
    mail = await world.mail["alice"].wait_for_mail(lambda m: "See the files." in m.text)
    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    attached = {
        p.get_filename(): p.get_payload(decode=True) for p in inner.walk() if p.get_filename()
    }
    assert attached == {name: data for name, _, data in files[:3]}


async def test_issue10_file_retry_does_not_upload_twice_or_post_a_second_copy(
    world: World,
) -> None:
    """A file row delivered again (a retry after a crash between the send and the outbox's
    commit) reuses its upload and its transaction id: one upload, one event."""
    carol = Files(world.mx["carol"])
    bob = world.mail["bob"]
    entity = with_files(bob, world, "One file", "Retry me.", [("a.csv", "text/csv", CSV)])
    await send_entity(world, bob, entity)
    await wait_until(lambda: carol.events, 30, "the file event")
    app = world.app
    assert app is not None
    post = app.store.posts.for_link(LinkKind.EVENT, carol.events[0]["event_id"])
    assert post is not None
    row = next(r for r in app.store.outbox.of_post(post.uid) if b'"upload"' in r.payload)

    def uploads() -> list[tuple[str, str]]:
        query = "SELECT key, value FROM kv WHERE key LIKE 'matrix.upload.%'"
        return [(str(k), str(v)) for k, v in app.store.db.execute(query).fetchall()]

    before = uploads()
    assert before and before[0][1] == carol.events[0]["content"]["file"]["url"]
    receipt = await app.matrix.deliver(row)
    assert receipt.summary == carol.events[0]["event_id"]
    assert uploads() == before
    # Carol's client has seen everything up to a later message: still one file event.
    await world.mx["alice"].send(world.incident_room, "marker after the retry")
    await world.mx["carol"].wait_for_event(lambda e: "marker after" in e.body)
    assert len(carol.events) == 1


async def test_issue10_mail_with_a_program_is_refused_whole_and_the_sender_told(
    world: World,
) -> None:
    """A file over a limit or of a blocked type refuses the whole post (nobody reads a
    message without the file it speaks of); the sender is answered, the admins told."""
    bob = world.mail["bob"]
    program = b"MZ\x90\x00" + secrets.token_bytes(500)
    entity = with_files(
        bob, world, "Sample", "Here is the sample.", [("invoice.pdf", "application/pdf", program)]
    )
    await send_entity(world, bob, entity)
    answer = await bob.wait_for_mail(lambda m: "invoice.pdf" in m.text, what="the refusal")
    assert "not relayed" in answer.text and "application/x-msdownload" in answer.text
    await wait_until(lambda: admins_told(world, "invoice.pdf"), 20, "the admins told")
    # Decided (the answer went out): nothing of it reached the room.
    assert not [e for e in world.mx["carol"].events if "Here is the sample" in e.body]


# -- files, room to mail ---------------------------------------------------------------


def hold_downloads(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the bot's room-file downloads at the bridge's own seam (``fetch._read_capped``):
    ``started`` is set when a download begins, and it goes on once ``gate`` is set."""
    gate, started = asyncio.Event(), asyncio.Event()
    real = fetch._read_capped

    async def slow(*args: object) -> bytes | None:
        started.set()
        await gate.wait()
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch, "_read_capped", slow)
    return gate, started


async def post_file(
    op: MatrixOperator,
    room: str,
    name: str,
    ctype: str,
    data: bytes,
    caption: str | None = None,
    thread_root: str | None = None,
) -> str:
    """Post ``data`` as Element does in an encrypted room: uploaded encrypted, the key in
    the event's ``file`` object; with a caption when given."""
    encrypted = encrypt_media(data)
    resp, _ = await op.client.upload(
        lambda *_: encrypted.ciphertext,
        content_type="application/octet-stream",
        filesize=len(encrypted.ciphertext),
    )
    assert isinstance(resp, UploadResponse), resp
    text = text_to_matrix(caption) if caption else None
    content = media_content(
        filename=name,
        content_type=ctype,
        data=data,
        file=encrypted.file(str(resp.content_uri)),
        caption=text,
    )
    content.pop("m.mentions")
    if thread_root:
        content["m.relates_to"] = {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": thread_root},
        }
    sent = await op.client.room_send(
        room, "m.room.message", content, ignore_unverified_devices=True
    )
    event_id = getattr(sent, "event_id", None)
    assert event_id, sent
    return str(event_id)


async def test_issue10_room_file_reaches_mail_as_an_attachment_with_its_caption(
    world: World,
) -> None:
    """An encrypted image posted in the room got "m.image messages are not mirrored yet":
    now the bot fetches it at intake (hash checked, decrypted) and the list's one signed
    and encrypted mail carries it, the caption as its text."""
    alice = world.mx["alice"]
    root = await alice.send(world.incident_room, "Traffic graphs of the attack")
    await world.mail["bob"].wait_for_mail(lambda m: "Traffic graphs" in m.text)
    await post_file(
        alice, world.incident_room, "graph.png", "image/png", PNG, "Peak at 13:05", root
    )
    mail = await world.mail["bob"].wait_for_mail(lambda m: "Peak at 13:05" in m.text)
    assert mail.signer == world.list_fpr
    assert mail.subject == "Re: Traffic graphs of the attack"
    inner = email.message_from_bytes(mail.plaintext, policy=email.policy.default)
    files = [p for p in inner.walk() if p.get_filename()]
    assert [(p.get_filename(), p.get_content_type()) for p in files] == [("graph.png", "image/png")]
    assert files[0].get_payload(decode=True) == PNG


async def test_issue10_room_file_over_the_limit_or_unencrypted_is_refused_with_a_notice(
    world_unstarted: World,
) -> None:
    """A file over ``list.max_attachment_bytes``, and a file uploaded without encryption
    (a URL instead of a ``file`` object), are refused: the sender gets a notice in the
    room, the admins are told, nothing is mailed."""
    world = world_unstarted
    await world.setup(list_extra="max_attachment_bytes = 1000")
    await world.start_bot()
    alice = world.mx["alice"]
    await post_file(alice, world.incident_room, "big.log", "text/plain", LOG_4K)
    notice = await alice.wait_for_event(
        lambda e: e.msgtype == "m.notice" and "big.log" in e.body, what="the refusal"
    )
    assert "more than the list's limit of 1000 bytes" in notice.body
    await alice.send(
        world.incident_room,
        "plain.png",
        msgtype="m.image",
        extra={"url": "mxc://test.local/plain", "info": {"mimetype": "image/png"}},
    )
    notice = await alice.wait_for_event(
        lambda e: e.msgtype == "m.notice" and "plain.png" in e.body, what="the refusal"
    )
    assert "without encryption" in notice.body
    await wait_until(lambda: admins_told(world, "big.log"), 20, "the admins told")
    mails = [await world.mail["bob"].read(raw) for raw in await world.mail["bob"].fetch_all()]
    assert not [m for m in mails if "big.log" in m.text or "plain.png" in m.text]


# -- edits, redactions, reactions --------------------------------------------------------


async def test_issue10_room_edit_goes_out_as_a_correction_mail_in_the_thread(
    world: World,
) -> None:
    """An edit was refused with a notice replying to the hidden edit event: now the mail
    members get a correction mail, marked, threaded to the original, with the new text."""
    alice = world.mx["alice"]
    original = await alice.send(world.incident_room, "Resolver outage in AMS since 09:00")
    first = await world.mail["bob"].wait_for_mail(lambda m: "Resolver outage" in m.text)
    await alice.send(
        world.incident_room,
        "* Resolver outage in FRA since 09:00",
        extra={
            "m.new_content": {"msgtype": "m.text", "body": "Resolver outage in FRA since 09:00"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    fixed = await world.mail["bob"].wait_for_mail(lambda m: "FRA since" in m.text)
    assert fixed.subject == "[corrected] Resolver outage in AMS since 09:00"
    assert "Alice Jansen (.nl) corrected this message" in fixed.text
    assert fixed.headers["In-Reply-To"] == first.headers["Message-ID"]
    # No refusal notice in the room (it would answer an event that clients hide).
    await alice.send(world.incident_room, "marker after the edit")
    await world.mail["bob"].wait_for_mail(lambda m: "marker after the edit" in m.text)
    assert not [e for e in alice.events if e.msgtype == "m.notice"]


async def test_issue10_redaction_goes_out_as_a_retraction_notice(world: World) -> None:
    """A redaction was silently ignored: the mail members kept acting on a message its
    author withdrew. Now they get a retraction notice in its thread (mail cannot be
    unsent, and the notice says so)."""
    alice = world.mx["alice"]
    original = await alice.send(world.incident_room, "Block 203.0.113.7 at the edge")
    first = await world.mail["bob"].wait_for_mail(lambda m: "203.0.113.7" in m.text)
    resp = await alice.client.room_redact(world.incident_room, original, reason="wrong IP")
    assert getattr(resp, "event_id", None), resp
    notice = await world.mail["bob"].wait_for_mail(lambda m: "withdrew" in m.text)
    assert notice.subject == "[withdrawn] Block 203.0.113.7 at the edge"
    assert "Mail cannot be unsent" in notice.text
    assert notice.headers["In-Reply-To"] == first.headers["Message-ID"]


async def test_issue10_reactions_are_recorded_not_refused_or_lost(world: World) -> None:
    """Reactions vanished without a trace; they must not be mirrored one by one, nor
    answered with a refusal. Each is recorded in the inbox with who reacted how."""
    alice, carol = world.mx["alice"], world.mx["carol"]
    target = await alice.send(world.incident_room, "Please acknowledge the new contacts")
    resp = await carol.client.room_send(
        world.incident_room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "✅"}},
        ignore_unverified_devices=True,
    )
    reaction = str(getattr(resp, "event_id", ""))
    assert reaction, resp
    app = world.app
    assert app is not None

    def decided() -> tuple[InboxState, str | None] | None:
        item = app.store.inbox.item(Channel.MATRIX, reaction)
        state = app.store.inbox.state(item.id) if item else None
        return state if state and state[0] is not InboxState.NEW else None

    state, reason = await wait_until(decided, 20, "the reaction recorded")
    assert state is InboxState.DROPPED and reason is not None and "✅" in reason
    assert not [e for e in carol.events if e.msgtype == "m.notice"]


async def test_issue10_mail_correction_by_its_author_edits_the_relayed_event(
    world: World,
) -> None:
    """A mail marked ``[correction]`` that answers its author's own post becomes a Matrix
    edit of the relayed event (the room shows it as edited), and a correction mail."""
    bob = world.mail["bob"]
    carol = world.mx["carol"]
    msgid = await bob.send(
        world.list_address, world.list_fpr, "Phishing domains", "Block phish-a.example now."
    )
    relayed = await carol.wait_for_event(lambda e: "phish-a.example" in e.body)
    await bob.send(
        world.list_address,
        world.list_fpr,
        "[correction] Phishing domains",
        "Block phish-b.example now (not phish-a).",
        in_reply_to=msgid,
        references=(msgid,),
    )
    edit = await carol.wait_for_event(lambda e: "phish-b.example" in e.body, what="the edit")
    relation = edit.content["m.relates_to"]
    assert relation == {"rel_type": "m.replace", "event_id": relayed.event_id}
    assert "phish-b.example" in edit.content["m.new_content"]["body"]
    assert edit.content["m.mentions"] == {}
    mail = await world.mail["alice"].wait_for_mail(lambda m: "phish-b.example" in m.text)
    assert mail.subject == "[corrected] Phishing domains"
    assert "Bob Silva (.br) corrected this message by email" in mail.text


async def test_issue10_mail_correction_of_someone_elses_post_is_refused(world: World) -> None:
    """Only the author may correct a post: another member's ``[correction]`` is refused
    with the reason, and the room's event stays as it was."""
    bob, alice = world.mail["bob"], world.mail["alice"]
    msgid = await bob.send(world.list_address, world.list_fpr, "Contacts", "Call ops on 5555.")
    await world.mx["carol"].wait_for_event(lambda e: "Call ops on 5555" in e.body)
    await alice.send(
        world.list_address,
        world.list_fpr,
        "[correction] Contacts",
        "Call ops on 6666.",
        in_reply_to=msgid,
        references=(msgid,),
    )
    answer = await alice.wait_for_mail(lambda m: "only the author" in m.text, what="refusal")
    assert "post your correction as a reply" in answer.text
    assert not [e for e in world.mx["carol"].events if "6666" in e.body]


# -- real clients' shapes from the corpus, through the whole stack -----------------------

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@pytest.mark.parametrize(
    ("name", "subject", "shown"),
    [
        (
            "thunderbird-flowed-with-attachments",
            "Re: KSK rollover .nl paused",
            "The zone report and the roll log are attached",  # flowed lines joined
        ),
        ("mutt-latin1-qp-rfc2231-name", "ns2 answers with a forged A record", "Grüße aus Köln"),
        (
            "outlook-cp1252-related-cid-image",
            "Re: Registrar lock bypass – costs",
            "“registrar lock” bypass – cost so far € 12.000",
        ),
    ],
)
async def test_issue10_real_client_mail_reaches_the_room_with_its_files(
    world: World, name: str, subject: str, shown: str
) -> None:
    """Thunderbird, mutt and Outlook shapes (``tests/corpus``), signed and encrypted by a
    member and sent through Postfix: the room shows the text as written (flowed joined,
    legacy charsets read, the quoted tail folded) and every file, byte for byte, as the
    member's client decrypts it."""
    raw = (CORPUS / f"decrypted-{name}.txt").read_bytes()
    entity = raw.replace(b"secir@lists.secir.test", world.list_address.encode())
    expected = walk(email.message_from_bytes(raw, policy=email.policy.compat32)).attachments
    carol = Files(world.mx["carol"])
    await send_entity(world, world.mail["bob"], entity)
    text = await world.mx["carol"].wait_for_event(
        lambda e: subject in e.body, what=f"the {name} mail in the room"
    )
    assert shown in text.body
    # After the heading, the mail's first paragraph is a paragraph, not one <pre> block.
    body_html = str(text.content["formatted_body"]).split("</p>", 1)[1]
    assert body_html.startswith("<p>"), body_html[:80]
    await wait_until(lambda: len(carol.events) >= len(expected), 30, "the files")
    got = {e["content"]["body"]: await carol.fetch(e) for e in carol.events}
    assert got == {a.filename: a.data for a in expected}


async def test_issue10_edit_of_a_file_caption_is_dropped_quietly(world: World) -> None:
    """An edit whose new content is a file (a caption edited in Element) cannot be mailed
    again; it is dropped with its reason, never answered with a notice to a hidden edit."""
    alice = world.mx["alice"]
    original = await post_file(
        alice, world.incident_room, "graph.png", "image/png", PNG, "Peak at 13:05"
    )
    await world.mail["bob"].wait_for_mail(lambda m: "Peak at 13:05" in m.text)
    edit = await alice.send(
        world.incident_room,
        "* Peak at 13:10",
        extra={
            "m.new_content": {"msgtype": "m.image", "body": "Peak at 13:10"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    app = world.app
    assert app is not None

    def decided() -> tuple[InboxState, str | None] | None:
        item = app.store.inbox.item(Channel.MATRIX, edit)
        state = app.store.inbox.state(item.id) if item else None
        return state if state and state[0] not in (InboxState.NEW, InboxState.PARKED) else None

    state, reason = await wait_until(decided, 20, "the edit decided")
    assert state is InboxState.DROPPED and reason is not None and "m.image" in reason
    await alice.send(world.incident_room, "marker after the caption edit")
    await world.mail["bob"].wait_for_mail(lambda m: "marker after the caption" in m.text)
    assert not [e for e in alice.events if e.msgtype == "m.notice"]
