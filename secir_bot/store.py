"""The durable store: SQLite through sqlite-utils, with recorded migrations.

This is the only module that imports sqlite-utils. Each unit of work (an item accepted,
an item decided, a delivery recorded) is one transaction. sqlite-utils' own write helpers
commit on their own, so inside a unit of work only plain SQL is used; the helpers serve
schema creation.

Tables:
  members   the roster (one row per person)
  posts     accepted messages; links maps Matrix event ids and Message-IDs to posts
  inbox     every received item, raw bytes kept, unique per (source, source_id, digest)
  outbox    one row per (post, destination); the delivery worker drains it
  devices   Matrix devices seen, their pinned keys and the bot's judgement of them
  identities  Matrix cross-signing identities (master keys) pinned on first use
  trust_log   the audit trail of every trust decision about Matrix devices and identities
  withheld    room keys that members' clients withheld from the bot, with their codes
  kv        small state (Matrix sync token, list key fingerprint)
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from secir_bot.errors import StoreError, StoreMissing
from secir_bot.model import (
    Channel,
    DeliveryKind,
    InboxState,
    LinkKind,
    Member,
    Post,
)

DB_NAME = "secir.sqlite"
LIST_FPR_KEY = "list.fingerprint"  # kv: the list key's fingerprint, written by init


def _table(db: sqlite_utils.Database, name: str) -> sqlite_utils.db.Table:
    return db.table(name)


def _m001_initial(db: sqlite_utils.Database) -> None:
    _table(db, "members").create(
        {
            "id": int,
            "tld": str,
            "tld_display": str,
            "name": str,
            "email": str,
            "fingerprint": str,
            "matrix_id": str,
            "channels": str,
            "rank": int,
            "status": str,
            "added_at": float,
        },
        pk="id",
        not_null={"tld", "name", "email", "fingerprint", "channels", "status"},
    )
    _table(db, "members").create_index(["email"], unique=True)
    _table(db, "members").create_index(["fingerprint"], unique=True)
    _table(db, "members").create_index(["matrix_id"], unique=True)
    _table(db, "posts").create(
        {
            "uid": str,
            "origin": str,
            "author_id": int,
            "subject": str,
            "body": str,
            "parent_uid": str,
            "root_uid": str,
            "attachments": str,
            "created_at": float,
        },
        pk="uid",
        foreign_keys=[("author_id", "members", "id")],
    )
    _table(db, "links").create({"kind": str, "value": str, "post_uid": str}, pk=("kind", "value"))
    _table(db, "inbox").create(
        {
            "id": int,
            "source": str,
            "source_id": str,
            "raw": bytes,
            "meta": str,
            "received_at": float,
            "state": str,
            "reason": str,
            "post_uid": str,
            "decided_at": float,
        },
        pk="id",
        not_null={"source", "source_id", "state"},
    )
    _table(db, "inbox").create_index(["source", "source_id"], unique=True)
    _table(db, "inbox").create_index(["state"])
    _table(db, "outbox").create(
        {
            "id": int,
            "post_uid": str,
            "channel": str,
            "target": str,
            "kind": str,
            "payload": bytes,
            "recipients": str,
            "state": str,
            "attempts": int,
            "next_attempt_at": float,
            "created_at": float,
            "last_error": str,
            "result": str,
            "done": str,
        },
        pk="id",
        not_null={"channel", "target", "state"},
    )
    _table(db, "outbox").create_index(["state", "channel"])
    _table(db, "devices").create(
        {"user_id": str, "device_id": str, "ed25519": str, "state": str, "first_seen": float},
        pk=("user_id", "device_id"),
    )
    _table(db, "kv").create({"key": str, "value": str}, pk="key")


def _m002_inbox_attempts(db: sqlite_utils.Database) -> None:
    # How often processing of an item was started: the guard against poisonous items.
    _table(db, "inbox").add_column("attempts", int, not_null_default=0)


def _m003_signatures(db: sqlite_utils.Database) -> None:
    # Every member signature that was relayed, so that none is relayed twice (replays).
    _table(db, "signatures").create(
        {"signer": str, "signature_id": str, "inbox_id": int, "seen_at": float},
        pk=("signer", "signature_id"),
    )


def _m004_inbox_digest(db: sqlite_utils.Database) -> None:
    # Mail is keyed by Message-ID *and* a hash of its bytes: anyone can send a mail under a
    # member's Message-ID first, and it must not decide the member's genuine mail. The same
    # bytes fetched again (a crash before the IMAP move) are still the same item. Matrix
    # events keep an empty digest: their ids are the server's, and a parked event's raw
    # bytes change when it is decrypted.
    _table(db, "inbox").add_column("digest", str, not_null_default="")
    rows = db.execute("SELECT id, raw FROM inbox WHERE source = 'email'").fetchall()
    for item_id, raw in rows:
        db.execute(
            "UPDATE inbox SET digest = ? WHERE id = ?",
            [_digest("email", bytes(raw or b"")), item_id],
        )
    db.execute("DROP INDEX IF EXISTS idx_inbox_source_source_id")
    _table(db, "inbox").create_index(["source", "source_id", "digest"], unique=True)


def _digest(source: str, raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest() if source == "email" else ""


def _m005_cross_signing(db: sqlite_utils.Database) -> None:
    # Devices pin both identity keys (a re-keyed device id is caught on either), and say
    # how they came to be trusted; identities pin members' cross-signing master keys.
    devices = _table(db, "devices")
    devices.add_column("curve25519", str)
    devices.add_column("how", str)
    devices.add_column("changed_at", float)
    _table(db, "identities").create(
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
    _table(db, "trust_log").create(
        {"id": int, "at": float, "user_id": str, "device_id": str, "what": str, "detail": str},
        pk="id",
    )
    _table(db, "trust_log").create_index(["user_id"])
    # Room keys that a member's client withheld from the bot (m.room_key.withheld).
    _table(db, "withheld").create(
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


def _m006_commands(db: sqlite_utils.Database) -> None:
    # The command machinery (issue 9): the hash-chained audit log, pending confirmations,
    # and the subscription cases with their nominees. Plain SQL, for the triggers and the
    # partial index that sqlite-utils' helpers cannot express.
    for statement in (
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL,"
        " action TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL,"
        " evidence TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL)",
        # Append-only against mistakes in our own code (an attacker with the file can drop
        # the triggers: the hash chain and an outside anchor catch that).
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
        "CREATE TABLE confirmations (code_hash TEXT PRIMARY KEY, actor TEXT NOT NULL,"
        " front TEXT NOT NULL, command TEXT NOT NULL, args TEXT NOT NULL,"
        " created_at REAL NOT NULL, expires_at REAL NOT NULL, used_at REAL)",
        "CREATE TABLE cases (id INTEGER PRIMARY KEY, tld TEXT NOT NULL, state TEXT NOT NULL,"
        " contact_email TEXT NOT NULL, contact_org TEXT NOT NULL, contact_source TEXT NOT NULL,"
        " override_reason TEXT, whois_sha256 TEXT, code_hash TEXT NOT NULL,"
        " opened_by TEXT NOT NULL, opened_at REAL NOT NULL, expires_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, closed_by TEXT, closed_at REAL, close_reason TEXT,"
        " nomination_ref TEXT)",
        # At most one open case per ccTLD.
        "CREATE UNIQUE INDEX cases_open_tld ON cases (tld)"
        " WHERE state IN ('invited', 'nominated', 'ready')",
        "CREATE TABLE nominees (id INTEGER PRIMARY KEY,"
        " case_id INTEGER NOT NULL REFERENCES cases (id), position INTEGER NOT NULL,"
        " name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT, fingerprint TEXT NOT NULL,"
        " key TEXT NOT NULL, matrix_id TEXT, timezone TEXT, languages TEXT NOT NULL,"
        " challenge_hash TEXT NOT NULL, key_proven_at REAL, proof_ref TEXT,"
        " matrix_joined_at REAL, UNIQUE (case_id, position))",
        # The effects of each committed change (mail to send, invitations, removals), kept
        # in the change's transaction until a front end has carried them out.
        "CREATE TABLE command_effects (id INTEGER PRIMARY KEY, created_at REAL NOT NULL,"
        " actor TEXT NOT NULL, action TEXT NOT NULL, effect TEXT NOT NULL, done_at REAL)",
    ):
        db.execute(statement)


def _m007_rate_limits(db: sqlite_utils.Database) -> None:
    # Notices and answers per key (a sender, a member) in the current window, and how many
    # were held back, so that the next one can say so (issue 6: backscatter).
    _table(db, "rate_limits").create(
        {"key": str, "window_start": float, "sent": int, "held": int}, pk="key"
    )


# Append only: a migration, once released, is never edited or reordered.
MIGRATIONS: tuple[tuple[str, Callable[[sqlite_utils.Database], None]], ...] = (
    ("001_initial", _m001_initial),
    ("002_inbox_attempts", _m002_inbox_attempts),
    ("003_signatures", _m003_signatures),
    ("004_inbox_digest", _m004_inbox_digest),
    ("005_cross_signing", _m005_cross_signing),
    ("006_commands", _m006_commands),
    ("007_rate_limits", _m007_rate_limits),
)


@dataclass(frozen=True)
class InboxItem:
    id: int
    source: Channel
    source_id: str
    raw: bytes
    meta: dict[str, Any]  # what the bridge noted (``model.MailFacts``, ``model.MatrixFacts``)
    state: InboxState
    reason: str | None
    post_uid: str | None
    received_at: float = 0.0


@dataclass(frozen=True)
class OutboxRow:
    id: int
    post_uid: str | None
    channel: Channel
    target: str
    kind: DeliveryKind
    payload: bytes
    recipients: tuple[str, ...]
    attempts: int
    created_at: float
    done: tuple[str, ...]
    due_at: float = 0.0


@dataclass(frozen=True)
class Rate:
    """One notice counted against its limit (``Store.rate``)."""

    allowed: bool  # it may go out
    held_before: int  # how many of its kind were held back in the window before
    last: bool  # it is the last one allowed in this window


@dataclass(frozen=True)
class NewDelivery:
    """An outbox row to create as part of a decision."""

    channel: Channel
    target: str
    kind: DeliveryKind
    payload: bytes
    recipients: tuple[str, ...] = ()
    post_uid: str | None = None


class Store:
    """The SQLite store of one list. Create with ``Store.open``."""

    def __init__(self, db: sqlite_utils.Database, directory: Path) -> None:
        self.db = db
        self.directory = directory

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

    def migrate(self) -> list[str]:
        """Apply pending migrations in order; return the names applied."""
        db = self.db
        if "_migrations" not in db.table_names():
            _table(db, "_migrations").create({"name": str, "applied_at": float}, pk="name")
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

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One unit of work: commit on success, roll back on any exception."""
        conn = self.db.conn
        with conn:
            yield conn

    # -- small state -----------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        with self.transaction() as tx:
            _put(tx, key, value)

    def purge(self, before: float) -> dict[str, int]:
        """Retention: erase what is no longer needed from before ``before`` (a time).

        The raw bytes of decided inbox items and the payloads of sent outbox rows are
        emptied (rows, decisions, posts and links stay); undecided and parked items, pending
        rows and dead letters (which an admin may retry) keep theirs. Old rate-limit windows
        and withheld-key records are deleted.
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
        return {"inbox": raw, "outbox": sent}

    def rate(self, key: str, limit: int, window: float, now: float) -> Rate:
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

    # -- members ---------------------------------------------------------------------

    def add_member(
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
                        time.time(),
                    ],
                )
                member_id = cur.lastrowid
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"a member with this email, key or Matrix id exists: {exc}") from exc
        member = self.member(int(member_id or 0))
        assert member is not None
        return member

    def _members(self, where: str, params: list[Any]) -> list[Member]:
        rows = self.db.execute(
            f"SELECT * FROM members WHERE {where} ORDER BY tld, rank, id", params
        )
        cols = [d[0] for d in rows.description]
        return [_member(dict(zip(cols, r, strict=True))) for r in rows.fetchall()]

    def member(self, member_id: int) -> Member | None:
        found = self._members("id = ?", [member_id])
        return found[0] if found else None

    def member_by_fingerprint(self, fpr: str) -> Member | None:
        found = self._members("fingerprint = ?", [fpr.upper()])
        return found[0] if found else None

    def member_by_email(self, email: str) -> Member | None:
        found = self._members("email = ?", [email.lower()])
        return found[0] if found else None

    def member_by_matrix_id(self, mxid: str) -> Member | None:
        found = self._members("matrix_id = ?", [mxid])
        return found[0] if found else None

    def members(self, *, active_only: bool = True) -> list[Member]:
        return self._members("status = 'active'" if active_only else "1", [])

    # -- inbox -----------------------------------------------------------------------

    def accept(
        self, source: Channel, source_id: str, raw: bytes, meta: dict[str, Any] | None = None
    ) -> tuple[InboxItem, bool]:
        """Make a received item durable; return it and whether it was new."""
        with self.transaction() as tx:
            new = _accept(tx, source, source_id, raw, meta)
        rows = self._inbox(
            "source = ? AND source_id = ? AND digest = ?", [source, source_id, _digest(source, raw)]
        )
        return rows[0], new

    def accept_sync(
        self, items: list[tuple[str, bytes, dict[str, Any], InboxState]], token: str
    ) -> None:
        """Store a Matrix sync's events and, in the same commit, the position after them.

        Each item is (event id, raw JSON, meta, initial state): "new", or "parked" for an
        event that could not be decrypted yet.
        """
        with self.transaction() as tx:
            for source_id, raw, meta, state in items:
                _accept(tx, Channel.MATRIX, source_id, raw, meta, state)
            _put(tx, "matrix.sync_token", token)

    def unpark(self, item_id: int, raw: bytes, meta: dict[str, Any]) -> None:
        """A parked event was decrypted: keep the clear event and queue it."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE inbox SET raw = ?, meta = ?, state = 'new' WHERE id = ?"
                " AND state = 'parked'",
                [raw, json.dumps(meta), item_id],
            )

    def inbox_item(self, source: Channel, source_id: str) -> InboxItem | None:
        """The first item received under ``source_id`` (mail may have several)."""
        rows = self._inbox("source = ? AND source_id = ?", [source, source_id])
        return rows[0] if rows else None

    def inbox_pending(self, source: Channel, state: InboxState = InboxState.NEW) -> list[InboxItem]:
        return self._inbox("source = ? AND state = ?", [source, state])

    def _inbox(self, where: str, params: list[Any]) -> list[InboxItem]:
        cur = self.db.execute(f"SELECT * FROM inbox WHERE {where} ORDER BY id", params)
        cols = [d[0] for d in cur.description]
        out = []
        for r in cur.fetchall():
            row = dict(zip(cols, r, strict=True))
            out.append(
                InboxItem(
                    id=row["id"],
                    source=Channel(row["source"]),
                    source_id=row["source_id"],
                    raw=bytes(row["raw"] or b""),
                    meta=json.loads(row["meta"] or "{}"),
                    state=InboxState(row["state"]),
                    reason=row["reason"],
                    post_uid=row["post_uid"],
                    received_at=row["received_at"] or 0.0,
                )
            )
        return out

    def inbox_state(self, item_id: int) -> tuple[InboxState, str | None]:
        """An item's state and reason (without its bytes)."""
        row = self.db.execute("SELECT state, reason FROM inbox WHERE id = ?", [item_id]).fetchone()
        if row is None:
            raise StoreError(f"no inbox item {item_id}")
        return InboxState(row[0]), row[1]

    def begin_attempt(self, item_id: int) -> int:
        """Count one more start of processing for an item; return the new count."""
        with self.transaction() as tx:
            tx.execute("UPDATE inbox SET attempts = attempts + 1 WHERE id = ?", [item_id])
            row = tx.execute("SELECT attempts FROM inbox WHERE id = ?", [item_id]).fetchone()
        return int(row[0])

    def signature_seen(self, signer: str, signature_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM signatures WHERE signer = ? AND signature_id = ?",
            [signer.upper(), signature_id],
        ).fetchone()
        return row is not None

    def set_inbox_meta(self, item_id: int, meta: dict[str, Any]) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE inbox SET meta = ? WHERE id = ?", [json.dumps(meta), item_id])

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
    ) -> None:
        """Record the outcome of one item in one commit: its post, links, deliveries, and
        the (signer, signature id) it was accepted on."""
        now = time.time()
        with self.transaction() as tx:
            if signature is not None:
                tx.execute(
                    "INSERT INTO signatures (signer, signature_id, inbox_id, seen_at)"
                    " VALUES (?,?,?,?)",
                    [signature[0].upper(), signature[1], item_id, now],
                )
            if post is not None:
                tx.execute(
                    "INSERT INTO posts (uid, origin, author_id, subject, body, parent_uid,"
                    " root_uid, attachments, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    [
                        post.uid,
                        post.origin.value,
                        post.author.id,
                        post.subject,
                        post.body,
                        post.parent_uid,
                        post.root_uid,
                        json.dumps(list(post.attachments)),
                        now,
                    ],
                )
            for kind, value in links:
                _link(tx, kind, value, post.uid if post else "")
            for d in deliveries:
                _enqueue(tx, d, now)
            tx.execute(
                "UPDATE inbox SET state = ?, reason = ?, post_uid = ?, decided_at = ? WHERE id = ?",
                [state, reason, post.uid if post else None, now, item_id],
            )

    # -- posts and links -------------------------------------------------------------

    def post(self, uid: str) -> Post | None:
        cur = self.db.execute("SELECT * FROM posts WHERE uid = ?", [uid])
        cols = [d[0] for d in cur.description]
        r = cur.fetchone()
        if r is None:
            return None
        row = dict(zip(cols, r, strict=True))
        author = self.member(row["author_id"])
        assert author is not None
        return Post(
            uid=row["uid"],
            origin=Channel(row["origin"]),
            author=author,
            subject=row["subject"],
            body=row["body"],
            parent_uid=row["parent_uid"],
            root_uid=row["root_uid"],
            attachments=tuple(json.loads(row["attachments"] or "[]")),
        )

    def post_for(self, kind: LinkKind, value: str) -> Post | None:
        row = self.db.execute(
            "SELECT post_uid FROM links WHERE kind = ? AND value = ?", [kind, value]
        ).fetchone()
        return None if row is None else self.post(row[0])

    def links_of(self, post_uid: str, kind: LinkKind) -> list[str]:
        rows = self.db.execute(
            "SELECT value FROM links WHERE post_uid = ? AND kind = ? ORDER BY rowid",
            [post_uid, kind],
        )
        return [r[0] for r in rows.fetchall()]

    def add_link(self, kind: LinkKind, value: str, post_uid: str) -> None:
        with self.transaction() as tx:
            _link(tx, kind, value, post_uid)

    # -- outbox ----------------------------------------------------------------------

    def enqueue(self, delivery: NewDelivery) -> None:
        with self.transaction() as tx:
            _enqueue(tx, delivery, time.time())

    def outbox_pending(self, channel: Channel) -> list[OutboxRow]:
        """Every pending row of a channel in creation order, due or not."""
        cur = self.db.execute(
            "SELECT * FROM outbox WHERE state = 'pending' AND channel = ? ORDER BY id",
            [channel.value],
        )
        cols = [d[0] for d in cur.description]
        return [_outbox(dict(zip(cols, r, strict=True))) for r in cur.fetchall()]

    def outbox_due(self, channel: Channel, now: float) -> list[OutboxRow]:
        """Pending rows of a channel that are due, in creation order."""
        cur = self.db.execute(
            "SELECT * FROM outbox WHERE state = 'pending' AND channel = ? ORDER BY id",
            [channel.value],
        )
        cols = [d[0] for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        return [_outbox(r) for r in rows if (r["next_attempt_at"] or 0) <= now]

    def outbox_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
        return {r[0]: r[1] for r in rows}

    def outbox_next_time(self, now: float | None = None) -> float | None:
        """The next future retry time (rows already due are drained, or wait behind one)."""
        row = self.db.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE state = 'pending'"
            " AND next_attempt_at > ?",
            [time.time() if now is None else now],
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delivered(
        self,
        row_id: int,
        result: str,
        link: tuple[LinkKind, str] | None = None,
        post_uid: str | None = None,
    ) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET state = 'sent', result = ?, last_error = NULL WHERE id = ?",
                [result, row_id],
            )
            if link is not None and post_uid is not None:
                _link(tx, link[0], link[1], post_uid)

    def partly_delivered(self, row_id: int, done: tuple[str, ...]) -> None:
        with self.transaction() as tx:
            tx.execute("UPDATE outbox SET done = ? WHERE id = ?", [json.dumps(done), row_id])

    def retry_later(self, row_id: int, error: str, at: float) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                [error, at, row_id],
            )

    def dead(self, row_id: int, error: str) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE outbox SET state = 'dead', attempts = attempts + 1,"
                " last_error = ? WHERE id = ?",
                [error, row_id],
            )

    # -- Matrix trust: devices, identities, the trust log (migration 005) ----------------

    def device_state(self, user_id: str, device_id: str) -> tuple[str, str] | None:
        row = self.db.execute(
            "SELECT state, ed25519 FROM devices WHERE user_id = ? AND device_id = ?",
            [user_id, device_id],
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def device(self, user_id: str, device_id: str) -> DeviceRecord | None:
        found = self._devices("user_id = ? AND device_id = ?", [user_id, device_id])
        return found[0] if found else None

    def devices_of(self, user_id: str) -> list[DeviceRecord]:
        return self._devices("user_id = ?", [user_id])

    def _devices(self, where: str, params: list[Any]) -> list[DeviceRecord]:
        cur = self.db.execute(
            "SELECT user_id, device_id, ed25519, curve25519, state, how FROM devices"
            f" WHERE {where} ORDER BY first_seen",
            params,
        )
        return [DeviceRecord(*r) for r in cur.fetchall()]

    def known_devices(self, user_id: str) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM devices WHERE user_id = ?", [user_id]
        ).fetchone()
        return int(row[0])

    def record_device(
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

    def count_inbox(self, source: Channel, state: InboxState) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM inbox WHERE source = ? AND state = ?", [source, state]
        ).fetchone()
        return int(row[0])

    def trust_log(self, user_id: str | None = None) -> list[tuple[float, str, str, str, str]]:
        """(time, user, device, what, detail), oldest first."""
        where, params = ("WHERE user_id = ?", [user_id]) if user_id else ("", [])
        cur = self.db.execute(
            f"SELECT at, user_id, coalesce(device_id, ''), what, detail FROM trust_log {where}"
            " ORDER BY id",
            params,
        )
        return [tuple(r) for r in cur.fetchall()]


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


