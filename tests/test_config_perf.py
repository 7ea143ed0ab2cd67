"""The configuration keys of issue 11: recipient groups, the OpenPGP backend, SMTP hand-off,
parallel decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from secir_bot import config
from secir_bot.errors import ConfigError


def _data(tmp_path: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    (tmp_path / "pw").write_text("x\n")
    data: dict[str, Any] = {
        "list": {"address": "l@nic.test", "list_id": "l.nic.test", "owner": "o@nic.test"},
        "matrix": {
            "homeserver": "http://127.0.0.1:1",
            "user_id": "@bot:nic.test",
            "incident_room": "!i:nic.test",
            "control_room": "!c:nic.test",
            "admins": ["@admin:nic.test"],
        },
        "imap": {"host": "127.0.0.1", "username": "list", "password_file": "pw"},
        "smtp": {"host": "127.0.0.1"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def test_defaults(tmp_path: Path) -> None:
    cfg = config.parse(_data(tmp_path), tmp_path / "c.toml")
    assert cfg.crypto.backend == "gpg" and cfg.crypto.hide_recipients
    assert cfg.delivery.encrypt_group_size == 100
    assert cfg.smtp.connections == 1 and cfg.smtp.pipelining
    assert cfg.smtp.keep_open == 30.0
    assert cfg.imap.parallel_decisions == 4
    assert cfg.delivery.matrix_parallel == 8


@pytest.mark.parametrize("backend", ["gpg", "sequoia"])
@pytest.mark.parametrize("hide", [True, False])
def test_either_backend_hides_recipients_or_not(tmp_path: Path, backend: str, hide: bool) -> None:
    crypto: dict[str, Any] = {"backend": backend}
    if not hide:
        crypto["hide_recipients"] = False
    cfg = config.parse(_data(tmp_path, crypto=crypto), tmp_path / "c.toml")
    assert (cfg.crypto.backend, cfg.crypto.hide_recipients) == (backend, hide)


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"crypto": {"backend": "openpgp.js"}}, "crypto.backend: must be gpg or sequoia"),
        ({"delivery": {"encrypt_group_size": 0}}, "delivery.encrypt_group_size: must be greater"),
        ({"smtp": {"connections": 0}}, "smtp.connections: must be greater than 0"),
        ({"smtp": {"pipelining": "yes"}}, "smtp.pipelining: expected bool"),
        ({"smtp": {"keep_open": -1}}, "smtp.keep_open: must be 0 or more"),
        ({"crypto": {"colour": "blue"}}, "crypto.colour: unknown key"),
        ({"imap": {"parallel_decisions": 0}}, "imap.parallel_decisions: must be greater"),
        ({"delivery": {"matrix_parallel": 0}}, "delivery.matrix_parallel: must be greater"),
    ],
)
def test_bad_values_are_named(
    tmp_path: Path, sections: dict[str, dict[str, Any]], problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        config.parse(_data(tmp_path, **sections), tmp_path / "c.toml")
    assert any(p.startswith(problem) for p in raised.value.problems), raised.value.problems
