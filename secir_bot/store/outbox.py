"""Deliveries to make: one row per (post or notice, destination), drained by the outbox.

A row keeps the exact bytes to send (rendered at decision time), its recipients and the
ones already done; a failure counts an attempt and sets the next one; a row that fails for
good is a dead letter, which an admin may put back (``retry``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from secir_bot.model import Channel, DeliveryKind, LinkKind
from secir_bot.store.base import Repository, Tx, dict_rows
from secir_bot.store.posts import link as link_in


@dataclass(frozen=True)
class OutboxRow:
    id: int
    post_uid: str | None
    channel: Channel
    target: str
    kind: DeliveryKind
    payload: bytes
    recipients: tuple[str, ...]
    attempts: int
    created_at: float
    done: tuple[str, ...]
    due_at: float = 0.0


@dataclass(frozen=True)
class NewDelivery:
    """An outbox row to create as part of a decision."""

    channel: Channel
    target: str
    kind: DeliveryKind
    payload: bytes
    recipients: tuple[str, ...] = ()
    post_uid: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    channel: str
    target: str
    kind: str
    attempts: int
    created_at: float
    last_error: str


UPLOAD_KEY = "matrix.upload."  # kv: the mxc URL of a Matrix row's encrypted file, once sent


def upload_key(row: OutboxRow) -> str:
    """The kv key under which a Matrix row's uploaded file is remembered while the row is
    pending (a retry posts the same upload). ``created_at`` changes when an admin puts a
    dead letter back, so such a row uploads its file afresh."""
    return f"{UPLOAD_KEY}{row.id}.{int(row.created_at * 1000)}"


def enqueue_in(tx: Tx, d: NewDelivery, now: float) -> None:
    """Queue a delivery inside the caller's transaction."""
    tx.execute(
        "INSERT INTO outbox (post_uid, channel, target, kind, payload, recipients, state,"
        " attempts, next_attempt_at, created_at, done) VALUES (?,?,?,?,?,?, 'pending', 0,?,?,'[]')",
        [
            d.post_uid,
            d.channel.value,
            d.target,
            d.kind,
            d.payload,
            json.dumps(d.recipients),
            now,
            now,
        ],
    )


def _row(row: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        post_uid=row["post_uid"],
        channel=Channel(row["channel"]),
        target=row["target"],
        kind=DeliveryKind(row["kind"]),
        payload=bytes(row["payload"] or b""),
        recipients=tuple(json.loads(row["recipients"] or "[]")),
        attempts=row["attempts"],
        created_at=row["created_at"],
        due_at=row["next_attempt_at"] or 0.0,
        done=tuple(json.loads(row["done"] or "[]")),
    )


class Outbox(Repository):
    def enqueue(self, delivery: NewDelivery) -> None:
        with self.transaction() as tx:
            enqueue_in(tx, delivery, time.time())

    def pending(self, channel: Channel) -> list[OutboxRow]:
        """Every pending row of a channel in creation order, due or not."""
        cur = self.db.execute(
            "SELECT * FROM outbox WHERE state = 'pending' AND channel = ? ORDER BY id",
            [channel.value],
        )
        return [_row(r) for r in dict_rows(cur)]

    def of_post(self, post_uid: str) -> list[OutboxRow]:
        """Every row of a post, whatever its state, in creation order."""
        cur = self.db.execute("SELECT * FROM outbox WHERE post_uid = ? ORDER BY id", [post_uid])
        return [_row(r) for r in dict_rows(cur)]

    def due(self, channel: Channel, now: float) -> list[OutboxRow]:
        """Pending rows of a channel that are due, in creation order."""
        return [r for r in self.pending(channel) if r.due_at <= now]

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def next_time(self, now: float | None = None) -> float | None:
        """The next future retry time (rows already due are drained, or wait behind one)."""
        row = self.db.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'"
            " AND next_attempt_at > ?",
            [time.time() if now is None else now],
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivered(
        self,
        row_id: int,
        result: str,
        link: tuple[LinkKind, str] | None = None,
        post_uid: str | None = None,
    ) -> None:
        """A row went out; ``link`` names its post on the channel (a Matrix event)."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET state = 'sent', result = ?, last_error = NULL WHERE id = ?",
                [result, row_id],
            )
            if link is not None and post_uid is not None:
                link_in(tx, link[0], link[1], post_uid)

    def partly_delivered(self, row_id: int, done: tuple[str, ...]) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE outbox SET done = ? WHERE id = ?", [json.dumps(done), row_id])

    def retry_later(self, row_id: int, error: str, at: float) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                [error, at, row_id],
            )

    def dead(self, row_id: int, error: str) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1,"
                " last_error = ? WHERE id = ?",
                [error, row_id],
            )

    # -- dead letters (the operations commands) ------------------------------------------

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        rows = self.db.execute(
            "SELECT id, channel, target, kind, attempts, created_at, last_error FROM outbox"
            " WHERE state = 'dead' ORDER BY id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or "") for r in rows]

    def dead_letter(self, row_id: int) -> DeadLetter | None:
        return next((d for d in self.dead_letters(10_000) if d.id == row_id), None)

    def retry(self, tx: Tx, row_id: int, now: float) -> bool:
        """Put a dead letter back in the queue, due now; False if it is not dead (any more)."""
        cur = tx.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " created_at = ? WHERE id = ? AND state = 'dead'",
            [now, now, row_id],
        )
        return cur.rowcount == 1

    def forget_uploads(self) -> int:
        """Delete the remembered uploads of rows that are no longer pending (sent, dead, or
        put back with a new ``created_at``): no retry will post them. Returns how many."""
        with self.transaction() as tx:
            keys = tx.execute(
                "SELECT key FROM kv WHERE substr(key, 1, ?) = ?", [len(UPLOAD_KEY), UPLOAD_KEY]
            ).fetchall()
            pending = tx.execute(
                "SELECT * FROM outbox WHERE state = 'pending' AND id IN"
                " (SELECT CAST(substr(key, ?) AS INTEGER) FROM kv WHERE substr(key, 1, ?) = ?)",
                [len(UPLOAD_KEY) + 1, len(UPLOAD_KEY), UPLOAD_KEY],
            )
            wanted = {upload_key(_row(r)) for r in dict_rows(pending)}
            spent = [str(k) for (k,) in keys if str(k) not in wanted]
            tx.executemany("DELETE FROM kv WHERE key = ?", [[k] for k in spent])
        return len(spent)
