"""Tests for secir_bot.store against real SQLite files.

Atomicity is shown by making a unit of work fail part-way and reading the database back
through a second, independent connection: nothing of the failed unit may be there.
"""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from secir_bot import housekeeping
from secir_bot.errors import StoreError, StoreMissing
from secir_bot.model import Channel, Member, Post
from secir_bot.store import DB_NAME, MIGRATIONS, NewDelivery, Store, StoredMedia, upload_key


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "store"


@pytest.fixture
def store(store_dir: Path) -> Iterator[Store]:
    s = Store.open(store_dir, create=True)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def member(store: Store) -> Member:
    return store.members.add(
        tld="nl",
        tld_display=".nl",
        name="Bram de Vries",
        email="Bram@Registry.NL.test",
        fingerprint="ab" * 20,
        matrix_id="@bram:registry.nl.test",
        channels=frozenset({Channel.EMAIL, Channel.MATRIX}),
    )


def count(store_dir: Path, table: str) -> int:
    """Rows in ``table`` as a separate connection sees them (committed data only)."""
    conn = sqlite3.connect(store_dir / DB_NAME)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def _post(author: Member, uid: str = "p1") -> Post:
    return Post(
        uid=uid,
        origin=Channel.EMAIL,
        author=author,
        subject="Phishing wave",
        body="details",
        attachments=("report.pdf",),
    )


def _delivery(
    channel: Channel = Channel.EMAIL,
    target: str = "list",
    post_uid: str | None = "p1",
    payload: bytes = b"x",
) -> NewDelivery:
    return NewDelivery(
        channel=channel,
        target=target,
        kind="post",
        payload=payload,
        recipients=("anna@nic.test",),
        post_uid=post_uid,
    )


# -- lifecycle ---------------------------------------------------------------------------


def test_missing_store_is_reported(store_dir: Path) -> None:
    with pytest.raises(StoreMissing, match="init"):
        Store.open(store_dir)
    assert not store_dir.exists()  # opening without create makes nothing


def test_store_missing_is_a_store_error() -> None:
    assert issubclass(StoreMissing, StoreError)


def test_store_directory_is_private(store: Store, store_dir: Path) -> None:
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert (store_dir / DB_NAME).is_file()


def test_existing_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "loose"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)

    Store.open(directory, create=True).close()

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_migrations_are_recorded_once(store: Store, store_dir: Path) -> None:
    names = [name for name, _ in MIGRATIONS]

    assert store.applied_migrations() == names
    assert store.migrate() == []  # nothing left to apply
    store.close()

    again = Store.open(store_dir)
    try:
        assert again.migrate() == []
        assert again.applied_migrations() == names
        assert count(store_dir, "_migrations") == len(names)
    finally:
        again.close()


def test_reopening_does_not_reapply_migrations(
    store: Store, store_dir: Path, member: Member
) -> None:
    store.close()

    # Re-applying 001 would fail ("table members already exists") or, worse, wipe data.
    again = Store.open(store_dir)
    try:
        assert again.members.get(member.id) == member
    finally:
        again.close()


def test_foreign_keys_are_enforced(store: Store) -> None:
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


# -- small state -------------------------------------------------------------------------


def test_kv_put_and_get(store: Store, store_dir: Path) -> None:
    assert store.kv.get("list.fingerprint") is None
    store.kv.put("list.fingerprint", "ABC")
    store.kv.put("list.fingerprint", "DEF")

    assert store.kv.get("list.fingerprint") == "DEF"
    assert count(store_dir, "kv") == 1


# -- members -----------------------------------------------------------------------------


def test_member_is_stored_normalised(store: Store, member: Member) -> None:
    assert member.email == "bram@registry.nl.test"
    assert member.fingerprint == "AB" * 20
    assert store.members.by_email("BRAM@registry.nl.test") == member
    assert store.members.by_fingerprint("ab" * 20) == member
    assert store.members.by_matrix_id("@bram:registry.nl.test") == member
    assert member.channels == frozenset({Channel.EMAIL, Channel.MATRIX})


def test_duplicate_member_is_a_store_error(store: Store, member: Member) -> None:
    with pytest.raises(StoreError):
        store.members.add(
            tld="nl",
            tld_display=".nl",
            name="Other",
            email="other@nic.test",
            fingerprint="ab" * 20,
            matrix_id=None,
            channels=frozenset({Channel.EMAIL}),
        )
    assert store.members.all() == [member]


# -- inbox -------------------------------------------------------------------------------


