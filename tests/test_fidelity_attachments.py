"""Attachments in mail (issue 10): the walker over real clients' shapes, the limits, safe
file names, and the list's MIME body with files, round-tripped through real gpg.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import gzip
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
from servers import GpgWorld

from secir_bot.crypto import Keyring
from secir_bot.fidelity.attachments import (
    Attachment,
    AttachmentLimits,
    check_all,
    safe_filename,
    walk,
)
from secir_bot.fidelity.charsets import part_text
from secir_bot.fidelity.fromhtml import html_to_matrix, room_text
from secir_bot.fidelity.fromtext import text_to_matrix
from secir_bot.fidelity.mailparts import OutgoingFile, mail_body
from secir_bot.fidelity.reasons import Refusal
from secir_bot.mime import parse_decrypted
from secir_bot.mime.compose import ListHeaders, compose_outer

CORPUS = Path(__file__).parent / "corpus"
ALICE = "alice@test.example"


def parsed(data: bytes | str) -> Message:
    raw = (CORPUS / data).read_bytes() if isinstance(data, str) else data
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def corpus_b64(name: str, filename: str) -> bytes:
    """The base64 body of ``filename``'s part in a corpus file, decoded independently of
    the email package."""
    text = (CORPUS / name).read_text("ascii", errors="replace").replace("\r\n", "\n")
    start = text.index(f'filename="{filename}"')
    body = text[text.index("\n\n", start) + 2 :]
    return base64.b64decode(body[: body.index("\n\n")])


# -- the walker on the corpus ----------------------------------------------------------------


def test_issue10_thunderbird_attachments_are_read_not_dropped() -> None:
    """zone-report.csv and roll-log.gz arrived as "[attachments not relayed: …]"."""
    name = "decrypted-thunderbird-flowed-with-attachments.txt"
    parts = walk(parsed(name))
    assert [(a.filename, a.content_type, a.inline) for a in parts.attachments] == [
        ("zone-report.csv", "text/csv", False),
        ("roll-log.gz", "application/gzip", False),
    ]
    csv, log = parts.attachments
    assert csv.data == b"tld,server,status\n.nl,ns1.example.nl,ok\n.br,a.dns.br.test,lame\n"
    assert log.data == corpus_b64(name, "roll-log.gz")
    assert gzip.decompress(log.data).startswith(b"2025-03-04T09:00:01Z rollover step 3")
    # The sender's public key, which Thunderbird attaches, is skipped on purpose, visibly.
    assert parts.skipped == ("OpenPGP_0x1A2B3C4D5E6F7081.asc",)
    assert parts.refusals == ()
    assert parts.text is not None and parts.text.flowed


def test_thunderbird_text_becomes_matrix_html_with_folded_tail() -> None:
    parts = walk(parsed("decrypted-thunderbird-flowed-with-attachments.txt"))
    assert parts.text is not None
    out = text_to_matrix(parts.text.text, flowed=parts.text.flowed, delsp=parts.text.delsp)
    assert out.formatted_body.startswith(
        "<p>Hi all,</p><p>the KSK rollover of .nl is paused at step 3. The zone report and "
        "the roll log are attached; please check whether your validators still accept the "
        "old key.</p>"
    )
    assert "<details><summary>On 04/03/2025 09:30, Bob Silva wrote: (2 lines)</summary>" in (
        out.formatted_body
    )
    # The quoted flowed lines are one paragraph again.
    assert "Our resolvers at .br log bogus answers since this morning.</p>" in out.formatted_body


def test_mutt_inline_pcap_and_rfc2231_name() -> None:
    name = "decrypted-mutt-latin1-qp-rfc2231-name.txt"
    parts = walk(parsed(name))
    pcap, overview = parts.attachments
    assert (pcap.filename, pcap.content_type, pcap.inline) == (
        "capture.pcap",
        "application/vnd.tcpdump.pcap",
        True,
    )
    assert pcap.data == corpus_b64(name, "capture.pcap")
    assert overview.filename == "Übersicht Zöne.txt"
    assert overview.data.decode("utf-8") == "Zöne: 3 Einträge geprüft\r\n"
    assert parts.text is not None
    html = text_to_matrix(parts.text.text).formatted_body
    assert "<pre><code>example.de.\t\t300\tIN\tA\t192.0.2.66" in html  # the dig lines only
    assert html.startswith("<p>Grüße aus Köln,</p>")


def test_outlook_related_image_encoded_word_name_and_cp1252() -> None:
    parts = walk(parsed("decrypted-outlook-cp1252-related-cid-image.txt"))
    image, pdf = parts.attachments
    assert (image.filename, image.content_type, image.inline, image.content_id) == (
        "image001.png",
        "image/png",
        True,
        "image001.png@01DB8C.5A0B1C20",
    )
    assert pdf.filename == "Übersicht Registrar.pdf"
    assert pdf.data.startswith(b"%PDF-1.4")
    # The plain alternative is the body, read as Windows-1252 although labelled Latin-1.
    assert parts.text is not None and parts.html is None
    assert "the “registrar lock” bypass – cost so far € 12.000." in parts.text.text
    out = text_to_matrix(parts.text.text)
    assert "<details><summary>Earlier message (" in out.formatted_body


def test_html_only_mail_with_tracker_and_quote() -> None:
    parts = walk(parsed("decrypted-html-only-gmail-quote-tracker.txt"))
    assert parts.text is None and parts.html is not None
    out = html_to_matrix(parts.html)
    assert "track.mail.test" not in out.formatted_body
    assert "document.location" not in out.formatted_body
    assert '<a href="https://cert.pt.test/advisory/7">advisory 7</a>' in out.formatted_body
    assert "<details><summary>On Tue, 4 Mar 2025 at 09:30, Bob Silva" in out.formatted_body
    assert out.body.startswith("Confirmed from our side: *.pt* is _not_ affected.")


def test_existing_corpus_attachment_mail() -> None:
    parts = walk(parsed("decrypted-with-attachment.txt"))
    assert [a.filename for a in parts.attachments] == [
        "incident-report.pdf",
        "iocs.csv",
        "журнал.log",
    ]
    assert parts.text is not None
    assert parts.text.text == "Attached: the report and the indicator list."


# -- limits and refusals -----------------------------------------------------------------------


def mixed(*files: tuple[str, str, bytes]) -> Message:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg.set_content("see attached")
    for filename, ctype, data in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return parsed(msg.as_bytes())


def codes(refusals: tuple[Refusal, ...]) -> list[tuple[str, dict[str, str | int]]]:
    return [(r.code, r.params) for r in refusals]


def test_issue10_limits_per_attachment_and_per_post() -> None:
    limits = AttachmentLimits(max_bytes=100, max_total_bytes=150, max_count=2)
    msg = mixed(
        ("a.bin", "application/octet-stream", b"a" * 101),
        ("b.bin", "application/octet-stream", b"b" * 60),
        ("c.bin", "application/octet-stream", b"c" * 1),
    )
    parts = walk(msg, limits)
    assert codes(parts.refusals) == [
        ("attachment-too-large", {"name": "a.bin", "size": 101, "limit": 100}),
        ("too-many-attachments", {"count": 3, "limit": 2}),
        ("attachments-too-large", {"size": 162, "limit": 150}),
    ]
    assert parts.refusals[0].text() == (
        "the attachment a.bin is 101 bytes, more than the list's limit of 100 bytes per attachment"
    )


def test_executables_are_blocked_by_type_name_or_content() -> None:
    parts = walk(
        mixed(
            ("report.pdf", "application/pdf", b"MZ\x90\x00 really a PE file"),
            ("tool.exe", "application/octet-stream", b"harmless bytes"),
            ("setup.bin", "application/x-msdownload", b"x"),
            ("script.sh", "text/x-sh", b"#!/bin/sh\n"),
        )
    )
    assert codes(parts.refusals) == [
        ("attachment-type-blocked", {"name": "report.pdf", "type": "application/x-msdownload"}),
        ("attachment-type-blocked", {"name": "tool.exe", "type": "application/x-msdownload"}),
        ("attachment-type-blocked", {"name": "setup.bin", "type": "application/x-msdownload"}),
    ]


def test_allowed_types_are_a_whitelist() -> None:
    limits = AttachmentLimits(allowed_types=("image/*", "application/pdf"))
    parts = walk(
        mixed(("a.png", "image/png", b"\x89PNG"), ("b.zip", "application/zip", b"PK")), limits
    )
    assert codes(parts.refusals) == [
        ("attachment-type-not-allowed", {"name": "b.zip", "type": "application/zip"})
    ]


def test_check_all_on_no_attachments() -> None:
    assert check_all((), AttachmentLimits()) == ()
    assert Attachment("x", "text/plain", b"abc").size == 3


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\report.pdf", "report.pdf"),
        ("invoice\u202efdp.exe", "invoice_fdp.exe"),  # right-to-left override
        ("line\r\nX-Injected: 1.txt", "line__X-Injected: 1.txt"),
        ("...hidden", "hidden"),
        ("CON.txt", "_CON.txt"),
        ("=?utf-8?B?w5xiZXJzaWNodC5wZGY=?=", "Übersicht.pdf"),
        ("", "attachment-1.pdf"),
        (None, "attachment-1.pdf"),
        ("/", "attachment-1.pdf"),
        ("a" * 300 + ".csv", "a" * 146 + ".csv"),
    ],
)
def test_safe_filename(name: str | None, safe: str) -> None:
    assert safe_filename(name, "application/pdf") == safe


# -- the list's MIME body with files ----------------------------------------------------------

FILES = (
    OutgoingFile("zone-report.csv", "text/csv", b"tld,status\n.nl,ok\n"),
    OutgoingFile("журнал отчёт.log", "text/plain", "строка 1\n".encode()),
    OutgoingFile("roll-log.gz", "application/gzip", gzip.compress(b"x" * 5000, mtime=0)),
    OutgoingFile("../evil\r\nX-Injected: yes", "text/html\r\nX-Evil: 1", b"<b>x</b>"),
    OutgoingFile("random.bin", "application/octet-stream", hashlib.sha512(b"r").digest() * 300),
)


def test_mail_body_with_files_round_trips_through_the_walker() -> None:
    body = mail_body("The text.\n-- \nsig", html="<p>The text.</p>", files=FILES)
    raw = body.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b'protected-headers="v1"' in head and b"multipart/mixed" in head
    assert b"X-Injected" not in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n\r\n")[0]
    for line in raw.split(b"\r\n"):
        assert line.isascii() and len(line) <= 998
    parts = walk(parsed(raw))
    assert parts.text is not None and parts.text.text == "The text.\n-- \nsig"
    assert [(a.filename, a.data) for a in parts.attachments] == [
        ("zone-report.csv", FILES[0].data),
        ("журнал отчёт.log", FILES[1].data),
        ("roll-log.gz", FILES[2].data),
        ("evil__X-Injected: yes", FILES[3].data),
        ("random.bin", FILES[4].data),
    ]
    assert parts.attachments[3].content_type == "application/octet-stream"


def test_mail_body_text_only_is_a_single_part() -> None:
    body = mail_body("only text")
    assert body.get_content_type() == "text/plain"
    assert body.get_param("protected-headers") == "v1"


@pytest.fixture(scope="module")
def rings(gpg_world: GpgWorld) -> Iterator[tuple[Keyring, str, Keyring]]:
    """The list's keyring (its own new key, Alice's public key) and Alice's own keyring."""
    home = Path(tempfile.mkdtemp(prefix="g"))
    ring = Keyring.create(home)
    alice_home = gpg_world.make_home([ALICE])
    try:

        async def setup() -> str:
            fpr = await ring.generate("SECIR list", "secir@lists.secir.test")
            await ring.import_key(gpg_world.export_public(ALICE))
            gpg_world.gpg(alice_home, "--import", input=(await ring.export_public(fpr)).encode())
            return fpr

        list_fpr = asyncio.run(setup())
        yield ring, list_fpr, Keyring(alice_home)
    finally:
        ring.close()
        shutil.rmtree(home, ignore_errors=True)


