"""How a refused IMAP login is read: bad credentials, or a server that cannot check them now."""

from __future__ import annotations

import pytest

from secir_bot.bridges.email.conn import ImapLoginRefused, diagnose, login_failure


@pytest.mark.parametrize(
    "said",
    [
        # Dovecot's own words while its auth service is busy or restarting (seen under load).
        "[UNAVAILABLE] Temporary authentication failure. [vm:2026-12-02 21:05:45]",
        "[SERVERBUG] Internal error occurred. Refer to server log for more information.",
        "[INUSE] Mailbox is locked",
    ],
)
def test_a_temporary_refusal_is_not_a_wrong_password(said: str) -> None:
    failure = login_failure("list@nic.test", said)
    assert not isinstance(failure, ImapLoginRefused)
    assert diagnose(failure).kind == "network"


@pytest.mark.parametrize(
    "said", ["[AUTHENTICATIONFAILED] Authentication failed.", "Authentication failed."]
)
def test_a_refused_password_is_named_as_such(said: str) -> None:
    failure = login_failure("list@nic.test", said)
    assert isinstance(failure, ImapLoginRefused)
    assert diagnose(failure).kind == "login"
