"""Member signatures already relayed: a signature is accepted once (replays are refused)."""

from __future__ import annotations

from secir_bot.store.base import Repository, Tx


def record(tx: Tx, signer: str, signature_id: str, inbox_id: int, now: float) -> None:
    """Note a relayed signature, in the transaction that records its post."""
    tx.execute(
        "INSERT INTO signatures (signer, signature_id, inbox_id, seen_at) VALUES (?,?,?,?)",
        [signer.upper(), signature_id, inbox_id, now],
    )


class Signatures(Repository):
    def seen(self, signer: str, signature_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM signatures WHERE signer = ? AND signature_id = ?",
            [signer.upper(), signature_id],
        ).fetchone()
        return row is not None
