"""``secir-bot run`` as an admin starts it: a separate process, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from secir_bot.sandbox.world import World

ROOT = Path(__file__).resolve().parents[2]


async def test_run_mirrors_and_stops_cleanly_on_sigterm(world_unstarted: World) -> None:
    world = world_unstarted
    await world.setup()
    assert world.config_path is not None and world.admin is not None
    # Opening the log and starting the process block only for a moment: test set-up.
    log = open(world.directory / "bot.log", "wb")  # noqa: ASYNC230
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "secir_bot", "run", "-c", str(world.config_path)],
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
    # Secrets never reach the log.
    assert "pw-list" not in output and f"pw-secir-{world.tag}" not in output
