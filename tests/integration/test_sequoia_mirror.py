"""The mirror with ``crypto.backend = "sequoia"`` and hidden recipients (the default), on
real servers: a room post reaches a mail member through Postfix and Dovecot, the member's
gpg decrypts it and finds the list's signature, and every session key packet of the mail
carries the wildcard key id (read by gpg's own parser). Sequoia wrote it: no group was
handed to gpg."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from secir_bot.sandbox.world import World

pytest.importorskip("pysequoia")


def session_key_ids(armored: bytes) -> list[str]:
    """The key id of each session key packet, as gpg lists them without any secret key."""
    home = Path(tempfile.mkdtemp(prefix="g"))
    try:
        run = subprocess.run(
            ["gpg", "--homedir", str(home), "--batch", "--list-packets"],
            input=armored,
            capture_output=True,
            check=False,
        )
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)
    lines = run.stdout.decode().splitlines()
    assert any(line.startswith(":encrypted data packet:") for line in lines), lines
    return [line.rsplit("keyid ", 1)[1] for line in lines if line.startswith(":pubkey enc")]


async def test_room_post_reaches_mail_members_through_sequoia_with_hidden_key_ids(
    world_unstarted: World, caplog: pytest.LogCaptureFixture
) -> None:
    world = world_unstarted
    await world.setup(extra='[crypto]\nbackend = "sequoia"\n')
    await world.start_bot()
    caplog.set_level(logging.WARNING, logger="secir_bot.crypto.sequoia")

    await world.mx["alice"].send(world.incident_room, "Sequoia: .nl resolvers flapping")

    mail = await world.mail["bob"].wait_for_mail(
        lambda m: "resolvers flapping" in m.text, what="the room post", timeout=60
    )
    assert mail.decrypted and mail.signer == world.list_fpr
    found = re.search(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", mail.raw, re.S)
    assert found is not None
    ids = session_key_ids(found.group(0))
    assert ids and set(ids) == {"0000000000000000"}
    assert not [r for r in caplog.records if "gpg encrypts it" in r.getMessage()]
