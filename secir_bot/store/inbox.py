"""Every received item, raw bytes kept, made durable before its source is acknowledged.

Mail is unique per (Message-ID, hash of its bytes): anyone can send a mail under a member's
Message-ID first, and it must not decide the member's genuine mail; the same bytes fetched
again are the same item. Matrix events are unique by event id (their digest is empty: a
parked event's bytes change when it is decrypted).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from secir_bot.errors import StoreError
from secir_bot.model import Channel, InboxState
from secir_bot.store.base import Repository, Tx, dict_rows
from secir_bot.store.kv import put_in

SYNC_TOKEN_KEY = "matrix.sync_token"


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: Channel
    source_id: str
    raw: bytes
    meta: dict[str, Any]  # what the bridge noted (``model.MailFacts``, ``model.MatrixFacts``)
    state: InboxState
    reason: str | None
    post_uid: str | None
    received_at: float = 0.0
    attempts: int = 0  # starts of its decision (``begin_attempt``): the crash guard's count


def digest(source: Channel, raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest() if source == Channel.EMAIL else ""


def _accept(
    tx: Tx,
    source: Channel,
    source_id: str,
    raw: bytes,
    meta: dict[str, Any] | None,
    state: InboxState = InboxState.NEW,
) -> bool:
    cur = tx.execute(
        "INSERT INTO inbox (source, source_id, digest, raw, meta, received_at, state)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT(source, source_id, digest) DO NOTHING",
        [source, source_id, digest(source, raw), raw, json.dumps(meta or {}), time.time(), state],
    )
    return cur.rowcount == 1


class Inbox(Repository):
    def accept(
        self, source: Channel, source_id: str, raw: bytes, meta: dict[str, Any] | None = None
    ) -> tuple[InboxItem, bool]:
        """Make a received item durable; return it and whether it was new."""
        with self.transaction() as tx:
            new = _accept(tx, source, source_id, raw, meta)
        rows = self._select(
            "source = ? AND source_id = ? AND digest = ?",
            [source, source_id, digest(source, raw)],
        )
        return rows[0], new

    def accept_sync(
        self, items: list[tuple[str, bytes, dict[str, Any], InboxState]], token: str
    ) -> None:
        """Store a Matrix sync's events and, in the same commit, the position after them.

        Each item is (event id, raw JSON, meta, initial state): NEW, or PARKED for an event
        that could not be decrypted yet.
        """
        with self.transaction() as tx:
            for source_id, raw, meta, state in items:
                _accept(tx, Channel.MATRIX, source_id, raw, meta, state)
            put_in(tx, SYNC_TOKEN_KEY, token)

    def unpark(self, item_id: int, raw: bytes, meta: dict[str, Any]) -> None:
        """A parked event was decrypted: keep the clear event and queue it."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE inbox SET raw = ?, meta = ?, state = 'new' WHERE id = ?"
                " AND state = 'parked'",
                [raw, json.dumps(meta), item_id],
            )

    def item(self, source: Channel, source_id: str) -> InboxItem | None:
        """The first item received under ``source_id`` (mail may have several)."""
        rows = self._select("source = ? AND source_id = ?", [source, source_id])
        return rows[0] if rows else None

    def pending(self, source: Channel, state: InboxState = InboxState.NEW) -> list[InboxItem]:
        return self._select("source = ? AND state = ?", [source, state])

    def window(self, source: Channel, after: int, parked_since: float) -> list[InboxItem]:
        """What ``captions.plan`` looks at: the new items, the items parked since
        ``parked_since``, and every item received after item ``after``, in order."""
        return self._select(
            "source = ? AND (state = 'new' OR (state = 'parked' AND received_at >= ?) OR id > ?)",
            [source, parked_since, after],
        )

    def state(self, item_id: int) -> tuple[InboxState, str | None]:
        """An item's state and reason (without its bytes)."""
        row = self.db.execute("SELECT state, reason FROM inbox WHERE id = ?", [item_id]).fetchone()
        if row is None:
            raise StoreError(f"no inbox item {item_id}")
        return InboxState(row[0]), row[1]

    def _select(self, where: str, params: list[Any]) -> list[InboxItem]:
        cur = self.db.execute(f"SELECT * FROM inbox WHERE {where} ORDER BY id", params)
        return [
            InboxItem(
                id=row["id"],
                source=Channel(row["source"]),
                source_id=row["source_id"],
                raw=bytes(row["raw"] or b""),
                meta=json.loads(row["meta"] or "{}"),
                state=InboxState(row["state"]),
                reason=row["reason"],
                post_uid=row["post_uid"],
                received_at=row["received_at"] or 0.0,
                attempts=row["attempts"] or 0,
            )
            for row in dict_rows(cur)
        ]

    def begin_attempt(self, item_id: int) -> int:
        """Count one more start of processing for an item; return the new count."""
        with self.transaction() as tx:
            tx.execute("UPDATE inbox SET attempts = attempts + 1 WHERE id = ?", [item_id])
            row = tx.execute("SELECT attempts FROM inbox WHERE id = ?", [item_id]).fetchone()
        return int(row[0])

    def set_meta(self, item_id: int, meta: dict[str, Any]) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE inbox SET meta = ? WHERE id = ?", [json.dumps(meta), item_id])

    def count(self, source: Channel, state: InboxState) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM inbox WHERE source = ? AND state = ?", [source, state]
        ).fetchone()
        return int(row[0])

    def last_received(self) -> dict[str, float]:
        """The time of the newest item received per source (email, matrix)."""
        rows = self.db.execute("SELECT source, max(received_at) FROM inbox GROUP BY source")
        return {str(r[0]): float(r[1]) for r in rows.fetchall() if r[1] is not None}
