"""Migration 002_inbox_attempts.

How often processing of an item was started: the guard against poisonous items.

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

from secir_bot.store.base import table

NAME = "002_inbox_attempts"


def apply(db: sqlite_utils.Database) -> None:
    # How often processing of an item was started: the guard against poisonous items.
    table(db, "inbox").add_column("attempts", int, not_null_default=0)