def test_f5_accept_is_idempotent_per_source_id_and_bytes(store: Store, store_dir: Path) -> None:
    first, new = store.inbox.accept("email", "<m1@nic.test>", b"first bytes", {"uid": 7})
    again, new_again = store.inbox.accept("email", "<m1@nic.test>", b"first bytes", {"uid": 9})
    squatted, new_squatted = store.inbox.accept(
        "email", "<m1@nic.test>", b"other bytes", {"uid": 8}
    )
    other_source, new_other = store.inbox.accept("matrix", "<m1@nic.test>", b"event", None)
    event_again, new_event_again = store.inbox.accept("matrix", "<m1@nic.test>", b"changed", None)

    # The same bytes again (fetched twice) are the same item ...
    assert new and not new_again and again == first
    assert again.raw == b"first bytes" and again.meta == {"uid": 7}
    # ... but other bytes under a known Message-ID are a new item, not its duplicate.
    assert new_squatted and squatted.id != first.id and squatted.raw == b"other bytes"
    # Matrix events are unique by event id alone.
    assert new_other and not new_event_again and event_again == other_source
    assert count(store_dir, "inbox") == 3


def test_f5_migration_004_keys_existing_mail_by_its_bytes(store_dir: Path) -> None:
    import sqlite_utils

    from secir_bot import store as store_mod

    store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = sqlite_utils.Database(store_dir / DB_NAME)
    db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
    for name, fn in MIGRATIONS[:3]:
        fn(db)
        db["_migrations"].insert({"name": name, "applied_at": 0.0})
    db.execute(
        "INSERT INTO inbox (source, source_id, raw, meta, state) VALUES (?,?,?,?,?)",
        ["email", "<old@nic.test>", b"old bytes", "{}", "relayed"],
    )
    db.conn.commit()
    db.conn.close()

    migrated = Store.open(store_dir)
    try:
        assert "004_inbox_digest" in migrated.applied_migrations()
        old, new = migrated.inbox.accept("email", "<old@nic.test>", b"old bytes")
        assert not new and old.state == "relayed"  # the same mail, recognised
        other, new_other = migrated.inbox.accept("email", "<old@nic.test>", b"new bytes")
        assert new_other and other.state == "new"
    finally:
        migrated.close()
    assert store_mod.MIGRATIONS[3][0] == "004_inbox_digest"


def test_accept_keeps_raw_bytes_exactly(store: Store, store_dir: Path) -> None:
    raw = bytes(range(256)) + b"\r\n.\r\n\x00 trailing \r\n\r\n" + "Ünïcode".encode("latin-1")

    store.inbox.accept("email", "<bytes@nic.test>", raw)
    store.close()

    again = Store.open(store_dir)
    try:
        item = again.inbox.item("email", "<bytes@nic.test>")
        assert item is not None and item.raw == raw
        assert isinstance(item.raw, bytes)
    finally:
        again.close()


def test_accept_sync_writes_events_and_token_together(store: Store, store_dir: Path) -> None:
    store.inbox.accept_sync(
        [("$e1", b'{"a": 1}', {"room": "!r"}, "new"), ("$e2", b'{"b": 2}', {}, "parked")],
        token="s1",
    )

    assert store.kv.get("matrix.sync_token") == "s1"
    assert [i.source_id for i in store.inbox.pending("matrix")] == ["$e1"]
    assert [i.source_id for i in store.inbox.pending("matrix", "parked")] == ["$e2"]

    # An event that cannot be stored (state is NOT NULL) aborts the whole sync: neither the
    # events before it nor the new token are written, so the sync is simply repeated.
    with pytest.raises(sqlite3.IntegrityError):
        store.inbox.accept_sync([("$e3", b"{}", {}, "new"), ("$e4", b"{}", {}, None)], token="s2")  # type: ignore[list-item]

    assert store.kv.get("matrix.sync_token") == "s1"
    assert store.inbox.item("matrix", "$e3") is None
    assert count(store_dir, "inbox") == 2


def test_accept_sync_replay_is_harmless(store: Store) -> None:
    store.inbox.accept_sync([("$e1", b"{}", {}, "new")], token="s1")
    store.inbox.accept_sync([("$e1", b"{}", {}, "new"), ("$e2", b"{}", {}, "new")], token="s2")

    assert [i.source_id for i in store.inbox.pending("matrix")] == ["$e1", "$e2"]
    assert store.kv.get("matrix.sync_token") == "s2"


