"""The store is made private at start: every directory 0700, every file 0600, loudly.

A real directory tree with the modes an old version, a careless restore or a umask of 022
leaves (the database and the keyring files 0644, ``gnupg/`` and ``matrix/`` 0755).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from secir_bot import fileperms
from secir_bot.app import check_store_dir
from secir_bot.sandbox.world import offline_config


def _careless_store(root: Path) -> Path:
    store = root / "store"
    for directory in (store, store / "gnupg", store / "matrix"):
        directory.mkdir()
        directory.chmod(0o755)
    for name in ("secir.sqlite", "gnupg/pubring.kbx", "matrix/credentials.json"):
        (store / name).write_text("x")
        (store / name).chmod(0o644)
    os.mkfifo(store / "gnupg" / "not-a-file")  # left alone, like gpg-agent's sockets
    return store


def test_files_run_makes_the_whole_store_private_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _careless_store(tmp_path)
    caplog.set_level(logging.WARNING, "secir_bot.app")
    check_store_dir(offline_config(tmp_path, "test.example"))
    assert fileperms.too_open(store) == []
    assert (store / "matrix" / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert (store / "gnupg").stat().st_mode & 0o777 == 0o700
    warned = [r.getMessage() for r in caplog.records if r.name == "secir_bot.app"]
    assert len(warned) == 6
    assert any("gnupg/pubring.kbx had mode 0644; set to 0600" in w for w in warned)


def test_a_private_store_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _careless_store(tmp_path)
    fileperms.tighten(store)
    caplog.set_level(logging.WARNING, "secir_bot.app")
    check_store_dir(offline_config(tmp_path, "test.example"))
    assert not [r for r in caplog.records if r.name == "secir_bot.app"]
