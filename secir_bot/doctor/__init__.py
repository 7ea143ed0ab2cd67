"""``secir-bot doctor``: what ``check-config`` checks, and then everything it connects to.

One line per check, each a fact and, when something is wrong, the fix: the configuration's
warnings; the store (there, private) and the keyring (the list key usable, members' keys
not about to expire); the homeserver (reachable, the bot's login valid), both rooms (joined,
encrypted, the bot's power level); IMAP (login, folders) and SMTP (EHLO, TLS, AUTH; no mail
is sent); the TLS certificates of all three (trusted, not about to expire).

Nothing is changed anywhere: doctor creates no folder, joins no room, sends nothing.
It exits 1 when any check found a problem, 0 otherwise (warnings included).
"""

from __future__ import annotations

from secir_bot.config import Config
from secir_bot.doctor import local, remote
from secir_bot.doctor.base import Check, Status, fail, ok, warn

__all__ = ["Check", "Status", "examine", "fail", "ok", "report", "warn"]


async def examine(config: Config) -> list[Check]:
    """Every check, in the order an admin would fix things."""
    checks = [warn("config", w) for w in config.warnings] or [
        ok("config", f"{config.path} is valid")
    ]
    store, usable = local.store(config)
    checks += store
    if usable:
        checks += await local.keyring(config)
        checks += await remote.matrix(config)
    checks += await remote.imap(config)
    checks += await remote.smtp(config)
    return checks


def report(checks: list[Check]) -> tuple[str, int]:
    """The text to print and the exit code."""
    problems = sum(c.status is Status.FAIL for c in checks)
    warnings = sum(c.status is Status.WARN for c in checks)
    lines = [c.line() for c in checks]
    lines.append(f"{problems} problem(s), {warnings} warning(s)")
    return "\n".join(lines), 1 if problems else 0
