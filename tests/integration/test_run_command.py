"""``secir-bot run`` as an admin starts it: a separate process, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from leaks import found_in
from servers import MailStack, TestCA

from secir_bot.redact import MASK, forms_of
from secir_bot.sandbox.world import World

ROOT = Path(__file__).resolve().parents[2]


async def test_run_mirrors_and_stops_cleanly_on_sigterm(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup()
    output = await _run_round_trip(world)
    # Secrets never reach the log.
    assert "pw-list" not in output and f"pw-secir-{world.tag}" not in output


async def test_g1_verbose_run_never_logs_a_password_that_needs_quoting(
    world_unstarted: World, mail_stack: MailStack, test_ca: TestCA
) -> None:
    """aioimaplib masks the password in its debug log only as given, but sends it quoted:
    a password with " or \\ was logged in clear by ``secir-bot -v run``."""
    world = world_unstarted
    password = f'q"uo\\te-{world.tag}'
    secrets = world.directory / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    (secrets / "smtp-password").write_text(password + "\n")
    await world.setup(
        imap_security="tls",
        imap_port=mail_stack.imaps_port,
        imap_extra=f'ca_file = "{test_ca.ca}"',
        smtp_security="starttls",
        smtp_port=mail_stack.submission_port,
        smtp_extra=(
            f'username = "{world.list_address}"\n'
            'password_file = "secrets/smtp-password"\n'
            f'ca_file = "{test_ca.ca}"'
        ),
    )
    mail_stack.add_user(world.list_address, password)  # the list's one password, now odd
    (secrets / "imap-password").write_text(password + "\n")
    output = await _run_round_trip(world, "-v")
    for spelling in forms_of(password):
        assert spelling not in output, f"the password appears as {spelling!r}"
    assert "LOGIN" in output and MASK in output  # the login was logged, masked
    assert not found_in(output)  # no other registered secret, key or token either
    # Even with -v, no library logs what it decrypts: nio's event and response checks
    # quote whole events, python-gnupg's debug lines show what gpg writes.
    for quiet in ("DEBUG nio.events", "DEBUG nio.responses", "DEBUG gnupg"):
        assert quiet not in output


async def _run_round_trip(world: World, *options: str) -> str:
    """Run ``secir-bot run`` as a process, mirror both ways, stop it; return its output."""
    assert world.config_path is not None and world.admin is not None
    # Opening the log and starting the process block only for a moment: test set-up.
    log = open(world.directory / "bot.log", "wb")  # noqa: ASYNC230
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "secir_bot", *options, "run", "-c", str(world.config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        bot = world.config.matrix.user_id  # type: ignore[union-attr]
        await world.admin.wait_joined(world.incident_room, [bot], timeout=30)
        for op in world.mx.values():
            await op.wait_joined(world.incident_room, [bot])
            await op.know_devices_of(bot)
        await world.mx["alice"].send(world.incident_room, "RUNCMD-1 from the room")
        await world.mail["bob"].wait_for_mail(lambda m: "RUNCMD-1" in m.text, timeout=30)
        await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "RUNCMD-2 by mail")
        await world.mx["carol"].wait_for_event(lambda e: "RUNCMD-2" in e.body, timeout=30)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    except TimeoutError as exc:
        tail = (world.directory / "bot.log").read_text()[-4000:]
        raise AssertionError(f"{exc}\n--- bot log ---\n{tail}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (world.directory / "bot.log").read_text()
    assert code == 0, output[-3000:]
    assert "stopped" in output
    assert "Traceback" not in output
    return output
