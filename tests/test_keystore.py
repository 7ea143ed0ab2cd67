"""The bot's nio key store: a sync that found no encrypted room writes nothing to it.

nio calls ``save_encrypted_rooms`` after every sync; with nothing to save it still looked
up the account and ran a transaction (``KeyStore`` in secir_bot/bridges/matrix/client.py).
A real nio store on SQLite, its statements traced.
"""

from __future__ import annotations

from pathlib import Path

from nio.crypto import OlmAccount

from secir_bot.bridges.matrix.client import KeyStore

ROOM = "!incident:secir.test"


def _store(tmp_path: Path) -> tuple[KeyStore, list[str]]:
    store = KeyStore("@bot:secir.test", "BOTDEVICE", str(tmp_path), "pickle key")
    store.save_account(OlmAccount())
    statements: list[str] = []
    store.database.connection().set_trace_callback(statements.append)
    return store, statements


def test_a_sync_without_encrypted_rooms_runs_no_statement(tmp_path: Path) -> None:
    store, statements = _store(tmp_path)

    store.save_encrypted_rooms(set())

    assert statements == []


def test_encrypted_rooms_are_saved_as_before(tmp_path: Path) -> None:
    store, statements = _store(tmp_path)

    store.save_encrypted_rooms({ROOM})

    assert statements  # written
    assert ROOM in store.load_encrypted_rooms()
    reopened = KeyStore("@bot:secir.test", "BOTDEVICE", str(tmp_path), "pickle key")
    assert ROOM in reopened.load_encrypted_rooms()
