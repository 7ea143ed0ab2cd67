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


async def _mail_to_room(world: World, fmt: str) -> None:
    bob = world.mail["bob"]
    subject = f"Phishing wave against registrars ({fmt})"
    await bob.send(
        world.list_address,
        world.list_fpr,
        subject,
        "We see lookalike domains under several ccTLDs.\nIOC list follows.",
        fmt=fmt,
    )
    carol = world.mx["carol"]
    event = await carol.wait_for_event(
        lambda e: "lookalike domains" in e.body, what="the mail in the room"
    )
    assert event.decrypted
    assert event.room_id == world.incident_room
    assert event.msgtype == "m.text"
    assert "Bob Silva (.br)" in event.body
    if fmt != "inline":  # inline PGP has no protected subject: its first line is used
        assert subject in event.body
    else:
        assert "by email: We see lookalike domains under several ccTLDs." in event.body
    assert raw_event_type(world, world.incident_room, event.event_id) == "m.room.encrypted"
    # The other email member gets it too, signed by the list; the sender gets no echo.
    alice = world.mail["alice"]
    mail = await alice.wait_for_mail(lambda m: "lookalike domains" in m.text)
    assert mail.signer == world.list_fpr
    assert mail.headers["From"] == f'"Bob Silva (.br) via SECIR" <{world.list_address}>'
    assert not [m for m in await bob.fetch_all() if b"lookalike" in m]


async def test_pgp_mime_mail_reaches_room_and_members(world: World) -> None:
    await _mail_to_room(world, "pgp-mime")


async def test_inline_pgp_mail_reaches_room_and_members(world: World) -> None:
    await _mail_to_room(world, "inline")


async def test_sign_then_encrypt_layers_are_accepted(world: World) -> None:
    await _mail_to_room(world, "pgp-mime-layered")


async def test_email_reply_lands_in_the_matrix_thread(world: World) -> None:
    alice_mx, carol = world.mx["alice"], world.mx["carol"]
    root_id = await alice_mx.send(world.incident_room, "Registry API returning 500s")
    bob = world.mail["bob"]
    root_mail = await bob.wait_for_mail(lambda m: "Registry API" in m.text)
    root_msgid = str(root_mail.headers["Message-ID"])
    await bob.send(
        world.list_address,
        world.list_fpr,
        "Re: Registry API returning 500s",
        "Same here since 12:40 UTC.",
        in_reply_to=root_msgid,
        references=(root_msgid,),
    )
    reply = await carol.wait_for_event(lambda e: "Same here" in e.body)
    rel = reply.content["m.relates_to"]
    assert rel["rel_type"] == "m.thread"
    assert rel["event_id"] == root_id
    # And a Matrix thread reply goes out with In-Reply-To / References to the root's mail.
    await carol.send(world.incident_room, "Confirmed from .jp as well", thread_root=root_id)
    mail = await bob.wait_for_mail(lambda m: "Confirmed from .jp" in m.text)
    assert mail.headers["In-Reply-To"] == root_msgid
    assert root_msgid in str(mail.headers["References"])
    assert mail.subject == "Re: Registry API returning 500s"


async def test_matrix_reply_to_a_mail_threads_by_mail(world: World) -> None:
    bob, carol = world.mail["bob"], world.mx["carol"]
    msgid = await bob.send(
        world.list_address,
        world.list_fpr,
        "Anycast node down in GRU",
        "One of our anycast nodes is down.",
    )
    event = await carol.wait_for_event(lambda e: "anycast nodes" in e.body)
    await carol.send(world.incident_room, "Need a secondary?", reply_to=event.event_id)
    alice = world.mail["alice"]
    first = await alice.wait_for_mail(lambda m: "anycast nodes" in m.text)
    reply = await alice.wait_for_mail(lambda m: "Need a secondary" in m.text)
    assert reply.headers["In-Reply-To"] == first.headers["Message-ID"]
    # Bob sent the original; his client threads by his own Message-ID, which the bot knows.
    bob_copy = await bob.wait_for_mail(lambda m: "Need a secondary" in m.text)
    assert bob_copy.headers["In-Reply-To"] == first.headers["Message-ID"]
    assert msgid != first.headers["Message-ID"]
    # Bob never got the list's copy of his own mail (no echo): his client finds the parent
    # by his own Message-ID, which must therefore be in References, as the last one.
    references = str(bob_copy.headers["References"]).split()
    assert references[-1] == msgid
    assert first.headers["Message-ID"] in references


async def test_footer_of_a_room_post_says_what_the_list_checked(world: World) -> None:
    await world.mx["alice"].send(world.incident_room, "FOOTER-CHECK from the room")
    mail = await world.mail["bob"].wait_for_mail(lambda m: "FOOTER-CHECK" in m.text)
    footer = mail.text.split("\n-- \n", 1)[1]
    # A Matrix post carries no OpenPGP signature; the footer must not claim one.
    assert "signature" not in footer
    assert "in the Matrix room, end-to-end encrypted" in footer
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "FOOTER-MAIL")
    by_mail = await world.mail["alice"].wait_for_mail(lambda m: "FOOTER-MAIL" in m.text)
    assert "the list checked their OpenPGP signature" in by_mail.text.split("\n-- \n", 1)[1]
