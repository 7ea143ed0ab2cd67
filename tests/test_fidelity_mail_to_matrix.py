"""Mail → Matrix formatting (issue 10): text/plain and HTML mail as Matrix HTML.

Each case checks the HTML that members' clients render, read back with a real HTML parser
(selectolax), and that the plain ``body`` keeps the whole text.
"""

from __future__ import annotations

import pytest
from selectolax.lexbor import LexborHTMLParser

from secir_bot.fidelity.flowed import Line, fixed_lines, flowed_lines, unflow
from secir_bot.fidelity.fromhtml import html_to_matrix
from secir_bot.fidelity.fromtext import MatrixText, linkify, text_to_matrix
from secir_bot.fidelity.sanitize import MATRIX_TAGS, nesting_depth

REPLY = (
    "Hi all,\n"
    "\n"
    "we see NXDOMAIN floods for .nl from 198.51.100.0/24 since 09:00 UTC.\n"
    "Status: https://status.example.nl/incident/42.\n"
    "\n"
    "example.nl.\t3600\tIN\tNS\tns1.example.nl.\n"
    "example.nl.\t3600\tIN\tNS\tns2.example.nl.\n"
    "\n"
    "Alice\n"
    "\n"
    "-- \n"
    "Alice Jansen, SIDN CERT\n"
    "+31 26 000 0000\n"
    "\n"
    "On Tue, 4 Mar 2025 at 09:30, Bob <bob@test.example> wrote:\n"
    "> Is .nl affected?\n"
    "> > Earlier: .br saw the same.\n"
    "> Thanks\n"
)


def tree(html: str) -> LexborHTMLParser:
    return LexborHTMLParser(html)


def tags_of(html: str) -> set[str]:
    body = tree(html).body
    assert body is not None
    return {n.tag for n in body.traverse() if n.tag and not n.tag.startswith("-")} - {"body"}


# -- text/plain ----------------------------------------------------------------------------


def test_issue10_mail_is_not_one_pre_block() -> None:
    """The landed bot showed a mail as one <pre> (issue 10); now it is paragraphs, and only
    the zone excerpt is monospace."""
    out = text_to_matrix(REPLY)
    html = tree(out.formatted_body)
    pres = html.css("pre")
    assert len(pres) == 1
    assert pres[0].text() == (
        "example.nl.\t3600\tIN\tNS\tns1.example.nl.\nexample.nl.\t3600\tIN\tNS\tns2.example.nl."
    )
    paragraphs = [p.text() for p in html.css("p")]
    assert paragraphs[0] == "Hi all,"
    assert "we see NXDOMAIN floods" in paragraphs[1]
    assert not out.formatted_body.startswith("<pre")


def test_issue10_quoted_tail_is_folded_and_kept() -> None:
    out = text_to_matrix(REPLY)
    html = tree(out.formatted_body)
    (details,) = html.css("details")
    summary = details.css_first("summary")
    assert summary is not None
    assert summary.text() == "On Tue, 4 Mar 2025 at 09:30, Bob <bob@test.example> wrote: (3 lines)"
    outer = details.css_first("blockquote")
    assert outer is not None
    assert "Is .nl affected?" in outer.text()
    inner = html.css_first("details blockquote blockquote")
    assert inner is not None and inner.text() == "Earlier: .br saw the same."
    # The full text stays in the plain body, quotes and all.
    assert out.body == REPLY.rstrip("\n")


def test_signature_is_de_emphasised_and_above_the_fold() -> None:
    html = text_to_matrix(REPLY).formatted_body
    span = tree(html).css_first('span[data-mx-color="#808080"]')
    assert span is not None
    assert span.text(separator="\n") == "-- \nAlice Jansen, SIDN CERT\n+31 26 000 0000"
    assert html.index("Alice Jansen, SIDN CERT") < html.index("<details>")


def test_links_are_clickable_without_trailing_punctuation() -> None:
    html = text_to_matrix(REPLY).formatted_body
    (link,) = tree(html).css("a")
    assert link.attributes["href"] == "https://status.example.nl/incident/42"
    assert link.text() == "https://status.example.nl/incident/42"


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("see https://x.test/a_(b) now", ["https://x.test/a_(b)"]),
        ("(https://x.test/a)", ["https://x.test/a"]),
        ("<https://x.test/q?a=1&b=2>.", ["https://x.test/q?a=1&b=2"]),
        (
            "mailto:cert@test.example, ftp://ftp.test/f",
            ["mailto:cert@test.example", "ftp://ftp.test/f"],
        ),
        ("defanged hxxps://evil.test/x and https:// alone", []),
        ('quote "https://x.test/" end', ["https://x.test/"]),
    ],
)
def test_linkify(text: str, urls: list[str]) -> None:
    html = linkify(text)
    assert [a.attributes["href"] for a in tree(html).css("a")] == urls
    assert tree(html).body.text() == text  # type: ignore[union-attr]


def test_linkify_escapes_markup() -> None:
    html = linkify('<script>alert(1)</script> https://x.test/"><img src=x>')
    assert "<script>" not in html
    assert [a.attributes["href"] for a in tree(html).css("a")] == ["https://x.test/"]


