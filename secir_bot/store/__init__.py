"""The durable store: SQLite through sqlite-utils, with recorded migrations.

This package is the only importer of sqlite-utils and sqlite3. ``Store`` is the facade: it
opens and migrates the database, makes the one cross-table unit of work (``decide``: an
item's outcome with its post, links, signature and deliveries, in one commit) and the
retention purge, and holds one repository per table or group of tables:

  store.inbox          inbox.py          every received item, raw bytes kept
  store.outbox         outbox.py         deliveries to make, dead letters
  store.members        members.py        the roster
  store.posts          posts.py          accepted posts and their links (event ids,
                                         Message-IDs)
  store.devices        devices.py        Matrix devices, identities, the trust log, withheld
                                         keys
  store.kv             kv.py             small state (sync token, list key fingerprint)
  store.signatures     signatures.py     member signatures already relayed (replays)
  store.media          media.py          files of Matrix messages, fetched at intake
  store.rates          rates.py          notices per key and hour (backscatter)
  store.audit          audit.py          the hash-chained audit log
  store.cases          cases.py          subscription cases and their nominees
  store.confirmations  confirmations.py  pending command confirmations
  store.effects        effects.py        the durable queue of command effects

Repositories import ``base``, never this module. Migrations are an append-only package
(``migrations/``); each unit of work is one transaction (``base.transaction``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import sqlite_utils

from secir_bot.errors import StoreError, StoreMissing
from secir_bot.model import InboxState, LinkKind, Post
from secir_bot.store import posts as posts_table
from secir_bot.store import signatures as signatures_table
from secir_bot.store.audit import Audit
from secir_bot.store.base import Tx, table, transaction
from secir_bot.store.cases import Cases
from secir_bot.store.confirmations import Confirmations
from secir_bot.store.devices import DeviceRecord, Devices, IdentityRecord
from secir_bot.store.effects import Effects
from secir_bot.store.inbox import Inbox, InboxItem
from secir_bot.store.kv import KV, LIST_FPR_KEY, delete_in, put_in
from secir_bot.store.media import Media, StoredMedia
from secir_bot.store.members import Members
from secir_bot.store.migrations import MIGRATIONS
from secir_bot.store.outbox import NewDelivery, Outbox, OutboxRow, enqueue_in, upload_key
from secir_bot.store.posts import Posts
from secir_bot.store.rates import Rate, Rates
from secir_bot.store.signatures import Signatures

__all__ = [
    "DB_NAME",
    "LIST_FPR_KEY",
    "MIGRATIONS",
    "DeviceRecord",
    "IdentityRecord",
    "InboxItem",
    "NewDelivery",
    "OutboxRow",
    "Rate",
    "Store",
    "StoredMedia",
    "Tx",
    "upload_key",
]

DB_NAME = "secir.sqlite"
FLUSH_INTERVAL = 1.0  # seconds: with deferred syncs, no commit stays unsynced longer


def _fsync(path: Path) -> None:
    """Flush a file's written data to the disk (``os.fsync``); a missing file has none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # no WAL: everything is in the database file, synced at the checkpoint
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """The SQLite store of one list. Create with ``Store.open``."""

    def __init__(self, db: sqlite_utils.Database, directory: Path) -> None:
        self.db = db
        self.directory = directory
        self.inbox = Inbox(db)
        self.outbox = Outbox(db)
        self.members = Members(db)
        self.posts = Posts(self.members)
        self.devices = Devices(db)
        self.kv = KV(db)
        self.signatures = Signatures(db)
        self.media = Media(db)
        self.rates = Rates(db)
        self.audit = Audit(db)
        self.cases = Cases(db)
        self.confirmations = Confirmations(db)
        self.effects = Effects(db)
        self.fsync = _fsync  # the seam the tests count
        self._deferred = False
        self._synced = 0  # the connection's total_changes at the last sync
        self._sync_lock: asyncio.Lock | None = None

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, *, create: bool = False) -> Store:
        """Open (or with ``create``, make) the store in ``directory`` and migrate it."""
        path = directory / DB_NAME
        if not path.exists() and not create:
            raise StoreMissing(f"no store at {directory}: run 'secir-bot init' first")
        if create:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
        try:
            conn = sqlite3.connect(path, isolation_level="DEFERRED")
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {exc}") from exc
        store = cls(db, directory)
        store.migrate()
        return store

    def close(self) -> None:
        self.db.conn.close()

    # -- durability ------------------------------------------------------------------------

    def defer_syncs(self) -> None:
        """Commits stop waiting for the disk; ``durable`` waits, where it matters.

        Every store starts with ``synchronous = FULL``: each commit fsyncs the WAL, on the
        calling thread. The running bot makes ~12 commits per relayed member mail (accept,
        attempt, decision, each group, mark, the deliveries); on the event loop that was
        4-7 ms each, a third of the loop's time in a burst (docs/performance.md). After this
        call commits use ``synchronous = NORMAL``: in WAL mode a commit is then atomic and
        survives a crash of the process at once (it is in the operating system's cache),
        and only a crash of the machine (power, kernel) can undo the last commits. So the
        bot calls :meth:`durable` (the WAL fsynced in a worker thread, off the event loop)
        before anything that depends on a commit leaves the machine: before each outbox
        delivery and after recording it, before the IMAP move that acknowledges a mail,
        before the Matrix sync that follows a stored position, before a command's effect;
        and :meth:`flush_forever` syncs whatever else within ``FLUSH_INTERVAL``. A machine
        crash therefore never loses a message that was acknowledged, nor sends one whose
        decision could be lost (which would make it again, under a new id); see
        docs/reliability.md.
        """
        self.db.execute("PRAGMA synchronous = NORMAL")
        self._deferred = True
        self._synced = self.db.conn.total_changes  # every commit so far was synced

    @property
    def unsynced(self) -> bool:
        """Whether a commit may still be undone by a machine crash."""
        return self._deferred and self.db.conn.total_changes > self._synced

    async def durable(self) -> None:
        """Every commit made so far is on the disk when this returns.

        Callers that come while a sync runs wait for it and share the next one: in a burst,
        one fsync covers the commits of several mails. Without ``defer_syncs``, every commit
        was synced already. Rows changed count (``total_changes``), so a commit that changed
        none needs no sync.
        """
        if not self._deferred:
            return
        target = self.db.conn.total_changes
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            if self._synced >= target:
                return
            await asyncio.to_thread(self.fsync, self.directory / f"{DB_NAME}-wal")
            self._synced = max(self._synced, target)

    async def flush_forever(self) -> None:
        """Sync whatever was committed, every ``FLUSH_INTERVAL`` (a task of the running bot)."""
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.durable()

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; return the names applied."""
        db = self.db
        if "_migrations" not in db.table_names():
            table(db, "_migrations").create({"name": str, "applied_at": float}, pk="name")
        done = {row["name"] for row in db["_migrations"].rows}
        applied = []
        for name, fn in MIGRATIONS:
            if name in done:
                continue
            with db.conn:
                fn(db)
                db.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", [name, time.time()]
                )
            applied.append(name)
        return applied

    def applied_migrations(self) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM _migrations ORDER BY name")]

    def transaction(self) -> AbstractContextManager[Tx]:
        """One unit of work: commit on success, roll back on any exception."""
        return transaction(self.db)

    # -- the units of work across tables -----------------------------------------------

    def decide(
        self,
        item_id: int,
        state: InboxState,
        reason: str | None = None,
        *,
        post: Post | None = None,
        links: Sequence[tuple[LinkKind, str]] = (),
        deliveries: Sequence[NewDelivery] = (),
        signature: tuple[str, str] | None = None,
        marks: Mapping[str, str] | None = None,
        joined: Sequence[int] = (),
    ) -> None:
        """Record the outcome of one item in one commit: its post, links, deliveries, and
        the (signer, signature id) it was accepted on; ``marks`` are kv entries written in
        the same commit (work still to do, cleared by ``complete``). The ``joined`` items
        (a file's caption that came as the next event) get the same outcome and post."""
        now = time.time()
        with self.transaction() as tx:
            for key, value in (marks or {}).items():
                put_in(tx, key, value)
            if signature is not None:
                signatures_table.record(tx, signature[0], signature[1], item_id, now)
            if post is not None:
                posts_table.insert(tx, post, now)
            for kind, value in links:
                posts_table.link(tx, kind, value, post.uid if post else "")
            for d in deliveries:
                enqueue_in(tx, d, now)
            for one in (item_id, *joined):
                tx.execute(
                    "UPDATE inbox SET state = ?, reason = ?, post_uid = ?, decided_at = ?"
                    " WHERE id = ?",
                    [state, reason, post.uid if post else None, now, one],
                )

    def queue(self, deliveries: Sequence[NewDelivery]) -> None:
        """Queue deliveries in one commit (a part of marked work; ``complete`` ends it)."""
        now = time.time()
        with self.transaction() as tx:
            for d in deliveries:
                enqueue_in(tx, d, now)

    def complete(self, mark: str, deliveries: Sequence[NewDelivery]) -> None:
        """Queue the deliveries of work left marked by ``decide`` and clear its mark, in
        one commit (a crash before it leaves the mark, so the work is done again)."""
        now = time.time()
        with self.transaction() as tx:
            for d in deliveries:
                enqueue_in(tx, d, now)
            delete_in(tx, mark)

    def purge(self, before: float) -> dict[str, int]:
        """Retention: erase what is no longer needed from before ``before`` (a time).

        The raw bytes of decided inbox items and the payloads of sent outbox rows are
        emptied (rows, decisions, posts and links stay); undecided and parked items, pending
        rows and dead letters (which an admin may retry) keep theirs. Old rate-limit windows,
        withheld-key records and the files of decided Matrix messages are deleted.
        """
        with self.transaction() as tx:
            raw = tx.execute(
                "UPDATE inbox SET raw = X'' WHERE state NOT IN ('new', 'parked')"
                " AND decided_at < ? AND length(raw) > 0",
                [before],
            ).rowcount
            sent = tx.execute(
                "UPDATE outbox SET payload = X'' WHERE state = 'sent' AND created_at < ?"
                " AND length(payload) > 0",
                [before],
            ).rowcount
            tx.execute("DELETE FROM rate_limits WHERE window_start < ?", [before])
            tx.execute("DELETE FROM withheld WHERE received_at < ?", [before])
            # Files of Matrix messages go with their events' raw bytes (issue 10).
            media = tx.execute(
                "DELETE FROM media WHERE created_at < ? AND event_id NOT IN (SELECT source_id"
                " FROM inbox WHERE source = 'matrix' AND state IN ('new', 'parked'))",
                [before],
            ).rowcount
        return {"inbox": raw, "outbox": sent, "media": media}