async def test_issue10_files_survive_real_gpg_byte_for_byte(
    rings: tuple[Keyring, str, Keyring], gpg_world: GpgWorld
) -> None:
    """Matrix → mail: the files go inside the one signed+encrypted body; a member's gpg
    decrypts it, the list's signature checks, and every file comes back identical."""
    ring, list_fpr, alice = rings
    headers = (
        b"From: SECIR <secir@lists.secir.test>\r\nTo: secir@lists.secir.test\r\n"
        b"Subject: files\r\nMessage-ID: <files-1@lists.secir.test>\r\n"
    )
    inner = headers + mail_body("See the files.", files=FILES).as_bytes()
    armored = await ring.sign_encrypt(inner, [gpg_world.fingerprint(ALICE)], list_fpr)
    result = await alice.decrypt(armored)
    assert result.ok and result.valid and result.signer == list_fpr
    assert result.data == inner
    parts = walk(parsed(result.data))
    assert [a.data for a in parts.attachments] == [f.data for f in FILES]
    # Today's codec still reads the text of such a mail (and names the files).
    content = parse_decrypted(result.data)
    assert content.text == "See the files." and content.subject == "files"


async def test_default_limits_keep_the_list_mail_under_common_size_limits(
    rings: tuple[Keyring, str, Keyring], gpg_world: GpgWorld
) -> None:
    """The largest post the default limits let through, in incompressible files, still
    makes a mail under Postfix's default message_size_limit (10,240,000 bytes)."""
    ring, list_fpr, _ = rings
    limits = AttachmentLimits()
    files = [
        OutgoingFile("capture.pcap.gz", "application/gzip", os.urandom(limits.max_bytes)),
        OutgoingFile(
            "shot.png", "image/png", os.urandom(limits.max_total_bytes - limits.max_bytes)
        ),
    ]
    assert (
        check_all(tuple(Attachment(f.filename, f.content_type, f.data) for f in files), limits)
        == ()
    )
    inner = b"Subject: big\r\n" + mail_body("Two big files.", files=files).as_bytes()
    armored = await ring.sign_encrypt(inner, [gpg_world.fingerprint(ALICE)], list_fpr)
    lists = ListHeaders("SECIR", "secir@lists.secir.test", "secir.test", "o@secir.test", "SECIR")
    raw = compose_outer(
        armored=armored, from_label=None, lists=lists, message_id="<big@x>", to=lists.address
    )
    assert len(raw) < 10_240_000