def test_unpark_only_touches_parked_items(store: Store) -> None:
    store.inbox.accept_sync([("$p", b"enc", {}, "parked"), ("$n", b"clear", {}, "new")], token="t")
    parked = store.inbox.item("matrix", "$p")
    fresh = store.inbox.item("matrix", "$n")
    assert parked is not None and fresh is not None

    store.inbox.unpark(parked.id, b"decrypted", {"decrypted": True})
    store.inbox.unpark(fresh.id, b"overwritten?", {})

    after = store.inbox.item("matrix", "$p")
    assert after is not None and after.state == "new" and after.raw == b"decrypted"
    assert after.meta == {"decrypted": True}
    unchanged = store.inbox.item("matrix", "$n")
    assert unchanged is not None and unchanged.raw == b"clear"


# -- decide ------------------------------------------------------------------------------


def test_decide_records_post_links_and_deliveries(store: Store, member: Member) -> None:
    item, _ = store.inbox.accept("email", "<m1@nic.test>", b"raw")

    store.decide(
        item.id,
        "relayed",
        post=_post(member),
        links=[("message-id", "<m1@nic.test>")],
        deliveries=[_delivery(Channel.MATRIX, "!room"), _delivery()],
    )

    decided = store.inbox.item("email", "<m1@nic.test>")
    assert decided is not None
    assert (decided.state, decided.post_uid) == ("relayed", "p1")
    assert store.posts.get("p1") == _post(member)
    assert store.posts.for_link("message-id", "<m1@nic.test>") == _post(member)
    assert store.outbox.counts() == {"pending": 2}


def test_decide_without_post_only_updates_the_item(store: Store, store_dir: Path) -> None:
    item, _ = store.inbox.accept("email", "<spam@x.test>", b"raw")

    store.decide(item.id, "dropped", "not a member")

    decided = store.inbox.item("email", "<spam@x.test>")
    assert decided is not None
    assert (decided.state, decided.reason, decided.post_uid) == ("dropped", "not a member", None)
    assert count(store_dir, "posts") == 0


def _assert_nothing_written(store: Store, store_dir: Path) -> None:
    item = store.inbox.item("email", "<m1@nic.test>")
    assert item is not None
    assert (item.state, item.reason, item.post_uid) == ("new", None, None)
    for table in ("posts", "links", "outbox"):
        assert count(store_dir, table) == 0, table
    assert store.posts.get("p1") is None


def test_decide_is_atomic_when_the_post_is_refused(
    store: Store, store_dir: Path, member: Member
) -> None:
    item, _ = store.inbox.accept("email", "<m1@nic.test>", b"raw")
    ghost = Member(
        id=member.id + 99,
        tld="xx",
        tld_display=".xx",
        name="Ghost",
        email="ghost@x.test",
        fingerprint="CD" * 20,
        matrix_id=None,
        channels=frozenset({Channel.EMAIL}),
    )

    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.decide(
            item.id,
            "relayed",
            post=_post(ghost),
            links=[("message-id", "<m1@nic.test>")],
            deliveries=[_delivery()],
        )

    _assert_nothing_written(store, store_dir)


def test_decide_is_atomic_when_a_later_delivery_fails(
    store: Store, store_dir: Path, member: Member
) -> None:
    item, _ = store.inbox.accept("email", "<m1@nic.test>", b"raw")
    broken = _delivery(target=None)  # type: ignore[arg-type]  # target is NOT NULL

    # The post, both links and the first delivery are written before the failure.
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        store.decide(
            item.id,
            "relayed",
            post=_post(member),
            links=[("message-id", "<m1@nic.test>"), ("matrix", "$ev")],
            deliveries=[_delivery(), broken],
        )

    _assert_nothing_written(store, store_dir)
    # The connection is still usable, and the item can be decided afterwards.
    store.decide(item.id, "relayed", post=_post(member), deliveries=[_delivery()])
    assert count(store_dir, "outbox") == 1


# -- links -------------------------------------------------------------------------------


def test_links_keep_their_order_and_first_owner(store: Store, member: Member) -> None:
    item, _ = store.inbox.accept("email", "<m1@nic.test>", b"raw")
    store.decide(item.id, "relayed", post=_post(member))
    store.posts.add_link("email", "<b@l>", "p1")
    store.posts.add_link("email", "<a@l>", "p1")
    store.posts.add_link("email", "<a@l>", "p2")  # already taken: ignored

    assert store.posts.links_of("p1", "email") == ["<b@l>", "<a@l>"]
    assert store.posts.links_of("p2", "email") == []


# -- outbox ------------------------------------------------------------------------------


