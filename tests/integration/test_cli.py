"""The admin's first steps with the real ``secir-bot`` command: check-config, init, members.

Runs the console entry point in subprocesses against a real Synapse (for the one-time
device login) and real gpg keys, the way an admin would on a new installation.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import GpgWorld

from secir_bot import fileperms
from secir_bot.sandbox.synapse import Synapse

ROOT = Path(__file__).resolve().parents[2]


def secir(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "secir_bot", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def site(synapse: Synapse) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="c"))
    tag = os.urandom(3).hex()
    reg = synapse.register(f"clibot-{tag}", "pw-bot")
    (d / "secrets").mkdir()
    (d / "secrets" / "matrix").write_text("pw-bot\n")
    (d / "secrets" / "imap").write_text("pw-list\n")
    (d / "config.toml").write_text(f"""
[list]
address = "list-{tag}@test.example"
list_id = "secir-{tag}.test.example"
owner = "owner@test.example"

[matrix]
homeserver = "{synapse.url}"
user_id = "{reg["user_id"]}"
password_file = "secrets/matrix"
incident_room = "!incidents:test.local"
control_room = "!control:test.local"
admins = ["@admin:test.local"]

[imap]
host = "127.0.0.1"
security = "plain"
port = 1143
username = "list-{tag}@test.example"
password_file = "secrets/imap"

