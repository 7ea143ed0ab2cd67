"""The ``secir-bot`` command: check-config, init, doctor, run, member add/import/list/remove,
audit verify, export-key, sandbox.

Errors of ours become a message on stderr and an exit code: 2 for configuration problems,
3 for store problems, 4 for a refused member, 5 for a broken audit chain, 6 when a server
refused the bot's login or could not be reached, 1 for anything else that broke.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from secir_bot import config as config_mod
from secir_bot import fileperms, redact, shell
from secir_bot.app import App
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.errors import ConfigError, MemberError, SecirError, ServiceError, StoreError
from secir_bot.members import MemberRequest, add_member, read_import_file
from secir_bot.provision import init
from secir_bot.store import Store

log = logging.getLogger("secir_bot")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="secir-bot",
        description="Secure incident-response channel for ccTLD operators: an end-to-end "
        "encrypted Matrix room mirrored with a PGP-encrypted mailing list.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "-c",
            "--config",
            type=Path,
            default=Path("config.toml"),
            help="configuration file (default: config.toml)",
        )
        return sp

    with_config(sub.add_parser("check-config", help="report every configuration problem"))
    with_config(
        sub.add_parser(
            "doctor",
            help="check the config, the store and keyring, then connect to the homeserver, "
            "both rooms, IMAP and SMTP; one line per check, with the fix",
        )
    )
    init = with_config(
        sub.add_parser("init", help="create the store, the list key and the bot's Matrix device")
    )
    init.add_argument(
        "--import-key",
        type=Path,
        metavar="FILE",
        help="use this armored secret key as the list key instead of a new one",
    )
    with_config(sub.add_parser("run", help="run the bot"))
    trust = with_config(
        sub.add_parser(
            "trust",
            help="confirm a member's changed Matrix identity (ask them by another channel first)",
        )
    )
    trust.add_argument("matrix_id", help="@user:server")
    with_config(
        sub.add_parser(
            "reset-cross-signing",
            help="replace the bot account's Matrix cross-signing identity (needs the password; "
            "stop the bot first)",
        )
    )
    member = sub.add_parser("member", help="manage the roster from the command line")
    msub = member.add_subparsers(dest="member_command", required=True)
    add = with_config(msub.add_parser("add", help="add one member"))
    add.add_argument("--tld", required=True, help="the member's ccTLD, e.g. .nl or .рф")
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--key", required=True, type=Path, help="file with the public key")
    add.add_argument("--matrix-id", help="@user:server")
    add.add_argument("--channels", default="", help="matrix,email (default: all they have)")
    add.add_argument("--rank", type=int, default=1, choices=(1, 2, 3))
    imp = with_config(msub.add_parser("import", help="add members from a TOML or CSV file"))
    imp.add_argument("file", type=Path)
    with_config(msub.add_parser("list", help="list the members"))
    remove = with_config(
        msub.add_parser(
            "remove",
            help="revoke a ccTLD's members or one person at once, as !revoke does (audited)",
        )
    )
    remove.add_argument("who", help="a ccTLD (.nl), an email address or a Matrix id")
    remove.add_argument("--reason", required=True, help="why (kept in the audit log)")
    export = with_config(
        sub.add_parser("export-key", help="print the list's public key (as !listkey sends it)")
    )
    export.add_argument("--output", type=Path, help="write it to this file instead")
    audit = sub.add_parser("audit", help="the hash-chained audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    verify = with_config(asub.add_parser("verify", help="check the audit chain offline"))
    verify.add_argument(
        "--expect-head",
        metavar="SEQ:HASH",
        help="a head shown earlier (by !audit or a previous verify) that must still be there",
    )
    sandbox = sub.add_parser("sandbox", help="run the demo sandbox (make demo)")
    sandbox.add_argument(
        "--once", action="store_true", help="show the round trip and exit instead of staying up"
    )
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact.install(logging.getLogger().handlers)
    if not verbose:
        for noisy in ("nio", "aioimaplib", "gnupg", "peewee"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # Quiet even with -v: nio's event and response checks quote whole (decrypted) events,
    # and python-gnupg's debug lines show what gpg reads and writes (decrypted text, the
    # start of a secret key being imported).
    logging.getLogger("nio.events").setLevel(logging.ERROR)
    logging.getLogger("nio.responses").setLevel(logging.ERROR)
    logging.getLogger("gnupg").setLevel(logging.INFO if verbose else logging.WARNING)


async def run(config: Config) -> None:
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    app = App(config)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    loop.add_signal_handler(signal.SIGUSR1, _log_tasks)
    try:
        await app.run()
    except asyncio.CancelledError:
        log.info("stopped")
    except ExceptionGroup as group:
        # A task of the TaskGroup failed: report our own error plainly, not as a group.
        first = group.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        raise first from group


def _trust(config: Config, matrix_id: str) -> int:
    import getpass

    from secir_bot.bridges.matrix.pins import Pins

    store = Store.open(config.store_path)
    try:
        confirmed, text = Pins(store, lambda _: None).confirm(
            matrix_id, by=f"{getpass.getuser()} (secir-bot trust)"
        )
    finally:
        store.close()
    print(text, file=sys.stdout if confirmed else sys.stderr)
    return 0 if confirmed else 1


async def _reset_cross_signing(config: Config) -> int:
    from secir_bot.bridges.matrix.xsign import BotIdentity

    if not config.matrix.password.configured:
        raise ConfigError(["matrix.password_file or matrix.password_env: needed to reset"])
    # Through init: a store that init refused to make (because of the very identity being
    # replaced) is made now, all or nothing as ever.
    await init(config, reset_cross_signing=True)
    identity = BotIdentity.load(config.store_path / "matrix")
    master = identity.master_public if identity is not None else "?"
    print(f"new cross-signing identity for {config.matrix.user_id}: master key {master}")
    return 0


def _log_tasks() -> None:
    """On SIGUSR1: log where every task waits (for an admin chasing a stuck bot)."""
    import io

    for t in asyncio.all_tasks():
        out = io.StringIO()
        t.print_stack(limit=12, file=out)
        log.warning("task %s:\n%s", t.get_name(), out.getvalue())


async def _member_add(config: Config, reqs: list[MemberRequest]) -> int:
    store = Store.open(config.store_path)
    keyring = Keyring(config.store_path / "gnupg")
    failed = 0
    try:
        for req in reqs:
            try:
                m = await add_member(store, keyring, req)
            except MemberError as exc:
                failed += 1
                print(f"refused {req.email}: {exc}", file=sys.stderr)
            else:
                print(
                    f"added {m.label} <{m.email}> key {m.fingerprint} "
                    f"channels {','.join(sorted(m.channels))}"
                )
    finally:
        keyring.close()
        store.close()
    return 4 if failed else 0


def _member_list(config: Config) -> int:
    store = Store.open(config.store_path)
    try:
        for m in store.members.all(active_only=False):
            print(
                f"{m.tld_display:<12} #{m.rank} {m.name:<24} {m.email:<32} "
                f"{m.matrix_id or '-':<28} {','.join(sorted(m.channels)):<13} {m.status}"
            )
    finally:
        store.close()
    return 0


def _audit_verify(config: Config, expect_head: str | None) -> int:
    store = Store.open(config.store_path)
    try:
        verdict = store.audit.verify(expect_head)
    finally:
        store.close()
    print(verdict.summary(), file=sys.stdout if verdict.ok else sys.stderr)
    return 0 if verdict.ok else 5


def _shell(config: Config, name: str, words: tuple[str, ...], output: Path | None = None) -> int:
    """An admin command run on the host (``shell.py``); a refusal exits with 4."""
    reply = asyncio.run(shell.run(config, name, words))
    if not reply.ok:
        print(reply.text, file=sys.stderr)
        return 4
    for attachment in reply.attachments:
        if output is not None:
            output.write_bytes(attachment.data)
            print(reply.text.replace("(attached)", f"(written to {output})"))
            return 0
        sys.stdout.write(attachment.data.decode("utf-8"))
    if not reply.attachments:
        print(reply.text)
    return 0


# The exit code of each error, and the word its message starts with; the first that fits.
_EXITS: tuple[tuple[type[Exception], str, int], ...] = (
    (ConfigError, "", 2),
    (StoreError, "store: ", 3),
    (MemberError, "member: ", 4),
    (ServiceError, "server: ", 6),
    (SecirError, "error: ", 1),
    (OSError, "error: ", 1),
)


def main(argv: Sequence[str] | None = None) -> int:
    # Whatever a command creates (the database, keys, the Matrix crypto store) is private.
    os.umask(fileperms.PRIVATE_UMASK)
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "sandbox":
            from secir_bot.sandbox.demo import main as sandbox_main

            return sandbox_main(once=args.once)
        config = config_mod.load(args.config)
        if args.command == "check-config":
            for warning in config.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"{args.config}: OK" + (" (with warnings)" if config.warnings else ""))
            return 0
        if args.command == "doctor":
            from secir_bot import doctor

            text, code = doctor.report(asyncio.run(doctor.examine(config)))
            print(text)
            return code
        if args.command == "init":
            fpr = asyncio.run(init(config, args.import_key))
            print(f"store ready at {config.store_path}; list key {fpr}")
            return 0
        if args.command == "run":
            asyncio.run(run(config))
            return 0
        if args.command == "audit":
            return _audit_verify(config, args.expect_head)
        if args.command == "trust":
            return _trust(config, args.matrix_id)
        if args.command == "reset-cross-signing":
            return asyncio.run(_reset_cross_signing(config))
        if args.command == "export-key":
            return _shell(config, "listkey", (), args.output)
        if args.member_command == "remove":
            return _shell(config, "revoke", (args.who, args.reason))
        if args.member_command == "add":
            req = MemberRequest(
                tld=args.tld,
                name=args.name,
                email=args.email,
                key=args.key.read_text(encoding="utf-8"),
                matrix_id=args.matrix_id,
                channels=args.channels,
                rank=args.rank,
            )
            return asyncio.run(_member_add(config, [req]))
        if args.member_command == "import":
            return asyncio.run(_member_add(config, read_import_file(args.file)))
        return _member_list(config)
    except (SecirError, OSError) as exc:
        prefix, code = next((p, c) for kind, p, c in _EXITS if isinstance(exc, kind))
        print(f"{prefix}{exc}", file=sys.stderr)
        return code
