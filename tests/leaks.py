"""The secrets the test suite uses, and a log handler that looks for them in every record.

Fixtures and launchers register what they make (mail and Matrix passwords, access tokens,
the homeserver's own secrets) with :func:`secret`. :class:`LeakWatch`, a handler on the root
logger for the whole session, checks each record against them, in every spelling a library
might print (``redact.forms_of``), and against shapes that are secret whatever their value:
an armored OpenPGP secret key, a Synapse access token. ``conftest.py`` fails the test during
which a leak was logged, and the session if one was logged outside any test.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import defaultdict

from secir_bot.redact import forms_of

# Secret whatever the value: any secret key block, any Synapse access token.
SHAPES = (
    re.compile(r"-----BEGIN PGP PRIVATE KEY BLOCK-----"),
    re.compile(r"\bsyt_[A-Za-z0-9]+_[A-Za-z0-9]{10,}"),
)

# Spellings grouped by their first three characters: a record is only searched for the
# secrets whose start it contains, which keeps the check cheap on a busy debug log.
_by_start: dict[str, set[str]] = defaultdict(set)


def secret(*values: str) -> None:
    """Register secrets that must never appear in any log record."""
    for value in values:
        if len(value) < 4:
            continue  # too short to tell apart from ordinary text
        for form in forms_of(value):
            _by_start[form[:3]].add(form)


def found_in(text: str) -> list[str]:
    """What of the registered secrets and secret shapes ``text`` shows (for the report)."""
    hits = [shape.pattern for shape in SHAPES if shape.search(text)]
    for start, forms in list(_by_start.items()):
        if start in text:
            hits.extend(f"a registered secret ({len(f)} chars)" for f in forms if f in text)
    return hits


class LeakWatch(logging.Handler):
    """Records every log record that shows a secret (never the secret itself)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        hits = found_in(text)
        if hits:
            self.leaks.append(f"{record.name} {record.levelname}: {', '.join(sorted(set(hits)))}")


WATCH = LeakWatch()  # the session's watch (installed by conftest.py)
