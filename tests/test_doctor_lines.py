"""doctor's verdicts on what the servers showed: certificates near their end, plain links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from secir_bot.doctor import Status, report
from secir_bot.doctor.remote import _certificate, _plain


def test_a_certificate_ending_within_14_days_is_a_warning() -> None:
    soon = _certificate("imap", "mail.test:993", datetime.now(UTC) + timedelta(days=5))
    assert soon.status is Status.WARN and "expires on" in soon.text and soon.fix
    later = _certificate("imap", "mail.test:993", datetime.now(UTC) + timedelta(days=90))
    assert later.status is Status.OK and "valid until" in later.text


def test_plain_links_are_fine_only_on_this_machine() -> None:
    assert _plain("smtp", "127.0.0.1:25", "127.0.0.1").status is Status.OK
    remote = _plain("smtp", "mail.test:25", "mail.test")
    assert remote.status is Status.WARN and "smtp.security" in remote.fix


def test_the_exit_code_counts_problems_not_warnings() -> None:
    warning = _plain("smtp", "mail.test:25", "mail.test")
    text, code = report([warning])
    assert code == 0 and text.endswith("0 problem(s), 1 warning(s)")
    assert text.splitlines()[0].startswith("warn  smtp    mail.test:25: no TLS")
