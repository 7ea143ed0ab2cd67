"""Generated members: their keys, made in one gpg batch call, and the admin's import file.

Every member's secret key stays in one benchmark GnuPG home (``KeyWorld``): the benchmark
signs the mails members send with it and decrypts what the list sends them. The bot only
ever sees the public keys, through ``secir-bot member import`` as an admin would give them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "test.example"  # the only domain the test Postfix accepts
# Real ccTLDs (the roster refuses unknown ones); members share them freely.
TLDS = ("nl", "br", "jp", "de", "fr", "za", "ke", "cl", "nz", "in", "se", "ee", "cz", "pl")
KEY_KINDS = ("ed25519", "rsa3072")


@dataclass(frozen=True)
class Person:
    """One generated member (or the two Matrix-only members who post and read)."""

    handle: str  # "m0007", "poster", "reader"
    email: str
    name: str
    tld: str
    fingerprint: str = ""
    key_file: Path | None = None
    matrix_id: str | None = None

    @property
    def channels(self) -> str:
        return "matrix" if self.matrix_id else "email"


def email_members(count: int) -> list[Person]:
    """The first ``count`` email-only members, always the same for a given index."""
    return [
        Person(f"m{i:04d}", f"m{i:04d}@{DOMAIN}", f"Member {i:04d}", TLDS[i % len(TLDS)])
        for i in range(count)
    ]


def _parameters(person: Person, kind: str) -> str:
    if kind == "rsa3072":
        algorithm = [
            "Key-Type: RSA",
            "Key-Length: 3072",
            "Key-Usage: sign",
            "Subkey-Type: RSA",
            "Subkey-Length: 3072",
            "Subkey-Usage: encrypt",
        ]
    else:
        algorithm = [
            "Key-Type: eddsa",
            "Key-Curve: ed25519",
            "Key-Usage: sign",
            "Subkey-Type: ecdh",
            "Subkey-Curve: cv25519",
            "Subkey-Usage: encrypt",
        ]
    lines = [
        "%no-protection",
        *algorithm,
        f"Name-Real: {person.name}",
        f"Name-Email: {person.email}",
        "Expire-Date: 0",
        "%commit",
    ]
    return "\n".join(lines) + "\n"


class KeyWorld:
    """A GnuPG home with every generated member's secret key."""

    def __init__(self, home: Path, kind: str) -> None:
        if kind not in KEY_KINDS:
            raise ValueError(f"key kind must be one of {KEY_KINDS}")
        self.home = home
        self.kind = kind
        self._fingerprints: dict[str, str] = {}
        home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def gpg(self, *args: str, data: bytes | None = None) -> bytes:
        command = ["gpg", "--homedir", str(self.home), "--batch", "--yes", *args]
        result = subprocess.run(command, input=data, capture_output=True, check=False)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(command[:6])} failed:\n{stderr}")
        return result.stdout

    def generate(self, people: list[Person]) -> float:
        """Make a key for each of ``people`` in one gpg call; return the seconds it took."""
        new = [p for p in people if p.email not in self._fingerprints]
        if not new:
            return 0.0
        start = time.perf_counter()
        self.gpg("--gen-key", data="".join(_parameters(p, self.kind) for p in new).encode())
        elapsed = time.perf_counter() - start
        self._read_fingerprints()
        missing = [p.email for p in new if p.email not in self._fingerprints]
        if missing:
            raise RuntimeError(f"gpg made no key for {missing[:5]}")
        return elapsed

    def _read_fingerprints(self) -> None:
        listing = self.gpg("--with-colons", "--list-keys").decode()
        fingerprint = ""
        previous = ""
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] == "fpr" and previous == "pub":
                fingerprint = fields[9]
            elif fields[0] == "uid" and fingerprint:
                address = fields[9].rpartition("<")[2].rstrip(">").lower()
                self._fingerprints[address] = fingerprint
            previous = fields[0]

    def fingerprint(self, email: str) -> str:
        return self._fingerprints[email.lower()]

    def import_public(self, armored: str) -> None:
        self.gpg("--import", data=armored.encode())

    def export(self, people: list[Person], directory: Path) -> list[Person]:
        """Write each person's public key to ``directory``; return them with key and fpr."""
        directory.mkdir(parents=True, exist_ok=True)

        def one(person: Person) -> Person:
            fpr = self.fingerprint(person.email)
            path = directory / f"{person.handle}.asc"
            if not path.exists():
                path.write_bytes(self.gpg("--armor", "--export", fpr))
            return Person(
                person.handle,
                person.email,
                person.name,
                person.tld,
                fpr,
                path,
                person.matrix_id,
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, people))

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "all"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)


def write_import_file(people: list[Person], path: Path) -> Path:
    """The TOML file an admin gives ``secir-bot member import`` (``[[member]]`` tables)."""
    lines: list[str] = []
    for person in people:
        assert person.key_file is not None
        lines += [
            "[[member]]",
            f"tld = {json.dumps('.' + person.tld)}",
            f"name = {json.dumps(person.name)}",
            f"email = {json.dumps(person.email)}",
            f"key = {json.dumps(str(person.key_file))}",
            f"channels = {json.dumps(person.channels)}",
        ]
        if person.matrix_id:
            lines.append(f"matrix_id = {json.dumps(person.matrix_id)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