[smtp]
host = "127.0.0.1"
security = "plain"
port = 1025
""")
    yield d
    subprocess.run(
        ["gpgconf", "--homedir", str(d / "store" / "gnupg"), "--kill", "all"],
        capture_output=True,
        check=False,
    )
    shutil.rmtree(d, ignore_errors=True)


def test_check_config_refuses_the_example_by_dotted_key() -> None:
    result = secir("check-config", "-c", str(ROOT / "config.example.toml"), cwd=ROOT)
    assert result.returncode == 2
    for key in ("list.address", "matrix.homeserver", "matrix.user_id", "imap.host"):
        assert key in result.stderr


def test_init_then_members(site: Path, gpg_world: GpgWorld) -> None:
    assert secir("check-config", cwd=site).returncode == 0
    first = secir("init", cwd=site)
    assert first.returncode == 0, first.stderr
    store = site / "store"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    creds = store / "matrix" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert "pw-bot" not in first.stderr + first.stdout  # no secret in the output
    device = creds.read_text()
    # init is idempotent: the device, and so its keys, never change.
    assert secir("init", cwd=site).returncode == 0
    assert creds.read_text() == device

    for email in ("alice@test.example", "expired@test.example", "signonly@test.example"):
        (site / f"{email}.asc").write_text(gpg_world.export_public(email))
    ok = secir(
        "member",
        "add",
        "--tld",
        ".nl",
        "--name",
        "Alice Jansen",
        "--email",
        "alice@test.example",
        "--key",
        "alice@test.example.asc",
        "--matrix-id",
        "@alice:test.local",
        cwd=site,
    )
    assert ok.returncode == 0, ok.stderr
    assert "Alice Jansen (.nl)" in ok.stdout
    refused = secir(
        "member",
        "add",
        "--tld",
        ".com",
        "--name",
        "Ex",
        "--email",
        "expired@test.example",
        "--key",
        "expired@test.example.asc",
        cwd=site,
    )
    assert refused.returncode == 4
    assert "not a country-code TLD" in refused.stderr
    assert "expired" in refused.stderr

    (site / "members.csv").write_text(
        "tld,name,email,key,channels\n"
        "рф,Ivan Petrov,signonly@test.example,signonly@test.example.asc,email\n"
    )
    imported = secir("member", "import", "members.csv", cwd=site)
    assert imported.returncode == 4
    assert "encryption" in imported.stderr

    listing = secir("member", "list", cwd=site)
    assert listing.returncode == 0
    assert "alice@test.example" in listing.stdout
    assert "expired@test.example" not in listing.stdout
    assert "signonly@test.example" not in listing.stdout


def test_run_without_init_is_a_clear_error(site: Path) -> None:
    result = secir("run", cwd=site)
    assert result.returncode == 3
    assert "secir-bot init" in result.stderr


def test_missing_crypto_store_is_a_loud_startup_error(site: Path) -> None:
    assert secir("init", cwd=site).returncode == 0
    for db in (site / "store" / "matrix").glob("*.db"):
        db.unlink()
    result = secir("run", cwd=site)
    assert result.returncode == 3
    assert "crypto store" in result.stderr
    assert "new identity keys" in result.stderr


def test_check_config_shows_warnings_and_still_passes(site: Path) -> None:
    config = site / "config.toml"
    config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "mail.test"'))
    (site / "secrets" / "imap").chmod(0o644)
    result = secir("check-config", cwd=site)
    assert result.returncode == 0, result.stderr
    assert "OK (with warnings)" in result.stdout
    assert 'warning: imap.security: "plain" to mail.test' in result.stderr
    assert 'warning: smtp.security: "plain" to mail.test' in result.stderr
    assert "warning: imap.password_file: secrets/imap is readable by every user" in result.stderr


def _leftovers(site: Path) -> list[str]:
    """Anything init may have left beside the config: a store or a half-built one."""
    return sorted(p.name for p in site.iterdir() if p.name.startswith((".store", "store")))


def test_f6_init_that_fails_at_the_matrix_login_leaves_nothing(
    site: Path, gpg_world: GpgWorld
) -> None:
    (site / "secrets" / "matrix").write_text("not-the-password\n")
    (site / "list.asc").write_text(gpg_world.export_secret("carol@test.example"))
    failed = secir("init", cwd=site)
    assert failed.returncode == 6, failed.stderr
    assert "server: the homeserver refused the login of @clibot-" in failed.stderr
    assert "M_FORBIDDEN" in failed.stderr
    assert _leftovers(site) == []
    # The admin fixes the password and imports the list key they meant: it is the one used.
    (site / "secrets" / "matrix").write_text("pw-bot\n")
    done = secir("init", "--import-key", "list.asc", cwd=site)
    assert done.returncode == 0, done.stderr
    assert f"list key {gpg_world.fingerprint('carol@test.example')}" in done.stdout
    assert _leftovers(site) == ["store"]
    assert stat.S_IMODE((site / "store").stat().st_mode) == 0o700


def test_f6_init_refuses_to_replace_the_list_key(site: Path, gpg_world: GpgWorld) -> None:
    (site / "carol.asc").write_text(gpg_world.export_secret("carol@test.example"))
    (site / "dave.asc").write_text(gpg_world.export_secret("dave@test.example"))
    assert secir("init", "--import-key", "carol.asc", cwd=site).returncode == 0
    other = secir("init", "--import-key", "dave.asc", cwd=site)
    assert other.returncode == 3
    assert gpg_world.fingerprint("carol@test.example") in other.stderr
    assert gpg_world.fingerprint("dave@test.example") in other.stderr
    # The same key again is a harmless repeat.
    assert secir("init", "--import-key", "carol.asc", cwd=site).returncode == 0


def test_f6_init_without_a_homeserver_says_so_and_leaves_nothing(site: Path) -> None:
    config = site / "config.toml"
    text = config.read_text()
    url = text.split('homeserver = "', 1)[1].split('"', 1)[0]
    config.write_text(text.replace(url, "http://127.0.0.1:9"))  # nothing listens on port 9
    (site / "store").mkdir()  # an empty store directory made by the admin is fine
    result = secir("init", cwd=site)
    assert result.returncode == 6, result.stderr
    assert "server: cannot reach the homeserver http://127.0.0.1:9" in result.stderr
    assert _leftovers(site) == ["store"] and not any((site / "store").iterdir())
    config.write_text(text)
    assert secir("init", cwd=site).returncode == 0
    assert (site / "store" / "matrix" / "credentials.json").exists()


def test_f6_a_new_device_that_fails_to_log_in_takes_back_what_it_made(site: Path) -> None:
    assert secir("init", cwd=site).returncode == 0
    matrix = site / "store" / "matrix"
    # The admin's procedure for a new device: move credentials.json away, run init again.
    (matrix / "credentials.json").rename(site / "old-credentials.json")
    before = sorted(p.name for p in matrix.iterdir())
    (site / "secrets" / "matrix").write_text("not-the-password\n")
    result = secir("init", cwd=site)
    assert result.returncode == 6, result.stderr
    assert sorted(p.name for p in matrix.iterdir()) == before
    (site / "secrets" / "matrix").write_text("pw-bot\n")
    assert secir("init", cwd=site).returncode == 0
    assert (matrix / "credentials.json").exists()


def test_files_init_makes_every_file_of_the_store_private(site: Path) -> None:
    old = os.umask(0o022)  # a usual login umask: files would be world-readable
    try:
        assert secir("init", cwd=site).returncode == 0
    finally:
        os.umask(old)
    store = site / "store"
    for sub in ("secir.sqlite", "gnupg/pubring.kbx", "matrix/credentials.json"):
        assert (store / sub).exists()
    assert fileperms.too_open(store) == []
