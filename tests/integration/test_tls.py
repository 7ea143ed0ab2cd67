"""TLS on every mail transport, end to end, with the certificate checked.

The session's mail stack presents a certificate from a throwaway CA (``test_ca``). The bot
reads the list's mail over IMAPS and sends over SMTPS or STARTTLS, trusting that CA through
the standard mechanism (``SSL_CERT_FILE``, as an operator would install it in the system
store) or through the config's ``ca_file``.
"""

from __future__ import annotations

import pytest
from servers import MailStack, TestCA

from secir_bot.model import Channel
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World, notices


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


async def _start_over_tls(world: World, stack: MailStack, smtp_security: str, **extra: str) -> None:
    """The bot started reading over IMAPS and sending over ``smtp_security``: "tls" (SMTPS)
    or "starttls" (submission); ``extra``, the ``imap_extra``/``smtp_extra`` settings."""
    await world.setup(
        imap_security="tls",
        imap_port=stack.imaps_port,
        smtp_security=smtp_security,
        smtp_port=stack.smtps_port if smtp_security == "tls" else stack.submission_port,
        **extra,
    )
    await world.start_bot()


async def test_f6_imaps_in_and_smtps_out_trusting_the_system_store(
    world_unstarted: World,
    mail_stack: MailStack,
    test_ca: TestCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = world_unstarted
    # How an operator trusts a private CA without any setting of ours.
    monkeypatch.setenv("SSL_CERT_FILE", str(test_ca.ca))
    await _start_over_tls(world, mail_stack, "tls")
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
    await _start_over_tls(world, mail_stack, "starttls")
    await _round_trip(world, "STARTTLS-7002")
    assert "postfix/submission" in _log(mail_stack, "postfix")
    assert _tls_sessions(mail_stack, "submission")


async def test_f6_ca_file_settings_trust_a_private_ca(
    world_unstarted: World,
    mail_stack: MailStack,
    test_ca: TestCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = world_unstarted
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # nothing but the config's ca_file
    ca_file = f'ca_file = "{test_ca.ca}"'
    await _start_over_tls(world, mail_stack, "starttls", imap_extra=ca_file, smtp_extra=ca_file)
    await _round_trip(world, "CAFILE-7003")


async def test_f6_an_untrusted_imap_certificate_is_named_once_and_the_bot_stays_up(
    world_unstarted: World,
    mail_stack: MailStack,
    wrong_ca: TestCA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = world_unstarted
    await world.setup(
        imap_security="tls",
        imap_port=mail_stack.imaps_port,
        imap_extra=f'ca_file = "{wrong_ca.ca}"',
    )
    app = await world.start_bot(mail=False)
    assert world.admin is not None
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "certificate" in e.body, timeout=30
    )
    assert notice.body.startswith(f"IMAP (127.0.0.1:{mail_stack.imaps_port})")
    assert "not trusted (unable to get local issuer certificate)" in notice.body
    assert "imap.ca_file" in notice.body
    # Named in the log too, at every attempt, while the bot keeps trying.
    await wait_until(
        lambda: sum("not trusted" in r.getMessage() for r in caplog.records) >= 3,
        30,
        "three attempts",
    )
    assert any(r.levelname == "ERROR" and "not trusted" in r.getMessage() for r in caplog.records)
    assert not app.email.connected.is_set()
    assert world.app_task is not None and not world.app_task.done()
    # One notice, not one per attempt.
    assert sum("certificate" in body for body in await notices(world)) == 1


async def test_f6_an_untrusted_smtp_certificate_is_named_once(
    world_unstarted: World,
    mail_stack: MailStack,
    wrong_ca: TestCA,
) -> None:
    world = world_unstarted
    await world.setup(
        smtp_security="tls",
        smtp_port=mail_stack.smtps_port,
        smtp_extra=f'ca_file = "{wrong_ca.ca}"',
    )
    app = await world.start_bot()
    assert world.admin is not None
    await world.mx["alice"].send(world.incident_room, "NOT-SENT-7004")
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "certificate" in e.body, timeout=30
    )
    assert notice.body.startswith(f"SMTP (127.0.0.1:{mail_stack.smtps_port})")
    assert "not trusted" in notice.body and "smtp.ca_file" in notice.body
    # The post waits in the outbox and is retried, without a notice per retry.
    await wait_until(
        lambda: any(r.attempts >= 3 for r in app.store.outbox.pending(Channel.EMAIL)),
        30,
        "three delivery attempts",
    )
    assert sum("certificate" in body for body in await notices(world)) == 1
