"""Matrix → mail formatting (issue 10): ``formatted_body`` as plain text, mentions as
members' names, and the optional HTML alternative.

The HTML inputs are what Element sends for the Markdown typed by a member (its
``formatted_body`` as produced by its Markdown renderer and composer pills).
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser

from secir_bot.fidelity.totext import (
    html_alternative,
    html_to_text,
    matrix_to_text,
    strip_reply_fallback,
)

CAROL = "@carol:test.local"
NAMES = {CAROL: "Carol Tanaka (.jp)", "@alice:test.local": "Alice Jansen (.nl)"}
PILL = f'<a href="https://matrix.to/#/{CAROL}">Carol Tanaka</a>'


def element(body: str, formatted: str) -> dict[str, object]:
    return {
        "msgtype": "m.text",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": formatted,
    }


def test_issue10_markdown_does_not_reach_mail_raw() -> None:
    """The landed bot mailed ``**Urgent**`` (the Markdown source in ``body``)."""
    content = element(
        "**Urgent**: the _zone_ is `broken`",
        "<strong>Urgent</strong>: the <em>zone</em> is <code>broken</code>",
    )
    assert matrix_to_text(content).text == "*Urgent*: the _zone_ is `broken`"


def test_issue10_mention_is_name_and_cctld_and_not_a_subject_prefix() -> None:
    content = element("Carol Tanaka: please check .jp", f"{PILL}: please check .jp")
    out = matrix_to_text(content, NAMES.get)
    assert out.text == "Carol Tanaka (.jp): please check .jp"
    assert out.mentioned == (CAROL,)
    assert out.lead == "please check .jp"  # what a subject is made of


def test_mention_forms_and_non_members() -> None:
    html = (
        '<a href="https://matrix.to/#/%40alice%3Atest.local?via=test.local">Alice</a>, '
        '<a href="matrix:u/carol:test.local?action=chat">C</a> and '
        '<a href="https://matrix.to/#/@mallory:evil.test">Alice Jansen (.nl)</a>'
    )
    out = html_to_text(html, NAMES.get)
    # A non-member's display name is shown with their id: it cannot pass for a member's.
    assert out.text == (
        "Alice Jansen (.nl), Carol Tanaka (.jp) and Alice Jansen (.nl) (@mallory:evil.test)"
    )
    assert out.mentioned == ("@alice:test.local", CAROL, "@mallory:evil.test")


def test_lists_nested_and_numbered() -> None:
    html = (
        '<p>Steps:</p>\n<ol start="3">\n<li>rotate the <strong>KSK</strong></li>\n'
        "<li>check\n<ul>\n<li>DS at the parent</li>\n<li>RRSIGs</li>\n</ul>\n</li>\n</ol>\n"
        "<ul><li>first line<br>second line</li></ul>"
    )
    assert html_to_text(html).text == (
        "Steps:\n\n"
        "3. rotate the *KSK*\n"
        "4. check\n"
        "   - DS at the parent\n"
        "   - RRSIGs\n\n"
        "- first line\n"
        "  second line"
    )


def test_code_blocks_are_verbatim_and_fenced() -> None:
    html = (
        '<pre><code class="language-bash">dig +dnssec example.nl  SOA\n'
        "  &lt;indented&gt; ``` inside\n</code></pre>\n"
    )
    assert html_to_text(html).text == (
        "````bash\ndig +dnssec example.nl  SOA\n  <indented> ``` inside\n````"
    )


def test_quotes_headings_rules_and_tables() -> None:
    html = (
        "<blockquote>\n<p>quoted</p>\n<blockquote><p>deeper</p></blockquote>\n</blockquote>\n"
        "<h1>Incident</h1><h2>Scope</h2><h3>Detail</h3><hr>"
        "<table><thead><tr><th>TLD</th><th>State</th></tr></thead>"
        "<tbody><tr><td>.nl</td><td>ok</td></tr><tr><td>.br</td><td>degraded</td></tr></tbody>"
        "</table>"
    )
    assert html_to_text(html).text == (
        "> quoted\n>\n> > deeper\n\n"
        "Incident\n========\n\n"
        "Scope\n-----\n\n"
        "### Detail\n\n" + "-" * 40 + "\n\n"
        "TLD | State\n"
        "----+---------\n"
        ".nl | ok\n"
        ".br | degraded"
    )


def test_links_inline_and_as_footnotes() -> None:
    html = (
        '<p>See <a href="https://a.test/1">the report</a>, <a href="https://b.test/">'
        'https://b.test/</a> and <a href="mailto:cert@test.example">cert@test.example</a>; '
        '<a href="javascript:alert(1)">not a link</a>.</p>'
    )
    assert html_to_text(html).text == (
        "See the report <https://a.test/1>, https://b.test/ and mailto:cert@test.example; "
        "not a link."
    )
    assert html_to_text(html, links="footnotes").text == (
        "See the report [1], https://b.test/ and mailto:cert@test.example; not a link.\n\n"
        "[1] https://a.test/1"
    )


def test_reply_fallbacks_are_dropped() -> None:
    content = element(
        "> <@bob:test.local> earlier\n\nmy answer",
        '<mx-reply><blockquote><a href="https://matrix.to/#/!r/$e">In reply to</a> '
        "earlier</blockquote></mx-reply>my answer",
    )
    assert matrix_to_text(content).text == "my answer"
    plain = {"msgtype": "m.text", "body": "> <@bob:test.local> earlier\n> more\n\nmy answer"}
    assert matrix_to_text(plain).text == "my answer"
    assert strip_reply_fallback("> not a fallback\ntext") == "> not a fallback\ntext"


def test_plain_body_when_there_is_no_html() -> None:
    assert matrix_to_text({"msgtype": "m.text", "body": "just *text*\r\n"}).text == "just *text*"
    # An HTML format without a formatted body falls back to the body as well.
    assert matrix_to_text({"body": "b", "format": "org.matrix.custom.html"}).text == "b"


def test_images_spoilers_and_emotes_in_text() -> None:
    html = (
        '<img src="mxc://test.local/x" alt="graph"> <img src="mxc://t/e" alt=":fire:" '
        'data-mx-emoticon> <span data-mx-spoiler="ioc">198.51.100.7</span>'
    )
    assert html_to_text(html).text == "[image: graph] :fire: [spoiler: ioc] 198.51.100.7"


def test_hostile_depth_and_size_are_bounded() -> None:
    deep = "<div>" * 5000 + "bottom" + "</div>" * 5000
    assert html_to_text(deep).text == "bottom"
    wide = "<b>x</b>" * 50_000
    assert html_to_text(wide).text == "*x*" * 50_000
    lists = "<ul><li>" * 300 + "leaf" + "</li></ul>" * 300
    assert "leaf" in html_to_text(lists).text


def test_lead_skips_quotes_and_code() -> None:
    out = html_to_text("<blockquote>q</blockquote><pre>code</pre><p>The point</p>")
    assert out.lead == "The point"


def test_html_alternative_is_safe_and_names_members() -> None:
    html = html_alternative(
        f'{PILL}: <strong>look</strong> <img src="mxc://t/x" alt="graph">'
        '<script>x()</script><a href="https://a.test/" onclick="y()">r</a>'
        '<span data-mx-color="#ff0000">red</span>',
        NAMES.get,
    )
    tree = LexborHTMLParser(html)
    assert tree.css("img") == [] and tree.css("script") == []
    assert "Carol Tanaka (.jp): " in html and "matrix.to" not in html
    (link,) = tree.css("a")
    assert link.attributes == {"href": "https://a.test/", "rel": "noopener noreferrer"}
    assert "[graph]" in html and "data-mx-color" not in html
