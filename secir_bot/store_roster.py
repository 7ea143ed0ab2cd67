"""Roster writes inside a caller's transaction, and roster facts the commands show.

``Store.add_member`` commits on its own; a command must add, revoke or re-key members in the
same transaction as its audit entry, so these take the open connection. Moves into the store
package (``store/members.py``) when the store is split.
"""

from __future__ import annotations

import sqlite3
import time

from secir_bot.model import Channel
from secir_bot.store import Store


class RosterConflict(Exception):
    """The roster already has this email, key or Matrix id."""


def insert_member(
    tx: sqlite3.Connection,
    *,
    tld: str,
    tld_display: str,
    name: str,
    email: str,
    fingerprint: str,
    matrix_id: str | None,
    channels: frozenset[Channel],
    rank: int,
    now: float | None = None,
) -> int:
    try:
        cur = tx.execute(
            "INSERT INTO members (tld, tld_display, name, email, fingerprint, matrix_id,"
            " channels, rank, status, added_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                tld,
                tld_display,
                name,
                email.lower(),
                fingerprint.upper(),
                matrix_id,
                ",".join(sorted(channels)),
                rank,
                "active",
                time.time() if now is None else now,
            ],
        )
    except sqlite3.IntegrityError:
        raise RosterConflict(
            f"{email}, key {fingerprint} or {matrix_id or 'its Matrix id'} is already on the roster"
        ) from None
    return int(cur.lastrowid or 0)


def set_status(tx: sqlite3.Connection, member_ids: list[int], status: str) -> int:
    """Set the status of the given members that are active; return how many changed."""
    changed = 0
    for member_id in member_ids:
        changed += tx.execute(
            "UPDATE members SET status = ? WHERE id = ? AND status = 'active'", [status, member_id]
        ).rowcount
    return changed


def set_fingerprint(tx: sqlite3.Connection, member_id: int, old: str, new: str) -> None:
    try:
        cur = tx.execute(
            "UPDATE members SET fingerprint = ? WHERE id = ? AND fingerprint = ?",
            [new.upper(), member_id, old.upper()],
        )
    except sqlite3.IntegrityError:
        raise RosterConflict(f"key {new} is already registered for another member") from None
    if cur.rowcount != 1:
        raise RosterConflict("the member's key changed meanwhile")


def last_activity(store: Store, member_id: int) -> float | None:
    """When the member last posted (a relayed post), if ever."""
    row = store.db.execute(
        "SELECT max(created_at) FROM posts WHERE author_id = ?", [member_id]
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])
