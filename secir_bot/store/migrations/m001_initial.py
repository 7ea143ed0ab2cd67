"""Migration 001_initial.

The first schema: roster, posts and links, inbox, outbox, devices, small state.

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

from secir_bot.store.base import table

NAME = "001_initial"


def apply(db: sqlite_utils.Database) -> None:
    table(db, "members").create(
        {
            "id": int,
            "tld": str,
            "tld_display": str,
            "name": str,
            "email": str,
            "fingerprint": str,
            "matrix_id": str,
            "channels": str,
            "rank": int,
            "status": str,
            "added_at": float,
        },
        pk="id",
        not_null={"tld", "name", "email", "fingerprint", "channels", "status"},
    )
    table(db, "members").create_index(["email"], unique=True)
    table(db, "members").create_index(["fingerprint"], unique=True)
    table(db, "members").create_index(["matrix_id"], unique=True)
    table(db, "posts").create(
        {
            "uid": str,
            "origin": str,
            "author_id": int,
            "subject": str,
            "body": str,
            "parent_uid": str,
            "root_uid": str,
            "attachments": str,
            "created_at": float,
        },
        pk="uid",
        foreign_keys=[("author_id", "members", "id")],
    )
    table(db, "links").create({"kind": str, "value": str, "post_uid": str}, pk=("kind", "value"))
    table(db, "inbox").create(
        {
            "id": int,
            "source": str,
            "source_id": str,
            "raw": bytes,
            "meta": str,
            "received_at": float,
            "state": str,
            "reason": str,
            "post_uid": str,
            "decided_at": float,
        },
        pk="id",
        not_null={"source", "source_id", "state"},
    )
    table(db, "inbox").create_index(["source", "source_id"], unique=True)
    table(db, "inbox").create_index(["state"])
    table(db, "outbox").create(
        {
            "id": int,
            "post_uid": str,
            "channel": str,
            "target": str,
            "kind": str,
            "payload": bytes,
            "recipients": str,
            "state": str,
            "attempts": int,
            "next_attempt_at": float,
            "created_at": float,
            "last_error": str,
            "result": str,
            "done": str,
        },
        pk="id",
        not_null={"channel", "target", "state"},
    )
    table(db, "outbox").create_index(["state", "channel"])
    table(db, "devices").create(
        {"user_id": str, "device_id": str, "ed25519": str, "state": str, "first_seen": float},
        pk=("user_id", "device_id"),
    )
    table(db, "kv").create({"key": str, "value": str}, pk="key")
