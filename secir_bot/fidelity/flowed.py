"""Mail text as logical lines with their quote depth; format=flowed (RFC 3676) undone.

Thunderbird, K-9 and Apple Mail send ``format=flowed``: a line that ends in a space
continues on the next one, so a reader can re-wrap paragraphs to any width. Other clients
wrap hard at about 72 columns. Either way, quoted lines start with ``>`` marks, one per
level. This module turns both into the same thing: ``Line`` values, each one logical line
of text with its quote depth, which ``fromtext`` turns into Matrix HTML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SIGNATURE_SEPARATOR = "-- "
# Quote marks of fixed (not flowed) text: ">" optionally followed by one blank, repeated,
# as in "> > text" or ">> text".
_FIXED_QUOTE = re.compile(r"^(?:>[ \t]?)+")
_FLOWED_QUOTE = re.compile(r"^>+")


@dataclass(frozen=True)
class Line:
    """One logical line: its text without quote marks, and how deeply it is quoted."""

    depth: int
    text: str


def _quote_depth_fixed(line: str) -> tuple[int, str]:
    found = _FIXED_QUOTE.match(line)
    if found is None:
        return 0, line
    return found.group(0).count(">"), line[found.end() :]


def fixed_lines(text: str) -> list[Line]:
    """Hard-wrapped text: every line is a line; quote marks counted and removed."""
    return [Line(*_quote_depth_fixed(line)) for line in text.split("\n")]


def flowed_lines(text: str, delsp: bool = False) -> list[Line]:
    """format=flowed text (RFC 3676 §4): soft breaks joined within the same quote depth,
    space-stuffing removed, the signature separator kept as a line of its own."""
    out: list[Line] = []
    pending: Line | None = None  # a flowed line waiting for its continuation
    for raw in text.split("\n"):
        found = _FLOWED_QUOTE.match(raw)
        depth = len(found.group(0)) if found else 0
        line = raw[depth:]
        if line.startswith(" "):
            line = line[1:]  # space-stuffing (§4.4)
        is_separator = line == SIGNATURE_SEPARATOR
        soft = line.endswith(" ") and not is_separator
        if soft and delsp:
            line = line[:-1]
        if pending is not None:
            if pending.depth == depth and not is_separator:
                line = pending.text + line
            else:
                # A flowed line followed by another depth is taken as fixed (§4.5).
                out.append(pending)
            pending = None
        if soft:
            pending = Line(depth, line)
        else:
            out.append(Line(depth, line))
    if pending is not None:
        out.append(pending)
    return out


def logical_lines(text: str, *, flowed: bool = False, delsp: bool = False) -> list[Line]:
    """The logical lines of a mail's text, whichever way it was wrapped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return flowed_lines(text, delsp) if flowed else fixed_lines(text)


def unflow(text: str, *, delsp: bool = False) -> str:
    """format=flowed text as plain text: paragraphs on one line each, quotes as "> "."""
    return "\n".join(
        ("> " * line.depth if line.depth else "") + line.text
        for line in flowed_lines(text.replace("\r\n", "\n"), delsp)
    )
