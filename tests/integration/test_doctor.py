"""``secir-bot doctor`` against the real servers: a good set-up, then one fault at a time.

The bot runs (so it has joined its rooms) with IMAPS and SMTP with STARTTLS and AUTH, trusting
the session's CA through ``ca_file``; doctor runs as a separate process, as an admin runs it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from servers import MailStack, TestCA

from secir_bot.sandbox.world import World

ROOT = Path(__file__).resolve().parents[2]


async def _doctor(world: World) -> tuple[int, list[str]]:
    assert world.config_path is not None
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "secir_bot", "doctor", "-c", str(world.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def _line(lines: list[str], start: str, *words: str) -> str:
    found = [line for line in lines if line.startswith(start) and all(w in line for w in words)]
    assert found, f"no line {start!r} with {words} in:\n" + "\n".join(lines)
    return found[0]


async def _tls_world(world: World, mail_stack: MailStack, ca: Path) -> None:
    secrets = world.directory / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    (secrets / "smtp-password").write_text("pw-list\n")
    (secrets / "smtp-password").chmod(0o600)
    await world.setup(
        imap_security="tls",
        imap_port=mail_stack.imaps_port,
        imap_extra=f'ca_file = "{ca}"',
        smtp_security="starttls",
        smtp_port=mail_stack.submission_port,
        smtp_extra=(
            f'username = "{world.list_address}"\n'
            'password_file = "secrets/smtp-password"\n'
            f'ca_file = "{ca}"'
        ),
    )
    await world.start_bot()


async def test_doctor_passes_a_good_set_up_and_names_each_fault(
    world_unstarted: World, mail_stack: MailStack, test_ca: TestCA, wrong_ca: TestCA
) -> None:
    world = world_unstarted
    await _tls_world(world, mail_stack, test_ca.ca)
    assert world.config is not None and world.config_path is not None
    imap = f"127.0.0.1:{mail_stack.imaps_port}"
    smtp = f"127.0.0.1:{mail_stack.submission_port}"

    code, lines = await _doctor(world)
    assert code == 0, "\n".join(lines)
    _line(lines, "ok", "config", "is valid")
    _line(lines, "ok", "store", "is private")
    _line(lines, "ok", "keyring", f"the list key {world.list_fpr} signs and decrypts")
    _line(lines, "ok", "keyring", "3 member key(s), none expiring")
    _line(lines, "ok", "matrix", f"logged in as {world.config.matrix.user_id}")
    _line(lines, "ok", "matrix", f"control room {world.control_room}: joined, encrypted")
    # The world gives the bot level 50 in the incident room, to remove revoked members.
    _line(lines, "ok", "matrix", f"incident room {world.incident_room}", "(level 50)")
    _line(lines, "ok", "imap", imap, "TLS certificate trusted, valid until")
    _line(lines, "ok", "imap", f"logged in as {world.list_address}")
    _line(lines, "ok", "smtp", smtp, "TLS certificate trusted")
    _line(lines, "ok", "smtp", f"AUTH as {world.list_address} accepted", "no mail was sent")
    assert lines[-1] == "0 problem(s), 0 warning(s)"

    # A wrong IMAP password.
    secret = world.directory / "secrets" / "imap-password"
    secret.write_text("not-the-password\n")
    code, lines = await _doctor(world)
    assert code == 1
    _line(lines, "FAIL", "imap", imap, "refused the login", "fix: Fix imap.username")
    secret.write_text("pw-list\n")

    # The wrong CA (for both).
    config = world.config_path.read_text()
    world.config_path.write_text(
        config.replace(f'ca_file = "{test_ca.ca}"\n', f'ca_file = "{wrong_ca.ca}"\n')
    )
    code, lines = await _doctor(world)
    assert code == 1
    for area, where in (("imap", imap), ("smtp", smtp)):
        _line(lines, "FAIL", area, where, "not trusted (unable to get local issuer certificate)")
    world.config_path.write_text(config)

    # A store file others can read.
    database = world.config.store_path / "secir.sqlite"
    database.chmod(0o644)
    code, lines = await _doctor(world)
    assert code == 1
    _line(lines, "FAIL", "store", "open to other users", "secir.sqlite (mode 0644)", "chmod")
    _line(lines, "ok", "keyring")  # the other checks still run
    _line(lines, "ok", "matrix")
    database.chmod(0o600)

    code, lines = await _doctor(world)
    assert code == 0, "\n".join(lines)

    # The bot demoted to the default level in the incident room: it could not kick.
    assert world.admin is not None
    levels = await world.admin.client.room_get_state_event(
        world.incident_room, "m.room.power_levels"
    )
    content = dict(levels.content)
    content["users"] = {
        u: v for u, v in content["users"].items() if u != world.config.matrix.user_id
    }
    await world.admin.client.room_put_state(world.incident_room, "m.room.power_levels", content)
    code, lines = await _doctor(world)
    _line(lines, "warn", "matrix", f"incident room {world.incident_room}", "not kick", "fix:")
    assert lines[-1] == "0 problem(s), 1 warning(s)"


async def test_doctor_names_an_unencrypted_room(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup(encrypted_incident_room=False)
    await world.start_bot()
    code, lines = await _doctor(world)
    assert code == 1
    _line(lines, "FAIL", "matrix", f"incident room {world.incident_room} is not encrypted")


async def test_doctor_before_the_first_run_sees_the_invitations(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup()
    assert world.admin is not None and world.config_path is not None
    code, lines = await _doctor(world)
    assert code == 0, "\n".join(lines)
    for role, room in (("incident", world.incident_room), ("control", world.control_room)):
        _line(lines, "warn", "matrix", f"{role} room {room}: the bot is invited and joins")
    # A room the bot was never invited to is a problem.
    elsewhere = await world.admin.create_room(f"elsewhere {world.tag}", [])
    config = world.config_path.read_text()
    world.config_path.write_text(config.replace(world.control_room, elsewhere))
    code, lines = await _doctor(world)
    assert code == 1
    _line(lines, "FAIL", "matrix", f"control room {elsewhere}: the bot is neither in the room")