def test_outbox_is_ordered_per_channel(store: Store) -> None:
    for target in ("m1", "e1", "m2", "e2", "m3"):
        channel = Channel.MATRIX if target.startswith("m") else Channel.EMAIL
        store.outbox.enqueue(_delivery(channel, target, post_uid=None, payload=target.encode()))

    matrix = store.outbox.due(Channel.MATRIX, now=float("inf"))
    mail = store.outbox.due(Channel.EMAIL, now=float("inf"))

    assert [r.target for r in matrix] == ["m1", "m2", "m3"]
    assert [r.target for r in mail] == ["e1", "e2"]
    assert [r.payload for r in mail] == [b"e1", b"e2"]
    assert mail[0].recipients == ("anna@nic.test",)
    assert mail[0].attempts == 0 and mail[0].done == ()


def test_new_rows_are_due_at_once_but_not_before_creation(store: Store) -> None:
    store.outbox.enqueue(_delivery(post_uid=None))
    row = store.outbox.due(Channel.EMAIL, now=float("inf"))[0]

    assert store.outbox.due(Channel.EMAIL, now=row.created_at) == [row]
    assert store.outbox.due(Channel.EMAIL, now=row.created_at - 1) == []
    assert store.outbox.next_time(now=row.created_at - 1) == row.created_at


def test_retry_later_postpones_and_counts(store: Store) -> None:
    store.outbox.enqueue(_delivery(post_uid=None, target="first"))
    store.outbox.enqueue(_delivery(post_uid=None, target="second"))
    first, second = store.outbox.due(Channel.EMAIL, now=float("inf"))

    store.outbox.retry_later(first.id, "421 try later", at=second.created_at + 500)

    due_now = store.outbox.due(Channel.EMAIL, now=second.created_at + 1)
    assert [r.target for r in due_now] == ["second"]
    assert store.outbox.next_time() == pytest.approx(second.created_at)
    later = store.outbox.due(Channel.EMAIL, now=second.created_at + 500)
    assert [(r.target, r.attempts) for r in later] == [("first", 1), ("second", 0)]
    row = store.db.execute("SELECT last_error FROM outbox WHERE id = ?", [first.id]).fetchone()
    assert row[0] == "421 try later"


def test_outbox_next_time_is_the_earliest_pending(store: Store) -> None:
    assert store.outbox.next_time() is None
    store.outbox.enqueue(_delivery(post_uid=None))
    (row,) = store.outbox.due(Channel.EMAIL, now=float("inf"))

    store.outbox.retry_later(row.id, "busy", at=1234.5)
    assert store.outbox.next_time(now=1000) == 1234.5
    # Times already past are not "next": those rows are due (or wait behind one) now.
    assert store.outbox.next_time(now=2000) is None

    store.outbox.delivered(row.id, "250 ok")
    assert store.outbox.next_time(now=1000) is None


def test_dead_rows_leave_the_queue(store: Store) -> None:
    store.outbox.enqueue(_delivery(post_uid=None))
    (row,) = store.outbox.due(Channel.EMAIL, now=float("inf"))

    store.outbox.dead(row.id, "550 no such user")

    assert store.outbox.due(Channel.EMAIL, now=float("inf")) == []
    assert store.outbox.counts() == {"dead": 1}
    state = store.db.execute("SELECT attempts, last_error FROM outbox").fetchone()
    assert tuple(state) == (1, "550 no such user")


def test_delivered_records_result_and_link(store: Store, member: Member) -> None:
    item, _ = store.inbox.accept("email", "<m1@nic.test>", b"raw")
    store.decide(
        item.id, "relayed", post=_post(member), deliveries=[_delivery(Channel.MATRIX, "!room")]
    )
    (row,) = store.outbox.due(Channel.MATRIX, now=float("inf"))

    store.outbox.delivered(row.id, "$event", link=("matrix", "$event"), post_uid="p1")

    assert store.outbox.counts() == {"sent": 1}
    assert store.posts.for_link("matrix", "$event") == _post(member)


def test_partly_delivered_remembers_who_has_it(store: Store) -> None:
    store.outbox.enqueue(_delivery(post_uid=None))
    (row,) = store.outbox.due(Channel.EMAIL, now=float("inf"))

    store.outbox.partly_delivered(row.id, ("anna@nic.test", "bram@registry.nl.test"))

    (again,) = store.outbox.due(Channel.EMAIL, now=float("inf"))
    assert again.done == ("anna@nic.test", "bram@registry.nl.test")
    assert again.attempts == 0  # still pending, nothing counted as a failure


# -- devices -----------------------------------------------------------------------------


