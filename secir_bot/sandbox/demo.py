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
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import TypeVar

from secir_bot.sandbox import SandboxError
from secir_bot.sandbox.mailserver import SandboxMail
from secir_bot.sandbox.roundtrip import DemoFailed, RoundTrip, say
from secir_bot.sandbox.scratch import short_tempdir
from secir_bot.sandbox.synapse import Synapse
from secir_bot.sandbox.world import DEFAULT_PEOPLE, World

__all__ = ["main"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DOMAIN = "secir.test"  # mail domain and Matrix server name; .test is reserved (RFC 2606)
HOST = "127.0.0.1"
EXIT_INTERRUPTED = 130

# Alice's first line becomes the mail's subject and Bob's reply adds "Re: "; kept short so
# neither header is folded (see the report on folded subjects in secir_bot/mime/).

# Libraries that log every connection at INFO; the demo's own lines say what matters.
_QUIET_LOGGERS = ("mail.log", "pymap", "aiosmtpd", "proxyprotocol", "asyncio")


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
    world = await demo.start()
    await RoundTrip(world).run()
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
