"""Making a relayed mail fit in one encrypted Matrix event.

A Matrix event may be at most 65,536 bytes, signatures and server fields included. An
encrypted event is larger than its text in three ways: matrix-nio writes the plaintext
JSON with every non-ASCII character escaped (``\\u0436``: six bytes for one Cyrillic
letter), Megolm adds its MAC and signature, and the ciphertext is base64 (four bytes for
three). A mail in Russian of 5,000 characters, in ``body`` and again in
``formatted_body``, is already too large: the homeserver refuses it (``M_TOO_LARGE``) and
nothing reaches the room. ``fit`` cuts the text (at a line end) until the event fits; the
renderer says that it was cut, and the whole text still goes out by mail.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from secir_bot.fidelity.fromtext import MatrixText

EVENT_LIMIT = 65_536
# What the ciphertext may take: the rest of the event (the encrypted envelope's keys, the
# relations, and the fields and signatures the server adds) stays well under 4 KiB.
CIPHERTEXT_BUDGET = EVENT_LIMIT - 4_096
_MEGOLM_OVERHEAD = 1 + 5 + 16 + 8 + 64  # version, index, AES padding, MAC, signature


def encrypted_size(content: Mapping[str, Any], event_type: str = "m.room.message") -> int:
    """The size of the base64 Megolm ciphertext of an event with ``content``, as nio
    writes it (JSON with ASCII escapes, then encrypted, then base64)."""
    plaintext = json.dumps(
        {"type": event_type, "content": content, "room_id": "!" + "x" * 80 + ":server"},
        separators=(",", ":"),
    )
    return 4 * math.ceil((len(plaintext) + _MEGOLM_OVERHEAD) / 3)


def fit(
    text: str,
    render: Callable[[str, bool], Mapping[str, Any]],
    budget: int = CIPHERTEXT_BUDGET,
) -> tuple[Mapping[str, Any], bool]:
    """The event content for the longest start of ``text`` that fits in ``budget``, and
    whether ``text`` was cut. ``render(part, cut)`` builds the content (``cut`` tells it to
    add its note); it is called O(log n) times."""
    whole = render(text, False)
    if encrypted_size(whole) <= budget:
        return whole, False
    low, high = 0, len(text)
    best = render("", True)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = render(_cut(text, middle), True)
        if encrypted_size(candidate) <= budget:
            low, best = middle, candidate
        else:
            high = middle - 1
    return best, True


def _cut(text: str, length: int) -> str:
    """The first ``length`` characters, back to the last line end when there is one in the
    second half (a cut inside a line reads worse than a shorter text)."""
    part = text[:length]
    end = part.rfind("\n")
    return part[:end] if end > length // 2 else part


def fit_matrix_text(
    text: str,
    to_matrix: Callable[[str], MatrixText],
    note: str = "[… cut here: the whole text went out by mail]",
    budget: int = CIPHERTEXT_BUDGET,
) -> tuple[MatrixText, bool]:
    """``fit`` for the common case: ``to_matrix`` converts text (``text_to_matrix``, or a
    renderer that adds a heading), and a cut text ends with ``note``."""

    def render(part: str, cut: bool) -> dict[str, Any]:
        return to_matrix(part + ("\n\n" + note if cut else "")).content()

    content, cut = fit(text, render, budget)
    return MatrixText(str(content["body"]), str(content["formatted_body"])), cut
