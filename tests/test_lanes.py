"""Lanes: items decided several at once, those sharing a key in arrival order (issue 11)."""

from __future__ import annotations

import asyncio

from secir_bot.lanes import mail_keys, run_in_lanes


def test_a_mails_keys_are_its_sender_and_its_threads_first_message() -> None:
    reply = (
        b"From: Alice <Alice@NIC.test>\r\nMessage-ID: <r@x>\r\n"
        b"References: <root@list> <parent@list>\r\nIn-Reply-To: <parent@list>\r\n\r\nbody"
    )
    assert mail_keys(reply) == {"from:alice@nic.test", "thread:<root@list>"}
    answer = b"From: bob@nic.test\r\nIn-Reply-To: <parent@list>\r\nMessage-ID: <b@x>\r\n\r\n"
    assert mail_keys(answer) == {"from:bob@nic.test", "thread:<parent@list>"}
    first = b"From: bob@nic.test\r\nMessage-ID: <new@x>\r\n\r\n"
    assert mail_keys(first) == {"from:bob@nic.test", "thread:<new@x>"}
    assert mail_keys(b"no header at all") == {"from:", "thread:none"}


async def test_items_sharing_a_key_finish_in_order_and_the_others_overtake() -> None:
    # Item i needs 20 - 2*i turns of the loop: left alone, later items finish first.
    keys = {0: {"a"}, 1: {"b"}, 2: {"a", "c"}, 3: {"c"}, 4: {"d"}}
    finished: list[int] = []
    running, most = 0, 0

    async def work(i: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(20 - 2 * i):
            await asyncio.sleep(0)  # a turn of the loop, not a wait for anything
        running -= 1
        finished.append(i)

    await run_in_lanes(list(keys), keys.__getitem__, work, parallel=3)

    assert sorted(finished) == [0, 1, 2, 3, 4]
    assert finished.index(0) < finished.index(2) < finished.index(3)  # lanes a and c
    assert finished.index(4) < finished.index(1) < finished.index(0)  # free items overtake
    assert most == 3


async def test_parallel_one_is_strictly_one_after_the_other() -> None:
    finished: list[int] = []

    async def work(i: int) -> None:
        for _ in range(10 - i):
            await asyncio.sleep(0)
        finished.append(i)

    await run_in_lanes([0, 1, 2], lambda i: {str(i)}, work, parallel=1)
    assert finished == [0, 1, 2]
