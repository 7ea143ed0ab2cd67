"""Pending confirmations of commands (``!confirm <code>``): short-lived, durable, single use.

The ``confirmations`` table (migration 006). A code is stored only as its SHA-256, bound to
the actor, the front end and the exact command and arguments it confirms. It is spent in
the same transaction as the change it confirms, so it cannot confirm twice even if two
messages race.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from secir_bot.store.base import Repository, Tx

# Easy to read and to type: no 0/O, 1/I/L, U. 30^8 codes, each valid for minutes.
_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"


def new_code(length: int = 8) -> str:
    code = "".join(secrets.choice(_ALPHABET) for _ in range(length))
    return f"{code[:4]}-{code[4:]}" if length == 8 else code


def code_hash(code: str) -> str:
    """The stored form of a code as typed: case, spaces and dashes do not matter."""
    clean = "".join(code.split()).replace("-", "").upper()
    return hashlib.sha256(clean.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Pending:
    actor: str
    front: str
    command: str
    args: tuple[str, ...]
    body: str
    expires_at: float
    used_at: float | None


class Confirmations(Repository):
    def create(
        self,
        *,
        actor: str,
        front: str,
        command: str,
        args: tuple[str, ...],
        body: str,
        now: float,
        ttl: float,
    ) -> str:
        """Record a new confirmation; return its code (shown once, never stored)."""
        code = new_code()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO confirmations (code_hash, actor, front, command, args, created_at,"
                " expires_at) VALUES (?,?,?,?,?,?,?)",
                [
                    code_hash(code),
                    actor,
                    front,
                    command,
                    json.dumps([list(args), body]),
                    now,
                    now + ttl,
                ],
            )
        return code

    def find(self, code: str) -> Pending | None:
        row = self.db.execute(
            "SELECT actor, front, command, args, expires_at, used_at FROM confirmations"
            " WHERE code_hash = ?",
            [code_hash(code)],
        ).fetchone()
        if row is None:
            return None
        args, body = json.loads(row[3])
        return Pending(
            actor=row[0],
            front=row[1],
            command=row[2],
            args=tuple(args),
            body=body,
            expires_at=float(row[4]),
            used_at=None if row[5] is None else float(row[5]),
        )

    def spend(self, tx: Tx, code: str, now: float) -> bool:
        """Mark the code used in the open transaction; False if it was already used."""
        cur = tx.execute(
            "UPDATE confirmations SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
            [now, code_hash(code)],
        )
        return cur.rowcount == 1

    def purge(self, before: float) -> int:
        """Forget codes that expired before ``before`` (they can no longer be used anyway)."""
        with self.transaction() as tx:
            return tx.execute("DELETE FROM confirmations WHERE expires_at < ?", [before]).rowcount
