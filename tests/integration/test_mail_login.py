"""A refused IMAP or SMTP login is named, told to the admins once, and retried.

The bot's password file is made wrong before it starts, then corrected while it runs: the
bot picks the corrected file up by itself and says that the link works again.
"""

from __future__ import annotations

import pytest
from servers import MailStack, TestCA

from secir_bot.model import Channel
from secir_bot.sandbox.operators import wait_until
from secir_bot.sandbox.world import World, notices


def _attempts_logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """The IMAP reader's log lines (one per attempt) that contain ``text``."""
    return sum(
        r.name == "secir_bot.bridges.email" and text in r.getMessage() for r in caplog.records
    )


async def test_f6_a_refused_imap_login_is_named_once_and_retried(
    world_unstarted: World, mail_stack: MailStack, caplog: pytest.LogCaptureFixture
) -> None:
    world = world_unstarted
    await world.setup()
    password_file = world.directory / "secrets" / "imap-password"
    password_file.write_text("not-the-password\n")
    app = await world.start_bot(mail=False)
    assert world.admin is not None
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "refused the login" in e.body, timeout=30
    )
    assert notice.body.startswith(f"IMAP (127.0.0.1:{mail_stack.imap_port}): the server ")
    assert f"refused the login of {world.list_address}" in notice.body
    assert "imap.password_file" in notice.body
    # Every attempt is logged as what it is, not as a "connection problem". (Dovecot
    # answers each failed login of an address later than the one before, up to 15 s.)
    await wait_until(
        lambda: _attempts_logged(caplog, "refused the login of") >= 3, 60, "three attempts"
    )
    assert world.app_task is not None and not world.app_task.done()
    assert sum("refused the login" in body for body in await notices(world)) == 1

    password_file.write_text("pw-list\n")  # the admin's fix; no restart
    await wait_until(app.email.connected.is_set, 60, "the bot logging in")
    await world.admin.wait_for_event(
        lambda e: (
            e.room_id == world.control_room
            and e.body.startswith("IMAP (")
            and "works again" in e.body
        )
    )
    await world.mail["bob"].send(world.list_address, world.list_fpr, "s", "LOGIN-FIXED-7101")
    event = await world.mx["carol"].wait_for_event(lambda e: "LOGIN-FIXED-7101" in e.body)
    assert event.decrypted


async def test_f6_a_refused_smtp_login_is_named_once_and_retried(
    world_unstarted: World, mail_stack: MailStack, test_ca: TestCA
) -> None:
    world = world_unstarted
    password_file = world.directory / "secrets" / "smtp-password"
    password_file.parent.mkdir(parents=True, mode=0o700)
    password_file.write_text("not-the-password\n")
    await world.setup(
        smtp_security="starttls",
        smtp_port=mail_stack.submission_port,
        smtp_extra=(
            f'username = "{world.list_address}"\n'
            'password_file = "secrets/smtp-password"\n'
            f'ca_file = "{test_ca.ca}"'
        ),
    )
    app = await world.start_bot()
    assert world.admin is not None
    await world.mx["alice"].send(world.incident_room, "SMTP-LOGIN-7102")
    notice = await world.admin.wait_for_event(
        lambda e: e.room_id == world.control_room and "refused the login" in e.body, timeout=30
    )
    assert notice.body.startswith(f"SMTP (127.0.0.1:{mail_stack.submission_port}): ")
    assert "535" in notice.body and "smtp.password_file" in notice.body
    await wait_until(
        lambda: any(r.attempts >= 3 for r in app.store.outbox.pending(Channel.EMAIL)),
        30,
        "three delivery attempts",
    )
    assert sum("refused the login" in body for body in await notices(world)) == 1

    password_file.write_text("pw-list\n")
    mail = await world.mail["bob"].wait_for_mail(lambda m: "SMTP-LOGIN-7102" in m.text, 30)
    assert mail.decrypted
    await world.admin.wait_for_event(
        lambda e: (
            e.room_id == world.control_room
            and e.body.startswith("SMTP (")
            and "works again" in e.body
        )
    )
