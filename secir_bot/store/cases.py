"""Storage of subscription cases and their nominees (migration 006).

Reads use the store's connection (or the caller's transaction, when given); writes take the
caller's open transaction, so that each change commits together with its audit entry.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from secir_bot.cases import Case, CaseState, Nominee, can_move, secret_hash
from secir_bot.nomination import NomineeForm
from secir_bot.store.base import Repository, Tx

_CASE = (
    "id, tld, state, contact_email, contact_org, contact_source, override_reason, whois_sha256,"
    " opened_by, opened_at, expires_at, closed_by, close_reason"
)
_NOMINEE = (
    "id, position, name, email, phone, fingerprint, key, matrix_id, timezone, languages,"
    " key_proven_at, matrix_joined_at"
)


class CaseConflict(Exception):
    """The case is not in a state that allows the change (someone else moved it first)."""


class Cases(Repository):
    def open_case(
        self,
        tx: Tx,
        *,
        tld: str,
        contact_email: str,
        contact_org: str,
        contact_source: str,
        override_reason: str | None,
        whois_sha256: str | None,
        code: str,
        opened_by: str,
        now: float,
        expires_at: float,
    ) -> int:
        try:
            cur = tx.execute(
                "INSERT INTO cases (tld, state, contact_email, contact_org, contact_source,"
                " override_reason, whois_sha256, code_hash, opened_by, opened_at, expires_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    tld,
                    CaseState.INVITED.value,
                    contact_email,
                    contact_org,
                    contact_source,
                    override_reason,
                    whois_sha256,
                    secret_hash(code),
                    opened_by,
                    now,
                    expires_at,
                    now,
                ],
            )
        except sqlite3.IntegrityError:
            raise CaseConflict(f"an open case for .{tld} exists already") from None
        return int(cur.lastrowid or 0)

    def move(
        self,
        tx: Tx,
        case: Case,
        state: CaseState,
        now: float,
        *,
        by: str | None = None,
        reason: str | None = None,
        ref: str | None = None,
    ) -> None:
        """Move ``case`` to ``state`` if it is still where the caller saw it."""
        if not can_move(case.state, state):
            raise CaseConflict(f"case {case.label} is {case.state}; it cannot become {state}")
        closing = state not in (CaseState.NOMINATED, CaseState.READY)
        cur = tx.execute(
            "UPDATE cases SET state = ?, updated_at = ?, closed_by = coalesce(?, closed_by),"
            " closed_at = CASE WHEN ? THEN ? ELSE closed_at END,"
            " close_reason = coalesce(?, close_reason),"
            " nomination_ref = coalesce(?, nomination_ref)"
            " WHERE id = ? AND state = ?",
            [state.value, now, by, closing, now, reason, ref, case.id, case.state.value],
        )
        if cur.rowcount != 1:
            raise CaseConflict(f"case {case.label} changed meanwhile; look at !pending again")

    def add_nominee(self, tx: Tx, case_id: int, form: NomineeForm, challenge: str) -> None:
        assert form.fingerprint is not None and form.key is not None
        tx.execute(
            "INSERT INTO nominees (case_id, position, name, email, phone, fingerprint, key,"
            " matrix_id, timezone, languages, challenge_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                case_id,
                form.position,
                form.name,
                form.email,
                form.phone,
                form.fingerprint,
                form.key,
                form.matrix_id,
                form.timezone,
                ",".join(form.languages),
                secret_hash(challenge),
            ],
        )

    def prove_key(self, tx: Tx, nominee_id: int, now: float, ref: str) -> None:
        tx.execute(
            "UPDATE nominees SET key_proven_at = ?, proof_ref = ?, challenge_hash = ''"
            " WHERE id = ? AND key_proven_at IS NULL",
            [now, ref, nominee_id],
        )

    def matrix_joined(self, tx: Tx, nominee_id: int, now: float) -> None:
        tx.execute(
            "UPDATE nominees SET matrix_joined_at = ? WHERE id = ? AND matrix_joined_at IS NULL",
            [now, nominee_id],
        )

    # -- reading ---------------------------------------------------------------------------

    def _conn(self, tx: Tx | None) -> sqlite3.Connection:
        return self.db.conn if tx is None else tx

    def _nominees(self, conn: sqlite3.Connection, case_id: int) -> tuple[Nominee, ...]:
        rows = conn.execute(
            f"SELECT {_NOMINEE} FROM nominees WHERE case_id = ? ORDER BY position", [case_id]
        ).fetchall()
        return tuple(
            Nominee(
                id=r[0],
                position=r[1],
                name=r[2],
                email=r[3],
                phone=r[4],
                fingerprint=r[5],
                key=r[6],
                matrix_id=r[7],
                timezone=r[8],
                languages=tuple(x for x in (r[9] or "").split(",") if x),
                key_proven_at=r[10],
                matrix_joined_at=r[11],
            )
            for r in rows
        )

    def _case(self, conn: sqlite3.Connection, row: Any) -> Case:
        return Case(
            id=row[0],
            tld=row[1],
            state=CaseState(row[2]),
            contact_email=row[3],
            contact_org=row[4],
            contact_source=row[5],
            override_reason=row[6],
            whois_sha256=row[7],
            opened_by=row[8],
            opened_at=row[9],
            expires_at=row[10],
            closed_by=row[11],
            close_reason=row[12],
            nominees=self._nominees(conn, row[0]),
        )

    def get(self, case_id: int, tx: Tx | None = None) -> Case | None:
        """A case by number (read in ``tx`` when given, to see its own changes)."""
        conn = self._conn(tx)
        row = conn.execute(f"SELECT {_CASE} FROM cases WHERE id = ?", [case_id]).fetchone()
        return None if row is None else self._case(conn, row)

    def by_code(self, code: str) -> Case | None:
        conn = self.db.conn
        row = conn.execute(
            f"SELECT {_CASE} FROM cases WHERE code_hash = ?", [secret_hash(code)]
        ).fetchone()
        return None if row is None else self._case(conn, row)

    def open_for(self, tld: str) -> Case | None:
        conn = self.db.conn
        row = conn.execute(
            f"SELECT {_CASE} FROM cases WHERE tld = ? AND state IN ('invited','nominated','ready')",
            [tld],
        ).fetchone()
        return None if row is None else self._case(conn, row)

    def open_cases(self) -> list[Case]:
        conn = self.db.conn
        rows = conn.execute(
            f"SELECT {_CASE} FROM cases WHERE state IN ('invited','nominated','ready') ORDER BY id"
        ).fetchall()
        return [self._case(conn, r) for r in rows]

    def nominee_by_challenge(self, challenge: str) -> tuple[Case, Nominee] | None:
        row = self.db.execute(
            "SELECT case_id, id FROM nominees WHERE challenge_hash = ?", [secret_hash(challenge)]
        ).fetchone()
        if row is None:
            return None
        case = self.get(row[0])
        assert case is not None
        nominee = next(n for n in case.nominees if n.id == row[1])
        return case, nominee

    def nominees_with_matrix_id(self, user_id: str) -> list[Case]:
        rows = self.db.execute(
            "SELECT DISTINCT case_id FROM nominees WHERE matrix_id = ?", [user_id]
        ).fetchall()
        cases = [self.get(r[0]) for r in rows]
        return [c for c in cases if c is not None and c.open]
