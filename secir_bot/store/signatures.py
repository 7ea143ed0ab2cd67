"""Member signatures already relayed: a signature is accepted once (replays are refused)."""

from __future__ import annotations

import sqlite3

from secir_bot.errors import SignatureSeen
from secir_bot.store.base import Repository, Tx


def record(tx: Tx, signer: str, signature_id: str, inbox_id: int, now: float) -> None:
    """Note a relayed signature, in the transaction that records its post.

    Raises ``SignatureSeen`` when it is there already: the replay check runs before this
    commit, so two mails carrying one signature decided at once both pass it, and the
    table's uniqueness is what refuses the second."""
    try:
        tx.execute(
            "INSERT INTO signatures (signer, signature_id, inbox_id, seen_at) VALUES (?,?,?,?)",
            [signer.upper(), signature_id, inbox_id, now],
        )
    except sqlite3.IntegrityError as exc:
        raise SignatureSeen(f"signature {signature_id} of {signer} was relayed already") from exc


class Signatures(Repository):
    def seen(self, signer: str, signature_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM signatures WHERE signer = ? AND signature_id = ?",
            [signer.upper(), signature_id],
        ).fetchone()
        return row is not None

    def signer_of_item(self, inbox_id: int) -> str | None:
        """The signer whose signature the inbox item ``inbox_id`` was recorded on, if any."""
        row = self.db.execute(
            "SELECT signer FROM signatures WHERE inbox_id = ? LIMIT 1", [inbox_id]
        ).fetchone()
        return None if row is None else str(row[0])
