"""Mail that must not stop the intake (issue 6), through Postfix, Dovecot and the bot."""

from __future__ import annotations

from test_rejections import folder_messages, positive_control, wait_notice

from secir_bot.sandbox.hostile.base import nested_parts
from secir_bot.sandbox.world import World


def nested(depth: int, sender: str, msgid: str) -> bytes:
    head = f"From: {sender}\r\nMessage-ID: {msgid}\r\nSubject: nest\r\n".encode()
    return head + nested_parts(depth, b"POISON-NEST\r\n")


async def test_poison_before_the_inbox_is_stored_and_quarantined_not_a_crash(
    world: World,
) -> None:
    bob = world.mail["bob"]
    # A thousand levels made the Message-ID reading raise RecursionError before the mail
    # was stored: the bot exited, and met the same mail first after every restart.
    await bob.send_raw(world.list_address, nested(1000, bob.address, "<poison-1000@test.example>"))

    body = await wait_notice(world, "Mail rejected", "more than 100 MIME parts")
    assert "POISON-NEST" not in body
    await positive_control(world, "all clear after the poison")
    assert world.app_task is not None and not world.app_task.done()
    assert world.app is not None
    item = world.app.store.inbox.item("email", "<poison-1000@test.example>")
    assert item is not None and item.state == "rejected" and b"POISON-NEST" in item.raw
    assert any(b"poison-1000" in m for m in await folder_messages(world, "secir-quarantine"))


async def test_d1_mail_over_the_limit_is_refused_from_its_header_without_fetching_it(
    world: World,
) -> None:
    assert world.config is not None and world.app is not None
    bob = world.mail["bob"]
    size = world.config.list.max_message_bytes + 100_000
    big = (
        f"From: {bob.name} <{bob.address}>\r\nTo: {world.list_address}\r\n"
        "Message-ID: <d1-big@test.example>\r\nSubject: big\r\n\r\n"
    ).encode() + (b"D1-BODY " * 10 + b"\r\n") * (size // 82)
    await bob.send_raw(world.list_address, big)

    body = await wait_notice(world, "Mail rejected", "larger than the list's limit")
    assert bob.address in body  # the admins learn who sent it, from the header
    item = world.app.store.inbox.item("email", "<d1-big@test.example>")
    assert item is not None and item.meta.get("headers_only") is True
    assert item.meta["size"] > world.config.list.max_message_bytes
    assert b"D1-BODY" not in item.raw  # the body was never fetched
    await positive_control(world, "all clear after the big one")
