"""Rate limits: how many notices about one key went out in the current window."""

from __future__ import annotations

from dataclasses import dataclass

from secir_bot.store.base import Repository


@dataclass(frozen=True)
class Rate:
    """One notice counted against its limit (``Rates.take``)."""

    allowed: bool  # it may go out
    held_before: int  # how many of its kind were held back in the window before
    last: bool  # it is the last one allowed in this window


class Rates(Repository):
    def take(self, key: str, limit: int, window: float, now: float) -> Rate:
        """Count one notice for ``key``; at most ``limit`` go out per ``window`` seconds."""
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT window_start, sent, held FROM rate_limits WHERE key = ?", [key]
            ).fetchone()
            if row is None or now - row[0] >= window:
                tx.execute(
                    "INSERT INTO rate_limits (key, window_start, sent, held) VALUES (?,?,1,0)"
                    " ON CONFLICT(key) DO UPDATE SET window_start = excluded.window_start,"
                    " sent = 1, held = 0",
                    [key, now],
                )
                return Rate(True, 0 if row is None else int(row[2]), last=limit == 1)
            if row[1] < limit:
                tx.execute("UPDATE rate_limits SET sent = sent + 1 WHERE key = ?", [key])
                return Rate(True, 0, last=row[1] + 1 == limit)
            tx.execute("UPDATE rate_limits SET held = held + 1 WHERE key = ?", [key])
            return Rate(False, 0, last=False)
