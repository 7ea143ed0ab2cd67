"""``make demo``: a whole list on throwaway servers, a round trip shown live, then stay up.

Everything runs on this machine and is thrown away at the end: a real Synapse homeserver
(a child process), the in-process sandbox mail server (pymap for IMAP, aiosmtpd for SMTP)
and the bot itself, wired together by :class:`~secir_bot.sandbox.world.World` exactly as
the integration tests do it. The people are :data:`~secir_bot.sandbox.world.DEFAULT_PEOPLE`:
Alice (.nl) on Matrix and email, Bob (.br) on email only, Carol (.jp) on Matrix only.

The demo then shows both directions of the mirror, printing each step in plain words:

* room -> mail: Alice posts in the encrypted Matrix room; Bob gets a PGP/MIME mail over
  IMAP, decrypts it with his own key and checks the list's signature.
* mail -> room: Bob answers with a signed and encrypted mail; Carol's Matrix client sees
  the answer in the thread of Alice's post.

With ``once`` it stops there (exit 0, or 1 if a leg failed). Otherwise it prints how to
connect your own Matrix and mail clients (Element, Thunderbird) and writes the keys to
import, then waits for Ctrl-C or SIGTERM and removes everything it made.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from secir_bot.sandbox import SandboxError
from secir_bot.sandbox.mailserver import SandboxMail
from secir_bot.sandbox.operators import ReceivedMail, SeenEvent
from secir_bot.sandbox.scratch import short_tempdir
from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import DEFAULT_PEOPLE, World

__all__ = ["main"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DOMAIN = "secir.test"  # mail domain and Matrix server name; .test is reserved (RFC 2606)
HOST = "127.0.0.1"
LEG_TIMEOUT = 30.0  # seconds each leg of the round trip may take before the demo gives up
EXIT_INTERRUPTED = 130

# Alice's first line becomes the mail's subject and Bob's reply adds "Re: "; kept short so
# neither header is folded (see the report on folded subjects in secir_bot/mime/).
ALICE_POST = "DDoS on .nl name servers since 13:05 UTC, 40 Gbit/s"
BOB_REPLY = "Same pattern against .br since 13:20 UTC; we are sharing the source prefixes."

# Libraries that log every connection at INFO; the demo's own lines say what matters.
_QUIET_LOGGERS = ("mail.log", "pymap", "aiosmtpd", "proxyprotocol", "asyncio")


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


def _seconds(start: float) -> str:
    return f"{time.monotonic() - start:.2f} s"


class Demo:
    """The servers, the world and the state directory of one demo run."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.synapse: Synapse | None = None
        self.mail: SandboxMail | None = None
        self.world: World | None = None
        self.up = False  # True once the round trip is done and the demo only waits
        self.latencies: dict[str, float] = {}
        self._synapse_start: asyncio.Future[Synapse] | None = None

    # -- start -------------------------------------------------------------------------

    async def start(self) -> World:
        say("secir-bot sandbox: a throwaway SECIR list on real servers, all on this machine.")
        say(f"State directory: {self.state}")
        say()
        t = time.monotonic()
        say("[1/4] Starting Synapse, the Matrix homeserver ...")
        # Synapse.start blocks until the server answers; a thread keeps Ctrl-C responsive,
        # and the shield lets close() stop a server that finishes starting after a Ctrl-C.
        self._synapse_start = asyncio.ensure_future(
            asyncio.to_thread(Synapse.start, directory=self.state / "synapse", server_name=DOMAIN)
        )
        self.synapse = synapse = await asyncio.shield(self._synapse_start)
        say(f"      ready at {synapse.url} ({_seconds(t)})")

        t = time.monotonic()
        say("[2/4] Starting the sandbox mail server (IMAP + SMTP, in this process) ...")
        self.mail = mail = await SandboxMail.start({}, host=HOST)
        say(
            f"      IMAP on {HOST}:{mail.imap_port}, SMTP on {HOST}:{mail.smtp_port} "
            f"({_seconds(t)})"
        )

        t = time.monotonic()
        say("[3/4] Setting up the list: Matrix users, OpenPGP keys, encrypted rooms, members ...")
        self.world = world = World(
            synapse=synapse,
            directory=self.state / "world",
            domain=DOMAIN,
            mail_host=HOST,
            smtp_port=mail.smtp_port,
            imap_port=mail.imap_port,
            add_mail_user=mail.add_user,
        )
        await world.setup(DEFAULT_PEOPLE)
        for person in DEFAULT_PEOPLE:
            where = []
            if person.matrix:
                where.append(f"Matrix {world.mx[person.key].user_id}")
            if person.email:
                where.append(f"email {world.address(person.key)}")
            say(f"      {person.name} ({person.tld}): {' + '.join(where)}")
        say(f"      list address {world.list_address}, list key {world.list_fpr} ({_seconds(t)})")

        t = time.monotonic()
        say("[4/4] Starting the bot ...")
        await world.start_bot()
        assert world.config is not None
        say(
            f"      {world.config.matrix.user_id} is in the rooms and logged in to IMAP "
            f"({_seconds(t)})"
        )
        return world

    # -- the round trip ----------------------------------------------------------------

    async def round_trip(self) -> None:
        world = self.world
        assert world is not None
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
        world = self.world
        assert world is not None and world.app_task is not None
        bot = world.app_task
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

    # -- staying up --------------------------------------------------------------------

    async def write_keys(self) -> dict[str, Path]:
        """Each person's secret key and the list's public key, as files to import."""
        world = self.world
        assert world is not None and world.app is not None
        keys_dir = self.state / "keys"
        keys_dir.mkdir(mode=0o700, exist_ok=True)
        written: dict[str, Path] = {}
        for key, ring in world.keyrings.items():
            own = [k for k in await ring.keys() if k.has_secret]
            if len(own) != 1:
                raise SandboxError(f"{key}'s keyring holds {len(own)} secret keys, not 1")
            path = keys_dir / f"{key}-secret.asc"
            path.touch(mode=0o600)
            path.write_text(await ring.export_secret(own[0].fingerprint))
            written[key] = path
        path = keys_dir / "list-public.asc"
        path.write_text(await world.app.keyring.export_public(world.list_fpr))
        written["list"] = path
        return written

    def print_connection_details(self, keys: dict[str, Path]) -> None:
        world, synapse, mail = self.world, self.synapse, self.mail
        assert world is not None and synapse is not None and mail is not None
        assert world.admin is not None and world.config is not None
        say()
        say("The sandbox stays up. Connect your own clients to it:")
        say()
        say(f"Matrix homeserver: {synapse.url}  (e.g. Element Desktop; no TLS, loopback only)")
        for key, op in world.mx.items():
            localpart = op.user_id[1:].split(":")[0]
            say(f"  {world.people[key].name:<14} {op.user_id:<28} password pw-{localpart}")
        admin_localpart = world.admin.user_id[1:].split(":")[0]
        say(f"  {'admin':<14} {world.admin.user_id:<28} password pw-{admin_localpart}")
        say(f"  incident room {world.incident_room}")
        say(f"  control room  {world.control_room}  (admin and bot only)")
        say(f"  the bot is {world.config.matrix.user_id}")
        say("  A device you log in now only gets the keys of messages sent after that; the bot")
        say("  trusts a member's new device on first use and tells the admin in the control room.")
        say()
        say(
            f"Mail (e.g. Thunderbird): IMAP {HOST}:{mail.imap_port}, SMTP {HOST}:{mail.smtp_port},"
            " no TLS, normal password"
        )
        for key, mailer in world.mail.items():
            say(f"  {world.people[key].name:<14} {mailer.address:<28} password {mailer.password}")
        say(f"  {'the list':<14} {world.list_address:<28} password pw-list  (the bot's mailbox)")
        say()
        say("OpenPGP keys to import (Thunderbird: Account Settings > End-To-End Encryption):")
        for key, path in keys.items():
            what = (
                "the list's public key"
                if key == "list"
                else f"{world.people[key].name}'s secret key"
            )
            say(f"  {what:<26} {path}")
        say()
        say(f"The bot's config is {world.config_path}; its store is {world.config.store_path}.")
        say("Press Ctrl-C to stop; everything above is deleted then.")

    async def stay_up(self) -> None:
        """Wait until cancelled (Ctrl-C / SIGTERM); fail if the bot stops by itself."""
        world = self.world
        assert world is not None and world.app_task is not None
        self.up = True
        await asyncio.wait([world.app_task])
        raise DemoFailed("the bot stopped by itself; its log above says why")

    # -- stop --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop everything that was started, in reverse order, and remove the state."""
        if self.world is not None:
            bot = self.world.app_task
            if bot is not None and bot.done():
                # World.close() re-raises a dead bot's error before it stops the clients
                # and keyrings; take the error out first so the rest is still closed.
                error = None if bot.cancelled() else bot.exception()
                self.world.app_task = self.world.app = None
                if error is not None:
                    say(f"The bot had stopped with an error: {error!r}")
            try:
                await self.world.close()
            except Exception as exc:
                say(f"Closing the bot failed: {exc!r}")
        if self.mail is not None:
            await self.mail.stop()
        if self.synapse is None and self._synapse_start is not None:
            with contextlib.suppress(BaseException):
                self.synapse = await self._synapse_start
        if self.synapse is not None:
            await asyncio.to_thread(self.synapse.stop)
        shutil.rmtree(self.state, ignore_errors=True)


