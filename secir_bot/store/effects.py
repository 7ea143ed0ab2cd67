"""The durable queue of command effects (migration 006).

A change and its effects commit together: the invitation mail of ``!invite`` cannot be lost
to a crash between the commit and its delivery, and cannot be sent for a change that rolled
back. A front end reads the pending effects, turns each into deliveries (outbox rows) and
marks it done in the same transaction as those rows. The effects are stored as JSON text
(``commands.effects`` writes and reads it); this module only keeps rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from secir_bot.store.base import Repository, Tx


@dataclass(frozen=True)
class EffectRow:
    id: int
    created_at: float
    actor: str
    action: str
    effect: str  # JSON, see commands.effects


class Effects(Repository):
    def record(
        self, tx: Tx, effects: list[str], *, actor: str, action: str, now: float
    ) -> list[int]:
        ids = []
        for effect in effects:
            cur = tx.execute(
                "INSERT INTO command_effects (created_at, actor, action, effect) VALUES (?,?,?,?)",
                [now, actor, action, effect],
            )
            ids.append(int(cur.lastrowid or 0))
        return ids

    def pending(self) -> list[EffectRow]:
        rows = self.db.execute(
            "SELECT id, created_at, actor, action, effect FROM command_effects"
            " WHERE done_at IS NULL ORDER BY id"
        ).fetchall()
        return [EffectRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def done(self, tx: Tx, effect_id: int, now: float) -> bool:
        """Mark one effect carried out (in the transaction that queued its deliveries).

        Its text is erased: an invitation or challenge mail carries a one-time secret, which
        the store otherwise keeps only as a hash. The row stays, as a trace of when.
        """
        cur = tx.execute(
            "UPDATE command_effects SET done_at = ?, effect = '' WHERE id = ? AND done_at IS NULL",
            [now, effect_id],
        )
        return cur.rowcount == 1
