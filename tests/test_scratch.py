"""Scratch directories for throwaway servers: in memory where the machine has room."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from secir_bot.sandbox import scratch


def test_a_throwaway_directory_goes_to_memory_when_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "RAM_ROOM", 1)
    made = scratch.ram_tempdir("syn", ram=tmp_path)
    assert made.parent == tmp_path and made.name.startswith("syn")


def test_without_room_in_memory_it_goes_to_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scratch, "RAM_ROOM", 1 << 60)  # more than any machine has
    for ram in (tmp_path, tmp_path / "missing"):
        made = scratch.ram_tempdir("syn", ram=ram)
        try:
            assert made.parent == Path(tempfile.gettempdir())
        finally:
            shutil.rmtree(made)