def test_devices_are_recorded_and_counted(store: Store) -> None:
    assert store.devices.state("@anna:nic.test", "DEV1") is None
    store.devices.record("@anna:nic.test", "DEV1", "ed-key-1", "trusted")
    store.devices.record("@anna:nic.test", "DEV2", "ed-key-2", "new")
    store.devices.record("@anna:nic.test", "DEV1", "ed-key-1", "blocked")

    assert store.devices.state("@anna:nic.test", "DEV1") == ("blocked", "ed-key-1")
    assert store.devices.known("@anna:nic.test") == 2
    assert store.devices.known("@bram:registry.nl.test") == 0


def test_retention_erases_old_raw_bytes_and_sent_payloads_only(
    store: Store, member: Member
) -> None:
    old_decided, _ = store.inbox.accept("email", "<old@x>", b"old mail")
    store.decide(
        old_decided.id,
        "relayed",
        post=_post(member),
        deliveries=[NewDelivery(Channel.EMAIL, "list", "post", b"old ciphertext", ("a@x",))],
    )
    row_id = store.db.execute("SELECT max(id) FROM outbox").fetchone()[0]
    store.outbox.delivered(row_id, "sent")
    undecided, _ = store.inbox.accept("email", "<waiting@x>", b"still to decide")
    store.outbox.enqueue(
        NewDelivery(Channel.EMAIL, "list", "post", b"pending ciphertext", ("a@x",))
    )
    store.rates.take("notice:x", 5, 3600.0, 0.0)
    # Everything above is "old" when seen from 31 days ahead.
    counts = housekeeping.purge(store, 30, now=time.time() + 31 * 86400)
    assert counts == {"inbox": 1, "outbox": 1, "media": 0}
    raws = dict(store.db.execute("SELECT source_id, raw FROM inbox").fetchall())
    assert raws == {"<old@x>": b"", "<waiting@x>": b"still to decide"}
    payloads = [bytes(r[0]) for r in store.db.execute("SELECT payload FROM outbox ORDER BY id")]
    assert payloads == [b"", b"pending ciphertext"]
    assert store.posts.get("p1") is not None  # the archive stays
    assert store.db.execute("SELECT count(*) FROM rate_limits").fetchone()[0] == 0
    # Within the retention period nothing is touched.
    fresh, _ = store.inbox.accept("email", "<fresh@x>", b"fresh mail")
    store.decide(fresh.id, "rejected", "r")
    assert housekeeping.purge(store, 30) == {"inbox": 0, "outbox": 0, "media": 0}
    assert undecided.raw == b"still to decide"


def test_issue10_retention_deletes_the_files_of_decided_matrix_messages_only(
    store: Store,
) -> None:
    """The decrypted files of Matrix messages (the ``media`` table, issue 10) are erased
    with their events' raw bytes, except those of events still to be decided."""
    decided, _ = store.inbox.accept("matrix", "$decided", b"{}")
    store.decide(decided.id, "rejected", "r")
    store.inbox.accept("matrix", "$waiting", b"{}")
    for event_id in ("$decided", "$waiting"):
        store.media.put(StoredMedia(event_id, "a.png", "image/png", b"png", None))

    counts = housekeeping.purge(store, 30, now=time.time() + 31 * 86400)

    assert counts["media"] == 1
    assert store.media.get("$decided") is None
    stored = store.media.get("$waiting")
    assert stored is not None and stored.data == b"png"


def test_the_uploads_of_matrix_rows_no_longer_pending_are_forgotten(store: Store) -> None:
    """A Matrix file row remembers its upload while it is pending (a retry posts the same
    file); once it is sent or dead, or put back (a new ``created_at``: a new upload), the
    housekeeping forgets it."""
    for name in ("sent", "dead", "put back", "pending"):
        store.outbox.enqueue(NewDelivery(Channel.MATRIX, "!r:x", "post", name.encode()))
    sent, dead, put_back, pending = store.outbox.pending(Channel.MATRIX)
    for row in (sent, dead, put_back, pending):
        store.kv.put(upload_key(row), f"mxc://x/{row.id}")
    store.outbox.delivered(sent.id, "$e")
    store.outbox.dead(dead.id, "refused")
    store.outbox.dead(put_back.id, "refused")
    with store.transaction() as tx:
        assert store.outbox.retry(tx, put_back.id, put_back.created_at + 60)

    housekeeping.purge(store, 30)

    assert store.kv.prefixed("matrix.upload.") == {upload_key(pending): f"mxc://x/{pending.id}"}
    assert store.outbox.forget_uploads() == 0  # and a second run has nothing left to do
