"""Migration 008_media.

Files of Matrix messages, fetched and decrypted at intake (issue 10).

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

from secir_bot.store.base import table

NAME = "008_media"


def apply(db: sqlite_utils.Database) -> None:
    # One row per media event of the incident room, written by the Matrix bridge before the
    # event is decided: the file as the member sent it (decrypted, its hash checked), or
    # why it could not be had. The steps read it; nothing is downloaded at decision time.
    table(db, "media").create(
        {
            "event_id": str,
            "filename": str,
            "content_type": str,
            "data": bytes,
            "problem": str,
            "created_at": float,
        },
        pk="event_id",
    )
