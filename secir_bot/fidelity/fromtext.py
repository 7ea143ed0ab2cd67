"""Mail → Matrix: a text/plain mail as Matrix HTML that reads like the mail.

Paragraphs stay paragraphs and hard line breaks stay line breaks; ``>`` quotes become
(nested) block quotes; URLs become links; blocks that are laid out in columns (zone
excerpts, ``dig`` output, logs with tabs) and fenced code become ``<pre>`` blocks of their
own, and only those; the signature after ``-- `` is shown in grey. The quoted earlier
message at the end of a reply (after an "On … wrote:" line, or below Outlook's "Original
Message" header block) is folded into a ``<details>`` element, which Element shows
collapsed; a long quote in the middle is folded too. Nothing is dropped: the plain
``body`` keeps the whole text, and the folded parts open on a click.

The HTML is built from escaped text and then passed through ``sanitize.for_matrix``.
Callers cut an over-long text *before* converting it (the HTML is longer than the text).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from secir_bot.fidelity.flowed import SIGNATURE_SEPARATOR, Line, logical_lines
from secir_bot.fidelity.sanitize import for_matrix

HTML_FORMAT = "org.matrix.custom.html"
MAX_QUOTE_DEPTH = 20  # deeper quoting is shown at this depth (Matrix limits nesting)
LONG_QUOTE_LINES = 15  # a quote longer than this, anywhere, is folded
MAX_SIGNATURE_LINES = 15  # a "-- " further from the end than this is not a signature
SIGNATURE_COLOR = "#808080"
# Links: a scheme we link, then anything up to blank space or a character that cannot be
# in a URL written in text. One pass, no backtracking: linear on any input.
_URL = re.compile(r"\b(?:https?://|ftp://|mailto:)[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?*_~'\""
_PAIRS = {")": "(", "]": "[", "}": "{"}
# Outlook and other clients that quote below a header block instead of with ">".
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|"
    r"mensaje original|oorspronkelijk bericht|messaggio originale|mensagem original|"
    r"исходное сообщение|forwarded message)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_RULE = re.compile(r"^\s*_{20,}\s*$")
_HEADER_LINE = re.compile(r"^\s*(from|von|de|van|da|от)\s*:", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)")
_COLUMNS = re.compile(r"\S {3,}\S|\t")


@dataclass(frozen=True)
class MatrixText:
    """A message for Matrix: the plain ``body`` and its ``formatted_body``."""

    body: str
    formatted_body: str

    def content(self, msgtype: str = "m.text") -> dict[str, Any]:
        """The event content, with ``m.mentions`` empty (relayed text pings nobody)."""
        return {
            "msgtype": msgtype,
            "body": self.body,
            "format": HTML_FORMAT,
            "formatted_body": self.formatted_body,
            "m.mentions": {},
        }


def _trim_url(url: str) -> str:
    """Punctuation that ends a sentence is not part of the URL before it; a closing
    bracket is, when the URL opened it ("…/Foo_(bar)")."""
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _PAIRS and url.count(last) > url.count(_PAIRS[last]):
            url = url[:-1]
        else:
            break
    return url


def linkify(text: str) -> str:
    """``text`` escaped for HTML, with the URLs in it as links."""
    out = []
    pos = 0
    for found in _URL.finditer(text):
        url = _trim_url(found.group(0))
        if url.lower() in ("http://", "https://", "ftp://", "mailto:"):
            continue
        start = found.start()
        out.append(html.escape(text[pos:start]))
        out.append(f'<a href="{html.escape(url)}">{html.escape(url)}</a>')
        pos = start + len(url)
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _text_line(text: str) -> str:
    """One line of prose: leading blanks kept (indented lists stay indented)."""
    stripped = text.lstrip(" ")
    return "\u00a0" * (len(text) - len(stripped)) + linkify(stripped)


def _laid_out(lines: list[str]) -> bool:
    """Whether a block of lines is laid out in columns or indented like code, which only
    a monospace block keeps readable."""
    if any(_COLUMNS.search(line) for line in lines):
        return True
    return all(line.startswith("    ") for line in lines)


def _pre(lines: list[str]) -> str:
    return "<pre><code>" + html.escape("\n".join(lines)) + "</code></pre>"


def _prose(texts: list[str]) -> str:
    """Lines of one quote level: fenced code, paragraphs, laid-out blocks."""
    out: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if block:
            if _laid_out(block):
                out.append(_pre(block))
            else:
                out.append("<p>" + "<br>".join(_text_line(t) for t in block) + "</p>")
            block.clear()

    i = 0
    while i < len(texts):
        fence = _FENCE.match(texts[i])
        if fence:
            flush()
            end = next(
                (
                    j
                    for j in range(i + 1, len(texts))
                    if texts[j].strip().startswith(fence.group(1))
                ),
                len(texts),
            )
            out.append(_pre(texts[i + 1 : end]))
            i = end + 1
            continue
        if texts[i].strip():
            block.append(texts[i].rstrip())
        else:
            flush()
        i += 1
    flush()
    return "".join(out)


def _lines(count: int) -> str:
    return "1 line" if count == 1 else f"{count} lines"


def _fold(summary: str, inner: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>"


def _render(lines: list[Line]) -> str:
    """Lines with relative quote depths as HTML (quotes nested, long ones folded)."""
    out = []
    i = 0
    while i < len(lines):
        j = i
        if lines[i].depth > 0:
            while j < len(lines) and lines[j].depth > 0:
                j += 1
            quoted = lines[i:j]
            inner = "<blockquote>" + _render([Line(q.depth - 1, q.text) for q in quoted])
            inner += "</blockquote>"
            count = sum(1 for q in quoted if q.text.strip())
            out.append(
                _fold(f"Quoted text ({_lines(count)})", inner)
                if count > LONG_QUOTE_LINES
                else inner
            )
        else:
            while j < len(lines) and lines[j].depth == 0:
                j += 1
            out.append(_prose([ln.text for ln in lines[i:j]]))
        i = j
    return "".join(out)


def _signature_start(lines: list[Line]) -> int | None:
    """Where the signature separator is, when what follows it looks like a signature: a
    few unquoted lines at the end."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].depth > 0:
            return None
        if lines[i].text in (SIGNATURE_SEPARATOR, "--"):
            after = [ln for ln in lines[i + 1 :] if ln.text.strip()]
            return i if len(after) <= MAX_SIGNATURE_LINES else None
    return None


