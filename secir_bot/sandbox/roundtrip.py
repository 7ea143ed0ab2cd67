"""The demo's round trip: a post from the room to mail, and a reply from mail to the room.

Each leg is checked on the way: the room event is stored encrypted on the server, the mail
is PGP/MIME signed by the list key, the reply arrives end-to-end encrypted in the thread of
the post. Anything else ends the demo with ``DemoFailed``, saying which leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
from collections.abc import Awaitable
from typing import Any, TypeVar

from secir_bot.sandbox.operators import ReceivedMail, SeenEvent
from secir_bot.sandbox.world import World

T = TypeVar("T")

LEG_TIMEOUT = 30.0  # seconds each leg of the round trip may take before the demo gives up
ALICE_POST = "DDoS on .nl name servers since 13:05 UTC, 40 Gbit/s"
BOB_REPLY = "Same pattern against .br since 13:20 UTC; we are sharing the source prefixes."


class DemoFailed(Exception):
    """Something the demo shows did not happen, or happened wrong; the message says why."""


def say(text: str = "") -> None:
    """One line of the demo's story on stdout (the bot's logs go to stderr)."""
    print(text, flush=True)


def say_block(label: str, text: str, width: int = 19) -> None:
    """``label`` then ``text``, every line of it indented under the first."""
    lines = text.strip().splitlines() or [""]
    for number, line in enumerate(lines):
        say(f"    {label if number == 0 else '':<{width}}{line}".rstrip())


class RoundTrip:
    """Both legs, once, on a running world; ``latencies`` holds how long each took."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.latencies: dict[str, float] = {}

    async def run(self) -> None:
        world = self.world
        root_event, root_mail = await self._room_to_mail(world)
        await self._mail_to_room(world, root_event, root_mail)
        say()
        say(
            "Round trip done: "
            + ", ".join(f"{leg} {seconds:.2f} s" for leg, seconds in self.latencies.items())
            + "."
        )

    async def _room_to_mail(self, world: World) -> tuple[str, ReceivedMail]:
        alice, bob = world.mx["alice"], world.mail["bob"]
        say()
        say("Leg 1: room -> mail")
        say(f"  Alice posts in the encrypted Matrix room {world.incident_room}:")
        say(f'    "{ALICE_POST}"')
        start = time.monotonic()
        event_id = await alice.send(world.incident_room, ALICE_POST)
        wire_type = await self._wire_type(world, event_id)
        say(f"  Synapse stores event {event_id} as {wire_type}: the server cannot read it.")
        say(f"  Bob ({bob.address}) checks his mailbox over IMAP ...")
        try:
            mail = await self._while_bot_runs(
                bob.wait_for_mail(
                    lambda m: ALICE_POST in m.text, timeout=LEG_TIMEOUT, what="Alice's post"
                )
            )
        except TimeoutError as exc:
            raise DemoFailed(f"room -> mail: Bob got no readable mail: {exc}") from None
        latency = time.monotonic() - start
        headers = mail.headers
        say(f"  Bob received a mail after {latency:.2f} s:")
        say(f"    From:              {headers['From']}")
        say(f"    To:                {headers['To']}")
        say(f"    Subject:           {headers['Subject']}   (in clear text: carries no secret)")
        say(f"    Content-Type:      {headers.get_content_type()} (PGP/MIME)")
        say(f"    Message-ID:        {headers['Message-ID']}")
        if headers.get_content_type() != "multipart/encrypted":
            raise DemoFailed("room -> mail: the mail is not PGP/MIME encrypted")
        if mail.signer != world.list_fpr:
            raise DemoFailed(
                f"room -> mail: the mail is not signed by the list key "
                f"{world.list_fpr} (signer: {mail.signer})"
            )
        say("    Decrypted with Bob's own key; good signature by the list key.")
        say(f"    Protected subject: {mail.subject}")
        say_block("Text:", mail.text)
        self.latencies["room -> mail"] = latency
        say(f"  room -> mail: OK in {latency:.2f} s")
        return event_id, mail

    async def _mail_to_room(self, world: World, root_event: str, root_mail: ReceivedMail) -> None:
        bob, carol = world.mail["bob"], world.mx["carol"]
        root_msgid = str(root_mail.headers["Message-ID"])
        # What a mail client does: unfold the subject it shows, then put "Re: " before it.
        subject = "Re: " + " ".join((root_mail.subject or "").split())
        say()
        say("Leg 2: mail -> room")
        say(f"  Bob replies by mail to {world.list_address}, signed with his key and encrypted")
        say(f"  to the list key, In-Reply-To: {root_msgid}")
        say(f"    Subject (protected): {subject}")
        say(f'    "{BOB_REPLY}"')
        start = time.monotonic()
        await bob.send(
            world.list_address,
            world.list_fpr,
            subject,
            BOB_REPLY,
            in_reply_to=root_msgid,
            references=(root_msgid,),
        )
        say("  Carol (Matrix only) watches the room with her own encrypted device ...")
        try:
            event = await self._while_bot_runs(
                carol.wait_for_event(
                    lambda e: e.room_id == world.incident_room and BOB_REPLY in e.body,
                    timeout=LEG_TIMEOUT,
                    what="Bob's reply in the room",
                )
            )
        except TimeoutError as exc:
            raise DemoFailed(f"mail -> room: Carol never saw Bob's reply: {exc}") from None
        latency = time.monotonic() - start
        wire_type = await self._wire_type(world, event.event_id)
        say(f"  Carol's client shows, after {latency:.2f} s:")
        say(f"    sender:   {event.sender}")
        say_block("body:", event.body, width=10)
        say(
            f"    on the wire: {wire_type}; decrypted on Carol's device: "
            f"{'yes' if event.decrypted else 'no'}"
        )
        self._check_reply(event, root_event, wire_type)
        relation = event.content["m.relates_to"]
        say(
            f"    thread:   {relation['rel_type']} on {relation['event_id']}, "
            "in the thread of Alice's post"
        )
        self.latencies["mail -> room"] = latency
        say(f"  mail -> room: OK in {latency:.2f} s")

    async def _while_bot_runs(self, waiting: Awaitable[T]) -> T:
        """Await ``waiting``, but fail at once (not at the deadline) if the bot dies."""
        assert self.world.app_task is not None
        bot = self.world.app_task
        waiter = asyncio.ensure_future(waiting)
        try:
            await asyncio.wait([waiter, bot], return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                return waiter.result()
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        error = None if bot.cancelled() else bot.exception()
        raise DemoFailed(f"the bot stopped while we waited: {error!r}")

    @staticmethod
    def _check_reply(event: SeenEvent, root_event: str, wire_type: str) -> None:
        if not event.decrypted or wire_type != "m.room.encrypted":
            raise DemoFailed("mail -> room: the reply was not end-to-end encrypted")
        relation = event.content.get("m.relates_to") or {}
        if relation.get("rel_type") != "m.thread" or relation.get("event_id") != root_event:
            raise DemoFailed(
                f"mail -> room: the reply is not in the thread of Alice's post "
                f"{root_event}; its relation is {relation}"
            )

    @staticmethod
    async def _wire_type(world: World, event_id: str) -> str:
        """The event's type as Synapse stores it, fetched over plain HTTP (no decryption)."""
        assert world.admin is not None
        url = f"{world.synapse.url}/_matrix/client/v3/rooms/{world.incident_room}/event/{event_id}"
        token = world.admin.client.access_token

        def fetch() -> str:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                answer: dict[str, Any] = json.load(response)
            return str(answer["type"])

        return await asyncio.to_thread(fetch)
