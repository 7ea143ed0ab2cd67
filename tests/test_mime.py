"""Tests for secir_bot.mime against the corpus of real-world mail shapes.

The corpus (``tests/corpus``, described in its README) holds whole received mails
(``*.eml``) and decrypted payloads (``decrypted-*.txt``). The expectations below say what a
correct reader makes of each one; composing is checked by reading our own output back.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path

import pytest

from secir_bot import mime
from secir_bot.mime import (
    ARMOR_BEGIN,
    ARMOR_END,
    ListHeaders,
    MalformedMail,
    clearsigned_block,
    compose_inner,
    compose_outer,
    html_to_text,
    message_id_of,
    parse_decrypted,
    parse_envelope,
)
from secir_bot.sandbox.hostile.base import nested_parts

CORPUS = Path(__file__).parent / "corpus"
# Files saved as a Unix MUA writes them (LF); every other corpus file has CRLF line endings.
LF_FILES = {"mutt-inline-pgp.eml", "clearsigned-inline.eml", "decrypted-inline-clearsigned.txt"}
LIST_ID = "secir.lists.secir.test"
LISTS = ListHeaders(
    name="SECIR",
    address="secir@lists.secir.test",
    list_id=LIST_ID,
    owner="owner@secir.test",
    tag="SECIR",
)
WHEN = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


# -- the corpus itself -------------------------------------------------------------------


def test_corpus_files_are_all_listed_in_the_readme() -> None:
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".eml", ".txt"))

    assert len(files) >= 20
    assert [f for f in files if f"`{f}`" not in readme] == []


@pytest.mark.parametrize(
    "name", sorted(p.name for p in CORPUS.glob("*.*") if p.suffix in (".eml", ".txt"))
)
def test_corpus_line_endings_are_as_saved(name: str) -> None:
    """Guards the corpus against editors and git normalising its line endings."""
    raw = corpus(name)
    if not raw:
        assert name == "empty.eml"  # the one file meant to be empty
        return
    bare_lf = re.search(rb"(?<!\r)\n", raw) is not None
    if name in LF_FILES:
        assert b"\r" not in raw
    else:
        assert not bare_lf
        assert raw.endswith(b"\r\n")


# -- envelopes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    kind: str
    from_addr: str
    subject: str
    message_id: str | None  # None: the sha256 fallback
    automated: str | None = None  # a word the reason must contain; None: not automated
    loop: str | None = None
    list_id: str | None = None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()


ENVELOPES = [
    pytest.param(
        "thunderbird-pgpmime-protected-headers.eml",
        Expect(
            "pgp-mime", "anna@nic.test", "...", "<6b0e2c1d-94a7-4f3b-8d52-1c7e9a0f4b26@nic.test>"
        ),
        id="thunderbird",
    ),
    pytest.param(
        "k9-pgpmime.eml",
        Expect(
            "pgp-mime",
            "bram@registry.nl.test",
            "Re: Phishing wave against registrar accounts",
            "<F1A27C3E-5D0B-4C8E-9E64-2B7A91D0C355@registry.nl.test>",
            in_reply_to=("<3c9d51ae0f7b4e21@lists.secir.test>",),
            references=(
                "<8a1f44c2d09e7b35@lists.secir.test>",
                "<3c9d51ae0f7b4e21@lists.secir.test>",
            ),
        ),
        id="k9",
    ),
    pytest.param(
        "mutt-inline-pgp.eml",
        Expect(
            "inline",
            "jan.novak@nic.cz.test",
            "[SECIR] DNSSEC rollover stuck at publish stage",
            "<20250306065831.bq4tk2xw7hfm3nla@gw.nic.cz.test>",
        ),
        id="mutt",
    ),
    pytest.param(
        "outlook-inline-pgp-in-html-alternative.eml",
        Expect(
            "inline",
            "smarquez@nic.es.test",
            "[SECIR] Resolver abuse from 203.0.113.0/24",
            "<DB9PR06MB7721C3E0A9F54B2D8E16B4A3C9D22@DB9PR06MB7721.eurprd06.prod.outlook.test>",
        ),
        id="outlook",
    ),
    pytest.param(
        "no-message-id.eml",
        Expect("inline", "noc-robot@nic.at.test", "[SECIR] nightly zone check report", None),
        id="no-message-id",
    ),
    pytest.param(
        "iso-8859-1-subject-and-body.eml",
        Expect(
            "plain",
            "francois.levesque@nic.fr.test",
            "Réponse à l'incident du résolveur",
            "<5E2A.7c41b0@webmail.nic.fr.test>",
        ),
        id="iso-8859-1",
    ),
    pytest.param(
        "bounce-dsn.eml",
        Expect(
            "plain",
            "mailer-daemon@mx.lists.secir.test",
            "Undelivered Mail Returned to Sender",
            "<20250311084602.8F1B2C0A55@mx.lists.secir.test>",
            automated="auto-submitted",
        ),
        id="bounce",
    ),
    pytest.param(
        "read-receipt-mdn.eml",
        Expect(
            "plain",
            "rui@cert.pt.test",
            "Return Receipt (displayed) - [SECIR] encrypted message",
            "<a7c03e51-2b8f-4d19-b6e0-93f1c5d8e2a4@cert.pt.test>",
            automated="report",
        ),
        id="mdn",
    ),
    pytest.param(
        "auto-reply-out-of-office.eml",
        Expect(
            "plain",
            "lena@dns.be.test",
            "Automatic reply: [SECIR] encrypted message",
            "<dovecot-sieve-1741697452-480211-0@mail.dns.be.test>",
            automated="auto-submitted",
            in_reply_to=("<4be01c2f93d8a6e5a7c1@lists.secir.test>",),
            references=("<4be01c2f93d8a6e5a7c1@lists.secir.test>",),
        ),
        id="sieve-vacation",
    ),
    pytest.param(
        "exchange-ooo-x-autoreply.eml",
        Expect(
            "plain",
            "marc.weber@registry.lu.test",
            "Out of Office: [SECIR] encrypted message",
            "<9f3c1a7e22b84d0c8b1e5a6d7c2f3e41@EX02.corp.registry.lu.test>",
            automated="X-Autoreply",
            in_reply_to=("<4be01c2f93d8a6e5a7c1@lists.secir.test>",),
        ),
        id="x-autoreply",
    ),
    pytest.param(
        "signed-only-multipart-signed.eml",
        Expect(
            "signed-only",
            "anna@nic.test",
            "[SECIR] forgot to encrypt, sorry",
            "<0d5e8b2a-71c4-4f6e-a3b9-e2c84f17d690@nic.test>",
        ),
        id="multipart-signed",
    ),
    pytest.param(
        "clearsigned-inline.eml",
        Expect(
            "signed-only",
            "jan.novak@nic.cz.test",
            "[SECIR] public notice: maintenance window",
            "<20250313160540.x7mkq3vd2pr9tz4c@gw.nic.cz.test>",
        ),
        id="clearsigned",
    ),
    pytest.param(
        "plain-unencrypted.eml",
        Expect(
            "plain",
            "piet.jansen@gmail.test",
            "Question about joining the list",
            "<CAF8x2qVb7Yk3+tR1mW0pQ9sN4eL6hJ2uZ5cD8aG1oE7iXnB3wA@mail.gmail.test>",
        ),
        id="plain",
    ),
    pytest.param(
        "own-list-loop.eml",
        Expect(
            "pgp-mime",
            "secir@lists.secir.test",
            "[SECIR] Re: encrypted message",
            "<9d2be6a01f4c7e38b5a1@lists.secir.test>",
            loop=LIST_ID,
            list_id=f"SECIR <{LIST_ID}>",
            in_reply_to=("<3c9d51ae0f7b4e21@lists.secir.test>",),
            references=(
                "<8a1f44c2d09e7b35@lists.secir.test>",
                "<3c9d51ae0f7b4e21@lists.secir.test>",
            ),
        ),
        id="own-list",
    ),
    pytest.param(
        "apple-mail-folded-long-subject.eml",
        Expect(
            "pgp-mime",
            "lena@dns.be.test",
            "[SECIR] Registrar credential stuffing: affected accounts and the timeline we "
            "reconstructed so far",
            "<2E91C4B7-0A5D-4C3F-8B16-7D40E2A9F3C8@dns.be.test>",
        ),
        id="apple-folded-subject",
    ),
    pytest.param(
        "encoded-word-comma-in-from-name.eml",
        Expect(
            "inline",
            "francois.levesque@nic.fr.test",
            "[SECIR] Re: Resolver abuse",
            "<PR3P192MB0824A1F06B7C2E9D53A1B8C4D7E92@PR3P192MB0824.EURP192.PROD.OUTLOOK.TEST>",
        ),
        id="encoded-comma-from",
    ),
]


@pytest.mark.parametrize(("name", "expect"), ENVELOPES)
def test_envelope(name: str, expect: Expect) -> None:
    raw = corpus(name)

    env = parse_envelope(raw)

    assert env.kind == expect.kind
    assert env.from_addr == expect.from_addr
    assert env.subject == expect.subject
    if expect.message_id is None:
        assert env.message_id == f"<sha256-{hashlib.sha256(raw).hexdigest()}@no-id>"
    else:
        assert env.message_id == expect.message_id
    assert env.source_id == env.message_id
    if expect.automated is None:
        assert env.automated is None
    else:
        assert env.automated is not None and expect.automated in env.automated
    assert env.loop_marker == expect.loop
    assert env.list_id == expect.list_id
    assert env.in_reply_to == expect.in_reply_to
    assert env.references == expect.references
    if expect.kind in ("pgp-mime", "inline"):
        assert env.ciphertext is not None
        assert env.ciphertext.startswith(ARMOR_BEGIN)
        assert env.ciphertext.rstrip().endswith(ARMOR_END)
    else:
        assert env.ciphertext is None


@pytest.mark.parametrize(
    "name", ["thunderbird-pgpmime-protected-headers.eml", "k9-pgpmime.eml", "own-list-loop.eml"]
)
def test_pgp_mime_ciphertext_is_the_second_part_exactly(name: str) -> None:
    raw = corpus(name)
    start = raw.index(ARMOR_BEGIN)
    end = raw.index(ARMOR_END) + len(ARMOR_END)

    env = parse_envelope(raw)

    assert env.ciphertext is not None
    assert env.ciphertext.rstrip(b"\r\n") == raw[start:end]


def test_inline_armor_is_cut_out_of_the_text_part() -> None:
    raw = corpus("mutt-inline-pgp.eml")

    env = parse_envelope(raw)

    assert env.ciphertext == raw[raw.index(ARMOR_BEGIN) :]


def test_quoted_printable_armor_is_decoded() -> None:
    env = parse_envelope(corpus("outlook-inline-pgp-in-html-alternative.eml"))

    assert env.ciphertext is not None
    assert b"=3D" not in env.ciphertext
    lines = env.ciphertext.replace(b"\r\n", b"\n").split(b"\n")
    assert b"=A/Ou" in lines  # the CRC line
    assert b"jRwU3cu20k2VNJNv/Vw8hz3muJETK0COjfinBc9LrjzmPQxARuImyAc=" in lines
    assert b"<p" not in env.ciphertext  # taken from text/plain, not from the HTML copy


def test_message_id_fallback_is_stable_and_follows_the_bytes() -> None:
    raw = corpus("no-message-id.eml")
    changed = raw.replace(b"nightly", b"Nightly")

    first, again = parse_envelope(raw), parse_envelope(bytes(raw))

    assert first.message_id == again.message_id == mime.message_id_of(raw)
    assert first.message_id is not None and first.message_id.endswith("@no-id>")
    assert parse_envelope(changed).message_id != first.message_id


def test_message_id_is_taken_from_its_angle_brackets() -> None:
    raw = (
        b"From: a@nic.test\r\nMessage-ID:  <abc@nic.test> (sent by hand)\r\n"
        b"Subject: x\r\n\r\nbody\r\n"
    )

    assert mime.message_id_of(raw) == "<abc@nic.test>"


@pytest.mark.parametrize("name", ["empty.eml", "multipart-encrypted-missing-part.eml"])
def test_malformed_corpus_mail_is_refused(name: str) -> None:
    with pytest.raises(MalformedMail):
        parse_envelope(corpus(name))


_ENCRYPTED_HEAD = (
    b"From: anna@nic.test\r\nMessage-ID: <m@nic.test>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
    b' boundary="b"\r\n\r\n'
)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"   \r\n\r\n", "empty"),
        (b"\r\njust a body without headers\r\n", "no headers"),
        (
            _ENCRYPTED_HEAD + b"--b\r\nContent-Type: text/plain\r\n\r\nVersion: 1\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\n\r\n"
            b"-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----\r\n--b--\r\n",
            "not PGP/MIME",
        ),
        (
            _ENCRYPTED_HEAD + b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\n"
            b"Version: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nhF4DAAAAAAAAAAASAQdA\r\n--b--\r\n",
            "without an armored",
        ),
    ],
)
def test_malformed_shapes_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedMail, match=why):
        parse_envelope(raw)


@pytest.mark.parametrize(
    ("headers", "word"),
    [
        ("Auto-Submitted: auto-generated", "auto-submitted"),
        ("Auto-Submitted: auto-notified", "auto-submitted"),
        ("Precedence: bulk", "precedence bulk"),
        ("Precedence: junk", "precedence junk"),
        ("Precedence: auto_reply", "precedence auto_reply"),
        ("X-Autorespond: yes", "X-Autorespond"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=x", "report"),
    ],
)
def test_automated_markers(headers: str, word: str) -> None:
    raw = (
        f"From: someone@nic.test\r\nMessage-ID: <a@nic.test>\r\n{headers}\r\n"
        "Subject: hello\r\n\r\nbody\r\n"
    ).encode()

    reason = parse_envelope(raw).automated

    assert reason is not None and word in reason


@pytest.mark.parametrize(
    "sender", ["From: postmaster@nic.test", "From: MAILER-DAEMON", "X-No-From: here"]
)
def test_mail_from_daemons_or_nobody_is_automated(sender: str) -> None:
    raw = f"{sender}\r\nMessage-ID: <a@nic.test>\r\nSubject: x\r\n\r\nbody\r\n".encode()

    reason = parse_envelope(raw).automated

    assert reason is not None and "bounce" in reason


@pytest.mark.parametrize(
    "headers", ["Auto-Submitted: no", "Precedence: list", "X-Auto-Response-Suppress: All"]
)
def test_human_mail_is_not_automated(headers: str) -> None:
    raw = (
        f"From: anna@nic.test\r\nMessage-ID: <a@nic.test>\r\n{headers}\r\n"
        "Subject: hello\r\n\r\nbody\r\n"
    ).encode()

    assert parse_envelope(raw).automated is None


# -- decrypted payloads ------------------------------------------------------------------


def test_protected_headers_with_legacy_display() -> None:
    content = parse_decrypted(
        corpus("decrypted-protected-headers-with-legacy-display.txt"), "pgp-mime"
    )

    assert content.subject == "Suspicious NS changes for several .test domains"
    assert content.text == (
        # format=flowed (RFC 3676): the soft line break is undone (issue 10).
        "Hi all,\n\nsince 06:00 UTC we see NS changes for 14 domains, all through one "
        "registrar account. Café-style phishing page, details to follow.\n\nAnna"
    )
    assert "Subject:" not in content.text  # the legacy display copy is not shown twice
    assert content.attachments == ()
    assert content.signed_part is None and content.signature is None


def _rfc3156_signed_part(raw: bytes, boundary: bytes) -> bytes:
    """The signed bytes, cut out the way RFC 3156 §5 defines them (CRLF only)."""
    first = raw.index(b"\r\n--" + boundary)
    start = raw.index(b"\r\n", first + 2) + 2
    end = raw.index(b"\r\n--" + boundary, start)
    return raw[start:end]


def test_multipart_signed_keeps_the_exact_signed_bytes() -> None:
    raw = corpus("decrypted-multipart-signed.txt")
    expected = _rfc3156_signed_part(raw, b"=-=sig=-=Xr7Tq2Lw9")

    content = parse_decrypted(raw, "pgp-mime")

    assert content.signed_part == expected
    assert content.signed_part.startswith(b"Content-Type: multipart/mixed;")
    assert content.signed_part.endswith(b"--=-=mix=-=Bn4Ky8Pd1--\r\n")
    assert b"X-Note:    spacing  kept   exactly\r\n" in content.signed_part
    assert content.signature is not None
    assert content.signature.startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert content.signature.rstrip().endswith(b"-----END PGP SIGNATURE-----")
    assert content.text == (
        "We blocked the three accounts at 19:05. \n"
        "The reseller confirmed the leak – passwords are being reset.\n\n"
        "-- \nBram"
    )
    assert content.attachments == ()


def test_split_multipart_returns_original_not_reserialised_bytes() -> None:
    raw = corpus("decrypted-multipart-signed.txt")
    boundary = "=-=sig=-=Xr7Tq2Lw9"
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    first = parsed.get_payload(0)
    assert isinstance(first, Message)

    parts = mime.split_multipart(raw, boundary)

    assert len(parts) == 2
    assert parts[0] == _rfc3156_signed_part(raw, boundary.encode())
    # What the email package would produce instead: the signature would no longer match.
    for policy in (email.policy.compat32, email.policy.SMTP):
        assert first.as_bytes(policy=policy) != parts[0]
    relaxed = first.as_bytes(policy=email.policy.SMTP)
    assert relaxed.replace(b"\r\n", b"\n") != parts[0].replace(b"\r\n", b"\n")


def test_split_multipart_with_lf_line_endings_and_transport_padding() -> None:
    raw = corpus("decrypted-multipart-signed.txt").replace(b"\r\n", b"\n")
    raw = raw.replace(b"\n--=-=sig=-=Xr7Tq2Lw9\n", b"\n--=-=sig=-=Xr7Tq2Lw9 \t\n", 1)
    first = raw.index(b"\n--=-=sig=-=Xr7Tq2Lw9")
    start = raw.index(b"\n", first + 1) + 1
    end = raw.index(b"\n--=-=sig=-=Xr7Tq2Lw9", start)

    content = parse_decrypted(raw, "pgp-mime")

    assert content.signed_part == raw[start:end]


def test_multipart_signed_with_one_part_is_malformed() -> None:
    raw = (
        b'Content-Type: multipart/signed; protocol="application/pgp-signature";'
        b' micalg=pgp-sha256; boundary="s"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\n'
        b"only text\r\n--s--\r\n"
    )

    with pytest.raises(MalformedMail):
        parse_decrypted(raw, "pgp-mime")


def html_text(raw: bytes) -> str:
    """What the list shows of an HTML-only entity (converted after verification)."""
    content = parse_decrypted(raw)
    assert content.text == ""  # nothing converted while parsing
    return "\n".join(html_to_text(h) for h in content.html)


def test_html_only_message_is_read() -> None:
    content = parse_decrypted(corpus("decrypted-html-only.txt"), "pgp-mime")
    text = html_text(corpus("decrypted-html-only.txt"))

    assert content.subject == "Takedown request sent to AT&T abuse desk"
    assert "Ticket: ABU-20250314-0193" in text
    assert text.rstrip().endswith("Sofia")
    assert "<" not in text
    assert "tracking" not in text and "margin" not in text


def test_html_is_turned_into_text_without_markup_scripts_or_styles() -> None:
    raw = (
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p {x: y}</style>"
        b"<script>alert(1)</script></head><body><p>first</p><div>second<br>third</div>"
        b"</body></html>\r\n"
    )

    assert html_text(raw) == "first\nsecond\nthird"


def test_html_entities_are_unescaped() -> None:
    raw = (
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>AT&amp;T&#39;s&nbsp;desk &lt;abuse@att.test&gt;</p>\r\n"
    )

    assert html_text(raw) == "AT&T's\xa0desk <abuse@att.test>"


def test_plain_text_wins_over_html_in_alternative() -> None:
    content = parse_decrypted(corpus("plain-unencrypted.eml"), "pgp-mime")

    assert content.text == "Hello, how do I join this list?"


def test_attachments_are_read_as_files_not_text() -> None:
    content = parse_decrypted(corpus("decrypted-with-attachment.txt"), "pgp-mime")

    assert content.subject == "IOCs from the registrar compromise"
    assert content.text == "Attached: the report and the indicator list."
    # Issue 10: the files themselves, for the relay (they were only named before).
    assert [f.filename for f in content.files] == ["incident-report.pdf", "iocs.csv", "журнал.log"]
    assert all(f.data for f in content.files)
    assert "login from" not in content.text  # a text/plain attachment is not the body


def test_inline_clearsigned_block_is_cut_out_exactly_for_gpg() -> None:
    raw = corpus("decrypted-inline-clearsigned.txt")

    block = clearsigned_block(b"\n\r\n" + raw + b"\n \n")

    assert block == raw.strip() + b"\n"  # only blank space around it is dropped


def test_inline_plain_text_has_no_clearsigned_block() -> None:
    assert clearsigned_block("Grüße,\r\n\r\n- Jan\r\n".encode()) is None


F1_SHAPES = {
    "first-header-with-extra-character": b"-----BEGIN PGP SIGNED MESSAGE-----X\n",
    "first-header-after-a-tab": b"\t-----BEGIN PGP SIGNED MESSAGE-----\n",
    "text-before": b"URGENT, from Jan:\n",
    "second-block": corpus("decrypted-inline-clearsigned.txt"),
}


@pytest.mark.parametrize("prefix", F1_SHAPES.values(), ids=F1_SHAPES.keys())
def test_f1_anything_before_the_block_is_refused(prefix: bytes) -> None:
    raw = corpus("decrypted-inline-clearsigned.txt")

    with pytest.raises(MalformedMail, match="not exactly one clear-signed text"):
        clearsigned_block(prefix + b"Hash: SHA256\n\nforged text\n\n" + raw)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b + b"P.S. unsigned\n", id="text-after"),
        pytest.param(lambda b: b.replace(b"-----END PGP SIGNATURE-----", b""), id="no-end"),
        pytest.param(
            lambda b: b.replace(b"Status update", b"-----BEGIN PGP MESSAGE-----\nStatus"),
            id="armor-inside",
        ),
        pytest.param(lambda b: b.replace(b"-----BEGIN PGP SIGNATURE-----", b""), id="no-sig"),
    ],
)
def test_f1_clearsigned_block_must_stand_alone(change: Callable[[bytes], bytes]) -> None:
    with pytest.raises(MalformedMail, match="not exactly one clear-signed text"):
        clearsigned_block(change(corpus("decrypted-inline-clearsigned.txt")))


def test_inline_content_is_the_signed_text_without_unsigned_trailing_blanks() -> None:
    content = parse_decrypted("Grüße, \t\r\n\r\n- Jan\r\n".encode(), "inline")

    assert content.text == "Grüße,\n\n- Jan"
    assert content.subject is None


def test_latin1_body_is_decoded_by_its_charset() -> None:
    content = parse_decrypted(corpus("iso-8859-1-subject-and-body.eml"), "pgp-mime")

    assert content.subject == "Réponse à l'incident du résolveur"
    assert "Le résolveur a été corrigé ce matin" in content.text
    assert content.text.endswith("François")


def test_folded_protected_subject_is_unfolded() -> None:
    content = parse_decrypted(corpus("decrypted-multipart-signed.txt"), "pgp-mime")

    assert content.subject == "Re: Phishing wave against   registrar accounts"


# -- composing ---------------------------------------------------------------------------

ARMORED = (
    b"-----BEGIN PGP MESSAGE-----\n\nhF4DAAAAAAAAAAASAQdAdummyciphertextonly\n"
    b"=abcd\n-----END PGP MESSAGE-----\n"
)


def _headers(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def test_compose_inner_carries_protected_headers() -> None:
    raw = compose_inner(
        subject="Réponse: résolveur ☃",
        text="Bonjour,\nça marche.",
        from_label="Anna Kowalska (.test)",
        lists=LISTS,
        message_id="<p1@lists.secir.test>",
        date=WHEN,
    )
    msg = _headers(raw)

    assert msg.get_content_type() == "text/plain"
    assert msg.get_param("protected-headers") == "v1"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Message-ID"] == "<p1@lists.secir.test>"
    assert msg["To"] == "secir@lists.secir.test"
    assert msg["Date"] == "Tue, 04 Mar 2025 09:30:00 +0000"
    assert b"\r\n" in raw and re.search(rb"(?<!\r)\n", raw) is None
    content = parse_decrypted(raw, "pgp-mime")
    assert content.subject == "Réponse: résolveur ☃"
    assert content.text == "Bonjour,\nça marche."


def _outer(**kwargs: object) -> bytes:
    args: dict[str, object] = {
        "armored": ARMORED,
        "from_label": "Anna Kowalska (.test)",
        "lists": LISTS,
        "message_id": "<p2@lists.secir.test>",
        "to": "secir@lists.secir.test",
        "date": WHEN,
    }
    args.update(kwargs)
    return compose_outer(**args)  # type: ignore[arg-type]


def test_compose_outer_list_headers() -> None:
    msg = _headers(_outer())

    assert msg["List-Id"] == f"SECIR <{LIST_ID}>"
    assert msg["List-Post"] == "<mailto:secir@lists.secir.test>"
    assert msg["List-Help"] == "<mailto:secir@lists.secir.test?subject=help>"
    assert msg["List-Unsubscribe"] == "<mailto:secir@lists.secir.test?subject=unsubscribe>"
    assert msg["List-Owner"] == "<mailto:owner@secir.test>"
    assert msg["Precedence"] == "list"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["X-Secir-List"] == LIST_ID
    assert msg["Reply-To"] == "secir@lists.secir.test"
    assert msg["Auto-Submitted"] is None
    assert msg["In-Reply-To"] is None and msg["References"] is None


def test_compose_outer_is_rfc3156_pgp_mime() -> None:
    raw = _outer()
    msg = _headers(raw)

    assert msg.get_content_type() == "multipart/encrypted"
    assert msg.get_param("protocol") == "application/pgp-encrypted"
    control, body = msg.get_payload()  # type: ignore[str-unpack]  # a multipart's parts
    assert control.get_content_type() == "application/pgp-encrypted"
    assert control.get_payload(decode=True).strip() == b"Version: 1"
    assert body.get_content_type() == "application/octet-stream"
    assert body.get_payload(decode=True).replace(b"\r\n", b"\n") == ARMORED
    assert re.search(rb"(?<!\r)\n", raw) is None  # CRLF throughout, ready for SMTP


def test_cleartext_subject_has_only_the_tag() -> None:
    inner = compose_inner(
        subject="Breach at registrar X",
        text="secret details",
        from_label="Anna",
        lists=LISTS,
        message_id="<p3@l>",
        date=WHEN,
    )
    assert b"Breach at registrar X" in inner

    plain = _headers(_outer(message_id="<p3@l>"))
    reply = _headers(_outer(message_id="<p4@l>", reply=True))

    assert plain["Subject"] == "[SECIR] encrypted message"
    assert reply["Subject"] == "[SECIR] Re: encrypted message"
    for outer in (_outer(), _outer(reply=True)):
        assert b"Breach" not in outer and b"secret details" not in outer


def test_compose_outer_threading_headers() -> None:
    msg = _headers(
        _outer(
            in_reply_to="<parent@lists.secir.test>",
            references=("<root@lists.secir.test>", "<parent@lists.secir.test>"),
        )
    )

    assert msg["In-Reply-To"] == "<parent@lists.secir.test>"
    assert msg["References"] == "<root@lists.secir.test> <parent@lists.secir.test>"


def test_auto_submitted_only_on_automated_mail() -> None:
    assert _headers(_outer(automated=True))["Auto-Submitted"] == "auto-replied"
    assert _headers(_outer(automated=False))["Auto-Submitted"] is None


@pytest.mark.parametrize("automated", [False, True])
def test_compose_outer_round_trips_through_parse_envelope(automated: bool) -> None:
    raw = _outer(
        in_reply_to="<parent@lists.secir.test>",
        references=("<root@lists.secir.test>", "<parent@lists.secir.test>"),
        reply=True,
        automated=automated,
    )

    env = parse_envelope(raw)

    assert env.kind == "pgp-mime"
    assert env.ciphertext is not None
    assert env.ciphertext.replace(b"\r\n", b"\n") == ARMORED
    assert env.message_id == "<p2@lists.secir.test>"
    assert env.from_addr == "secir@lists.secir.test"
    assert env.from_name == "Anna Kowalska (.test) via SECIR"
    assert env.subject == "[SECIR] Re: encrypted message"
    assert env.in_reply_to == ("<parent@lists.secir.test>",)
    assert env.references == ("<root@lists.secir.test>", "<parent@lists.secir.test>")
    assert env.list_id == f"SECIR <{LIST_ID}>"
    assert env.loop_marker == LIST_ID  # our own mail is recognised when it comes back
    assert (env.automated is not None) is automated


def test_non_ascii_sender_label_round_trips() -> None:
    env = parse_envelope(_outer(from_label="Иван Петров (.рф)"))

    assert env.from_name == "Иван Петров (.рф) via SECIR"
    assert env.from_addr == "secir@lists.secir.test"


def test_recipients_of() -> None:
    assert mime.recipients_of('Anna <Anna@NIC.test>, "Bram, B." <bram@registry.nl.test>') == [
        "anna@nic.test",
        "bram@registry.nl.test",
    ]


def test_the_lists_own_mail_is_from_the_list_name() -> None:
    env = parse_envelope(_outer(from_label=None, automated=True))

    assert (env.from_name, env.from_addr) == ("SECIR", "secir@lists.secir.test")
    assert env.automated is not None


# -- signed headers (issue 5, F2 and F3) -------------------------------------------------


def test_f2_recipients_come_from_the_signed_headers_only() -> None:
    layered = parse_decrypted(corpus("decrypted-multipart-signed.txt"))
    combined = parse_decrypted(corpus("decrypted-protected-headers-with-legacy-display.txt"))

    assert layered.recipients == ("secir@lists.secir.test",)
    assert combined.recipients == ("secir@lists.secir.test",)


def test_f2_signed_content_without_to_or_cc_names_no_recipient() -> None:
    raw = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    assert parse_decrypted(raw).recipients is None
    cc_only = b"Cc: A <a@x.test>, b@y.test\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    assert parse_decrypted(cc_only).recipients == ("a@x.test", "b@y.test")
    assert parse_decrypted(b"signed text\n", "inline").recipients is None


def test_f3_unsigned_headers_around_a_signed_part_do_not_count() -> None:
    signed = (
        b"Content-Type: text/plain\r\nSubject: signed subject\r\n"
        b"In-Reply-To: <signed@x.test>\r\n\r\nbody\r\n"
    )
    raw = (
        b"Subject: unsigned subject\r\nTo: other@x.test\r\nIn-Reply-To: <unsigned@x.test>\r\n"
        b'Content-Type: multipart/signed; boundary="b"; protocol="application/pgp-signature"'
        b"\r\n\r\n--b\r\n" + signed + b"\r\n--b\r\nContent-Type: application/pgp-signature"
        b"\r\n\r\nSIG\r\n--b--\r\n"
    )

    content = parse_decrypted(raw)

    assert content.subject == "signed subject"
    assert content.recipients is None  # the To outside the signed part is not read
    assert content.in_reply_to == ("<signed@x.test>",) and content.threaded
    assert not parse_decrypted(signed.replace(b"In-Reply-To", b"X-Other")).threaded


# -- header injection (issue 5, H1; CVE-2024-6923) ---------------------------------------

H1_SUBJECT = (
    "=?utf-8?q?x=0D=0ABcc:_victim@evil.test=0D=0AContent-Type:text/html=0D=0A=0D=0A"
    "<img_src=3Dhttp://evil.test/t.gif>?="
)
INNER_HEADERS = [
    "From",
    "To",
    "Subject",
    "Message-ID",
    "Date",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
]


@pytest.mark.parametrize(
    "subject",
    [H1_SUBJECT, "line one\r\nBcc: victim@evil.test", "nul\0 and\x0b vt\u2028sep", "Grüße " * 30],
)
def test_h1_no_subject_can_add_headers_or_change_the_body_type(subject: str) -> None:
    raw = compose_inner(
        subject=subject,
        text="body",
        from_label="=?utf-8?q?Eve=0D=0AReply-To:_eve@evil.test?= (.nl)",
        lists=LISTS,
        message_id="<h1@lists.secir.test>",
    )

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(msg.keys()) == sorted(INNER_HEADERS)  # each once, nothing added
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "body"
    assert "\n" not in str(msg["Subject"]) and "\r" not in str(msg["Subject"])
    assert "=?" not in str(msg["Subject"])  # shown as text, never decoded again
    assert raw.isascii()


# -- bounds (issue 6: poison before the inbox, D1) ---------------------------------------


def nested(depth: int, body: bytes = b"deep\r\n") -> bytes:
    """A multipart nested ``depth`` levels deep."""
    return b"From: a@x.test\r\nMessage-ID: <nest@x.test>\r\n" + nested_parts(depth, body)


def test_poison_nesting_never_breaks_the_message_id() -> None:
    raw = nested(1000)

    assert message_id_of(raw) == "<nest@x.test>"
    with pytest.raises(MalformedMail, match="more than 100 MIME parts"):
        parse_envelope(raw)
    with pytest.raises(MalformedMail, match="more than 100 MIME parts"):
        parse_decrypted(raw)


def test_nesting_deeper_than_the_bound_is_refused_and_shallow_is_read() -> None:
    with pytest.raises(MalformedMail, match="nested more than 12 deep"):
        parse_envelope(nested(20))
    assert parse_decrypted(nested(5)).text == "deep"


def test_unreadable_headers_still_give_a_message_id() -> None:
    raw = b"\xff\xfe\x00garbage without any header\r\n" * 3
    assert message_id_of(raw).startswith("<sha256-")
    long_id = b"Message-ID: <" + b"x" * 600 + b"@x.test>\r\n\r\nbody"
    assert message_id_of(long_id).startswith("<sha256-")


@pytest.mark.timeout(20)
def test_d2_markup_that_is_quadratic_for_the_stdlib_parser_is_read_quickly() -> None:
    # 200 KB of "<a": over a minute for html.parser on unpatched 3.11 (CVE-2025-6069).
    assert html_to_text("<p>D2 start</p>" + "<a" * 100_000) == "D2 start"


def test_d2_html_over_the_bound_is_refused_not_converted() -> None:
    with pytest.raises(MalformedMail, match="HTML text is larger than"):
        html_to_text("<p>" + "x" * 1_000_001)


def test_l1_hostile_marked_section_is_read_not_an_exception() -> None:
    # html.parser raised AssertionError quoting the input for "<![SECRET[".
    assert html_to_text("<![SECRET-TEXT[ x ]]><p>ok</p>").endswith("ok")


@pytest.mark.parametrize(
    ("raw_subject", "shown"),
    [
        ("Grüße aus Köln — Störung".encode(), "Grüße aus Köln — Störung"),
        ("Grüße".encode("cp1252"), "Grüße"),  # not UTF-8: an older client's code page
    ],
)
def test_protected_subject_written_as_raw_8bit_is_not_mojibake(
    raw_subject: bytes, shown: str
) -> None:
    raw = (
        b"Subject: " + raw_subject + b"\r\nFrom: J\xc3\xbcrgen <j@x.test>\r\nTo: l@x.test\r\n"
        b"Content-Type: text/plain\r\n\r\nbody\r\n"
    )

    assert parse_decrypted(raw).subject == shown
    assert parse_envelope(raw).from_name == "Jürgen"


ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0123\r\n-----END PGP MESSAGE-----\r\n"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"URGENT: read this\r\n" + ARMOR, "outside the encrypted block"),
        (ARMOR + b"P.S. unsigned and unencrypted\r\n", "outside the encrypted block"),
        (ARMOR + ARMOR, "more than one encrypted block"),
    ],
)
def test_inline_text_outside_the_armor_is_refused(body: bytes, why: str) -> None:
    raw = b"From: a@x.test\r\nContent-Type: text/plain\r\n\r\n" + body

    with pytest.raises(MalformedMail, match=why):
        parse_envelope(raw)


def test_partial_encryption_is_refused() -> None:
    raw = (
        b'From: a@x.test\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
        b'boundary="e"\r\n\r\n--e\r\nContent-Type: application/pgp-encrypted\r\n\r\n'
        b"Version: 1\r\n--e\r\nContent-Type: application/octet-stream\r\n\r\n"
        + ARMOR
        + b"--e--\r\n--m\r\nContent-Type: text/plain\r\n\r\nunencrypted addition\r\n--m--\r\n"
    )

    with pytest.raises(MalformedMail, match="outside the encrypted block"):
        parse_envelope(raw)


def test_signed_from_is_read_from_the_signed_headers() -> None:
    raw = b"From: Bob <BOB@x.test>\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    assert parse_decrypted(raw).from_addr == "bob@x.test"
    assert parse_decrypted(b"Content-Type: text/plain\r\n\r\nbody\r\n").from_addr is None
