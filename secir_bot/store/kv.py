"""Small state: the Matrix sync position, the list key's fingerprint, direct rooms, marks."""

from __future__ import annotations

from secir_bot.store.base import Repository, Tx

LIST_FPR_KEY = "list.fingerprint"  # the list key's fingerprint, written by init


def put_in(tx: Tx, key: str, value: str) -> None:
    """Set ``key`` inside the caller's transaction."""
    tx.execute(
        "INSERT INTO kv (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


class KV(Repository):
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        with self.transaction() as tx:
            put_in(tx, key, value)