async def _run(demo: Demo, once: bool) -> int:
    await demo.start()
    await demo.round_trip()
    if once:
        return 0
    keys = await demo.write_keys()
    demo.print_connection_details(keys)
    await demo.stay_up()
    return 0  # not reached: stay_up ends by cancellation or an error


async def _main(once: bool) -> int:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # not secir-bot -v
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    demo = Demo(short_tempdir("secir-demo-"))
    loop = asyncio.get_running_loop()
    work = asyncio.create_task(_run(demo, once), name="demo")
    stopping = False

    def on_signal(name: str) -> None:
        nonlocal stopping
        if stopping:
            say(f"({name} again: still shutting down, please wait)")
            return
        stopping = True
        say()
        say(f"{name} received: stopping ...")
        work.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig.name)
    code = 1
    try:
        try:
            code = await work
        except asyncio.CancelledError:
            code = 0 if demo.up else EXIT_INTERRUPTED
            if not demo.up:
                say("Interrupted before the demo finished.")
        except DemoFailed as exc:
            say()
            say(f"FAILED: {exc}")
        except (SandboxError, TimeoutError, OSError) as exc:
            say()
            say(f"FAILED: the sandbox could not run: {exc}")
        except Exception:
            log.exception("the demo broke")
            say()
            say("FAILED: the demo broke; see the traceback above.")
        # Stopping happens here, outside the cancelled task, so a signal cannot cut it short.
        say("Shutting down: bot, Matrix clients, mail server, Synapse ...")
        t = time.monotonic()
        await demo.close()
        say(f"Stopped and removed {demo.state} ({_seconds(t)}).")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return code


def main(once: bool = False) -> int:
    """Run the demo; the exit code is 0 on success, 1 on failure, 130 if interrupted early."""
    if os.name != "posix":
        say("The sandbox needs a POSIX system (Linux or macOS).")
        return 1
    return asyncio.run(_main(once))
