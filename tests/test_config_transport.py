"""Transport settings of the config: CA files, and warnings for risky but allowed choices.

Plain IMAP/SMTP to another host, an ``http://`` homeserver that is not this machine, and a
password file that other accounts can read are allowed (a test or a lab may need them) but
never quiet: they are listed in ``Config.warnings`` for check-config, doctor and run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from servers import TestCA
from test_config import IMAP_ENV, Data, render, valid_data

from secir_bot.config import is_loopback, load
from secir_bot.errors import ConfigError


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "secrets").mkdir()
    for name in ("matrix.pw", "smtp.pw"):
        (tmp_path / "secrets" / name).write_text("x\n")
        (tmp_path / "secrets" / name).chmod(0o600)
    monkeypatch.setenv(IMAP_ENV, "x")
    return tmp_path


def _load(site: Path, data: Data) -> list[str]:
    path = site / "config.toml"
    path.write_text(render(data))
    return list(load(path).warnings)


def test_the_valid_config_has_no_warnings(site: Path) -> None:
    assert _load(site, valid_data()) == []


@pytest.mark.parametrize("section", ["imap", "smtp"])
def test_plain_mail_to_another_host_is_a_warning(site: Path, section: str) -> None:
    data = valid_data()
    data[section]["security"] = "plain"
    warnings = _load(site, data)
    assert len(warnings) == 1
    assert warnings[0].startswith(f'{section}.security: "plain" to {section}.secir.test')


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.53"])
def test_plain_mail_to_this_machine_is_fine(site: Path, host: str) -> None:
    data = valid_data()
    for section in ("imap", "smtp"):
        data[section].update(security="plain", host=host)
    assert _load(site, data) == []


def test_an_http_homeserver_elsewhere_is_a_warning(site: Path) -> None:
    data = valid_data()
    data["matrix"]["homeserver"] = "http://matrix.secir.test:8008"
    (warning,) = _load(site, data)
    assert warning.startswith("matrix.homeserver: http://matrix.secir.test:8008 is plain http")
    data["matrix"]["homeserver"] = "http://127.0.0.1:8008"
    assert _load(site, data) == []


def test_a_password_file_others_can_read_is_a_warning(site: Path) -> None:
    (site / "secrets" / "smtp.pw").chmod(0o644)
    (warning,) = _load(site, valid_data())
    assert warning.startswith("smtp.password_file: secrets/smtp.pw is readable by every user")


def test_a_group_readable_password_file_is_fine_only_for_the_bots_own_group(site: Path) -> None:
    secret = site / "secrets" / "smtp.pw"
    secret.chmod(0o640)
    os.chown(secret, -1, os.getegid())
    assert _load(site, valid_data()) == []  # the admin manual's layout (root:secir-bot 0640)
    other = next(g for g in range(1, 65534) if g != os.getegid())
    os.chown(secret, -1, other)  # needs root, as the real-server tests do anyway
    (warning,) = _load(site, valid_data())
    assert f"readable by the members of group {other}" in warning


def test_ca_files_are_read_relative_to_the_config(site: Path, test_ca: TestCA) -> None:
    pem = site / "secrets" / "ca.pem"
    pem.write_bytes(test_ca.ca.read_bytes())
    data = valid_data()
    data["imap"]["ca_file"] = "secrets/ca.pem"
    path = site / "config.toml"
    path.write_text(render(data))
    cfg = load(path)
    assert cfg.imap.ca_file == pem
    assert cfg.smtp.ca_file is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file: secrets/ca.pem"), (b"not a certificate\n", "holds no PEM")],
)
def test_bad_ca_files_are_named(site: Path, content: bytes | None, expected: str) -> None:
    if content is not None:
        (site / "secrets" / "ca.pem").write_bytes(content)
    data = valid_data()
    data["smtp"]["ca_file"] = "secrets/ca.pem"
    path = site / "config.toml"
    path.write_text(render(data))
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert any(p.startswith("smtp.ca_file: ") and expected in p for p in caught.value.problems)


def test_loopback_hosts() -> None:
    assert is_loopback("localhost") and is_loopback("127.0.0.1") and is_loopback("[::1]")
    assert not is_loopback("mail.secir.test") and not is_loopback("192.0.2.1")
