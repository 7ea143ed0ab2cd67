"""The crash guard in a burst: a mail that kills the bot each time it is decided is set
aside alone, never with the mails that were being decided beside it.

The guard (``inbox.MAX_ATTEMPTS``) counts each start of a mail's decision and sets the
mail aside once it has been started more times than that without finishing: a mail that
kills or hangs the process must not stop the list. Since issue 11 several mails are decided
at once (``imap.parallel_decisions``), so a process killed by one of them also interrupts
the others, and every start after would charge them again with it. Here the bot is killed
while two mails are being decided, then each time the later of them is started again (as
if it killed the process): the first must be relayed, only the second set aside.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

import pytest
from burst_world import PEOPLE, Burst, one, queue_burst, store_db
from test_faults import BotProcess

from secir_bot.inbox import MAX_ATTEMPTS
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World


def attempts(world: World) -> dict[int, int]:
    """Mails not decided yet whose decision was started: item id -> starts."""
    db = store_db(world)
    try:
        rows = db.execute("SELECT id, attempts FROM inbox WHERE state = 'new' AND attempts > 0")
        return {int(i): int(n) for i, n in rows}
    except sqlite3.OperationalError:  # the bot has not made its store's tables yet
        return {}
    finally:
        db.close()


async def soon(check: Callable[[], object], what: str) -> None:
    """``check`` polled often (a decision takes tens of milliseconds), for two minutes."""
    deadline = time.monotonic() + 120
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited 120s for {what}")
        await asyncio.sleep(0.005)


def states(world: World) -> dict[int, str]:
    db = store_db(world)
    try:
        return {int(i): str(s) for i, s in db.execute("SELECT id, state FROM inbox")}
    finally:
        db.close()


@pytest.mark.timeout(300)
async def test_a_mail_that_kills_the_bot_is_set_aside_alone(world_unstarted: World) -> None:
    world = world_unstarted
    burst = Burst(threads=3, posts=2, kills=0)  # three roots by three authors: decided at once
    await world.setup(people=PEOPLE)
    await queue_burst(world, burst)
    bot = BotProcess(world)
    bot.start()
    try:
        await soon(lambda: len(attempts(world)) >= 2, "two mails being decided at once")
        bot.kill()
        # The later one: its start was committed after the other's (the same round).
        poison = max(attempts(world))
        for times in range(2, MAX_ATTEMPTS + 1):
            bot.start()
            await soon(lambda t=times: attempts(world).get(poison, 0) >= t, f"start {times}")
            bot.kill()
        bot.start()
        await wait_until(
            lambda: "new" not in states(world).values() and len(states(world)) == burst.total,
            120,
            "every mail decided",
        )
        assert await bot.stop() == 0
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n--- bot log ---\n{bot.tail()}") from None
    finally:
        await bot.end()
    final = states(world)
    assert final[poison] == "shunted", final
    assert [i for i, s in final.items() if s != "relayed"] == [poison], final
    db = store_db(world)
    try:  # the others started once more than they finished at most: each kill is one's
        assert one(db, "SELECT max(attempts) FROM inbox WHERE state = 'relayed'") <= 2
    finally:
        db.close()
