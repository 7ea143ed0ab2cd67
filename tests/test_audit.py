"""The audit log: a hash chain in a real SQLite store; every kind of tampering is detected.

Tampering is done the way an intruder with the database file would: through a second
SQLite connection, after dropping the append-only triggers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from secir_bot import cli
from secir_bot.audit import GENESIS, entry_hash, verify
from secir_bot.store import DB_NAME, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "store", create=True)
    try:
        yield s
    finally:
        s.close()


def _fill(store: Store, n: int = 5) -> None:
    for i in range(1, n + 1):
        with store.transaction() as tx:
            store.audit.append(
                tx,
                actor="@admin:test.local",
                action="case.invite",
                target=f".t{i}",
                reason="pilot",
                evidence={"whois_sha256": "ab" * 32, "message_ids": [f"<m{i}@test.example>"]},
            )


def _tamper(store: Store, *statements: str) -> None:
    conn = sqlite3.connect(store.directory / DB_NAME)
    try:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def test_an_untouched_chain_verifies(store: Store) -> None:
    assert store.audit.verify().ok  # empty
    _fill(store)
    verdict = store.audit.verify()
    assert verdict.ok, verdict.problems
    assert verdict.count == 5
    last = store.audit.tail(1)[0]
    assert verdict.head == f"5:{last.hash}"
    assert store.audit.entries()[0].prev == GENESIS
    assert [e.target for e in store.audit.tail(2)] == [".t4", ".t5"]
    assert last.evidence_map == {"message_ids": ["<m5@test.example>"], "whois_sha256": "ab" * 32}


def test_the_database_refuses_updates_and_deletes(store: Store) -> None:
    _fill(store, 2)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"), store.transaction() as tx:
        tx.execute("UPDATE audit SET reason = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"), store.transaction() as tx:
        tx.execute("DELETE FROM audit WHERE seq = 2")
    assert store.audit.verify().ok


def test_the_entry_rolls_back_with_the_change_it_records(store: Store) -> None:
    def change_then_fail() -> None:
        with store.transaction() as tx:
            tx.execute("INSERT INTO kv (key, value) VALUES ('change', 'x')")
            store.audit.append(tx, actor="@a:t", action="x", target="y")
            raise RuntimeError("the change failed half way")

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert store.audit.entries() == []
    assert store.kv.get("change") is None


def test_an_edited_entry_is_detected(store: Store) -> None:
    _fill(store)
    _tamper(store, "UPDATE audit SET reason = 'nothing to see' WHERE seq = 3")
    verdict = store.audit.verify()
    assert not verdict.ok
    assert "entry 3 does not match its hash: it was edited" in verdict.problems


def test_edited_evidence_is_detected_even_if_equivalent_json(store: Store) -> None:
    _fill(store)
    _tamper(store, "UPDATE audit SET evidence = replace(evidence, ',', ', ') WHERE seq = 2")
    assert "entry 2 does not match its hash: it was edited" in store.audit.verify().problems


def test_a_rehashed_edit_still_breaks_the_next_link(store: Store) -> None:
    _fill(store)
    entry = store.audit.entries()[1]  # seq 2
    forged = entry_hash(entry.prev, 2, entry.at, entry.actor, entry.action, ".xx", "", "{}")
    _tamper(
        store,
        f"UPDATE audit SET target = '.xx', reason = '', evidence = '{{}}', hash = '{forged}'"
        " WHERE seq = 2",
    )
    assert "entry 3 does not link to the entry before it" in store.audit.verify().problems


def test_a_deleted_entry_is_detected(store: Store) -> None:
    _fill(store)
    _tamper(store, "DELETE FROM audit WHERE seq = 2")
    problems = store.audit.verify().problems
    assert "entry 3 comes where entry 2 should: entries were deleted, inserted or reordered" in (
        problems
    )
    assert "entry 3 does not link to the entry before it" in problems


def test_an_inserted_entry_is_detected(store: Store) -> None:
    _fill(store, 3)
    first = store.audit.entries()[0]
    # A well-formed entry 2 that links to entry 1; the later entries are renumbered.
    forged = entry_hash(first.hash, 2, first.at, "mallory", "member.add", ".nl", "", "{}")
    _tamper(
        store,
        "UPDATE audit SET seq = seq + 10 WHERE seq >= 2",
        "UPDATE audit SET seq = seq - 9 WHERE seq >= 12",  # now 1, 3, 4
        f"INSERT INTO audit VALUES (2, {first.at}, 'mallory', 'member.add', '.nl', '', '{{}}',"
        f" '{first.hash}', '{forged}')",
    )
    problems = store.audit.verify().problems
    assert "entry 3 does not link to the entry before it" in problems
    assert "entry 3 does not match its hash: it was edited" in problems


def test_reordered_entries_are_detected(store: Store) -> None:
    _fill(store, 4)
    # Swap the contents of entries 2 and 3, keeping the numbers in place.
    _tamper(
        store,
        "UPDATE audit SET seq = -2 WHERE seq = 2",
        "UPDATE audit SET seq = 2 WHERE seq = 3",
        "UPDATE audit SET seq = 3 WHERE seq = -2",
    )
    problems = store.audit.verify().problems
    assert any("entry 2 does not" in p for p in problems)
    assert any("entry 3 does not" in p for p in problems)


def test_removed_newest_entries_are_detected_by_the_recorded_head(store: Store) -> None:
    _fill(store)
    _tamper(store, "DELETE FROM audit WHERE seq >= 4")
    problems = store.audit.verify().problems
    assert problems == (
        "the newest entry is 3 but 5 was recorded as the head: the newest entries were removed",
    )


def test_an_outside_anchor_catches_removal_with_a_forged_head(store: Store) -> None:
    _fill(store)
    anchor = store.audit.verify().head  # shown in the control room by !audit
    fake_head = f"3:{store.audit.entries()[2].hash}"
    _tamper(
        store,
        "DELETE FROM audit WHERE seq >= 4",
        f"UPDATE kv SET value = '{fake_head}' WHERE key = 'audit.head'",
    )
    assert store.audit.verify().ok  # consistent in itself...
    verdict = store.audit.verify(expect_head=anchor)  # ...but not with the anchor
    assert not verdict.ok
    assert f"the expected head {anchor} is not in the chain" in verdict.problems[0]


def test_verify_of_a_chain_value_reports_the_head() -> None:
    verdict = verify([])
    assert verdict.ok
    assert verdict.head == f"0:{GENESIS}"
    assert "verifies: 0 entries" in verdict.summary()


def _config(directory: Path) -> Path:
    (directory / "pw").write_text("x\n")
    path = directory / "config.toml"
    path.write_text(
        '[store]\npath = "store"\n'
        '[list]\naddress = "list@test.example"\nlist_id = "secir.test.example"\n'
        'owner = "owner@test.example"\n'
        '[matrix]\nhomeserver = "http://127.0.0.1:1"\nuser_id = "@bot:test.local"\n'
        'incident_room = "!i:test.local"\ncontrol_room = "!c:test.local"\n'
        'admins = ["@admin:test.local"]\n'
        '[imap]\nhost = "127.0.0.1"\nusername = "list"\npassword_file = "pw"\n'
        '[smtp]\nhost = "127.0.0.1"\n'
    )
    return path


def test_cli_audit_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    store = Store.open(tmp_path / "store", create=True)
    try:
        _fill(store, 3)
        head = store.audit.verify().head
    finally:
        store.close()
    assert cli.main(["audit", "verify", "-c", str(config)]) == 0
    assert f"verifies: 3 entries, head {head}" in capsys.readouterr().out
    assert cli.main(["audit", "verify", "-c", str(config), "--expect-head", head]) == 0
    _tamper(Store.open(tmp_path / "store"), "UPDATE audit SET actor = 'x' WHERE seq = 2")
    assert cli.main(["audit", "verify", "-c", str(config)]) == 5
    assert "entry 2 does not match its hash" in capsys.readouterr().err
