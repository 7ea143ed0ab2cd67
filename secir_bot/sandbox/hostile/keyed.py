"""Hostile cases that need a test world's keys: built at test time, never stored."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from secir_bot.sandbox.hostile.base import (
    MARKER,
    NOT_ENCRYPTED,
    UNDECRYPTABLE,
    UNREADABLE,
    Case,
)
from secir_bot.sandbox.operators import MailOperator


def _case_of(name: str, data: bytes) -> bytes:
    """A built mail as a case: the X-Corpus-Case first line and its own Message-ID."""
    data = re.sub(
        rb"(?m)^Message-ID: <[^>]*>", b"Message-ID: <" + name.encode() + b"@hostile.test>", data
    )
    return b"X-Corpus-Case: " + name.encode() + b"\r\n" + data


async def _gpg(home: Path, *args: str, data: bytes) -> bytes:
    """gpg on an operator's home, for shapes the Keyring does not make (two signers, a
    faked clock, an opaque signed message)."""
    done = await asyncio.to_thread(
        subprocess.run,
        ["gpg", "--homedir", str(home), "--batch", "--yes", "--trust-model", "always", *args],
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout


def _armor_of(mail: bytes) -> tuple[bytes, bytes, bytes]:
    start = mail.index(b"-----BEGIN PGP MESSAGE-----")
    end = mail.index(b"-----END PGP MESSAGE-----") + len(b"-----END PGP MESSAGE-----")
    return mail[:start], mail[start:end], mail[end:]


async def crypto_cases(
    *,
    list_address: str,
    list_fpr: str,
    alice: MailOperator,
    bob: MailOperator,
    outsider: MailOperator,
    relayed: bytes,
    list_copy: bytes,
) -> list[Case]:
    """Cases that need the test world's keys: built at test time, never stored.

    ``alice`` and ``bob`` are members, ``outsider`` is not; ``relayed`` is a member's mail
    the list already relayed (for replays), ``list_copy`` a mail the list sent (a loop).
    """
    cases: list[Case] = []
    a_from = f"{alice.name} <{alice.address}>"

    def add(name: str, data: bytes, outcome: str, *reasons: str) -> None:
        cases.append(Case(name, _case_of(name, data), outcome, reasons))

    def text(name: str) -> str:
        return f"{MARKER}-{name} text of the case\n"

    # Truncated ciphertext, inline and PGP/MIME.
    for fmt in ("inline", "pgp-mime"):
        _, good = await alice.compose(list_address, list_fpr, "t", text("trunc"), fmt=fmt)
        before, armor, after = _armor_of(good)
        lines = armor.split(b"\n")
        add(
            f"truncated-half-{fmt}",
            before + armor[: len(armor) // 2] + after,
            "rejected",
            *UNDECRYPTABLE,
            *UNREADABLE,
            *NOT_ENCRYPTED,  # without its END line, the armor is not taken for one
        )
        cut = b"\n".join(lines[:-4] + lines[-1:])
        add(f"truncated-tail-{fmt}", before + cut + after, "rejected", *UNDECRYPTABLE, *UNREADABLE)
    # A decompression bomb (30 MB of zeros; the list decrypts at most 10x its size limit).
    _, bomb = await outsider.inline_mail(list_address, list_fpr, b"\0" * 30_000_000)
    add("bomb", bomb, "rejected", "larger than")
    # Unsigned, and signed by a key that is not a member's.
    _, data = await outsider.inline_mail(list_address, list_fpr, text("unsigned").encode())
    add("unsigned-inline", data, "rejected", "not signed")
    _, data = await outsider.compose(list_address, list_fpr, "u", text("u"), fmt="pgp-mime-nosig")
    add("unsigned-pgp-mime", data, "rejected", "not signed")
    for fmt in ("inline", "pgp-mime", "pgp-mime-layered"):
        _, data = await outsider.compose(list_address, list_fpr, "n", text("nm"), fmt=fmt)
        add(f"non-member-{fmt}", data, "rejected", "does not verify")
    # A signature over other text.
    entity = await alice.signed_entity(list_address, "s", text("over-other"))
    other = await alice.signed_entity(list_address, "s", "something else entirely")
    sig = re.compile(rb"-----BEGIN PGP SIGNATURE-----.*?-----END PGP SIGNATURE-----", re.S)
    other_sig = sig.search(other)
    assert other_sig is not None
    swapped = sig.sub(lambda _: other_sig.group(0), entity)
    _, data = await outsider.encrypted_mail(list_address, list_fpr, swapped, sender=a_from)
    add("signature-over-other-text", data, "rejected", "does not verify")
    signed = await alice.clearsign(b"the original words\n")
    changed = signed.replace(b"the original words", text("changed").strip().encode())
    _, data = await outsider.inline_mail(list_address, list_fpr, changed, sender=a_from)
    add("clearsigned-text-changed", data, "rejected", "does not verify")
    # Two signatures (Alice and Bob's keys in one home).
    both = Path(tempfile.mkdtemp(prefix="gh"))
    try:
        for op in (alice, bob):
            await _gpg(
                both,
                "--import",
                data=(
                    await _gpg(op.keyring.home, "--export-secret-keys", op.fingerprint, data=b"")
                ),
            )
        await _gpg(
            both, "--import", data=(await _gpg(alice.keyring.home, "--export", list_fpr, data=b""))
        )
        two = ["--local-user", alice.fingerprint, "--local-user", bob.fingerprint]
        combined = await _gpg(
            both,
            "--armor",
            "--sign",
            "--encrypt",
            *two,
            "--recipient",
            list_fpr,
            data=text("two-combined").encode(),
        )
        _, shell = await alice.compose(list_address, list_fpr, "x", "x", fmt="inline")
        before, _, after = _armor_of(shell)
        add(
            "two-signatures-inline",
            before + combined.strip() + after,
            "rejected",
            "more than one signature",
        )
        clear = await _gpg(both, "--clearsign", *two, data=text("two-clear").encode())
        _, data = await outsider.inline_mail(list_address, list_fpr, clear, sender=a_from)
        add("two-signatures-clearsigned", data, "rejected", "more than one signature")
        entity_two = (
            b"Content-Type: text/plain\r\nTo: "
            + list_address.encode()
            + b"\r\n\r\n"
            + text("two-mime").encode()
        )
        armored = await _gpg(
            both, "--armor", "--sign", "--encrypt", *two, "--recipient", list_fpr, data=entity_two
        )
        _, shell = await alice.compose(list_address, list_fpr, "x", "x")
        before, _, after = _armor_of(shell)
        add(
            "two-signatures-pgp-mime",
            before + armored.strip() + after,
            "rejected",
            "more than one signature",
        )
        # An opaque signed message inside the encryption (not a clear-signed text).
        opaque = await _gpg(
            alice.keyring.home,
            "--armor",
            "--sign",
            "--local-user",
            alice.fingerprint,
            data=text("opaque").encode(),
        )
        _, data = await outsider.inline_mail(list_address, list_fpr, opaque, sender=a_from)
        add("opaque-signed-inside", data, "rejected", "not exactly one clear-signed text")
        # A signature dated two hours ahead.
        future = await _gpg(
            alice.keyring.home,
            "--faked-system-time",
            f"{int(time.time()) + 7200}!",
            "--armor",
            "--sign",
            "--encrypt",
            "--local-user",
            alice.fingerprint,
            "--recipient",
            list_fpr,
            data=text("future").encode(),
        )
        _, shell = await alice.compose(list_address, list_fpr, "x", "x", fmt="inline")
        before, _, after = _armor_of(shell)
        add("future-dated", before + future.strip() + after, "rejected", "in the future")
    finally:
        await asyncio.to_thread(
            subprocess.run, ["gpgconf", "--homedir", str(both), "--kill", "all"], check=False
        )
        shutil.rmtree(both, ignore_errors=True)
    # A signed From of another member; F1, F2 and partial signing.
    _, data = await alice.compose(
        list_address,
        list_fpr,
        "f",
        text("inner-from"),
        inner_headers={"From": f"{bob.name} <{bob.address}>"},
    )
    add("inner-from-other-member", data, "rejected", "signed From address belongs to another")
    for n, head in enumerate(
        (
            b"-----BEGIN PGP SIGNED MESSAGE-----X",
            b"\t-----BEGIN PGP SIGNED MESSAGE-----",
            b"Dear all,",
        )
    ):
        genuine = await alice.clearsign(f"genuine statement {n}\n".encode())
        forged = head + b"\nHash: SHA256\n\n" + text(f"f1-{n}").encode() + b"\n" + genuine
        _, data = await outsider.inline_mail(list_address, list_fpr, forged, sender=a_from)
        add(f"f1-shape-{n}", data, "rejected", "not exactly one clear-signed text")
    entity = await alice.signed_entity("someone@elsewhere.test", "fwd", text("f2"))
    _, data = await outsider.encrypted_mail(list_address, list_fpr, entity, sender=a_from)
    add("f2-forward", data, "rejected", "addressed to others")
    partial = (
        b'Content-Type: multipart/mixed; boundary="ps"\r\n\r\n--ps\r\n'
        + await alice.signed_entity(list_address, "p", "signed part")
        + b"\r\n--ps\r\nContent-Type: text/plain\r\n\r\n"
        + text("partial").encode()
        + b"\r\n--ps--\r\n"
    )
    _, data = await outsider.encrypted_mail(list_address, list_fpr, partial, sender=a_from)
    add("partial-signing", data, "rejected", "not signed")
    # Text outside a genuine armor; a list command; no text; replays; a loop.
    _, good = await alice.compose(list_address, list_fpr, "o", text("outside"), fmt="inline")
    add(
        "genuine-armor-text-after",
        good.rstrip() + b"\n\n" + text("ps").encode(),
        "rejected",
        "outside the encrypted block",
    )
    _, data = await alice.compose(list_address, list_fpr, "help", "help")
    # A bare command word is run as that command and answered by mail, never posted.
    add("command-help", data, "command", "commands answered")
    _, data = await alice.compose(list_address, list_fpr, "empty", "", fmt="inline")
    add("no-text", data, "rejected", "no readable text")
    add("replay", relayed, "rejected", "received before")
    add(
        "replay-new-subject",
        relayed.replace(b"Subject: ...", b"Subject: URGENT", 1),
        "rejected",
        "received before",
    )
    add("loop-list-copy", list_copy, "dropped", "own mail")
    return cases
