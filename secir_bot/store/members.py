"""The roster: one row per person appointed by a ccTLD.

``add`` commits on its own (the CLI, the sandbox); a command adds, revokes or re-keys
members with ``insert``, ``set_status`` and ``set_fingerprint`` in the transaction of its
audit entry.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from secir_bot.errors import StoreError
from secir_bot.model import Channel, Member
from secir_bot.store.base import Repository, Tx, dict_rows


class RosterConflict(Exception):
    """The roster already has this email, key or Matrix id."""


def member_of(row: dict[str, Any]) -> Member:
    return Member(
        id=row["id"],
        tld=row["tld"],
        tld_display=row["tld_display"] or "." + row["tld"],
        name=row["name"],
        email=row["email"],
        fingerprint=row["fingerprint"],
        matrix_id=row["matrix_id"],
        channels=frozenset(Channel(c) for c in row["channels"].split(",") if c),
        rank=row["rank"] or 1,
        status=row["status"],
    )


class Members(Repository):
    def add(
        self,
        *,
        tld: str,
        tld_display: str,
        name: str,
        email: str,
        fingerprint: str,
        matrix_id: str | None,
        channels: frozenset[Channel],
        rank: int = 1,
    ) -> Member:
        try:
            with self.transaction() as tx:
                member_id = self.insert(
                    tx,
                    tld=tld,
                    tld_display=tld_display,
                    name=name,
                    email=email,
                    fingerprint=fingerprint,
                    matrix_id=matrix_id,
                    channels=channels,
                    rank=rank,
                )
        except RosterConflict as exc:
            raise StoreError(str(exc)) from exc
        member = self.get(member_id)
        assert member is not None
        return member

    def _select(self, where: str, params: list[Any]) -> list[Member]:
        rows = self.db.execute(
            f"SELECT * FROM members WHERE {where} ORDER BY tld, rank, id", params
        )
        return [member_of(r) for r in dict_rows(rows)]

    def _one(self, where: str, value: object) -> Member | None:
        found = self._select(where, [value])
        return found[0] if found else None

    def get(self, member_id: int) -> Member | None:
        return self._one("id = ?", member_id)

    def by_fingerprint(self, fpr: str) -> Member | None:
        return self._one("fingerprint = ?", fpr.upper())

    def by_email(self, email: str) -> Member | None:
        return self._one("email = ?", email.lower())

    def by_matrix_id(self, mxid: str) -> Member | None:
        return self._one("matrix_id = ?", mxid)

    def all(self, *, active_only: bool = True) -> list[Member]:
        return self._select("status = 'active'" if active_only else "1", [])

    # -- in a command's transaction ----------------------------------------------------------

    def insert(
        self,
        tx: Tx,
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
            return int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            raise RosterConflict(
                f"{email}, key {fingerprint} or {matrix_id or 'its Matrix id'} is already on "
                "the roster"
            ) from None

    def set_status(self, tx: Tx, member_ids: list[int], status: str) -> int:
        """Set the status of the given members that are active; return how many changed."""
        changed = 0
        for member_id in member_ids:
            changed += tx.execute(
                "UPDATE members SET status = ? WHERE id = ? AND status = 'active'",
                [status, member_id],
            ).rowcount
        return changed

    def set_fingerprint(self, tx: Tx, member_id: int, old: str, new: str) -> None:
        try:
            cur = tx.execute(
                "UPDATE members SET fingerprint = ? WHERE id = ? AND fingerprint = ?",
                [new.upper(), member_id, old.upper()],
            )
        except sqlite3.IntegrityError:
            raise RosterConflict(f"key {new} is already registered for another member") from None
        if cur.rowcount != 1:
            raise RosterConflict("the member's key changed meanwhile")
