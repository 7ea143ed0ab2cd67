"""The benchmark run: set up like an admin, then one stage per list size.

Set-up: Synapse, Postfix + Dovecot, the SMTP sink, the Matrix users and rooms, every
member's key (one gpg batch call), ``secir-bot init``. Then, for each N in turn, the new
members are added with ``secir-bot member import`` and the bot is run (``secir-bot run``, a
process) once per server configuration the stage needs:

* sink: IMAP on Dovecot, SMTP to the sink: fan-out, mail → room, memory, start-up;
* sandbox (one stage): IMAP and SMTP on the in-process sandbox server: mail → room;
* mailboxes (one stage): SMTP to Postfix: room → the members' Dovecot mailboxes;
* burst (one stage): mails queued before the start;
* stored posts (last stage): posts added to the store, then memory again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secir_bot.crypto import Keyring
from secir_bot.sandbox.mailserver import SandboxMail
from secir_bot.sandbox.scratch import short_tempdir

from . import burst as burst_mod
from . import calib, extras, figures
from .bot import Bot
from .people import KeyWorld, Person, email_members, write_import_file
from .profile import Spy
from .sink import Sink
from .stack import Stack

PARTS = (
    "fanout", "mail2room", "sandbox", "mailboxes", "burst", "stored", "gpgscale", "imports",
    "profile",
)  # fmt: skip


@dataclass
class Options:
    sizes: tuple[int, ...] = (10, 100, 1000)
    posts: int = 10
    mail_samples: int = 5
    burst: int = 500
    burst_at: int = 100
    mailboxes_at: int = 100
    sandbox_at: int = 10
    stored_posts: int = 10000
    keys: str = "ed25519"
    max_recipients: int = 100
    backend: str = "gpg"  # crypto.backend of the bot (key ids hidden with both)
    sink: str = "lean"  # the SMTP sink's protocol: "lean" or "aiosmtpd" (sink.py)
    matrix_parallel: int | None = None  # delivery.matrix_parallel (None: the bot's default)
    parallel_decisions: int | None = None  # imap.parallel_decisions (None: the bot's default)
    parts: frozenset[str] = frozenset(PARTS)


@dataclass
class Bench:
    opts: Options
    root: Path
    stack: Stack
    sink: Sink
    bot: Bot
    world: KeyWorld
    world_ring: Keyring
    members: list[Person]
    tag: str
    list_fpr: str = ""
    list_public: str = ""
    prober: calib.Prober | None = None  # the machine-speed probe (calib.py)
    results: dict[str, Any] = field(default_factory=dict)

    def bot_gpg(self, *args: str) -> bytes:
        result = subprocess.run(
            ["gpg", "--homedir", str(self.bot.store / "gnupg"), "--batch", *args],
            capture_output=True,
            check=True,
        )
        return result.stdout

    def stage(self, n: int) -> dict[str, Any]:
        stages: dict[str, Any] = self.results.setdefault("stages", {})
        return stages.setdefault(str(n), {"n": n})

    def say(self, text: str) -> None:
        load = os.getloadavg()[0]
        print(f"[{time.strftime('%H:%M:%S')} load {load:4.2f}] {text}", flush=True)
        self.results.setdefault("load_seen", []).append(load)


def _kv(store: Path, key: str) -> str | None:
    with contextlib.closing(
        sqlite3.connect(f"file:{store / 'secir.sqlite'}?mode=ro", uri=True)
    ) as db:
        row = db.execute("SELECT value FROM kv WHERE key = ?", [key]).fetchone()
    return None if row is None else str(row[0])


async def start_bot(b: Bench, label: str) -> dict[str, Any]:
    """Start the bot; the poster's typing notice first makes sure that the bot's first
    sync carries a new position, which is how the benchmark sees it done."""
    assert b.stack.poster is not None
    await b.stack.poster.client.room_typing(b.stack.incident_room, True, timeout=2000)
    marks = await b.bot.start()
    if b.bot.runs == 1:
        await b.stack.bot_ready()
    rss = b.bot.rss()
    b.say(f"bot up ({label}): first sync after {marks.synced:.2f}s, RSS {rss[0]:.0f} MiB")
    return {"running": marks.running, "synced": marks.synced, "imap": marks.imap, "rss_mib": rss[0]}


async def stop_bot(b: Bench) -> None:
    code = await b.bot.stop()
    if code != 0:
        raise RuntimeError(f"the bot exited with {code}:\n{b.bot.log_tail()}")


async def set_up(opts: Options) -> Bench:
    root = short_tempdir("sb")
    stack = await Stack.start(root)
    sink = await Sink(lean=opts.sink == "lean").start()
    bot = Bot(root / "bot")
    world = KeyWorld(root / "g", opts.keys)
    members = email_members(max(opts.sizes))
    b = Bench(opts, root, stack, sink, bot, world, Keyring(world.home), members, stack.tag)
    b.say(f"servers up in {root}; generating {len(members) + 2} {opts.keys} keys")
    assert stack.poster is not None and stack.reader is not None
    matrix_people = [
        Person("poster", f"poster@{stack.list_address.partition('@')[2]}", "Poster", "nl",
               matrix_id=stack.poster.user_id),
        Person("reader", f"reader@{stack.list_address.partition('@')[2]}", "Reader", "jp",
               matrix_id=stack.reader.operator.user_id),
    ]  # fmt: skip
    # Long blocking steps run in a thread, so that the Matrix clients keep syncing.
    keygen = await asyncio.to_thread(world.generate, [*matrix_people, *members])
    exported = await asyncio.to_thread(world.export, [*matrix_people, *members], root / "keys")
    b.members = exported[2:]
    b.results["matrix_people"] = exported[:2]
    b.results["keygen_seconds"] = keygen
    bot.write_config(
        list_address=stack.list_address,
        domain=stack.list_address.partition("@")[2],
        homeserver=stack.synapse.url,
        bot_user_id=stack.bot_user["user_id"],
        incident_room=stack.incident_room,
        control_room=stack.control_room,
        admin=stack.admin.user_id if stack.admin else "",
        imap_port=stack.mail.imap_port,
        smtp_port=sink.port,
        max_recipients=opts.max_recipients,
        backend=opts.backend,
        delivery_extra=(
            f"matrix_parallel = {opts.matrix_parallel}\n" if opts.matrix_parallel else ""
        ),
        imap_extra=(
            f"parallel_decisions = {opts.parallel_decisions}\n" if opts.parallel_decisions else ""
        ),
        matrix_password=stack.bot_password,
        imap_password="pw-list",
    )
    b.results["init_seconds"] = await asyncio.to_thread(bot.init)
    b.list_fpr = _kv(bot.store, "list.fingerprint") or ""
    b.list_public = b.bot_gpg("--armor", "--export", b.list_fpr).decode()
    world.import_public(b.list_public)
    for m in b.members[: max(opts.mailboxes_at, 1)]:
        stack.mail.add_user(m.email, "pw-" + m.handle)
    b.say(f"keys made in {keygen:.1f}s; init done; list key {b.list_fpr}")
    b.prober = prober = await asyncio.to_thread(calib.Prober.make, root / "calib")
    first = await asyncio.to_thread(prober.probe)
    b.say(f"machine-speed probe: Python {first['python_s']:.3f} s, gpg {first['gpg_s']:.3f} s "
          f"of CPU (reference {calib.REFERENCE_PYTHON}, {calib.REFERENCE_GPG})")  # fmt: skip
    return b


async def stage(b: Bench, n: int, previous: int) -> None:
    opts, result = b.opts, b.stage(n)
    new = b.members[previous:n] + (b.results["matrix_people"] if previous == 0 else [])
    file = write_import_file(new, b.root / f"import-{n}.toml")
    seconds, gpg_runs = await asyncio.to_thread(b.bot.import_members, file)
    result["import"] = {"members": len(new), "seconds": seconds, "gpg_runs": gpg_runs}
    b.say(f"N={n}: imported {len(new)} members in {seconds:.1f}s ({gpg_runs} gpg runs)")

    async with calib.part(b, "start", n):
        result["start"] = await start_bot(b, f"N={n}")
    if "fanout" in opts.parts:
        async with calib.part(b, "fanout", n):
            result["fanout"] = await figures.fanout(b, n, opts.posts)
        b.say(f"N={n}: fan-out median {result['fanout']['latency']['median']:.3f}s")
    if "mail2room" in opts.parts:
        async with calib.part(b, "mail2room", n):
            result["mail2room"] = await figures.mail_to_room(
                b, n, opts.mail_samples, b.stack.mail.smtp_port
            )
        b.say(f"N={n}: mail → room median {result['mail2room']['latency']['median']:.3f}s")
    result["rss_after_mib"] = b.bot.rss()
    if "profile" in opts.parts and n == max(opts.sizes):
        b.say(f"N={n}: profiling the bot with py-spy")
        spy = await Spy(b.bot.pid, b.root / f"py-spy-fanout-{n}.txt").start()
        sampled = await figures.fanout(b, n, 3)
        result["profile"] = await spy.stop() | {"posts": 4, "latency": sampled["latency"]}
    await stop_bot(b)

    if "sandbox" in opts.parts and n == opts.sandbox_at:
        async with calib.part(b, "sandbox", n):
            await sandbox_stage(b, n, result)
    if "mailboxes" in opts.parts and n == opts.mailboxes_at:
        b.bot.set_servers(imap_port=b.stack.mail.imap_port, smtp_port=b.stack.mail.smtp_port)
        await start_bot(b, "SMTP to Postfix")
        async with calib.part(b, "mailboxes", n):
            result["mailboxes"] = await figures.mailboxes(b, n, opts.posts)
        await stop_bot(b)
        b.bot.set_servers(imap_port=b.stack.mail.imap_port, smtp_port=b.sink.port)
        b.say(f"N={n}: mailboxes p50 {result['mailboxes']['every_mailbox']['median']:.3f}s")
    if "burst" in opts.parts and n == opts.burst_at:
        b.say(f"N={n}: queueing {opts.burst} member mails")
        async with calib.part(b, "burst", n):
            result["burst"] = await burst_mod.burst(b, n, opts.burst, "profile" in opts.parts)
        await stop_bot(b)
        b.say(f"N={n}: burst {result['burst']['rate_from_start']:.2f} mails/s")
    if n == max(opts.sizes):
        if "gpgscale" in opts.parts:
            b.say("gpg scaling")
            async with calib.part(b, "gpgscale", n):
                b.results["gpg_scaling"] = await asyncio.to_thread(extras.gpg_scaling, b)
        if "stored" in opts.parts and opts.stored_posts:
            await stored_stage(b, n, result)


async def sandbox_stage(b: Bench, n: int, result: dict[str, Any]) -> None:
    sender = b.members[0]
    mail = await SandboxMail.start({b.stack.list_address: "pw-list", sender.email: "pw"})
    try:
        b.bot.set_servers(imap_port=mail.imap_port, smtp_port=b.sink.port)
        await start_bot(b, "sandbox mail server")
        result["mail2room_sandbox"] = await figures.mail_to_room(
            b, n, b.opts.mail_samples, mail.smtp_port
        )
        await stop_bot(b)
    finally:
        b.bot.kill()
        await mail.stop()
        b.bot.set_servers(imap_port=b.stack.mail.imap_port, smtp_port=b.sink.port)
    b.say(f"N={n}: mail → room (sandbox) {result['mail2room_sandbox']['latency']['median']:.3f}s")


async def stored_stage(b: Bench, n: int, result: dict[str, Any]) -> None:
    count = b.opts.stored_posts
    b.say(f"N={n}: storing {count} posts")
    poster = b.results["matrix_people"][0]
    stored = extras.store_posts(b.bot.store, poster.email, b.stack.incident_room, count)
    async with calib.part(b, "stored", n):
        stored["start"] = await start_bot(b, f"N={n}, {count} stored posts")
        stored["fanout"] = await figures.fanout(b, n, 2)
    stored["rss_after_mib"] = b.bot.rss()
    await stop_bot(b)
    result["stored"] = stored


async def run(opts: Options) -> dict[str, Any]:
    b = await set_up(opts)
    try:
        previous = 0
        for n in sorted(opts.sizes):
            await stage(b, n, previous)
            previous = n
        if "imports" in opts.parts:
            b.results["import_time"] = extras.import_time()
        b.results["matrix_people"] = [p.email for p in b.results["matrix_people"]]
        return b.results
    except BaseException:
        print("--- bot log ---\n" + b.bot.log_tail(), flush=True)
        print(b.stack.mail.logs(), flush=True)  # the servers' side of a failure
        raise
    finally:
        if b.prober:
            b.prober.close()
        b.bot.close()
        await b.sink.stop()
        await b.stack.close()
        b.world.close()
        shutil.rmtree(b.root, ignore_errors=True)
