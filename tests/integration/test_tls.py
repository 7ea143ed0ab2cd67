"""TLS on every mail transport, end to end, with the certificate checked.

The session's mail stack presents a certificate from a throwaway CA (``test_ca``). The bot
reads the list's mail over IMAPS and sends over SMTPS or STARTTLS, trusting that CA through
the standard mechanism (``SSL_CERT_FILE``, as an operator would install it in the system
store) or through the config's ``ca_file``.
"""

from __future__ import annotations

import pytest
from servers import MailStack, TestCA

from secir_bot.sandbox.world import World


def _log(stack: MailStack, server: str) -> str:
    return stack.postfix_log(10**7) if server == "postfix" else stack.dovecot_log(10**7)


def _tls_logins(stack: MailStack, user: str) -> list[str]:
    """Dovecot's login lines for ``user`` over TLS ("TLS" among the connection facts)."""
    return [
        line
        for line in _log(stack, "dovecot").splitlines()
        if "Login:" in line and f"user=<{user}>" in line and ", TLS" in line
    ]


def _tls_sessions(stack: MailStack, service: str) -> list[str]:
    """Postfix's lines for TLS sessions on one of its services (submission, smtps)."""
    return [
        line
        for line in _log(stack, "postfix").splitlines()
        if f"postfix/{service}/smtpd[" in line and "TLS connection established" in line
    ]


async def _round_trip(world: World, tag: str) -> None:
    """Mail in (IMAP) to the room, and a room post out (SMTP) to an email member."""
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", f"IN-{tag}")
    event = await world.mx["carol"].wait_for_event(lambda e: f"IN-{tag}" in e.body, timeout=30)
    assert event.decrypted
    await world.mx["alice"].send(world.incident_room, f"OUT-{tag}")
    mail = await world.mail["bob"].wait_for_mail(lambda m: f"OUT-{tag}" in m.text, timeout=30)
    assert mail.decrypted


async def test_f6_imaps_in_and_smtps_out_trusting_the_system_store(
    world_unstarted: World,
    mail_stack: MailStack,
    test_ca: TestCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = world_unstarted
    # How an operator trusts a private CA without any setting of ours.
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca))
    await world.setup(
        imap_security="tls",
        imap_port=mail_stack.imaps_port,
        smtp_security="tls",
        smtp_port=mail_stack.smtps_port,
    )
    await world.start_bot()
    await _round_trip(world, "TLS-7001")
    # Both went over TLS: the servers say so about the list's own sessions.
    assert _tls_logins(mail_stack, world.list_address)
    assert _tls_sessions(mail_stack, "smtps")


async def test_f6_starttls_out_trusting_the_system_store(
    world_unstarted: World,
    mail_stack: MailStack,
    test_ca: TestCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = world_unstarted
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca))
    await world.setup(
        imap_security="tls",
        imap_port=mail_stack.imaps_port,
        smtp_security="starttls",
        smtp_port=mail_stack.submission_port,
    )
    await world.start_bot()
    await _round_trip(world, "STARTTLS-7002")
    assert "postfix/submission" in _log(mail_stack, "postfix")
    assert _tls_sessions(mail_stack, "submission")
