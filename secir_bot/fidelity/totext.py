"""Matrix → mail: a message's HTML (``formatted_body``) as good plain text.

Element writes what its members type in Markdown as HTML in ``formatted_body`` and keeps
the Markdown source in ``body``; mailing ``body`` would show ``**Urgent**``. This turns the
HTML into the plain text that mail readers expect: paragraphs, ``*strong*`` and
``_emphasis_``, ``- `` and ``1. `` lists (nested ones indented), code blocks fenced with
backticks and kept verbatim, ``> `` quotes, headings underlined, links written out (inline
as ``text <url>`` or as ``text [1]`` with footnotes), tables in columns, and mentions of
members ("pills") as the member's "Name (.tld)".

The tree comes from selectolax (the Lexbor HTML5 parser, linear on hostile markup); the
walk below is bounded in depth, whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from selectolax.lexbor import LexborHTMLParser, LexborNode

from secir_bot.fidelity.relations import mentioned_user
from secir_bot.fidelity.sanitize import DROPPED_WITH_CONTENT, LINK_SCHEMES, for_mail

# A member's "Name (.tld)" for a Matrix user id, or None for someone who is not a member.
Resolver = Callable[[str], str | None]
HTML_FORMAT = "org.matrix.custom.html"
MAX_DEPTH = 60  # elements deeper than this are taken as their plain text
HR = "-" * 40
_BLOCK = frozenset(
    {
        "p", "div", "blockquote", "ul", "ol", "li", "pre", "h1", "h2", "h3", "h4", "h5", "h6",
        "hr", "table", "details", "summary", "section", "article", "header", "footer", "main",
        "nav", "aside", "address", "figure", "figcaption", "center", "dl", "dt", "dd",
        "caption", "thead", "tbody", "tfoot", "tr", "th", "td", "form", "fieldset",
    }
)  # fmt: skip
# Blocks separated from their neighbours by a newline only (the rest by a blank line).
_TIGHT = frozenset({"div", "li", "dt", "dd", "summary", "tr", "address"})
_WS = re.compile(r"[ \t\r\n\f]+")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")


def no_names(user_id: str) -> str | None:
    """A resolver that knows nobody."""
    return None


@dataclass(frozen=True)
class MailText:
    """The plain text of a Matrix message for mail."""

    text: str
    mentioned: tuple[str, ...] = ()  # user ids of the mentions, in order of appearance
    lead: str = ""  # the first line without the mentions it starts with (for a subject)


@dataclass
class _Context:
    resolve: Resolver
    links: Literal["inline", "footnotes"]
    footnotes: list[str] = field(default_factory=list)
    mentioned: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # how each mention was written


@dataclass
class _Block:
    text: str
    tight: bool = False


def _wrap_inline(marker: str, inner: str) -> str:
    """``*x*`` around the text, with its outer blanks kept outside the markers."""
    core = inner.strip()
    if not core:
        return inner
    lead = inner[: len(inner) - len(inner.lstrip())]
    trail = inner[len(inner.rstrip()) :]
    return f"{lead}{marker}{core}{marker}{trail}"


def _link(node: LexborNode, inner: str, ctx: _Context) -> str:
    href = (node.attributes.get("href") or "").strip()
    user = mentioned_user(href)
    if user is not None:
        label = ctx.resolve(user)
        shown = label if label else f"{inner.strip() or user} ({user})"
        ctx.mentioned.append(user)
        ctx.shown.append(shown)
        return shown
    scheme = _SCHEME.match(href)
    if not href or scheme is None or scheme.group(1).lower() not in LINK_SCHEMES:
        return inner
    text = inner.strip()
    if not text or text == href or href == f"mailto:{text}":
        return href
    if ctx.links == "footnotes":
        ctx.footnotes.append(href)
        return f"{inner} [{len(ctx.footnotes)}]"
    return f"{inner} <{href}>"


def _inline(node: LexborNode, ctx: _Context, depth: int) -> str:
    """The text of an inline element (whose own children may be inline only)."""
    tag = node.tag or ""
    if tag == "br":
        return "\n"
    if tag == "img":
        alt = " ".join((node.attributes.get("alt") or "").split())
        if "data-mx-emoticon" in node.attributes and alt:
            return alt
        return f"[image: {alt}]" if alt else "[image]"
    inner = _inline_children(node, ctx, depth + 1)
    if tag in ("strong", "b"):
        return _wrap_inline("*", inner)
    if tag in ("em", "i", "u"):
        return _wrap_inline("_", inner)
    if tag in ("del", "s", "strike"):
        return _wrap_inline("~", inner)
    if tag == "code":
        return f"`{inner}`" if inner else ""
    if tag == "a":
        return _link(node, inner, ctx)
    if tag == "span" and "data-mx-spoiler" in node.attributes:
        reason = node.attributes.get("data-mx-spoiler") or ""
        return f"[spoiler{': ' + reason if reason else ''}] {inner}"
    return inner


def _inline_children(node: LexborNode, ctx: _Context, depth: int) -> str:
    parts = []
    child = node.child
    while child is not None:
        if child.is_text_node:
            parts.append(_WS.sub(" ", child.text_content or ""))
        elif child.is_element_node and (child.tag or "") not in DROPPED_WITH_CONTENT:
            if depth > MAX_DEPTH:
                parts.append(_WS.sub(" ", child.text(deep=True)))
            elif (child.tag or "") in _BLOCK:
                # A block inside an inline element (invalid, but parsers allow it).
                parts.append("\n" + _block(child, ctx, depth + 1).text + "\n")
            else:
                parts.append(_inline(child, ctx, depth + 1))
        child = child.next
    return "".join(parts)


def _tidy(text: str) -> str:
    """Inline text as lines: blanks at the line ends dropped, no empty lines kept."""
    lines = [line.strip(" ") for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def _flow(node: LexborNode, ctx: _Context, depth: int) -> str:
    """The content of a container: runs of inline content and the blocks between them."""
    blocks: list[_Block] = []
    run: list[str] = []

    def flush() -> None:
        text = _tidy("".join(run))
        run.clear()
        if text:
            blocks.append(_Block(text, tight=True))

    child = node.child
    while child is not None:
        tag = child.tag or ""
        if child.is_text_node:
            run.append(_WS.sub(" ", child.text_content or ""))
        elif child.is_element_node and tag not in DROPPED_WITH_CONTENT:
            if depth > MAX_DEPTH:
                run.append(_WS.sub(" ", child.text(deep=True)))
            elif tag in _BLOCK:
                flush()
                block = _block(child, ctx, depth + 1)
                if block.text:
                    blocks.append(block)
            else:
                run.append(_inline(child, ctx, depth + 1))
        child = child.next
    flush()
    out = ""
    for i, block in enumerate(blocks):
        if i:
            tight = block.tight and blocks[i - 1].tight
            out += "\n" if tight else "\n\n"
        out += block.text
    return out


def _indent(text: str, first: str, rest: str) -> str:
    lines = text.split("\n")
    return "\n".join(
        (first if i == 0 else rest if line else "") + line for i, line in enumerate(lines)
    )


def _list(node: LexborNode, ctx: _Context, depth: int, ordered: bool) -> str:
    start_attr = (node.attributes.get("start") or "1").strip()
    number = int(start_attr) if start_attr.isdigit() and len(start_attr) < 7 else 1
    items = []
    child = node.child
    while child is not None:
        if child.is_element_node and child.tag == "li":
            marker = f"{number}. " if ordered else "- "
            number += 1
            body = _flow(child, ctx, depth + 1).replace("\n\n", "\n")
            items.append(_indent(body, marker, " " * len(marker)))
        elif child.is_element_node or (child.is_text_node and (child.text_content or "").strip()):
            # Content of a list outside any item: shown as an item of its own.
            text = _flow(child, ctx, depth + 1) if child.is_element_node else child.text_content
            if text and text.strip():
                items.append(_indent(text.strip(), "- ", "  "))
        child = child.next
    return "\n".join(items)


def _pre(node: LexborNode) -> str:
    text = node.text(deep=True).replace("\r\n", "\n").removeprefix("\n").rstrip("\n")
    code = node.css_first("code")
    classes = (code.attributes.get("class") or "") if code is not None else ""
    language = next(
        (c.removeprefix("language-") for c in classes.split() if c.startswith("language-")), ""
    )
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language[:30]}\n{text}\n{fence}"


def _table(node: LexborNode, ctx: _Context, depth: int) -> str:
    rows: list[list[str]] = []
    header = False
    for tr in node.css("tr"):
        cells = []
        for cell in tr.iter():
            if cell.tag in ("td", "th"):
                text = _flow(cell, ctx, depth + 1)
                cells.append(" ".join(text.split()))
                header = header or (not rows and cell.tag == "th")
        if cells:
            rows.append(cells)
    if not rows:
        return ""
    columns = max(len(r) for r in rows)
    widths = [min(40, max(len(r[i]) if i < len(r) else 0 for r in rows)) for i in range(columns)]
    lines = [
        " | ".join((r[i] if i < len(r) else "").ljust(widths[i]) for i in range(columns)).rstrip()
        for r in rows
    ]
    if header:
        lines.insert(1, "-+-".join("-" * w for w in widths))
    caption = node.css_first("caption")
    title = " ".join(caption.text(deep=True).split()) if caption is not None else ""
    return "\n".join(([title] if title else []) + lines)


def _block(node: LexborNode, ctx: _Context, depth: int) -> _Block:
    tag = node.tag or ""
    tight = tag in _TIGHT
    if depth > MAX_DEPTH:
        return _Block(" ".join(node.text(deep=True).split()), tight)
    if tag == "pre":
        return _Block(_pre(node))
    if tag == "hr":
        return _Block(HR)
    if tag == "blockquote":
        inner = _flow(node, ctx, depth)
        return _Block("\n".join(("> " + line) if line else ">" for line in inner.split("\n")))
    if tag in ("ul", "ol"):
        return _Block(_list(node, ctx, depth, ordered=tag == "ol"))
    if tag == "table":
        return _Block(_table(node, ctx, depth))
    if tag == "li":
        return _Block(_indent(_flow(node, ctx, depth), "- ", "  "), tight=True)
    if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
        title = " ".join(_flow(node, ctx, depth).split())
        if not title:
            return _Block("")
        if tag in ("h1", "h2"):
            return _Block(title + "\n" + ("=" if tag == "h1" else "-") * min(len(title), 72))
        return _Block("#" * int(tag[1]) + " " + title)
    return _Block(_flow(node, ctx, depth), tight)


def _finish(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _lead(text: str, shown: list[str]) -> str:
    """The first line of the author's own text (quotes and code blocks skipped), without
    the mentions it opens with ("Carol (.jp): …")."""
    line = first = ""
    fence = ""
    for raw in text.split("\n"):
        stripped = raw.strip()
        if fence:
            fence = "" if stripped == fence else fence
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[: len(stripped) - len(stripped.lstrip(stripped[0]))]
            continue
        first = first or stripped
        if stripped and not stripped.startswith(">"):
            line = stripped
            break
    line = line or first
    changed = True
    while changed:
        changed = False
        for label in shown:
            if label and line.startswith(label):
                line = line[len(label) :].lstrip(" :,;-").lstrip()
                changed = True
    return line


def html_to_text(
    markup: str,
    resolve: Resolver = no_names,
    *,
    links: Literal["inline", "footnotes"] = "inline",
) -> MailText:
    """Matrix HTML (or any HTML) as plain text; see the module docstring."""
    ctx = _Context(resolve=resolve, links=links)
    body = LexborHTMLParser(markup).body
    text = _finish(_flow(body, ctx, 0)) if body is not None else ""
    if ctx.footnotes:
        text += "\n\n" + "\n".join(f"[{i}] {url}" for i, url in enumerate(ctx.footnotes, 1))
    unique = tuple(dict.fromkeys(ctx.mentioned))
    return MailText(text=text, mentioned=unique, lead=_lead(text, ctx.shown))


def strip_reply_fallback(body: str) -> str:
    """A plain body without the ``> <@user> …`` quote that older clients put before a
    reply (removed from the spec in v1.13; clients still send it)."""
    lines = body.split("\n")
    if lines and lines[0].startswith("> <"):
        while lines and lines[0].startswith(">"):
            lines.pop(0)
        while lines and not lines[0].strip():
            lines.pop(0)
    return "\n".join(lines)


def matrix_to_text(
    content: Mapping[str, Any],
    resolve: Resolver = no_names,
    *,
    links: Literal["inline", "footnotes"] = "inline",
) -> MailText:
    """The text for mail of a Matrix message's content (or of an edit's
    ``m.new_content``): from ``formatted_body`` when it is HTML, so the Markdown source
    in ``body`` never reaches mail, else from ``body``."""
    formatted = content.get("formatted_body")
    if content.get("format") == HTML_FORMAT and isinstance(formatted, str) and formatted.strip():
        return html_to_text(formatted, resolve, links=links)
    body = strip_reply_fallback(str(content.get("body") or "")).replace("\r\n", "\n").strip("\n")
    return MailText(text=body, lead=_lead(body, []))


def html_alternative(formatted_body: str, resolve: Resolver = no_names) -> str:
    """A Matrix message's HTML for the optional HTML alternative of the list's mail:
    mentions written as the member's "Name (.tld)" (mail readers have no Matrix ids),
    reply fallbacks dropped, and the rest reduced by ``sanitize.for_mail``."""
    tree = LexborHTMLParser(formatted_body)
    for anchor in tree.css("a"):
        user = mentioned_user(anchor.attributes.get("href") or "")
        if user is not None:
            label = resolve(user)
            anchor.replace_with(label if label else f"{anchor.text().strip() or user} ({user})")
    body = tree.body
    return for_mail((body.inner_html or "") if body is not None else "")
