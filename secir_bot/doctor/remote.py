"""doctor's checks over the network: the homeserver and both rooms, IMAP, SMTP, TLS.

The Matrix checks use the client-server API directly with the bot's stored access token
(``whoami``, ``joined_rooms``, two state events per room): read-only requests, and no
second Matrix client on the bot's crypto store.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from secir_bot.bridges.email import IMAP_FIXES, SMTP_FIXES
from secir_bot.bridges.email.conn import (
    Diagnosis,
    certificate_expiry,
    probe_imap,
    probe_smtp,
)
from secir_bot.config import Config, is_loopback
from secir_bot.doctor.base import Check, fail, ok, warn

CERT_WARN_DAYS = 14
HTTP_TIMEOUT = 30.0


def _plain(area: str, where: str, host: str) -> Check:
    if is_loopback(host):
        return ok(area, f"{where}: no TLS, which is fine on this machine")
    return warn(
        area,
        f"{where}: no TLS: passwords and mail cross the network in clear",
        f"set {area}.security to TLS (see config.example.toml)",
    )


def _certificate(area: str, where: str, expires: datetime | None) -> Check:
    if expires is None:
        return ok(area, f"{where}: TLS certificate trusted")
    days = (expires - datetime.now(UTC)).days
    if days < CERT_WARN_DAYS:
        return warn(
            area,
            f"{where}: the TLS certificate expires on {expires:%Y-%m-%d} (in {days} days)",
            "renew the server's certificate",
        )
    return ok(area, f"{where}: TLS certificate trusted, valid until {expires:%Y-%m-%d}")


def _failure(area: str, where: str, problem: Diagnosis, fixes: dict[str, str]) -> Check:
    fix = fixes.get(problem.kind, "check the host and port, and that the server is up")
    # The bridge's texts start with what the running bot cannot do; doctor needs the fix.
    return fail(area, f"{where}: {problem.text}", fix.split(". ", 1)[-1])


async def imap(config: Config) -> list[Check]:
    cfg = config.imap
    where = f"{cfg.host}:{cfg.port}"
    probe = await probe_imap(cfg, await asyncio.to_thread(cfg.password.read))
    if probe.failure is not None:
        return [_failure("imap", where, probe.failure, IMAP_FIXES)]
    out = [
        _plain("imap", where, cfg.host)
        if cfg.security == "plain"
        else _certificate("imap", where, probe.cert_expires)
    ]
    if not probe.folders.get(cfg.mailbox):
        out.append(
            fail("imap", f"logged in as {cfg.username}, but there is no folder {cfg.mailbox!r}",
                 "set imap.mailbox to the list's mailbox")
        )  # fmt: skip
    missing = [f for f in (cfg.processed_folder, cfg.quarantine_folder) if not probe.folders[f]]
    if missing:
        out.append(
            warn(
                "imap",
                f"folder(s) {', '.join(map(repr, missing))} do not exist yet",
                "the bot creates them when it starts (some servers need a prefix, 'INBOX.')",
            )
        )
    if probe.folders.get(cfg.mailbox) and not missing:
        out.append(ok("imap", f"logged in as {cfg.username}; {', '.join(probe.folders)} exist"))
    return out


async def smtp(config: Config) -> list[Check]:
    cfg = config.smtp
    where = f"{cfg.host}:{cfg.port}"
    password = await asyncio.to_thread(cfg.password.read) if cfg.username else None
    probe = await probe_smtp(cfg, password)
    if probe.failure is not None:
        return [_failure("smtp", where, probe.failure, SMTP_FIXES)]
    login = f"AUTH as {cfg.username} accepted" if probe.logged_in else "no login configured"
    return [
        _plain("smtp", where, cfg.host)
        if cfg.security == "plain"
        else _certificate("smtp", where, probe.cert_expires),
        ok("smtp", f"the server greets the bot ({cfg.security}); {login}; no mail was sent"),
    ]


async def matrix(config: Config) -> list[Check]:
    creds_path = config.store_path / "matrix" / "credentials.json"
    if not creds_path.exists():
        return []  # reported with the store
    creds = json.loads(await asyncio.to_thread(creds_path.read_text, encoding="utf-8"))
    base = config.matrix.homeserver.rstrip("/")
    headers = {"Authorization": f"Bearer {creds['access_token']}"}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
        try:
            async with http.get(f"{base}/_matrix/client/versions") as resp:
                transport = resp.connection.transport if resp.connection else None
                expires = certificate_expiry(transport)
                reachable = resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return [_unreachable(base, exc)]
        if not reachable:
            return [fail("matrix", f"{base} does not answer as a Matrix homeserver",
                         "check matrix.homeserver (the client-server API's base URL)")]  # fmt: skip
        host = urlsplit(base).hostname or ""
        out = [
            _certificate("matrix", base, expires)
            if base.startswith("https")
            else _plain("matrix", base, host)
        ]
        status, who = await _get(http, f"{base}/_matrix/client/v3/account/whoami")
        if status != 200 or who.get("user_id") != config.matrix.user_id:
            out.append(
                fail(
                    "matrix",
                    f"the bot's access token is refused ({status} {who.get('errcode', '')})",
                    "the device was logged out: register a new one (admin manual 4.1)",
                )
            )
            return out
        out.append(ok("matrix", f"logged in as {who['user_id']}, device {creds['device_id']}"))
        _, joined = await _get(http, f"{base}/_matrix/client/v3/joined_rooms")
        rooms = {
            "incident room": config.matrix.incident_room,
            "control room": config.matrix.control_room,
        }
        in_rooms = joined.get("joined_rooms")
        in_rooms = set(in_rooms) if isinstance(in_rooms, list) else set()
        invited = await _invited(http, base, set(rooms.values()) - in_rooms)
        for role, room in rooms.items():
            if room in in_rooms:
                out.append(await _room(http, base, config, role, room))
            elif room in invited:
                out.append(
                    warn(
                        "matrix",
                        f"{role} {room}: the bot is invited and joins when it runs",
                        "start the bot, then run doctor again to check the room",
                    )
                )
            else:
                out.append(
                    fail(
                        "matrix",
                        f"{role} {room}: the bot is neither in the room nor invited",
                        f"invite {config.matrix.user_id} (admin manual 5)",
                    )
                )
    return out


async def _invited(http: aiohttp.ClientSession, base: str, rooms: set[str]) -> set[str]:
    """Which of ``rooms`` the bot is invited to: one sync that returns nothing else.

    The bot keeps its own sync position, and to-device messages are only discarded once a
    later sync acknowledges them, so this sync changes nothing for the running bot.
    """
    if not rooms:
        return set()
    nothing: dict[str, Any] = {"types": []}
    only_invites = {
        "presence": nothing,
        "account_data": nothing,
        "room": {
            "rooms": sorted(rooms),
            "timeline": {"limit": 0},
            "state": nothing,
            "ephemeral": nothing,
            "account_data": nothing,
        },
    }
    query = quote(json.dumps(only_invites), safe="")
    status, body = await _get(http, f"{base}/_matrix/client/v3/sync?timeout=0&filter={query}")
    invites = body.get("rooms", {}).get("invite", {}) if status == 200 else {}
    return {room for room in rooms if room in invites}


def _unreachable(base: str, exc: BaseException) -> Check:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return fail(
            "matrix",
            f"{base}: the homeserver's TLS certificate is not trusted ({exc})",
            "install its CA in the system's trust store (or SSL_CERT_FILE)",
        )
    return fail(
        "matrix",
        f"cannot reach {base}: {type(exc).__name__}: {exc}",
        "check matrix.homeserver and that the homeserver is up",
    )


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as resp:
        try:
            body = await resp.json()
        except (aiohttp.ContentTypeError, json.JSONDecodeError):
            body = {}
        return resp.status, body if isinstance(body, dict) else {}


async def _room(
    http: aiohttp.ClientSession, base: str, config: Config, role: str, room: str
) -> Check:
    """A room the bot is in: encrypted, and the bot allowed to do its work there."""
    state = f"{base}/_matrix/client/v3/rooms/{quote(room, safe='')}/state"
    status, _ = await _get(http, f"{state}/m.room.encryption/")
    if status != 200:
        return fail(
            "matrix",
            f"{role} {room} is not encrypted: the bot will not post or relay there",
            "turn encryption on in the room's settings (admin manual 5)",
        )
    _, levels = await _get(http, f"{state}/m.room.power_levels/")
    level = int(levels.get("users", {}).get(config.matrix.user_id, levels.get("users_default", 0)))
    events = levels.get("events", {})
    post = int(events.get("m.room.message", levels.get("events_default", 0)))
    if level < post:
        return fail(
            "matrix",
            f"{role} {room}: the bot (power level {level}) may not post (needs {post})",
            f"raise {config.matrix.user_id}'s power level in the room",
        )
    if role == "incident room":
        short = [
            name
            for name, default in (("invite", 0), ("kick", 50))
            if level < int(levels.get(name, default))
        ]
        if short:
            return warn(
                "matrix",
                f"{role} {room}: encrypted; the bot (power level {level}) may post but not "
                f"{' or '.join(short)}: membership commands will fail",
                f"make {config.matrix.user_id} a moderator (power level 50) in the room",
            )
    return ok("matrix", f"{role} {room}: joined, encrypted, the bot (level {level}) may post")
