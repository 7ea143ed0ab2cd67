"""Migration 003_signatures.

Every member signature that was relayed, so that none is relayed twice (replays).

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

from secir_bot.store.base import table

NAME = "003_signatures"


def apply(db: sqlite_utils.Database) -> None:
    # Every member signature that was relayed, so that none is relayed twice (replays).
    table(db, "signatures").create(
        {"signer": str, "signature_id": str, "inbox_id": int, "seen_at": float},
        pk=("signer", "signature_id"),
    )
