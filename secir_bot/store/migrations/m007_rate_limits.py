"""Migration 007_rate_limits.

Notices and answers counted per key and hour (backscatter).

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

from secir_bot.store.base import table

NAME = "007_rate_limits"


def apply(db: sqlite_utils.Database) -> None:
    # Notices and answers per key (a sender, a member) in the current window, and how many
    # were held back, so that the next one can say so (issue 6: backscatter).
    table(db, "rate_limits").create(
        {"key": str, "window_start": float, "sent": int, "held": int}, pk="key"
    )
