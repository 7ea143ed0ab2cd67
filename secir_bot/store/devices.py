"""Matrix trust as the store keeps it: devices, identities, the trust log, withheld keys.

Devices pin both identity keys (a re-keyed device id is caught on either) and say how they
came to be trusted; identities pin members' cross-signing master keys; the trust log is the
audit trail of every trust decision; withheld records the room keys that members' clients
kept from the bot (``m.room_key.withheld``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from secir_bot.store.base import Repository, Tx


@dataclass(frozen=True)
class DeviceRecord:
    """A Matrix device as the bot judged it, with the keys it pinned."""

    user_id: str
    device_id: str
    ed25519: str
    curve25519: str | None
    state: str  # "trusted", "blocked", "unsigned"
    how: str | None  # "tofu" or "cross-signing"


@dataclass(frozen=True)
class IdentityRecord:
    """A member's pinned cross-signing master key; "changed" waits for an admin."""

    user_id: str
    master_key: str
    state: str  # "pinned" or "changed"
    pending_key: str | None  # the new master key while "changed"


def _trust_log(tx: Tx, user_id: str, device_id: str | None, what: str, detail: str) -> None:
    tx.execute(
        "INSERT INTO trust_log (at, user_id, device_id, what, detail) VALUES (?,?,?,?,?)",
        [time.time(), user_id, device_id, what, detail],
    )


@dataclass(frozen=True)
class DeviceRow:
    """A device as the operations commands list it."""

    device_id: str
    ed25519: str
    state: str
    first_seen: float


class Devices(Repository):
    def state(self, user_id: str, device_id: str) -> tuple[str, str] | None:
        row = self.db.execute(
            "SELECT state, ed25519 FROM devices WHERE user_id = ? AND device_id = ?",
            [user_id, device_id],
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def get(self, user_id: str, device_id: str) -> DeviceRecord | None:
        found = self._select("user_id = ? AND device_id = ?", [user_id, device_id])
        return found[0] if found else None

    def of_user(self, user_id: str) -> list[DeviceRecord]:
        return self._select("user_id = ?", [user_id])

    def _select(self, where: str, params: list[Any]) -> list[DeviceRecord]:
        cur = self.db.execute(
            "SELECT user_id, device_id, ed25519, curve25519, state, how FROM devices"
            f" WHERE {where} ORDER BY first_seen",
            params,
        )
        return [DeviceRecord(*r) for r in cur.fetchall()]

    def known(self, user_id: str) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM devices WHERE user_id = ?", [user_id]
        ).fetchone()
        return int(row[0])

    def record(
        self,
        user_id: str,
        device_id: str,
        ed25519: str,
        state: str,
        curve25519: str | None = None,
        how: str | None = None,
        log: str | None = None,
    ) -> None:
        """Record (or re-judge) a device; with ``log``, the trust log says why."""
        now = time.time()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO devices (user_id, device_id, ed25519, state, first_seen,"
                " curve25519, how, changed_at) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(user_id, device_id) DO UPDATE SET ed25519 = excluded.ed25519,"
                " state = excluded.state, curve25519 = excluded.curve25519,"
                " how = excluded.how, changed_at = excluded.changed_at",
                [user_id, device_id, ed25519, state, now, curve25519, how, now],
            )
            if log is not None:
                _trust_log(tx, user_id, device_id, state, log)

    def identity(self, user_id: str) -> IdentityRecord | None:
        row = self.db.execute(
            "SELECT user_id, master_key, state, pending_key FROM identities WHERE user_id = ?",
            [user_id],
        ).fetchone()
        return None if row is None else IdentityRecord(*row)

    def record_identity(
        self, user_id: str, master_key: str, state: str, pending_key: str | None, log: str
    ) -> None:
        """Pin, flag or re-pin a member's cross-signing identity, with its trust log line."""
        now = time.time()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO identities (user_id, master_key, state, pending_key, first_seen,"
                " changed_at) VALUES (?,?,?,?,?,?) ON CONFLICT(user_id) DO UPDATE SET"
                " master_key = excluded.master_key, state = excluded.state,"
                " pending_key = excluded.pending_key, changed_at = excluded.changed_at",
                [user_id, master_key, state, pending_key, now, now],
            )
            _trust_log(tx, user_id, None, "identity " + state, log)

    def record_withheld(
        self, room_id: str, session_id: str, sender: str, code: str, reason: str
    ) -> None:
        with self.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO withheld (room_id, session_id, sender, code, reason,"
                " received_at) VALUES (?,?,?,?,?,?)",
                [room_id, session_id, sender, code, reason, time.time()],
            )

    def withheld(self, room_id: str, session_id: str, sender: str) -> tuple[str, str] | None:
        """(code, reason) when ``sender``'s client withheld this room key from the bot."""
        row = self.db.execute(
            "SELECT code, reason FROM withheld WHERE room_id = ? AND session_id = ? AND sender = ?",
            [room_id, session_id, sender],
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1] or ""))

    def trust_log(self, user_id: str | None = None) -> list[tuple[float, str, str, str, str]]:
        """(time, user, device, what, detail), oldest first."""
        where, params = ("WHERE user_id = ?", [user_id]) if user_id else ("", [])
        cur = self.db.execute(
            f"SELECT at, user_id, coalesce(device_id, ''), what, detail FROM trust_log {where}"
            " ORDER BY id",
            params,
        )
        return [tuple(r) for r in cur.fetchall()]

    # -- the operations commands ---------------------------------------------------------

    def listing(self, user_id: str) -> list[DeviceRow]:
        rows = self.db.execute(
            "SELECT device_id, ed25519, state, first_seen FROM devices WHERE user_id = ?"
            " ORDER BY first_seen",
            [user_id],
        ).fetchall()
        return [DeviceRow(r[0], r[1] or "", r[2], r[3] or 0.0) for r in rows]

    def set_state(self, tx: Tx, user_id: str, device_id: str, state: str) -> bool:
        cur = tx.execute(
            "UPDATE devices SET state = ? WHERE user_id = ? AND device_id = ?",
            [state, user_id, device_id],
        )
        return cur.rowcount == 1
