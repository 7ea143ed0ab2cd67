"""Issue 6: the bot's answers to a message inside a Matrix thread stay in that thread."""

from __future__ import annotations

from secir_bot.sandbox.world import World


async def test_i6_refusal_of_a_thread_message_is_posted_in_the_thread(world: World) -> None:
    assert world.config is not None
    alice, carol = world.mx["alice"], world.mx["carol"]
    root = await alice.send(world.incident_room, "I6-ROOT an incident")
    await world.mail["bob"].wait_for_mail(lambda m: "I6-ROOT" in m.text)
    refused = await alice.send(
        world.incident_room, "I6-LOCATION", thread_root=root, msgtype="m.location"
    )
    notice = await carol.wait_for_event(
        lambda e: e.sender == world.config.matrix.user_id and "Not mirrored" in e.body,  # type: ignore[union-attr]
        what="the refusal notice",
    )
    rel = notice.content.get("m.relates_to") or {}
    assert rel.get("rel_type") == "m.thread" and rel.get("event_id") == root, rel
    assert (rel.get("m.in_reply_to") or {}).get("event_id") == refused
    # Outside a thread, the answer is a plain reply, as before.
    flat = await alice.send(world.incident_room, "I6-FLAT", msgtype="m.location")
    plain = await carol.wait_for_event(
        lambda e: (
            "Not mirrored" in e.body
            and (e.content.get("m.relates_to") or {}).get("m.in_reply_to", {}).get("event_id")
            == flat
        ),
        what="the refusal of a message outside a thread",
    )
    assert "rel_type" not in plain.content["m.relates_to"]
