"""Looking up a ccTLD's administrative contact in IANA's root zone database, over whois.

The subscription procedure (D2) mails its invitation to the address IANA records for the
ccTLD, never to one offered by whoever asked. IANA publishes its records over whois
(RFC 3912: one query line, an answer, the server closes), by default at
``whois.iana.org`` port 43. The client here has a deadline for the whole exchange and a cap
on the answer's size; the parser knows IANA's answer format and is strict: every way an
answer can be unusable is its own error with a message for the admins::

    WhoisError
     ├── WhoisUnreachable    no connection (server down, name unknown)
     ├── WhoisTimeout        no complete answer before the deadline
     ├── WhoisTooLarge       the answer grew past the size cap
     ├── WhoisRefused        the server answered with only remarks (a rate limit, say)
     ├── WhoisGarbage        not text, or not an IANA record for the TLD asked about
     ├── WhoisNotFound       IANA has no record for the TLD
     └── WhoisNoAdminContact the record has no usable administrative e-mail address

An IANA record is a series of blocks separated by blank lines, each a list of
``key:   value`` lines; ``%`` lines are remarks. The blocks that matter here::

    domain:       NL
    organisation: SIDN (Stichting Internet Domeinregistratie Nederland)

    contact:      administrative
    name:         ...
    e-mail:       ...

    status:       ACTIVE
    source:       IANA
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from secir_bot import validate
from secir_bot.errors import SecirError

DEFAULT_HOST = "whois.iana.org"
DEFAULT_PORT = 43


class WhoisError(SecirError):
    """The whois lookup gave no usable answer; the message says why, for the admins."""


class WhoisUnreachable(WhoisError):
    pass


class WhoisTimeout(WhoisError):
    pass


class WhoisTooLarge(WhoisError):
    pass


class WhoisRefused(WhoisError):
    pass


class WhoisGarbage(WhoisError):
    pass


class WhoisNotFound(WhoisError):
    pass


class WhoisNoAdminContact(WhoisError):
    pass


@dataclass(frozen=True)
class WhoisServer:
    """Where and how patiently to ask."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    timeout: float = 15.0  # seconds for connect, query and the whole answer
    max_bytes: int = 64 * 1024  # IANA's records are a few kilobytes

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Contact:
    """One contact block of a record (administrative or technical)."""

    role: str
    name: str
    organisation: str
    email: str
    phone: str


