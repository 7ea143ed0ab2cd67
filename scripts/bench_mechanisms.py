"""Micro-benchmarks of the mechanisms below the fan-out (issue 11): figures, not assertions.

    .venv/bin/python scripts/bench_mechanisms.py --members 1000 [--keys DIR] [--repeats 3]

Measured on the package's own code, with real gpg and a real SMTP server (aiosmtpd in this
process, accepting everything, as ``make bench``'s sink):

- gpg alone: one sign+encrypt to k recipients (wall time and gpg's own CPU time), to tell
  whether the cost per recipient grows with k;
- the key listing: the first ``usable_for_encryption`` of every member (a listing) and the
  next ones (the cache);
- recipient groups: ``sign_encrypt_groups`` for each group size, gpg and Sequoia; wall
  time, backend calls, bytes per mail, and the decryption time of the member whose session
  key comes last in its group (its own gpg, hidden recipients) - the worst case a member
  sees;
- encryption and SMTP in sequence (every group encrypted, then each group's row sent, as
  the outbox did before) against overlapped (each group's row sent as soon as it is made,
  ``sign_encrypt_each``), gpg, groups of 100, to the last 250;
- the SMTP hand-off of one row to every member: aiosmtplib's ``sendmail`` one RCPT at a
  time (as before) against ``smtpsend.send`` pipelined, by batch size and connections.

The member keys (ed25519/cv25519, made in one gpg call) are kept in ``--keys`` when given,
so that a second run skips making them. Prints a Markdown table per part.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib
from aiosmtpd.smtp import SMTP as SMTPServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from secir_bot.bridges.email import smtpsend  # noqa: E402
from secir_bot.crypto import Keyring  # noqa: E402
from secir_bot.crypto.backend import GpgBackend  # noqa: E402
from secir_bot.crypto.groups import sign_encrypt_each, sign_encrypt_groups  # noqa: E402

PAYLOAD = (b"A line of an incident report, long enough to look like one.\n" * 50)[:3000]


def _gpg(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
        input=data,
        capture_output=True,
        check=False,
    )


def make_keys(directory: Path, members: int) -> tuple[Path, str, list[str]]:
    """The list's keyring (list secret key, members' public keys) and a world home."""
    world, ring = directory / "world", directory / "list"
    if not (ring / "pubring.kbx").exists():
        for home in (world, ring):
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        params = []
        for i in range(members + 1):
            name, email = ("List", "list@lists.test") if i == 0 else (f"M{i}", f"m{i}@nic.test")
            params.append(
                "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n"
                "Subkey-Type: ecdh\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n"
                f"Name-Real: {name}\nName-Email: {email}\nExpire-Date: 0\n%commit\n"
            )
        _gpg(world, "--gen-key", data="".join(params).encode())
        fprs = _fingerprints(world)
        _gpg(ring, "--import", data=_gpg(world, "--export-secret-keys", fprs[0]).stdout)
        _gpg(ring, "--import", data=_gpg(world, "--export", *fprs[1:]).stdout)
    fprs = _fingerprints(world)
    return ring, fprs[0], fprs[1 : members + 1]


def _fingerprints(home: Path) -> list[str]:
    out, last = [], ""
    for line in _gpg(home, "--with-colons", "--list-keys").stdout.decode().splitlines():
        fields = line.split(":")
        if fields[0] == "fpr" and last == "pub":
            out.append(fields[9])
        last = fields[0]
    return out


def member_home(directory: Path, world: Path, fpr: str, list_fpr: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix="gm", dir=directory))
    home.chmod(0o700)
    _gpg(home, "--import", data=_gpg(world, "--export-secret-keys", fpr).stdout)
    _gpg(home, "--import", data=_gpg(world, "--export", list_fpr).stdout)
    return home


def table(title: str, head: list[str], rows: list[list[object]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def gpg_alone(ring: Keyring, list_fpr: str, fprs: list[str], repeats: int) -> None:
    rows: list[list[object]] = []
    for k in [k for k in (50, 100, 250, 500, 1000) if k <= len(fprs)]:
        walls, cpus = [], []
        for _ in range(repeats):
            cpu, start = children_cpu(), time.perf_counter()
            await ring.sign_encrypt(PAYLOAD, fprs[:k], list_fpr)
            walls.append(time.perf_counter() - start)
            cpus.append(children_cpu() - cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        rows.append([k, wall, cpu, 1000 * cpu / k])
    table(
        "gpg alone: one sign+encrypt to k recipients (median)",
        ["k", "wall s", "gpg CPU s", "CPU ms per recipient"],
        rows,
    )


async def listing(ring: Keyring, fprs: list[str]) -> None:
    ring.cache.invalidate()
    start = time.perf_counter()
    await ring.usable_for_encryption(fprs)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(10):
        await ring.usable_for_encryption(fprs)
    cached = (time.perf_counter() - start) / 10
    table(
        f"Which of {len(fprs)} member keys are usable",
        ["", "s", "gpg calls"],
        [["first (one listing)", first, 1], ["cached (keyring unchanged)", cached, 0]],
    )


async def groups(
    ring: Keyring, list_fpr: str, fprs: list[str], world: Path, work: Path, repeats: int
) -> None:
    backends: list[tuple[str, object]] = [("gpg", GpgBackend(ring))]
    try:
        from secir_bot.crypto.sequoia import SequoiaBackend

        sequoia = SequoiaBackend(ring)
        await sequoia.start()
        backends.append(("sequoia", sequoia))
    except Exception as exc:  # the optional extra is not installed
        print(f"(Sequoia left out: {exc})")
    rows: list[list[object]] = []
    n = len(fprs)
    sizes = sorted({s for s in (100, 200, 250, 334, 500, 1000) if s <= n} | {n})
    homes: dict[str, Path] = {}
    for name, backend in backends:
        for size in sizes:
            walls = []
            calls = ring.calls
            for _ in range(repeats):
                start = time.perf_counter()
                sealed = await sign_encrypt_groups(
                    backend,  # type: ignore[arg-type]
                    PAYLOAD,
                    fprs,
                    list_fpr,
                    group_size=size,
                )
                walls.append(time.perf_counter() - start)
            per_post = (ring.calls - calls) / repeats
            biggest = max(sealed, key=lambda s: len(s.recipients))
            last = biggest.recipients[-1]
            if last not in homes:
                homes[last] = member_home(work, world, last, list_fpr)
            start = time.perf_counter()
            decrypted = _gpg(homes[last], "--decrypt", data=biggest.armored)
            member = time.perf_counter() - start
            rows.append(
                [
                    name,
                    size,
                    len(sealed),
                    statistics.median(walls),
                    per_post if name == "gpg" else len(sealed),
                    f"{len(biggest.armored) / 1024:.1f}",
                    member,
                    decrypted.returncode,
                ]
            )
        await backend.aclose()  # type: ignore[attr-defined]
    table(
        f"Recipient groups: one post to {n} members, {GpgBackend(ring).parallel} at once",
        [
            "backend",
            "group size",
            "groups",
            "wall s (median)",
            "calls per post",
            "KB per mail",
            "last member's gpg decrypt s",
            "its exit code",
        ],
        rows,
    )


class _Sink:
    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        extra = ["250-PIPELINING"] if self.pipelining else []
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        return "250 OK"


async def serve_sink() -> None:
    """The SMTP sink, run in a process of its own (so that its work is not timed)."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPServer(_Sink(True), hostname="sink", loop=loop, data_size_limit=None),
        "127.0.0.1",
        0,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