def test_nested_quotes_become_nested_blockquotes() -> None:
    out = text_to_matrix("> q1\n> > q0\n> q1 again\n\nmy answer\n\n> q2\nanswer 2\n")
    html = tree(out.formatted_body)
    assert "details" not in out.formatted_body  # interleaved answers: quotes stay open
    nested = html.css_first("blockquote blockquote")
    assert nested is not None and nested.text() == "q0"
    assert [p.text() for p in html.css("body > p")] == ["my answer", "answer 2"]


def test_long_quote_in_the_middle_is_folded() -> None:
    quote = "".join(f"> line {i}\n" for i in range(20))
    out = text_to_matrix("intro\n\n" + quote + "\nreply below\n")
    (details,) = tree(out.formatted_body).css("details")
    assert details.css_first("summary").text() == "Quoted text (20 lines)"  # type: ignore[union-attr]
    assert "reply below" in out.formatted_body.split("</details>")[1]


def test_outlook_original_message_block_is_folded() -> None:
    text = (
        "Top-posted answer.\r\n\r\nRegards\r\nCarol\r\n\r\n"
        "-----Original Message-----\r\nFrom: Bob <bob@test.example>\r\n"
        "Sent: Monday, March 3, 2025 10:00\r\nSubject: Outage\r\n\r\nOriginal text\r\n"
    )
    out = text_to_matrix(text)
    html = tree(out.formatted_body)
    (details,) = html.css("details")
    assert details.css_first("summary").text() == "Earlier message (5 lines)"  # type: ignore[union-attr]
    assert "Original text" in details.text()
    assert html.css("p")[0].text() == "Top-posted answer."


def test_a_mail_that_is_only_a_quote_is_not_folded_away() -> None:
    out = text_to_matrix("On Mon, Bob wrote:\n> the only content\n")
    assert "details" not in out.formatted_body
    assert "the only content" in tree(out.formatted_body).css_first("blockquote").text()  # type: ignore[union-attr]


def test_indented_lines_keep_their_indentation() -> None:
    out = text_to_matrix("List:\n  - first\n  - second\n")
    assert "\u00a0\u00a0- first" in tree(out.formatted_body).css_first("p").text()  # type: ignore[union-attr]


def test_fenced_code_is_one_pre_with_blank_lines() -> None:
    out = text_to_matrix("Look:\n```\n$ dig +short example.nl\n\n192.0.2.1\n```\ndone\n")
    (pre,) = tree(out.formatted_body).css("pre")
    assert pre.text() == "$ dig +short example.nl\n\n192.0.2.1"


def test_flowed_text_is_joined_into_paragraphs() -> None:
    text = "This is one \r\nparagraph that \r\nflows.\r\n\r\n> a quoted \r\n> line\r\n\r\nnext\r\n"
    out = text_to_matrix(text, flowed=True)
    paragraphs = [p.text() for p in tree(out.formatted_body).css("p")]
    assert paragraphs[0] == "This is one paragraph that flows."
    assert "a quoted line" in out.formatted_body


def test_markup_in_mail_text_is_shown_not_run() -> None:
    out = text_to_matrix('<img src="https://evil.test/x.png" onerror=alert(1)> & <b>bold</b>')
    html = tree(out.formatted_body)
    assert html.css("img") == [] and html.css("b") == []
    assert html.body.text() == '<img src="https://evil.test/x.png" onerror=alert(1)> & <b>bold</b>'  # type: ignore[union-attr]


def test_deep_quoting_stays_within_matrix_nesting() -> None:
    out = text_to_matrix(">" * 5000 + " deep\n\nanswer\n")
    assert nesting_depth(out.formatted_body) <= 100
    assert "deep" in out.formatted_body


def test_content_has_empty_mentions() -> None:
    content = MatrixText("b", "<p>b</p>").content()
    assert content["m.mentions"] == {}
    assert content["format"] == "org.matrix.custom.html"


# -- format=flowed (RFC 3676) ----------------------------------------------------------------


def test_flowed_rules() -> None:
    lines = flowed_lines("a \nb\n>q \n>r\n> \n>> deep \n>> er\n-- \nsig \nend\n \n")
    assert lines == [
        Line(0, "a b"),
        Line(1, "q r"),
        Line(1, ""),  # "> " is an empty, space-stuffed quoted line
        Line(2, "deep er"),
        Line(0, "-- "),
        Line(0, "sig end"),
        Line(0, ""),
        Line(0, ""),
    ]


def test_flowed_soft_break_keeps_its_space_unless_delsp() -> None:
    assert flowed_lines("one \ntwo\n") == [Line(0, "one two"), Line(0, "")]
    assert flowed_lines("one \ntwo\n", delsp=True) == [Line(0, "onetwo"), Line(0, "")]


def test_flowed_space_stuffing_and_depth_change() -> None:
    # " From" is space-stuffed; a flowed line followed by another depth ends there.
    assert flowed_lines("  From here\n>quoted \nplain\n") == [
        Line(0, " From here"),
        Line(1, "quoted "),
        Line(0, "plain"),
        Line(0, ""),
    ]


