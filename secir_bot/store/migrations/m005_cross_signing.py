"""Migration 005_cross_signing.

Matrix cross-signing: device pins, identities, the trust log, withheld keys.

Released: never edited, never reordered (``migrations/__init__.py``).
"""

from __future__ import annotations

import sqlite_utils

from secir_bot.store.base import table

NAME = "005_cross_signing"


def apply(db: sqlite_utils.Database) -> None:
    # Devices pin both identity keys (a re-keyed device id is caught on either), and say
    # how they came to be trusted; identities pin members' cross-signing master keys.
    devices = table(db, "devices")
    devices.add_column("curve25519", str)
    devices.add_column("how", str)
    devices.add_column("changed_at", float)
    table(db, "identities").create(
        {
            "user_id": str,
            "master_key": str,
            "state": str,
            "pending_key": str,
            "first_seen": float,
            "changed_at": float,
        },
        pk="user_id",
    )
    table(db, "trust_log").create(
        {"id": int, "at": float, "user_id": str, "device_id": str, "what": str, "detail": str},
        pk="id",
    )
    table(db, "trust_log").create_index(["user_id"])
    # Room keys that a member's client withheld from the bot (m.room_key.withheld).
    table(db, "withheld").create(
        {
            "room_id": str,
            "session_id": str,
            "sender": str,
            "code": str,
            "reason": str,
            "received_at": float,
        },
        pk=("room_id", "session_id", "sender"),
    )
