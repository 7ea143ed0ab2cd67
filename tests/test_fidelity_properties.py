"""Property-based tests (hypothesis) of the fidelity conversions: hostile text and markup
never raise, never leave Matrix's allowed HTML or nesting limit, lose no text, and stay
fast (each example has a deadline).
"""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from selectolax.lexbor import LexborHTMLParser

from secir_bot.fidelity.attachments import safe_filename, walk
from secir_bot.fidelity.charsets import decode_bytes, header_text
from secir_bot.fidelity.fromhtml import html_to_matrix
from secir_bot.fidelity.fromtext import text_to_matrix
from secir_bot.fidelity.sanitize import MATRIX_TAGS, MAX_NESTING, nesting_depth
from secir_bot.fidelity.totext import html_to_text

FAST = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
)

MAIL_LINES = st.lists(
    st.one_of(
        st.sampled_from(
            ["", "-- ", "--", "> q", ">> qq", "> > q", "```", "\tcol\tcol", "On X wrote:",
             "-----Original Message-----", "From: x", "https://a.test/(x).", "    code",
             "<b>&amp;</b>", "=?utf-8?Q?x?=", "line ", "_" * 30]
        ),
        st.text(max_size=40),
    ),
    max_size=60,
).map("\n".join)  # fmt: skip
TAGS = st.sampled_from(
    ["p", "div", "b", "i", "a", "ul", "ol", "li", "blockquote", "pre", "code", "table", "tr",
     "td", "th", "h1", "h3", "hr", "br", "img", "span", "details", "summary", "script",
     "style", "mx-reply", "svg", "math", "font", "x-custom"]
)  # fmt: skip
ATTRS = st.sampled_from(
    ['', ' href="javascript:x()"', ' href="https://a.test/"', ' href="https://matrix.to/#/@a:b"',
     ' src="https://t.test/p.gif"', ' src="mxc://s/id"', ' class="gmail_quote"',
     ' type="cite"', ' onclick="x()"', ' data-mx-color="#ff0000"', ' start="3"',
     ' id="divRplyFwdMsg"']
)  # fmt: skip
MARKUP = st.lists(
    st.one_of(
        st.builds(lambda t, a: f"<{t}{a}>", TAGS, ATTRS),
        st.builds(lambda t: f"</{t}>", TAGS),
        st.text(max_size=20),
    ),
    max_size=80,
).map("".join)


def allowed_only(html: str) -> bool:
    body = LexborHTMLParser(html).body
    assert body is not None
    tags = {n.tag for n in body.traverse() if n.tag and not n.tag.startswith("-")}
    return tags - {"body"} <= MATRIX_TAGS


def words(text: str) -> set[str]:
    return {w for w in text.split() if w.isalnum()}


@FAST
@given(MAIL_LINES, st.booleans(), st.booleans())
def test_mail_text_to_matrix(text: str, flowed: bool, delsp: bool) -> None:
    out = text_to_matrix(text, flowed=flowed, delsp=delsp)
    assert allowed_only(out.formatted_body)
    assert nesting_depth(out.formatted_body) <= MAX_NESTING
    if not delsp:  # delsp=yes joins the words around a soft break, by design
        # Nothing of the author's is lost: every word is in the body and in the HTML.
        shown = LexborHTMLParser(out.formatted_body).body
        assert shown is not None
        assert words(text) <= words(out.body)
        assert words(text) <= words(shown.text(separator=" "))


@FAST
@given(MARKUP)
def test_html_mail_to_matrix(markup: str) -> None:
    out = html_to_matrix(markup)
    assert allowed_only(out.formatted_body)
    assert nesting_depth(out.formatted_body) <= MAX_NESTING
    for bad in ("javascript:", "onclick", "t.test/p.gif", "<script", "<style"):
        assert bad not in out.formatted_body


@FAST
@given(MARKUP)
def test_matrix_html_to_text(markup: str) -> None:
    out = html_to_text(markup, lambda user: "Name (.tld)")
    assert isinstance(out.text, str) and "\r" not in out.text


@FAST
@given(st.binary(max_size=200), st.sampled_from([None, "utf-8", "iso-8859-1", "koi8-r", "x-y"]))
def test_decode_bytes_never_raises(data: bytes, label: str | None) -> None:
    assert isinstance(decode_bytes(data, label), str)


@FAST
@given(st.text(max_size=200))
def test_header_text_and_file_names_never_raise(value: str) -> None:
    assert isinstance(header_text(value), str)
    name = safe_filename(value, "application/pdf")
    assert name and "/" not in name and "\\" not in name and "\n" not in name
    assert not name.startswith(".") and len(name) <= 150


@FAST
@given(st.binary(max_size=600))
def test_walk_never_raises(data: bytes) -> None:
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" + data + b"\r\n--b--\r\n"
    parts = walk(email.message_from_bytes(raw, policy=email.policy.compat32))
    assert all(a.filename for a in parts.attachments)