def test_signature_separator_never_flows() -> None:
    assert flowed_lines("text \n-- \nsig\n")[:3] == [
        Line(0, "text "),
        Line(0, "-- "),
        Line(0, "sig"),
    ]


def test_fixed_quote_marks_with_spaces() -> None:
    assert fixed_lines("> > two\n>>two\n> one\nnone > x") == [
        Line(2, "two"),
        Line(2, "two"),
        Line(1, "one"),
        Line(0, "none > x"),
    ]


def test_unflow() -> None:
    assert unflow("a \nb\n>c \n>d\n") == "a b\n> c d\n"


# -- HTML mail -------------------------------------------------------------------------------

THUNDERBIRD_HTML = """<html><head><style>p{color:red}</style><title>secret title</title></head>
<body><p>Our answer: the attack stopped at 10:02.</p>
<img src="https://tracker.test/p.gif" width="1" height="1">
<img src="cid:logo@sidn.test" alt="SIDN logo">
<img src="https://cdn.test/chart.png" alt="traffic chart">
<script>alert(1)</script>
<div class="moz-signature">-- <br>Alice</div>
<div class="moz-cite-prefix">On 04/03/2025 09:30, Bob wrote:<br></div>
<blockquote type="cite"><p>Is .nl affected?</p></blockquote>
</body></html>"""


def test_issue10_html_mail_is_sanitised_to_the_matrix_subset() -> None:
    out = html_to_matrix(THUNDERBIRD_HTML)
    assert tags_of(out.formatted_body) <= MATRIX_TAGS
    html = tree(out.formatted_body)
    # No image is shown inline: an <img> can only name unencrypted media. The mail's own
    # picture becomes its alt text (its part is posted as an encrypted file of its own).
    assert html.css("img") == []
    assert "[SIDN logo]" in out.formatted_body
    assert "[traffic chart]" in out.formatted_body  # a remote image becomes its alt text
    assert "tracker.test" not in out.formatted_body
    for hidden in ("secret title", "alert(1)", "color:red", "class=", "type="):
        assert hidden not in out.formatted_body


def test_html_mail_quoted_tail_is_folded_with_its_attribution() -> None:
    out = html_to_matrix(THUNDERBIRD_HTML)
    (details,) = tree(out.formatted_body).css("details")
    assert details.css_first("summary").text() == "On 04/03/2025 09:30, Bob wrote:"  # type: ignore[union-attr]
    assert "Is .nl affected?" in details.text()
    assert "Our answer" not in details.text()
    assert "Our answer: the attack stopped at 10:02." in out.body
    assert "> Is .nl affected?" in out.body


def test_html_inline_answers_stay_open() -> None:
    markup = (
        '<div class="moz-cite-prefix">On X, Bob wrote:</div>'
        '<blockquote type="cite">Q1?</blockquote><p>A1</p>'
        '<blockquote type="cite">Q2?</blockquote><p>A2</p>'
    )
    out = html_to_matrix(markup)
    assert "details" not in out.formatted_body
    assert len(tree(out.formatted_body).css("blockquote")) == 2


def test_gmail_and_outlook_tails() -> None:
    gmail = html_to_matrix(
        '<div dir="ltr">Thanks!</div><div class="gmail_quote"><div class="gmail_attr">'
        'On Tue, Bob wrote:<br></div><blockquote class="gmail_quote">old</blockquote></div>'
    )
    assert gmail.formatted_body.startswith("<div>Thanks!</div><details>")
    outlook = html_to_matrix(
        '<div><p>Top reply</p></div><div id="appendonsend"></div><hr>'
        '<div id="divRplyFwdMsg"><b>From:</b> Bob</div><div>Original text</div>'
    )
    (details,) = tree(outlook.formatted_body).css("details")
    assert "Original text" in details.text() and "Top reply" not in details.text()


def test_html_links_keep_only_allowed_schemes() -> None:
    out = html_to_matrix(
        '<a href="javascript:alert(1)">js</a> <a href="/relative">rel</a> '
        '<a href="https://ok.test/" onclick="x()">ok</a> <a href="mxc://s/x">mxc</a>'
    )
    hrefs = [a.attributes.get("href") for a in tree(out.formatted_body).css("a")]
    assert hrefs == [None, None, "https://ok.test/", None]
    assert "onclick" not in out.formatted_body


def test_deeply_nested_html_is_given_as_text() -> None:
    out = html_to_matrix("<div>" * 3000 + "deep text" + "</div>" * 3000)
    assert nesting_depth(out.formatted_body) <= 100
    assert "deep text" in out.formatted_body and "deep text" in out.body


def test_an_mxc_image_in_a_mail_is_not_shown_either() -> None:
    """A mail may name any server's mxc:// media: shown, it would be fetched from that
    server when members read it (a web bug at the server's level)."""
    out = html_to_matrix('<p>see <img src="mxc://elsewhere.test/abc" alt="graph"></p>')
    assert "<img" not in out.formatted_body and "elsewhere.test" not in out.formatted_body
    assert "[graph]" in out.formatted_body