def _trust_log(
    tx: sqlite3.Connection, user_id: str, device_id: str | None, what: str, detail: str
) -> None:
    tx.execute(
        "INSERT INTO trust_log (at, user_id, device_id, what, detail) VALUES (?,?,?,?,?)",
        [time.time(), user_id, device_id, what, detail],
    )


def _put(tx: sqlite3.Connection, key: str, value: str) -> None:
    tx.execute(
        "INSERT INTO kv (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )


def _accept(
    tx: sqlite3.Connection,
    source: Channel,
    source_id: str,
    raw: bytes,
    meta: dict[str, Any] | None,
    state: InboxState = InboxState.NEW,
) -> bool:
    cur = tx.execute(
        "INSERT INTO inbox (source, source_id, digest, raw, meta, received_at, state)"
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT(source, source_id, digest) DO NOTHING",
        [source, source_id, _digest(source, raw), raw, json.dumps(meta or {}), time.time(), state],
    )
    return cur.rowcount == 1


def _link(tx: sqlite3.Connection, kind: LinkKind, value: str, post_uid: str) -> None:
    tx.execute(
        "INSERT OR IGNORE INTO links (kind, value, post_uid) VALUES (?,?,?)",
        [kind, value, post_uid],
    )


def _enqueue(tx: sqlite3.Connection, d: NewDelivery, now: float) -> None:
    tx.execute(
        "INSERT INTO outbox (post_uid, channel, target, kind, payload, recipients, state,"
        " attempts, next_attempt_at, created_at, done) VALUES (?,?,?,?,?,?, 'pending', 0,?,?,'[]')",
        [
            d.post_uid,
            d.channel.value,
            d.target,
            d.kind,
            d.payload,
            json.dumps(d.recipients),
            now,
            now,
        ],
    )


def _member(row: dict[str, Any]) -> Member:
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


def _outbox(row: dict[str, Any]) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        post_uid=row["post_uid"],
        channel=Channel(row["channel"]),
        target=row["target"],
        kind=DeliveryKind(row["kind"]),
        payload=bytes(row["payload"] or b""),
        recipients=tuple(json.loads(row["recipients"] or "[]")),
        attempts=row["attempts"],
        created_at=row["created_at"],
        due_at=row["next_attempt_at"] or 0.0,
        done=tuple(json.loads(row["done"] or "[]")),
    )
