"""What every repository of the store shares: the connection and the unit of work.

Each unit of work (an item accepted, an item decided, a delivery recorded) is one
transaction. sqlite-utils' own write helpers commit on their own, so inside a unit of work
only plain SQL is used; the helpers serve schema creation (the migrations).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlite_utils

# The open transaction's connection, as handed to the functions that write inside a caller's
# unit of work (``Store.decide``, a command's ``Change.apply``).
Tx = sqlite3.Connection


def table(db: sqlite_utils.Database, name: str) -> sqlite_utils.db.Table:
    return db.table(name)


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[Tx]:
    """One unit of work: commit on success, roll back on any exception."""
    conn = db.conn
    with conn:
        yield conn


def dict_rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    cols = [d[0] for d in cursor.description]
    return [dict(zip(cols, r, strict=True)) for r in cursor.fetchall()]


class Repository:
    """One table (or a few that belong together): reads on the store's connection, writes in
    a transaction of their own or in the caller's (``tx``)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def transaction(self) -> AbstractContextManager[Tx]:
        return transaction(self.db)
