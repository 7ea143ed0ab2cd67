"""The [commands] and [whois] configuration sections: defaults, values, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from secir_bot import config
from secir_bot.errors import ConfigError
from secir_bot.sandbox.world import offline_config


def _parse(tmp_path: Path, **sections: dict[str, object]) -> config.Config:
    base = offline_config(tmp_path, "registry.test")
    data: dict[str, object] = {
        "list": {
            "address": base.list.address,
            "list_id": base.list.list_id,
            "owner": base.list.owner,
        },
        "matrix": {
            "homeserver": base.matrix.homeserver,
            "user_id": base.matrix.user_id,
            "incident_room": base.matrix.incident_room,
            "control_room": base.matrix.control_room,
            "admins": list(base.matrix.admins),
        },
        "imap": {"host": "127.0.0.1", "username": "list", "password_file": "pw"},
        "smtp": {"host": "127.0.0.1"},
        **sections,
    }
    return config.parse(data, tmp_path / "config.toml")


def test_defaults(tmp_path: Path) -> None:
    cfg = _parse(tmp_path)
    assert cfg.commands == config.CommandsConfig()
    assert cfg.commands.request_address == ""
    assert (cfg.commands.confirm_ttl, cfg.commands.case_expiry_days) == (300.0, 30.0)
    assert cfg.whois == config.WhoisConfig(host="whois.iana.org", port=43, timeout=15.0)


def test_values_and_a_relative_keyring(tmp_path: Path) -> None:
    cfg = _parse(
        tmp_path,
        commands={
            "request_address": "secir-request@registry.test",
            "confirm_ttl": 60,
            "case_expiry_days": 14,
            "admin_power_level": 50,
            "keyring": "admin-keys",
        },
        whois={"host": "127.0.0.1", "port": 4343, "timeout": 2},
    )
    assert cfg.commands.request_address == "secir-request@registry.test"
    assert cfg.commands.keyring == (tmp_path / "admin-keys").resolve()
    assert (cfg.commands.confirm_ttl, cfg.commands.admin_power_level) == (60.0, 50)
    assert (cfg.whois.host, cfg.whois.port, cfg.whois.timeout) == ("127.0.0.1", 4343, 2.0)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(
            tmp_path,
            commands={"request_address": "not-an-address", "confirm_ttl": 0, "colour": "red"},
            whois={"port": 70000},
        )
    problems = caught.value.problems
    assert "commands.request_address: not an email address: 'not-an-address'" in problems
    assert "commands.confirm_ttl: must be greater than 0" in problems
    assert "commands.colour: unknown key" in problems
    assert "whois.port: not a TCP port" in problems
