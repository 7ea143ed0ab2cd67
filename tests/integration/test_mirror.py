"""The core mirror, end to end: Matrix room <-> PGP mailing list, on real servers."""

from __future__ import annotations

import json
import urllib.request

from secir_bot.sandbox.world import World


def raw_event_type(world: World, room_id: str, event_id: str) -> str:
    """The event's type on the wire, fetched over plain HTTP (nio would decrypt it)."""
    assert world.admin is not None
    url = f"{world.synapse.url}/_matrix/client/v3/rooms/{room_id}/event/{event_id}"
    req = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {world.admin.client.access_token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(json.load(resp)["type"])


async def test_room_post_reaches_email_members(world: World) -> None:
    alice_mx = world.mx["alice"]
    event_id = await alice_mx.send(world.incident_room, "DDoS on .nl name servers since 13:05 UTC")
    assert raw_event_type(world, world.incident_room, event_id) == "m.room.encrypted"

    bob = world.mail["bob"]
    mail = await bob.wait_for_mail(lambda m: "DDoS on .nl" in m.text, what="the room post")
    assert mail.decrypted
    assert mail.signer == world.list_fpr
    h = mail.headers
    assert h["From"] == f'"Alice Jansen (.nl) via SECIR" <{world.list_address}>'
    assert world.list_fpr not in str(h["Subject"]) and "DDoS" not in str(h["Subject"])
    assert mail.subject == "DDoS on .nl name servers since 13:05 UTC"
    assert h["List-Id"] == f"SECIR <secir-{world.tag}.test.example>"
    assert h["List-Post"] == f"<mailto:{world.list_address}>"
    assert h["List-Unsubscribe"] == f"<mailto:{world.list_address}?subject=unsubscribe>"
    assert h["Precedence"] == "list"
    assert h.get_content_type() == "multipart/encrypted"
    assert str(h["Message-ID"]).endswith("@test.example>")
    # The author also takes email, but gets no echo of her own post.
    alice_mail = world.mail["alice"]
    assert not [m for m in await alice_mail.fetch_all() if b"DDoS" in m]
