"""The latency figures: room → SMTP sink, room → Dovecot mailboxes, mail → room.

Each measured post is preceded by one warm-up post that is not counted (the first message
after a start shares Megolm keys and fills caches). The first delivered mail of every run
is decrypted with one member's own key, in a home holding only that key, to prove that
what was timed is a real, list-signed mail (and to time what the member's side pays).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secir_bot import mime
from secir_bot.crypto import Keyring
from secir_bot.sandbox.operators import MailOperator
from secir_bot.sandbox.scratch import short_tempdir

from .bot import GpgCall
from .cpu import sharers, snapshot, used
from .people import DOMAIN, Person
from .sink import Transaction
from .stats import medians, pct, summary

if TYPE_CHECKING:
    from .run import Bench

FILLER = (
    "Since 13:05 UTC our authoritative name servers see about 40 Gbit/s of UDP/53 from\n"
    "a few thousand sources, mostly random-subdomain queries under our zone. Anycast\n"
    "sites in AMS and FRA are saturated; the others hold. We filter at the edge and\n"
    "have asked our upstreams to rate-limit. Please check your own servers for the same\n"
    "pattern and share source prefixes here. TLP:AMBER, do not forward outside the list.\n"
) * 3


def post_text(marker: str) -> str:
    return f"{marker} DDoS on the name servers\n\n{FILLER}"


def _gpg_breakdown(calls: list[GpgCall]) -> dict[str, Any]:
    kinds = Counter(c.kind for c in calls)
    return {
        "gpg_calls": len(calls),
        "gpg_kinds": dict(kinds),
        "gpg_seconds": sum(c.seconds for c in calls),
        "encrypt_seconds": sum(c.seconds for c in calls if "encrypt" in c.kind),
        "listing_seconds": sum(c.seconds for c in calls if c.kind.startswith("list")),
        "decrypt_seconds": sum(c.seconds for c in calls if c.kind in ("decrypt", "verify")),
    }


def fanout_sample(b: Bench, txs: list[Transaction], started: float, sent: float) -> dict[str, Any]:
    last = max(t.data_at for t in txs)
    first_mail = min(t.mail_at for t in txs)
    calls = b.bot.gpg_calls(started, last)
    sample: dict[str, Any] = {
        "latency": last - sent,
        "send": sent - started,
        "smtp": last - first_mail,
        "transactions": len(txs),
        "connections": len({t.connection for t in txs}),
        "recipients": sum(len(t.recipients) for t in txs),
        "bytes": max(t.size for t in txs),
        **_gpg_breakdown(calls),
    }
    # The hand-off, split: MAIL to the last RCPT answered, then the message itself.
    gaps = [y - x for t in txs for x, y in itertools.pairwise(t.rcpt_at)]
    sample["rcpt_phase"] = sum(t.rcpt_at[-1] - t.mail_at for t in txs if t.rcpt_at)
    sample["data_phase"] = sum(t.data_at - t.rcpt_at[-1] for t in txs if t.rcpt_at)
    sample["per_rcpt"] = pct(gaps, 50) if gaps else float("nan")
    if calls:
        sample["until_gpg"] = min(c.start for c in calls) - sent
        sample["gpg_span"] = max(c.end for c in calls) - min(c.start for c in calls)
        sample["to_smtp"] = first_mail - max(c.end for c in calls)
    return sample


async def verify_mail(b: Bench, raw: bytes, member: Person, marker: str) -> dict[str, Any]:
    """Decrypt a list mail as ``member`` would (only their key at hand); check it."""
    home = short_tempdir("gv")
    ring = Keyring.create(home)
    try:
        secret = await asyncio.to_thread(
            b.world.gpg, "--armor", "--export-secret-keys", member.fingerprint
        )
        await ring.import_key(secret)
        await ring.import_key(b.list_public)
        envelope = mime.parse_envelope(raw)
        if envelope.ciphertext is None:
            return {"ok": False, "why": "not an encrypted mail"}
        start = time.perf_counter()
        result = await ring.decrypt(envelope.ciphertext)
        seconds = time.perf_counter() - start
        text = mime.parse_decrypted(result.data, envelope.kind).text if result.ok else ""
        ok = result.ok and result.valid and result.signer == b.list_fpr and marker in text
        return {"ok": ok, "decrypt_seconds": seconds, "member": member.email}
    finally:
        await asyncio.to_thread(ring.close)
        shutil.rmtree(home, ignore_errors=True)


async def fanout(b: Bench, n: int, posts: int) -> dict[str, Any]:
    """Figure 1: a post in the room → the last SMTP 250 at the sink for all ``n`` members."""
    assert b.stack.poster is not None
    samples: list[dict[str, Any]] = []
    check: dict[str, Any] = {}
    for k in range(posts + 1):
        marker = f"FANOUT-{b.tag}-n{n}-p{k}"
        # The agent starts with the first signature (the warm-up post); workers at start-up.
        others = sharers(b.stack.synapse.pid, b.bot.pid, b.bot.store / "gnupg")
        before, gpg = snapshot(others), b.bot.children_cpu()
        cpu = b.bot.cpu()
        started = time.time()
        await b.stack.poster.send(b.stack.incident_room, post_text(marker))
        sent = time.time()
        txs = await b.sink.wait_message(started, n, 120 + n * 0.2, f"post {marker}")
        if k == 0:
            # The mail of the member's own recipient group (one per group since issue 11).
            member = b.members[n - 1]
            tx = next((t for t in txs if member.email in t.recipients), txs[0])
            check = await verify_mail(b, tx.content, member, marker)
        else:
            shares = {"cpu": b.bot.cpu() - cpu, "cpu_gpg": b.bot.children_cpu() - gpg}
            shares |= {f"cpu_{k}": v for k, v in used(before, snapshot(others)).items()}
            samples.append(fanout_sample(b, txs, started, sent) | shares)
        b.sink.forget()
    keys = (
        "latency", "send", "until_gpg", "gpg_span", "gpg_seconds", "encrypt_seconds",
        "listing_seconds", "to_smtp", "smtp", "gpg_calls", "bytes", "transactions",
        "connections", "rcpt_phase", "data_phase", "per_rcpt", "cpu", "cpu_gpg",
        "cpu_synapse", "cpu_gpg_agent", "cpu_workers", "cpu_benchmark",
    )  # fmt: skip
    return {
        "n": n,
        "latency": summary(s["latency"] for s in samples),
        "breakdown": medians(samples, keys),
        "gpg_kinds": samples[-1]["gpg_kinds"] if samples else {},
        "check": check,
        "samples": samples,
    }


def _maildir(b: Bench, member: Person) -> Path:
    local = member.email.partition("@")[0]
    return b.stack.mail.dovecot_dir / "mail" / DOMAIN / local / "Maildir" / "new"


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


async def mailboxes(b: Bench, n: int, posts: int) -> dict[str, Any]:
    """Figure 2: a post in the room → in each of ``n`` members' Dovecot mailboxes.

    A mail is in a mailbox when Dovecot's LMTP has renamed it into the member's ``new/``
    directory; the directory's modification time is that moment (kernel clock, a few ms
    resolution), so the polling interval below adds no error and no IMAP load.
    """
    assert b.stack.poster is not None
    members = b.members[:n]
    dirs = {m.email: _maildir(b, m) for m in members}
    every: list[float] = []
    last: list[float] = []
    check: dict[str, Any] = {}
    for k in range(posts + 1):
        marker = f"MAILBOX-{b.tag}-n{n}-p{k}"
        before = {email: _mtime(path) for email, path in dirs.items()}
        await b.stack.poster.send(b.stack.incident_room, post_text(marker))
        sent = time.time()
        arrived: dict[str, float] = {}
        deadline = time.monotonic() + 120 + n * 0.2
        while len(arrived) < n:
            for email, path in dirs.items():
                if email not in arrived and (stamp := _mtime(path)) != before[email]:
                    arrived[email] = stamp / 1e9
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{n - len(arrived)} mailboxes got no mail for {marker}:\n{b.stack.mail.logs()}"
                )
            await asyncio.sleep(0.02)
        latencies = [at - sent for at in arrived.values()]
        if k == 0:
            newest = max(dirs[members[-1].email].iterdir(), key=lambda p: p.stat().st_mtime_ns)
            check = await verify_mail(b, newest.read_bytes(), members[-1], marker)
            continue
        every.extend(latencies)
        last.append(max(latencies))
    return {
        "n": n,
        "every_mailbox": summary(every),
        "last_mailbox": summary(last),
        "check": check,
    }


def mail_operator(b: Bench, member: Person, smtp_port: int) -> MailOperator:
    return MailOperator(
        address=member.email,
        name=member.name,
        keyring=b.world_ring,
        fingerprint=member.fingerprint,
        password="",
        smtp_port=smtp_port,
        imap_port=0,
    )


async def mail_to_room(b: Bench, n: int, count: int, smtp_port: int) -> dict[str, Any]:
    """Figure 3: a member's signed+encrypted mail, submitted over SMTP at ``smtp_port`` →
    decrypted in the reader's Matrix client. Each sample waits for the list's copy of the
    post at the sink too, so samples do not overlap."""
    assert b.stack.reader is not None
    sender = b.members[0]
    op = mail_operator(b, sender, smtp_port)
    samples: list[dict[str, Any]] = []
    for k in range(count + 1):
        marker = f"MAIL-{b.tag}-n{n}-m{k}-{smtp_port}"
        _, data = await op.compose(b.stack.list_address, b.list_fpr, f"Mail {k}", post_text(marker))
        started = time.time()
        await op.send_raw(b.stack.list_address, data)
        submitted = time.time()
        arrival = await b.stack.reader.wait(marker, started, 120 + n * 0.2)
        if n > 1:
            await b.sink.wait_message(started, n - 1, 120 + n * 0.2, f"list copy of {marker}")
        b.sink.forget()
        if k == 0:
            continue
        calls = b.bot.gpg_calls(started, arrival.at)
        sample = {
            "latency": arrival.at - started,
            "submit": submitted - started,
            **_gpg_breakdown(calls),
        }
        if calls:
            sample["until_gpg"] = min(c.start for c in calls) - submitted
            sample["after_gpg"] = arrival.at - max(c.end for c in calls)
        samples.append(sample)
    keys = ("latency", "submit", "until_gpg", "gpg_seconds", "decrypt_seconds",
            "encrypt_seconds", "after_gpg", "gpg_calls")  # fmt: skip
    return {
        "n": n,
        "latency": summary(s["latency"] for s in samples),
        "breakdown": medians(samples, keys),
        "samples": samples,
    }
