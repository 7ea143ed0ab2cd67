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


def delete_in(tx: Tx, key: str) -> None:
    """Remove ``key`` inside the caller's transaction."""
    tx.execute("DELETE FROM kv WHERE key = ?", [key])


class KV(Repository):
    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def prefixed(self, prefix: str) -> dict[str, str]:
        """Every key that starts with ``prefix`` (marks), with its value, oldest first."""
        rows = self.db.execute(
            "SELECT key, value FROM kv WHERE substr(key, 1, ?) = ? ORDER BY rowid",
            [len(prefix), prefix],
        )
        return {str(k): str(v) for k, v in rows.fetchall()}

    def put(self, key: str, value: str) -> None:
        with self.transaction() as tx:
            put_in(tx, key, value)