@dataclass(frozen=True)
class IanaRecord:
    """What IANA says about one TLD, with the raw answer kept as evidence."""

    domain: str  # the A-label, lower case
    organisation: str  # the sponsoring organisation (the ccTLD manager)
    admin: Contact
    status: str  # "ACTIVE" for a delegated TLD
    whois_server: str
    changed: str
    raw: bytes

    @property
    def sha256(self) -> str:
        """The hash of the exact answer, for the audit log."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def delegated(self) -> bool:
        return self.status.upper() == "ACTIVE"


async def query(server: WhoisServer, text: str) -> bytes:
    """Send one query line and read the whole answer (RFC 3912), within the deadline."""
    if not text or any(c in text for c in "\r\n") or not text.isascii():
        raise ValueError(f"not a whois query: {text!r}")  # our bug, not the server's
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(server.timeout):
            try:
                reader, writer = await asyncio.open_connection(server.host, server.port)
            except OSError as exc:
                raise WhoisUnreachable(
                    f"cannot reach the whois server {server.name}: {exc.strerror or exc}"
                ) from None
            writer.write(text.encode("ascii") + b"\r\n")
            await writer.drain()
            chunks: list[bytes] = []
            size = 0
            while chunk := await reader.read(4096):
                size += len(chunk)
                if size > server.max_bytes:
                    raise WhoisTooLarge(
                        f"the whois server {server.name} sent more than {server.max_bytes} bytes"
                    )
                chunks.append(chunk)
            return b"".join(chunks)
    except TimeoutError:
        raise WhoisTimeout(
            f"the whois server {server.name} did not answer within {server.timeout:g} s"
        ) from None
    except (ConnectionError, OSError) as exc:
        raise WhoisUnreachable(f"the whois server {server.name} broke off: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


def _blocks(text: str) -> list[list[tuple[str, str]]]:
    """The ``key: value`` blocks of an answer; remarks and blank lines separate them."""
    blocks: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.startswith("%"):
            if blocks[-1]:
                blocks.append([])
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip() or " " in key.strip():
            raise WhoisGarbage(f"the whois answer has a line that is not 'key: value': {line!r}")
        blocks[-1].append((key.strip().lower(), value.strip()))
    return [b for b in blocks if b]


def _first(block: list[tuple[str, str]], key: str) -> str:
    return next((v for k, v in block if k == key), "")


def parse_iana(raw: bytes, asked: str) -> IanaRecord:
    """Read IANA's answer about the TLD ``asked`` (an A-label); raise a ``WhoisError``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise WhoisGarbage("the whois answer is not text (not UTF-8)") from None
    if any(ord(c) < 32 and c not in "\r\n\t" for c in text):
        raise WhoisGarbage("the whois answer contains control characters")
    remarks = [line.lstrip("% ").strip() for line in text.splitlines() if line.startswith("%")]
    if any("returned 0 objects" in r for r in remarks):
        raise WhoisNotFound(f"IANA has no record for .{asked}")
    blocks = _blocks(text)
    if not blocks:
        said = next((r for r in remarks if r and "IANA" not in r), "")
        raise WhoisRefused(
            f"the whois server gave no record{': ' + said if said else ' (empty answer)'}"
        )
    fields = {k: v for block in reversed(blocks) for k, v in reversed(block)}
    at = next((i for i, b in enumerate(blocks) if _first(b, "domain")), None)
    if at is None:
        raise WhoisGarbage("the whois answer is not an IANA record (no domain: line)")
    domain = _first(blocks[at], "domain").lower()
    if domain != asked.lower():
        raise WhoisGarbage(f"the whois answer is about .{domain}, not .{asked}")
    if fields.get("source", "").upper() != "IANA":
        raise WhoisGarbage("the whois answer is not an IANA record (no 'source: IANA')")
    status = fields.get("status", "")
    if not status:
        raise WhoisGarbage("the IANA record has no status line")
    admin_block = next(
        (b for b in blocks if _first(b, "contact").lower() == "administrative"), None
    )
    if admin_block is None:
        raise WhoisNoAdminContact(f"IANA's record for .{asked} has no administrative contact")
    address = _first(admin_block, "e-mail")
    if not address:
        raise WhoisNoAdminContact(
            f"IANA's record for .{asked} gives no e-mail address for the administrative contact"
        )
    try:
        address = validate.email(address)
    except validate.Invalid as exc:
        raise WhoisNoAdminContact(
            f"IANA's administrative contact for .{asked} is not a usable address: {exc}"
        ) from None
    # The sponsoring organisation: in the domain's block or the block right after it.
    follower = blocks[at + 1] if at + 1 < len(blocks) else []
    if _first(follower, "contact"):
        follower = []
    organisation = _first(blocks[at], "organisation") or _first(follower, "organisation")
    return IanaRecord(
        domain=domain,
        organisation=organisation or _first(admin_block, "organisation"),
        admin=Contact(
            role="administrative",
            name=_first(admin_block, "name"),
            organisation=_first(admin_block, "organisation"),
            email=address,
            phone=_first(admin_block, "phone"),
        ),
        status=status.upper(),
        whois_server=fields.get("whois", ""),
        changed=fields.get("changed", ""),
        raw=raw,
    )


async def admin_contact(server: WhoisServer, a_label: str) -> IanaRecord:
    """Ask ``server`` about the TLD ``a_label`` and return IANA's record for it."""
    return parse_iana(await query(server, a_label), a_label)
