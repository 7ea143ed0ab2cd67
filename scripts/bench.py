"""The end-to-end benchmark (``make bench``): figures, not assertions.

Sets up a list the way an admin does (``secir-bot init``, ``secir-bot member import`` of
generated members) and runs ``secir-bot run`` as a process against a real Synapse, the
test suite's Postfix + Dovecot, and a recording SMTP sink in this process. For each list
size it measures the fan-out (a room post → the last SMTP 250 for every email member),
mail → room, room → the members' Dovecot mailboxes, a burst of queued member mails, the
bot's memory and start-up; then prints a table and writes ``docs/performance.md``.

    make bench                                  # N = 10, 100, 1000; burst 500 (long)
    make bench BENCH_ARGS="--sizes 5,20 --posts 3 --burst 20 --burst-at 20 --mailboxes-at 20"
    .venv/bin/python scripts/bench.py --help

Needs root (Postfix and Dovecot), as the test suite does. The parts live in
``scripts/benchkit/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from benchkit import report
from benchkit.run import PARTS, Options, run

ROOT = Path(__file__).resolve().parents[1]


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("give list sizes of at least 1, e.g. 10,100,1000")
    return sizes


def _parts(text: str) -> frozenset[str]:
    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = parts - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown parts {sorted(unknown)}; known: {PARTS}")
    return parts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_sizes, default=(10, 100, 1000), help="list sizes N")
    p.add_argument("--posts", type=int, default=10, help="measured posts per figure and N")
    p.add_argument("--mail-samples", type=int, default=5, help="mails per N for mail → room")
    p.add_argument("--burst", type=int, default=500, help="queued member mails (0: no burst)")
    p.add_argument("--burst-at", type=int, default=100, help="the N of the burst")
    p.add_argument("--mailboxes-at", type=int, default=100, help="the N of room → mailboxes")
    p.add_argument("--sandbox-at", type=int, help="the N of mail → room on the sandbox "
                   "server (default: the smallest)")  # fmt: skip
    p.add_argument("--stored-posts", type=int, default=10000, help="posts stored for the "
                   "last memory figure (0: none)")  # fmt: skip
    p.add_argument("--keys", choices=("ed25519", "rsa3072"), default="ed25519")
    p.add_argument("--max-recipients", type=int, default=100, help="the bot's "
                   "smtp.max_recipients (its default is 100)")  # fmt: skip
    p.add_argument("--backend", choices=("gpg", "sequoia"), default="gpg",
                   help="the bot's crypto.backend (recipients hidden with both)")  # fmt: skip
    p.add_argument("--sink", choices=("lean", "aiosmtpd"), default="lean",
                   help="the SMTP sink's protocol (aiosmtpd: as before 2026-12-03)")  # fmt: skip
    p.add_argument("--matrix-parallel", type=int, help="the bot's delivery.matrix_parallel "
                   "(default: the bot's own)")  # fmt: skip
    p.add_argument("--parallel-decisions", type=int, help="the bot's imap.parallel_decisions "
                   "(default: the bot's own)")  # fmt: skip
    p.add_argument("--parts", type=_parts, default=frozenset(PARTS),
                   help=f"comma-separated, from {','.join(PARTS)} (default: all)")  # fmt: skip
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument(
        "--write",
        type=Path,
        default=None,
        help="the page to write (default: docs/performance.md for the full run, else none)",
    )
    p.add_argument("--no-write", action="store_true", help="write no page")
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: print the table and write the page from results saved by --json",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The operators' nio clients warn about every Olm session they set up: not our figures.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("nio").setLevel(logging.ERROR)
    parts = set(args.parts)
    if args.burst <= 0:
        parts.discard("burst")
    opts = Options(
        sizes=args.sizes,
        posts=args.posts,
        mail_samples=args.mail_samples,
        burst=args.burst,
        burst_at=args.burst_at,
        mailboxes_at=args.mailboxes_at,
        sandbox_at=args.sandbox_at or min(args.sizes),
        stored_posts=args.stored_posts,
        keys=args.keys,
        sink=args.sink,
        max_recipients=args.max_recipients,
        backend=args.backend,
        matrix_parallel=args.matrix_parallel,
        parallel_decisions=args.parallel_decisions,
        parts=frozenset(parts),
    )
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        opts.sizes = tuple(results["options"]["sizes"])
    else:
        machine = report.machine()
        results = asyncio.run(run(opts))
        results["machine"] = machine | report.machine_after()
        results["options"] = {k: sorted(v) if isinstance(v, frozenset) else v
                              for k, v in vars(opts).items()}  # fmt: skip
    print(report.table(results))
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    target = args.write
    if target is None and not args.no_write and opts.sizes == (10, 100, 1000):
        target = ROOT / "docs" / "performance.md"
    if target is not None and not args.no_write:
        report.write_page(target, results)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
