"""The bot as an Element user meets it: matrix-js-sdk with its Rust crypto (the stack of
Element Web and, through matrix-rust-sdk, Element X), in both of Element's modes:
"strict" excludes devices not cross-signed by their owner, "legacy" shares with all.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from element_client import ElementOperator, available

from secir_bot import cli
from secir_bot.sandbox.world import DEFAULT_PEOPLE, Person, World

ROOT = Path(__file__).resolve().parents[2]
ERIN = Person("erin", "Erin Okafor", ".ng", email=False, own_client=True)
MODES = ("strict", "legacy")


@pytest.fixture(autouse=True)
def _needs_node() -> None:
    if (why := available()) is not None:
        pytest.fail(f"the Element-grade client cannot run: {why}")


async def element(world: World, key: str, mode: str, *, bootstrap: bool = True) -> ElementOperator:
    """A new Element device of ``key``'s account, set up as a fresh Element login is."""
    user_id = world.matrix_ids[key]
    op = await ElementOperator.start(
        world.synapse.url,
        user_id,
        f"pw-{key}-{world.tag}",
        Path(world.directory) / "logs" / f"element-{key}.log",
    )
    try:
        if bootstrap:
            await op.call("bootstrap")
        await op.call("mode", mode=mode)
        await op.call("join", room_id=world.incident_room)
    except BaseException:
        await op.stop()
        raise
    return op


@pytest_asyncio.fixture
async def erin_world(world_unstarted: World) -> AsyncIterator[World]:
    await world_unstarted.setup(people=(*DEFAULT_PEOPLE, ERIN))
    await world_unstarted.start_bot()
    yield world_unstarted


@pytest.mark.parametrize("mode", MODES)
async def test_element_member_and_bot_understand_each_other(erin_world: World, mode: str) -> None:
    """Issue 7: both directions in both modes, no red shield on the bot's posts, and the
    bot's device signed by its owner."""
    world = erin_world
    assert world.config is not None and world.admin is not None and world.app is not None
    erin = await element(world, "erin", mode)
    try:
        status = await erin.call(
            "device",
            user_id=world.config.matrix.user_id,
            device_id=world.app.matrix.creds.device_id,
        )
        assert status is not None and status["signed_by_owner"], status
        await world.admin.wait_joined(world.incident_room, [erin.user_id])
        await world.mail["bob"].send(world.list_address, world.list_fpr, "s", f"TO-ERIN-{mode}")
        got = await erin.wait_for(lambda e: f"TO-ERIN-{mode}" in e.body, what="the bot's post")
        assert got.kind == "message", got
        assert got.shield != "RED", got
        assert got.shield_reason != "UNSIGNED_DEVICE", got
        bot = world.config.matrix.user_id
        assert not [e for e in erin.events if e.sender == bot and e.kind == "undecryptable"]
        await erin.call("send", room_id=world.incident_room, body=f"FROM-ERIN-{mode}")
        mail = await world.mail["bob"].wait_for_mail(lambda m: f"FROM-ERIN-{mode}" in m.text)
        assert mail.decrypted
    finally:
        await erin.stop()


async def test_the_bot_keeps_its_identity_across_restarts_and_inits(erin_world: World) -> None:
    world = erin_world
    assert world.config is not None and world.app is not None
    held = world.config.store_path / "matrix" / "cross-signing.json"
    recovery = world.config.store_path / "matrix-master-key.recovery.json"
    master = json.loads(held.read_text())["master_public"]
    assert held.stat().st_mode & 0o777 == 0o600
    assert json.loads(recovery.read_text())["master_public"] == master
    erin = await element(world, "erin", "strict")
    try:
        recovery.unlink()  # the admin moved it offline, as told
        await world.stop_bot()
        # init again: nothing changes (cli.init is provision.init, as the CLI runs it)
        assert await cli.init(world.config) == world.list_fpr  # type: ignore[attr-defined]
        await world.start_bot()
        assert json.loads(held.read_text())["master_public"] == master
        assert not recovery.exists()
        bot = world.config.matrix.user_id
        identity = await erin.call("identity", user_id=bot)
        assert identity == {"has_cross_signing": True, "needs_approval": False}
        await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "AFTER-RESTART")
        got = await erin.wait_for(lambda e: "AFTER-RESTART" in e.body, what="a post after restart")
        assert got.kind == "message" and got.shield != "RED", got
    finally:
        await erin.stop()


async def secir(*args: str, cwd: Path) -> tuple[int, str, str]:
    """The ``secir-bot`` command in a subprocess, as an admin runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "secir_bot",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_init_on_an_account_with_cross_signing_keys_says_how_to_fix_it(
    world_unstarted: World,
) -> None:
    world = world_unstarted
    await world.setup()
    assert world.config_path is not None and world.config is not None
    # A second bot account, set up by hand in Element first (as an admin might have).
    password = f"pw-otherbot-{world.tag}"
    other = world.synapse.register(f"otherbot-{world.tag}", password)
    (world.directory / "secrets" / "other-password").write_text(password + "\n")
    text = world.config_path.read_text()
    text = text.replace(world.config.matrix.user_id, other["user_id"])
    text = text.replace('path = "store"', 'path = "store-other"')
    text = text.replace("secrets/matrix-password", "secrets/other-password")
    (world.directory / "other.toml").write_text(text)
    by_hand = await ElementOperator.start(
        world.synapse.url,
        other["user_id"],
        password,
        Path(world.directory) / "logs" / "element-otherbot.log",
    )
    try:
        first = await by_hand.call("bootstrap")
    finally:
        await by_hand.stop()
    code, _, err = await secir("init", "-c", "other.toml", cwd=world.directory)
    assert code == 1, err
    assert "already has cross-signing keys" in err, err
    assert first["master"] in err
    assert "secir-bot reset-cross-signing" in err
    # The documented fix works and leaves the account with the bot's own identity.
    code, out, err = await secir("reset-cross-signing", "-c", "other.toml", cwd=world.directory)
    assert code == 0, err
    held = world.directory / "store-other" / "matrix" / "cross-signing.json"
    master = json.loads(held.read_text())["master_public"]
    assert master in out and master != first["master"]
    code, _, err = await secir("init", "-c", "other.toml", cwd=world.directory)
    assert code == 0, err