def test_outlook_html_alternative_shows_its_own_image_as_its_alt_text() -> None:
    """When the HTML is used (an Outlook mail's HTML part): the cid: image is its alt text
    (the part itself is relayed as an encrypted file), the Word markup is gone and the
    tail is folded."""
    msg = parsed("decrypted-outlook-cp1252-related-cid-image.txt")
    html_part = next(p for p in msg.walk() if p.get_content_type() == "text/html")
    assert any(a.content_id for a in walk(msg).attachments)  # the part that is relayed
    out = html_to_matrix(part_text(html_part).text)
    assert "<img" not in out.formatted_body and "[Registry logo]" in out.formatted_body
    assert "MsoNormal" not in out.formatted_body and "o:p" not in out.formatted_body
    assert "“registrar lock” bypass – cost so far € 12.000." in out.formatted_body
    assert "<details><summary>Quoted text</summary>" in out.formatted_body
    assert out.body.endswith("> Did anyone else see this?")


def test_room_text_picks_plain_then_html() -> None:
    flowed = room_text(walk(parsed("decrypted-thunderbird-flowed-with-attachments.txt")))
    assert "<p>the KSK rollover of .nl is paused at step 3. The zone report" in (
        flowed.formatted_body
    )
    html = room_text(walk(parsed("decrypted-html-only-gmail-quote-tracker.txt")))
    assert "<b>.pt</b>" in html.formatted_body
    with_file = room_text(walk(mixed(("a.bin", "application/octet-stream", b"x"))))
    assert with_file.formatted_body == "<p>see attached</p>"
