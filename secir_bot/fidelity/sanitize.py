"""HTML made safe with nh3 (Ammonia): Matrix's allowed subset, and a subset for mail.

The Matrix subset is the one the spec suggests clients render (Client-Server API,
"m.room.message msgtypes"): those tags only, and on them only the listed attributes, with
links to absolute ``https``, ``http``, ``ftp``, ``mailto`` and ``magnet`` URLs and images
only from ``mxc://``. Colours must be ``#`` and six hex digits, code classes
``language-…``. The bot applies it to everything it puts into a ``formatted_body``, even
HTML it wrote itself, so a mistake in a converter cannot reach members' clients.

The parser is Ammonia's (html5ever): linear on hostile markup. Nothing here raises.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import nh3
from selectolax.lexbor import LexborHTMLParser, LexborNode

MATRIX_TAGS = frozenset(
    {
        "del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "a", "ul", "ol",
        "sup", "sub", "li", "b", "i", "u", "strong", "em", "s", "code", "hr", "br", "div",
        "table", "thead", "tbody", "tr", "th", "td", "caption", "pre", "span", "img",
        "details", "summary",
    }
)  # fmt: skip
MATRIX_ATTRIBUTES = {
    "span": {"data-mx-bg-color", "data-mx-color", "data-mx-spoiler", "data-mx-maths"},
    "a": {"target", "href"},
    "img": {"width", "height", "alt", "title", "src"},
    "ol": {"start"},
    "code": {"class"},
    "div": {"data-mx-maths"},
}
LINK_SCHEMES = frozenset({"https", "http", "ftp", "mailto", "magnet"})
# Elements whose content is dropped with them (not shown as text).
DROPPED_WITH_CONTENT = frozenset(
    {"script", "style", "title", "head", "template", "noscript", "iframe", "object", "svg",
     "math", "textarea", "select", "mx-reply"}
)  # fmt: skip
# Tags must not nest deeper than this in a Matrix event (the spec's limit).
MAX_NESTING = 100
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_DIGITS = re.compile(r"[0-9]{1,5}")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""


def _matrix_attribute(tag: str, attr: str, value: str) -> str | None:
    """Keep an attribute only with a value the spec allows for it (never raises: nh3
    would report an exception as unraisable)."""
    if attr == "href":
        return value if _scheme(value) in LINK_SCHEMES else None
    if attr == "src":
        return value if tag == "img" and value.startswith("mxc://") else None
    if attr == "class":
        kept = [c for c in value.split() if c.startswith("language-") and len(c) < 60]
        return " ".join(kept) or None
    if attr in ("data-mx-color", "data-mx-bg-color"):
        return value if _COLOR.fullmatch(value) else None
    if attr in ("start", "width", "height"):
        return value if _DIGITS.fullmatch(value.strip()) else None
    if attr == "target":
        return "_blank" if value == "_blank" else None
    return value


_MATRIX = nh3.Cleaner(
    tags=set(MATRIX_TAGS),
    attributes=MATRIX_ATTRIBUTES,
    attribute_filter=_matrix_attribute,
    clean_content_tags=set(DROPPED_WITH_CONTENT),
    link_rel=None,
    url_schemes=set(LINK_SCHEMES | {"mxc"}),
    url_relative="deny",
)
# Mail: no images (mxc:// cannot be fetched by a mail client, and remote images are web
# bugs), no Matrix colour or spoiler attributes; links get rel="noopener noreferrer".
_MAIL = nh3.Cleaner(
    tags=set(MATRIX_TAGS - {"img", "span"}),
    attributes={"a": {"href"}, "ol": {"start"}, "code": {"class"}},
    attribute_filter=_matrix_attribute,
    clean_content_tags=set(DROPPED_WITH_CONTENT),
    url_schemes=set(LINK_SCHEMES),
    url_relative="deny",
)


def _images_to_text(markup: str) -> str:
    """Images become their alt text: remote images would be fetched by readers' clients
    (web bugs), an ``mxc://`` one from another server too (and mail clients cannot fetch
    it), and an image in ``formatted_body`` cannot be encrypted: a mail's own pictures
    travel as encrypted file events instead."""
    if "<img" not in markup.lower():
        return markup
    tree = LexborHTMLParser(markup)
    for img in tree.css("img"):
        alt = " ".join((img.attributes.get("alt") or "").split())
        if alt:
            img.replace_with(alt if "data-mx-emoticon" in img.attributes else f"[{alt}]")
        else:
            img.decompose()
    return (tree.body.inner_html or "") if tree.body is not None else ""


def for_matrix(markup: str) -> str:
    """``markup`` reduced to Matrix's allowed HTML: no image (each becomes its alt text),
    nesting no deeper than the spec allows (deeper markup is given as its text)."""
    clean = _MATRIX.clean(_images_to_text(markup))
    if nesting_depth(clean) > MAX_NESTING:
        text = LexborHTMLParser(clean).body
        flat = text.text(separator="\n") if text is not None else ""
        return html.escape(flat).replace("\n", "<br>")
    return clean


def for_mail(markup: str) -> str:
    """``markup`` reduced to the HTML the list puts into a mail's HTML alternative (no
    images: they become their alt text)."""
    return _MAIL.clean(_images_to_text(markup))


def nesting_depth(markup: str) -> int:
    """How deeply the elements of ``markup`` nest (0 for text only)."""
    tree = LexborHTMLParser(markup)
    root = tree.body
    if root is None:
        return 0
    deepest = 0
    stack: list[tuple[LexborNode, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        child = node.child
        while child is not None:
            if child.is_element_node:
                stack.append((child, depth + 1))
            child = child.next
    return deepest
