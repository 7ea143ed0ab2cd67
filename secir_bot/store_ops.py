"""Store reads and writes for the operations commands (dead letters, devices, status).

Kept apart from ``store.py`` so that module stays as it is while the store is being split;
these move into the store package's outbox, devices and inbox repositories later.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from secir_bot.store import Store


@dataclass(frozen=True)
class DeadLetter:
    id: int
    channel: str
    target: str
    kind: str
    attempts: int
    created_at: float
    last_error: str


def dead_letters(store: Store, limit: int = 50) -> list[DeadLetter]:
    rows = store.db.execute(
        "SELECT id, channel, target, kind, attempts, created_at, last_error FROM outbox"
        " WHERE state = 'dead' ORDER BY id DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or "") for r in rows]


def dead_letter(store: Store, row_id: int) -> DeadLetter | None:
    return next((d for d in dead_letters(store, 10_000) if d.id == row_id), None)


def retry(tx: sqlite3.Connection, row_id: int, now: float) -> bool:
    """Put a dead letter back in the queue, due now; False if it is not dead (any more)."""
    cur = tx.execute(
        "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
        " created_at = ? WHERE id = ? AND state = 'dead'",
        [now, now, row_id],
    )
    return cur.rowcount == 1


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    ed25519: str
    state: str
    first_seen: float


def devices(store: Store, user_id: str) -> list[DeviceRow]:
    rows = store.db.execute(
        "SELECT device_id, ed25519, state, first_seen FROM devices WHERE user_id = ?"
        " ORDER BY first_seen",
        [user_id],
    ).fetchall()
    return [DeviceRow(r[0], r[1] or "", r[2], r[3] or 0.0) for r in rows]


def set_device_state(tx: sqlite3.Connection, user_id: str, device_id: str, state: str) -> bool:
    cur = tx.execute(
        "UPDATE devices SET state = ? WHERE user_id = ? AND device_id = ?",
        [state, user_id, device_id],
    )
    return cur.rowcount == 1


def outbox_counts(store: Store) -> dict[str, int]:
    rows = store.db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def last_received(store: Store) -> dict[str, float]:
    """The time of the newest item received per source (email, matrix)."""
    rows = store.db.execute("SELECT source, max(received_at) FROM inbox GROUP BY source")
    return {str(r[0]): float(r[1]) for r in rows.fetchall() if r[1] is not None}