async def smtp(members: int, size_kb: float, repeats: int) -> None:
    payload = (b"x" * 76 + b"\r\n") * int(size_kb * 1024 / 78)
    recipients = [f"m{i}@nic.test" for i in range(members)]
    rows: list[list[object]] = []
    sink = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-sink", stdout=asyncio.subprocess.PIPE
    )
    assert sink.stdout is not None
    port = int(await sink.stdout.readline())

    async def open_session() -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        return client

    def ignore(batch: object, errors: object) -> None:
        return None

    cases = [("sendmail, one RCPT at a time", 100, 1, False)]
    cases += [("pipelined", b, c, True) for b in (100, 250, 1000) for c in (1, 2)]
    try:
        for name, batch, connections, pipelined in cases:
            walls = []
            for _ in range(repeats):
                start = time.perf_counter()
                await smtpsend.send(
                    open_session,
                    "list@lists.test",
                    recipients,
                    payload,
                    ignore,
                    max_recipients=batch,
                    connections=connections,
                    pipelining=pipelined,
                )
                walls.append(time.perf_counter() - start)
            rows.append([name, batch, connections, statistics.median(walls)])
    finally:
        sink.kill()
        await sink.wait()
    table(
        f"SMTP hand-off of one {size_kb:.0f} KB mail to {members} recipients "
        "(aiosmtpd sink in its own process)",
        ["how", "recipients per transaction", "connections", "s (median)"],
        rows,
    )


