"""Property-based tests (hypothesis): hostile input raises only our own errors, and fast.

The MIME/PGP intake functions may raise nothing but ``MalformedMail``; the configuration
loader nothing but ``ConfigError``. Each example has a deadline, so "never hang" is tested
too (with pytest-timeout as the backstop).
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secir_bot import config, mime
from secir_bot.errors import ConfigError

FAST = settings(
    max_examples=200,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)

# Pieces that real and hostile mail is made of, so that examples reach deep into the parser.
HEADER_NAMES = st.sampled_from(
    [
        b"From",
        b"To",
        b"Cc",
        b"Subject",
        b"Message-ID",
        b"In-Reply-To",
        b"References",
        b"Content-Type",
        b"Content-Transfer-Encoding",
        b"Content-Disposition",
        b"List-Id",
        b"Auto-Submitted",
        b"Precedence",
        b"X-Secir-List",
        b"MIME-Version",
    ]
)
TOKENS = st.sampled_from(
    [
        b"multipart/mixed",
        b"multipart/encrypted",
        b"multipart/signed",
        b"multipart/report",
        b"text/plain",
        b"text/html",
        b"application/pgp-encrypted",
        b"application/octet-stream",
        b"application/pgp-signature",
        b"message/rfc822",
        b'; boundary="b"',
        b"; boundary=b",
        b'; protocol="application/pgp-encrypted"',
        b"; charset=utf-8",
        b"; charset=x-bogus",
        b"--b",
        b"--b--",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"=?utf-8?q?x=0D=0A?=",
        b"=?",
        b"?=",
        b"-----BEGIN PGP MESSAGE-----",
        b"-----END PGP MESSAGE-----",
        b"-----BEGIN PGP SIGNED MESSAGE-----",
        b"-----BEGIN PGP SIGNATURE-----",
        b"-----END PGP SIGNATURE-----",
        b"Hash: SHA256",
        b"- ",
        b"\t",
        b" ",
        b"<a@b>",
        b"base64",
        b"quoted-printable",
        b"=ZZ",
        b"\xff\xfe",
        "Grüße".encode(),
        b"<p>",
        b"<a",
        b"<![x[",
    ]
)
HEADER = st.builds(
    lambda name, value: name + b": " + value + b"\r\n",
    HEADER_NAMES,
    st.lists(TOKENS | st.binary(max_size=20), max_size=8).map(b"".join),
)
MAILS = st.builds(
    lambda headers, sep, body: b"".join(headers) + sep + body,
    st.lists(HEADER, max_size=12),
    st.sampled_from([b"\r\n", b"\n", b""]),
    st.lists(TOKENS | st.binary(max_size=40), max_size=40).map(b"".join),
)
ANY_BYTES = MAILS | st.binary(max_size=2000)


@FAST
@given(ANY_BYTES)
def test_parse_envelope_raises_only_malformed_mail(raw: bytes) -> None:
    try:
        env = mime.parse_envelope(raw)
    except mime.MalformedMail:
        return
    assert env.kind in ("pgp-mime", "inline", "signed-only", "plain")


@FAST
@given(ANY_BYTES)
def test_parse_decrypted_raises_only_malformed_mail(raw: bytes) -> None:
    try:
        content = mime.parse_decrypted(raw)
    except mime.MalformedMail:
        return
    assert isinstance(content.text, str)


@FAST
@given(ANY_BYTES)
def test_message_id_and_from_never_raise(raw: bytes) -> None:
    assert mime.message_id_of(raw).startswith("<")
    assert isinstance(mime.from_address(raw), str)


@FAST
@given(ANY_BYTES)
def test_clearsigned_block_raises_only_malformed_mail(raw: bytes) -> None:
    try:
        block = mime.clearsigned_block(raw)
    except mime.MalformedMail:
        return
    assert block is None or block.startswith(b"-----BEGIN PGP SIGNED MESSAGE-----")


@FAST
@given(st.lists(TOKENS, max_size=200).map(b"".join).map(lambda b: b.decode("utf-8", "replace")))
def test_html_to_text_raises_only_malformed_mail(markup: str) -> None:
    try:
        assert isinstance(mime.html_to_text(markup), str)
    except mime.MalformedMail:
        pass


@FAST
@given(st.text(max_size=300))
def test_outgoing_headers_stay_one_line_each(subject: str) -> None:
    raw = mime.compose_inner(
        subject=subject,
        text="body",
        from_label=subject,
        lists=mime.ListHeaders("SECIR", "l@x.test", "l.x.test", "o@x.test", "SECIR"),
        message_id="<p@x.test>",
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in b" \t"]
    assert sorted(names) == sorted(
        [
            b"From",
            b"To",
            b"Subject",
            b"Message-ID",
            b"Date",
            b"Content-Type",
            b"Content-Transfer-Encoding",
            b"MIME-Version",
        ]
    )


# -- the configuration loader ------------------------------------------------------------

SECTIONS = ["store", "list", "matrix", "imap", "smtp", "delivery", "other"]
KEYS = [
    "path",
    "name",
    "address",
    "list_id",
    "owner",
    "subject_tag",
    "echo_to_sender",
    "max_message_bytes",
    "max_signature_age_days",
    "max_clock_skew",
    "homeserver",
    "user_id",
    "password",
    "password_file",
    "password_env",
    "incident_room",
    "control_room",
    "admins",
    "host",
    "port",
    "security",
    "username",
    "mailbox",
    "timeout",
    "retry_base",
    "bogus",
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
    | st.sampled_from(["CHANGE-ME", "a@example.org", "@a:b", "!r:b", "tls", "https://x"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
DOCUMENTS = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=10) | VALUES,
    max_size=7,
)


@FAST
@given(DOCUMENTS)
def test_config_parse_raises_only_config_error(data: dict[str, Any]) -> None:
    try:
        config.parse(data, Path(tempfile.gettempdir()) / "config.toml")
    except ConfigError as exc:
        problems = exc.problems
        assert problems


@pytest.fixture(scope="module")
def config_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hc"))


@settings(FAST, max_examples=150)
@given(st.binary(max_size=500) | st.text(max_size=500).map(str.encode))
def test_config_load_raises_only_config_error(config_dir: Path, text: bytes) -> None:
    path = config_dir / "config.toml"
    path.write_bytes(text)
    try:
        config.load(path)
    except ConfigError as exc:
        problems = exc.problems
        assert problems
