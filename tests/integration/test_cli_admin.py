"""Issue 9, CLI parity: ``secir-bot member remove`` and ``secir-bot export-key`` on a real list.

``member remove`` is ``!revoke`` run on the host: the member is revoked at once with an
audit entry by ``shell:<user>``, and the running bot carries out the queued effects (the
announcement, removal from the rooms). ``export-key`` prints the list's public key.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import tempfile
from pathlib import Path

import pytest
from test_rejections import wait_notice

from secir_bot import cli
from secir_bot.crypto import Keyring
from secir_bot.sandbox.world import World
from secir_bot.store import Store


async def main(args: list[str]) -> int:
    """The CLI, as an admin runs it (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(cli.main, args)


async def test_i9_member_remove_from_the_shell(
    world_unstarted: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world = world_unstarted
    await world.setup()
    assert world.config is not None and world.config_path is not None
    config = str(world.config_path)
    bob = world.address("bob")

    # Nobody by that address: refused, exit 4, nothing changes.
    assert (
        await main(["member", "remove", "nobody@test.example", "--reason", "x", "-c", config]) == 4
    )
    assert "no active member" in capsys.readouterr().err

    code = await main(["member", "remove", bob, "--reason", "left the registry", "-c", config])
    assert code == 0, capsys.readouterr()
    assert f"revoked: Bob Silva (.br) <{bob}>" in capsys.readouterr().out
    store = Store.open(world.config.store_path)
    try:
        removed = store.members.by_email(bob)
        assert removed is not None and removed.status == "revoked"
        (entry,) = [e for e in store.audit.tail(5) if e.action == "member.revoke"]
        assert (entry.actor, entry.target, entry.reason) == (
            f"shell:{getpass.getuser()}",
            bob,
            "left the registry",
        )
        assert store.audit.verify().ok
    finally:
        store.close()

    # The running bot carries out what was queued, and refuses Bob's mail from now on.
    await world.start_bot()
    await world.mx["carol"].wait_for_event(lambda e: "member removed: Bob Silva (.br)" in e.body)
    await world.mail["bob"].send(world.list_address, world.list_fpr, "hi", "BOB-REVOKED-POST")
    await wait_notice(world, "Mail rejected", "a member who is revoked")


async def test_i9_export_key(world_unstarted: World, capsys: pytest.CaptureFixture[str]) -> None:
    world = world_unstarted
    await world.setup()
    assert world.config_path is not None
    assert await main(["export-key", "-c", str(world.config_path)]) == 0
    armored = capsys.readouterr().out
    assert armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in armored
    out = world.directory / "list-key.asc"
    assert await main(["export-key", "-c", str(world.config_path), "--output", str(out)]) == 0
    assert world.list_fpr in capsys.readouterr().out
    home = Path(tempfile.mkdtemp(prefix="gx"))
    ring = Keyring.create(home)
    try:
        assert await ring.import_key(out.read_text()) == [world.list_fpr]
    finally:
        ring.close()
        shutil.rmtree(home, ignore_errors=True)
