"""Sending mail: the outbox's email deliveries over SMTP.

Each delivery takes a session (TLS and login as configured, in ``conn``), or
``smtp.connections`` of them, from a pool that keeps them open for ``smtp.keep_open``
seconds after a delivery (``smtppool``: the rows of one post share a session), and sends
the row's bytes, exactly as rendered at decision time, in batches of at most
``smtp.max_recipients``, with the RCPTs pipelined (``smtpsend``). Recipients already
accepted (``row.done``) are skipped on a retry, so a member never gets the same mail twice;
a recipient the server defers is retried, one it refuses for good is named in the
``Receipt``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import aiosmtplib

from secir_bot.bridges import Receipt
from secir_bot.bridges.email.conn import diagnose, open_smtp
from secir_bot.bridges.email.smtppool import SessionPool
from secir_bot.bridges.email.smtpsend import send as smtp_send
from secir_bot.config import Config
from secir_bot.errors import PermanentDeliveryError, TransientDeliveryError
from secir_bot.health import Health, Link
from secir_bot.store import OutboxRow, Store

SMTP_FIXES = {
    "login": "No list mail is being sent; it waits in the outbox. Fix smtp.username or the "
    "SMTP password (smtp.password_file or smtp.password_env).",
    "tls": "No list mail is being sent; it waits in the outbox. The bot never skips "
    "certificate checks; fix the trust (smtp.ca_file, the system's CA store or "
    "SSL_CERT_FILE) or the server's certificate.",
}


class SmtpSender:
    """The outbox's side of the email bridge."""

    def __init__(self, config: Config, store: Store, health: Health) -> None:
        self.config = config
        self.store = store
        self.health = health
        self.sessions = SessionPool(
            self._smtp_session, keep=config.smtp.connections, idle=config.smtp.keep_open
        )

    async def close(self) -> None:
        """Quit the sessions kept open (at shutdown)."""
        await self.sessions.close()

    async def _smtp_session(self) -> aiosmtplib.SMTP:
        """A logged-in SMTP session; a failure is told to ``health`` and retried later.

        A refused greeting or login (say, after a password change) is about the server, not
        the message: the delivery is retried, and the dead-letter deadline still applies.
        """
        cfg = self.config.smtp
        try:
            password = await asyncio.to_thread(cfg.password.read) if cfg.username else None
            smtp = await open_smtp(cfg, password)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            problem = diagnose(exc)
            if problem.needs_admin:
                self.health.fault(Link.SMTP, problem.text, SMTP_FIXES[problem.kind])
            else:
                self.health.down(Link.SMTP, problem.text)
            raise TransientDeliveryError(f"SMTP session: {problem.text}") from exc
        self.health.up(Link.SMTP)
        return smtp

    async def deliver(self, row: OutboxRow) -> Receipt:
        cfg = self.config.smtp
        pending = [r for r in row.recipients if r not in row.done]
        if not pending:
            return Receipt("nothing left to send")
        done = list(row.done)
        refused: list[str] = []
        later: list[str] = []

        async def batch_done(
            batch: Sequence[str], errors: Mapping[str, aiosmtplib.SMTPResponse]
        ) -> None:
            for addr, resp in errors.items():
                if resp.code >= 500:
                    refused.append(f"{addr} ({resp.code} {resp.message})")
                else:
                    later.append(addr)
            done.extend(a for a in batch if a not in later)
            self.store.outbox.partly_delivered(row.id, tuple(done))
            await self.store.durable()  # before the next batch: never sent to them again

        try:
            # One connection (or smtp.connections) for every batch, RCPTs pipelined.
            await smtp_send(
                self.sessions,
                self.config.list.address,
                pending,
                row.payload,
                batch_done,
                max_recipients=cfg.max_recipients,
                connections=cfg.connections,
                pipelining=cfg.pipelining,
                reply_timeout=cfg.timeout,
            )
        except aiosmtplib.SMTPResponseException as exc:
            error = PermanentDeliveryError if exc.code >= 500 else TransientDeliveryError
            raise error(f"SMTP {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientDeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from exc
        if later:
            # Keep what went through; retry only those the server asked to try later.
            raise TransientDeliveryError("deferred by the server: " + ", ".join(later))
        if refused and len(refused) == len(pending):
            raise PermanentDeliveryError("every recipient was refused: " + ", ".join(refused))
        return Receipt(f"sent to {len(done) - len(refused)} recipient(s)", refused=tuple(refused))
