"""Migration 004_inbox_digest.

Mail keyed by Message-ID *and* a hash of its bytes (F5).

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import hashlib

import sqlite_utils

from secir_bot.store.base import table

NAME = "004_inbox_digest"


def apply(db: sqlite_utils.Database) -> None:
    # Mail is keyed by Message-ID *and* a hash of its bytes: anyone can send a mail under a
    # member's Message-ID first, and it must not decide the member's genuine mail. The same
    # bytes fetched again (a crash before the IMAP move) are still the same item. Matrix
    # events keep an empty digest: their ids are the server's, and a parked event's raw
    # bytes change when it is decrypted.
    table(db, "inbox").add_column("digest", str, not_null_default="")
    rows = db.execute("SELECT id, raw FROM inbox WHERE source = 'email'").fetchall()
    for item_id, raw in rows:
        db.execute(
            "UPDATE inbox SET digest = ? WHERE id = ?",
            [_digest("email", bytes(raw or b"")), item_id],
        )
    db.execute("DROP INDEX IF EXISTS idx_inbox_source_source_id")
    table(db, "inbox").create_index(["source", "source_id", "digest"], unique=True)


def _digest(source: str, raw: bytes) -> str:
    # As the inbox keyed mail when this migration was written (kept here, unchanged).
    return hashlib.sha256(raw).hexdigest() if source == "email" else ""
