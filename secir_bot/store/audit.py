"""The audit log's storage: append inside the caller's transaction, read the tail, verify.

The ``audit`` table (migration 006). An entry is appended with the transaction's own
connection, so it commits or rolls back together with the change it records. The newest
``seq:hash`` is also kept in ``kv`` (``audit.head``) in the same commit, so that removing the
newest rows without also editing that key is noticed.
"""

from __future__ import annotations

import time

from secir_bot.audit import GENESIS, Entry, Evidence, Verdict, canonical_evidence, entry_hash
from secir_bot.audit import verify as verify_chain
from secir_bot.store.base import Repository, Tx
from secir_bot.store.kv import KV, put_in

HEAD_KEY = "audit.head"
SYSTEM_ACTOR = "secir-bot"  # the actor of entries the bot makes on its own (expiry, say)

_COLUMNS = "seq, at, actor, action, target, reason, evidence, prev, hash"


def _entry(row: tuple[object, ...]) -> Entry:
    seq, at, actor, action, target, reason, evidence, prev, digest = row
    return Entry(
        seq=int(str(seq)),
        at=float(str(at)),
        actor=str(actor),
        action=str(action),
        target=str(target),
        reason=str(reason),
        evidence=str(evidence),
        prev=str(prev),
        hash=str(digest),
    )


class Audit(Repository):
    def append(
        self,
        tx: Tx,
        *,
        actor: str,
        action: str,
        target: str,
        reason: str = "",
        evidence: Evidence | None = None,
        at: float | None = None,
    ) -> Entry:
        """Add an entry in the open transaction ``tx``; return it."""
        row = tx.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, GENESIS) if row is None else (int(row[0]) + 1, str(row[1]))
        when = time.time() if at is None else at
        text = canonical_evidence(evidence or {})
        digest = entry_hash(prev, seq, when, actor, action, target, reason, text)
        tx.execute(
            f"INSERT INTO audit ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            [seq, when, actor, action, target, reason, text, prev, digest],
        )
        put_in(tx, HEAD_KEY, f"{seq}:{digest}")
        return Entry(seq, when, actor, action, target, reason, text, prev, digest)

    def entries(self) -> list[Entry]:
        """Every entry, oldest first (in stored order; ``verify`` judges that order)."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY rowid").fetchall()
        return [_entry(tuple(r)) for r in rows]

    def by_ref(self, ref: str) -> Entry | None:
        """The entry of the change that the message ``ref`` (a Matrix event id, a
        Message-ID) made, if it made one: a command read again after a crash is not run
        twice."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM audit WHERE json_extract(evidence, '$.ref') = ?"
            " ORDER BY seq LIMIT 1",
            [ref],
        ).fetchone()
        return None if row is None else _entry(tuple(row))

    def all_by_ref(self, ref: str) -> list[Entry]:
        """Every change that the message ``ref`` made (a command mail holds several)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM audit WHERE json_extract(evidence, '$.ref') = ? ORDER BY seq",
            [ref],
        ).fetchall()
        return [_entry(tuple(row)) for row in rows]

    def tail(self, n: int) -> list[Entry]:
        """The newest ``n`` entries, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?", [max(0, n)]
        ).fetchall()
        return [_entry(tuple(r)) for r in reversed(rows)]

    def verify(self, expect_head: str | None = None) -> Verdict:
        """Check the whole chain, and that its newest entry is the head recorded with it."""
        verdict = verify_chain(self.entries(), expect_head)
        recorded = KV(self.db).get(HEAD_KEY)
        if recorded is not None and recorded != verdict.head:
            return Verdict(
                count=verdict.count,
                head=verdict.head,
                problems=(
                    *verdict.problems,
                    f"the newest entry is {verdict.head.split(':')[0]} but "
                    f"{recorded.split(':')[0]} was recorded as the head: the newest entries "
                    "were removed",
                ),
            )
        if recorded is None and verdict.count:
            return Verdict(
                count=verdict.count,
                head=verdict.head,
                problems=(*verdict.problems, "the recorded head of the log is missing"),
            )
        return verdict