@dataclass(frozen=True)
class _Tail:
    start: int
    summary: str
    quoted: bool  # a ">" quote (else a header block such as Outlook's, at depth 0)
    attribution: bool  # the first line is the "… wrote:" line shown as the summary


def _tail_start(lines: list[Line]) -> _Tail | None:
    """Where the quoted earlier message at the end begins, and how to summarise it."""
    for i, line in enumerate(lines):
        if line.depth == 0 and (
            _ORIGINAL.match(line.text)
            or (
                _RULE.match(line.text)
                and any(_HEADER_LINE.match(n.text) for n in lines[i + 1 : i + 3])
            )
        ):
            own = any(ln.depth == 0 and ln.text.strip() for ln in lines[:i])
            if own and "forwarded" not in line.text.lower():
                return _Tail(i, "Earlier message", quoted=False, attribution=False)
    last_own = max(
        (i for i, ln in enumerate(lines) if ln.depth == 0 and ln.text.strip()), default=-1
    )
    quoted_after = [i for i in range(last_own + 1, len(lines)) if lines[i].depth > 0]
    if last_own < 0 or not quoted_after:
        return None
    attribution = lines[last_own].text.strip()
    if attribution.endswith(":") and len(attribution) <= 300:
        # "On Tue, 4 Mar 2025, Alice wrote:" belongs to the quote it introduces; when it
        # is the only text of the mail, the quote is what the mail has to say.
        if any(ln.depth == 0 and ln.text.strip() for ln in lines[:last_own]):
            return _Tail(last_own, attribution, quoted=True, attribution=True)
        return None
    return _Tail(quoted_after[0], "Quoted text", quoted=True, attribution=False)


def _folded_tail(tail: list[Line], found: _Tail) -> str:
    if found.attribution:
        tail = tail[1:]
    if found.quoted:
        # The folded block quote is the first level of quoting.
        tail = [Line(ln.depth - 1, ln.text) if ln.depth else ln for ln in tail]
    count = sum(1 for ln in tail if ln.text.strip())
    label = found.summary if len(found.summary) <= 120 else found.summary[:119] + "…"
    return _fold(f"{label} ({_lines(count)})", "<blockquote>" + _render(tail) + "</blockquote>")


def _signature_html(signature: list[Line]) -> str:
    sig_lines = [ln.text for ln in signature if ln.depth == 0]
    while sig_lines and not sig_lines[-1].strip():
        sig_lines.pop()
    if not sig_lines:
        return ""
    shown = "<br>".join(_text_line(t) for t in ["-- ", *sig_lines])
    return f'<p><span data-mx-color="{SIGNATURE_COLOR}">{shown}</span></p>'


def _body(lines: list[Line]) -> str:
    return "\n".join(("> " * ln.depth) + ln.text for ln in lines).strip("\n")


def text_to_matrix(text: str, *, flowed: bool = False, delsp: bool = False) -> MatrixText:
    """A mail's text/plain as a Matrix message (see the module docstring)."""
    lines = [
        Line(min(ln.depth, MAX_QUOTE_DEPTH), ln.text)
        for ln in logical_lines(text, flowed=flowed, delsp=delsp)
    ]
    body = _body(lines)
    # The signature at the very end (bottom-posting), else the one above the quoted tail
    # (top-posting, as Outlook and Thunderbird do by default).
    signature: list[Line] = []
    sig = _signature_start(lines)
    if sig is not None:
        lines, signature = lines[:sig], lines[sig + 1 :]
    tail_html = ""
    found = _tail_start(lines)
    if found is not None:
        lines, tail = lines[: found.start], lines[found.start :]
        tail_html = _folded_tail(tail, found)
    if sig is None:
        sig = _signature_start(lines)
        if sig is not None:
            lines, signature = lines[:sig], lines[sig + 1 :]
    html_parts = [_render(lines), _signature_html(signature), tail_html]
    return MatrixText(body=body, formatted_body=for_matrix("".join(html_parts)))
