"""Mail → Matrix: an HTML mail as Matrix HTML, sanitised, with a plain ``body``.

HTML-only mail (webmail, Outlook, Apple Mail) is reduced by nh3 to Matrix's allowed tags
and attributes (``sanitize``). Every image becomes its alt text: a remote one would tell
the sender's server who read the mail and when, and one the mail carries itself (a
``cid:`` part) is posted as an encrypted file event of its own in the post's thread, since
an ``<img>`` in ``formatted_body`` can only name unencrypted media.

The quoted earlier message at the end of a reply is folded into ``<details>``, as in
``fromtext``: Thunderbird's ``moz-cite-prefix`` and ``blockquote type=cite``, Gmail's
``gmail_quote``, Outlook's ``divRplyFwdMsg`` block and everything after it. A quote in
the middle (an answer between quoted lines) stays open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from selectolax.lexbor import LexborHTMLParser, LexborNode

from secir_bot.fidelity.attachments import MailParts
from secir_bot.fidelity.fromtext import MatrixText, text_to_matrix
from secir_bot.fidelity.sanitize import (
    DROPPED_WITH_CONTENT,
    MAX_NESTING,
    for_matrix,
    nesting_depth,
)
from secir_bot.fidelity.totext import html_to_text

# Where the quoted earlier message starts, by client. The first one that matches, in
# document order, and that is followed by no text of the author's, is folded.
_QUOTE_STARTS = (
    "div.moz-cite-prefix",
    "div.gmail_quote",
    "blockquote.gmail_quote",
    "div#divRplyFwdMsg",
    "div#appendonsend",
    "div.OutlookMessageHeader",
    'blockquote[type="cite"]',
)
# Outlook's header block is followed by the quoted message as its siblings: whatever
# follows it belongs to the quote.
_EVERYTHING_AFTER = ("div#divRplyFwdMsg", "div#appendonsend", "div.OutlookMessageHeader")
_BEGIN, _END = "\ue000", "\ue001"  # private-use markers, removed from the input first
_MARKERS = re.compile(f"[{_BEGIN}{_END}][0-9]*[{_BEGIN}{_END}]")


@dataclass(frozen=True)
class _Candidate:
    number: int
    everything_after: bool  # Outlook: the quote is the rest of the mail
    start: int  # the candidate whose begin marker starts the tail (an attribution line)


def _previous_element(node: LexborNode) -> LexborNode | None:
    prev = node.prev
    while prev is not None and not prev.is_element_node:
        if prev.is_text_node and (prev.text_content or "").strip(_BEGIN + _END + "0123456789 \n"):
            return None
        prev = prev.prev
    return prev


def _mark(tree: LexborHTMLParser) -> list[_Candidate]:
    """Put numbered markers around each candidate start of a quoted tail."""
    found: list[_Candidate] = []
    numbers: dict[int, int] = {}
    for selector in _QUOTE_STARTS:
        for node in tree.css(selector):
            if node.mem_id in numbers:
                continue
            number = len(found)
            numbers[node.mem_id] = number
            start = number
            prev = _previous_element(node)
            if node.tag == "blockquote" and prev is not None and prev.mem_id in numbers:
                # Thunderbird's "On …, Alice wrote:" line just above the quote.
                start = numbers[prev.mem_id]
            node.insert_before(f"{_BEGIN}{number}{_BEGIN}")
            node.insert_after(f"{_END}{number}{_END}")
            found.append(_Candidate(number, selector in _EVERYTHING_AFTER, start))
    return found


def _strip_markers(text: str) -> str:
    return _MARKERS.sub("", text)


def _split_tail(markup: str) -> tuple[str, str]:
    """(the author's part, the quoted tail) of an HTML body; the tail may be empty."""
    tree = LexborHTMLParser(markup)
    for tag in DROPPED_WITH_CONTENT:
        for node in tree.css(tag):
            node.decompose()
    candidates = _mark(tree)
    if tree.body is None:
        return "", ""
    html = tree.body.inner_html or ""
    text = tree.body.text(deep=True)
    best = -1  # where the tail begins in html
    for cand in candidates:
        begin = f"{_BEGIN}{cand.start}{_BEGIN}"
        end = f"{_END}{cand.number}{_END}"
        before = _strip_markers(text[: text.find(begin)])
        after = _strip_markers(text[text.find(end) + len(end) :])
        if not before.strip():
            continue  # nothing of the author's before it: the quote is the message
        if not cand.everything_after and after.strip():
            continue  # the author wrote below it: an inline answer, not a tail
        position = html.find(begin)
        if best < 0 or position < best:
            best = position
    if best < 0:
        return _strip_markers(html), ""
    return _strip_markers(html[:best]), _strip_markers(html[best:])


def html_to_matrix(markup: str) -> MatrixText:
    """An HTML mail body as a Matrix message."""
    markup = markup.replace(_BEGIN, "").replace(_END, "")
    own, tail = _split_tail(markup)
    formatted = for_matrix(own)
    if tail:
        folded = for_matrix(tail)
        first = next((ln for ln in html_to_text(folded).text.split("\n") if ln.strip()), "")
        summary = first if first.endswith(":") and len(first) <= 120 else "Quoted text"
        formatted += (
            f"<details><summary>{escape(summary)}</summary>"
            f"<blockquote>{folded}</blockquote></details>"
        )
    # The plain body: the author's part, then the quoted tail as a "> " quote.
    body = html_to_text(
        for_matrix(own) + (f"<blockquote>{for_matrix(tail)}</blockquote>" if tail else "")
    ).text
    if nesting_depth(formatted) > MAX_NESTING:
        # Markup nested deeper than Matrix allows: shown as its text.
        return text_to_matrix(body)
    return MatrixText(body=body, formatted_body=formatted)


def room_text(parts: MailParts) -> MatrixText:
    """The Matrix message for a walked mail: its plain text when it has one (flowed or
    not), else its HTML, else nothing."""
    if parts.text is not None:
        return text_to_matrix(parts.text.text, flowed=parts.text.flowed, delsp=parts.text.delsp)
    if parts.html is not None:
        return html_to_matrix(parts.html)
    return MatrixText(body="", formatted_body="")