async def _send_queued(
    queue: asyncio.Queue[tuple[tuple[str, ...], bytes] | None],
    deliver: Callable[[tuple[str, ...], bytes], Awaitable[None]],
) -> None:
    """Send the queued rows one after the other, as the outbox worker does, until None."""
    while (one := await queue.get()) is not None:
        await deliver(*one)


async def overlap(ring: Keyring, list_fpr: str, fprs: list[str], repeats: int) -> None:
    """Fan-out with gpg, groups of 100: SMTP after all groups, or each group's SMTP as it
    is made (one connection per row, pipelined, as the outbox sends a row)."""
    sink = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-sink", stdout=asyncio.subprocess.PIPE
    )
    assert sink.stdout is not None
    port = int(await sink.stdout.readline())

    async def open_session() -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        return client

    def ignore(batch: object, errors: object) -> None:
        return None

    async def deliver(group: tuple[str, ...], armored: bytes) -> None:
        await smtpsend.send(
            open_session, "list@lists.test", group, armored, ignore, max_recipients=100
        )

    backend = GpgBackend(ring)
    rows: list[list[object]] = []
    try:
        hows = ("in sequence", "overlapped")
        walls: dict[str, list[float]] = {how: [] for how in hows}
        firsts: dict[str, list[float]] = {how: [] for how in hows}
        # Alternating, so that a load that changes during the run weighs on both alike.
        for i in range(repeats * 2):
            how = hows[i % 2] if i // 2 % 2 == 0 else hows[1 - i % 2]
            start = time.perf_counter()
            if how == "in sequence":
                sealed = await sign_encrypt_groups(backend, PAYLOAD, fprs, list_fpr, group_size=100)
                firsts[how].append(time.perf_counter() - start)
                for one in sealed:
                    await deliver(one.recipients, one.armored)
            else:
                queue: asyncio.Queue[tuple[tuple[str, ...], bytes] | None] = asyncio.Queue()

                sending = asyncio.create_task(_send_queued(queue, deliver))
                first = None
                async for one in sign_encrypt_each(
                    backend, PAYLOAD, fprs, list_fpr, group_size=100
                ):
                    first = first or time.perf_counter() - start
                    queue.put_nowait((one.recipients, one.armored))
                queue.put_nowait(None)
                await sending
                firsts[how].append(first or 0.0)
            walls[how].append(time.perf_counter() - start)
        for how in hows:
            rows.append([how, statistics.median(firsts[how]), statistics.median(walls[how])])
    finally:
        sink.kill()
        await sink.wait()
    table(
        f"Encryption and SMTP of one post to {len(fprs)} members, groups of 100 (gpg)",
        ["how", "first row ready s (median)", "last 250 s (median)"],
        rows,
    )


async def run(opts: argparse.Namespace, work: Path, keys: Path) -> None:
    parts = set(opts.parts.split(","))
    if parts & {"gpg", "listing", "groups", "overlap"}:
        ring_home, list_fpr, fprs = await asyncio.to_thread(make_keys, keys, opts.members)
        ring = Keyring(ring_home)
        if "gpg" in parts:
            await gpg_alone(ring, list_fpr, fprs, opts.repeats)
        if "listing" in parts:
            await listing(ring, fprs)
        if "groups" in parts:
            await groups(ring, list_fpr, fprs, keys / "world", work, opts.repeats)
        if "overlap" in parts:
            await overlap(ring, list_fpr, fprs, opts.repeats)
    if "smtp" in parts:
        await smtp(opts.members, 37.0, opts.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keys", type=Path, help="keep the generated keys here")
    parser.add_argument("--parts", default="gpg,listing,groups,smtp")
    parser.add_argument("--serve-sink", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve_sink:
        asyncio.run(serve_sink())
        return
    work = Path(tempfile.mkdtemp(prefix="bm"))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{subprocess.run(['gpg', '--version'], capture_output=True).stdout.splitlines()[0]!r}")
    print(f"load average at the start: {', '.join(load)}")
    try:
        asyncio.run(run(opts, work, opts.keys or work))
    finally:
        for home in [*work.glob("gm*"), *(opts.keys or work).glob("*")]:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
