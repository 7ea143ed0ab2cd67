"""The PGP/MIME body of the list's mail, written directly (``pgp_mime_body``), is what the
email package makes of the same armored text (``make_pgp_mime``), byte for byte but for
the random boundary."""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage

import pytest

from secir_bot.mime.compose import make_pgp_mime, pgp_mime_body

ARMOR = [
    b"-----BEGIN PGP MESSAGE-----\n\nhQEMA+abc/12==\n=ab12\n-----END PGP MESSAGE-----\n",
    b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n=ab12\r\n-----END PGP MESSAGE-----\r\n",
    b"-----BEGIN PGP MESSAGE-----\n\nhQEMA\n-----END PGP MESSAGE-----",  # no final line end
    b"mixed\rline\r\nends\n\n\nand blank lines\n",
    b"",
]
BOUNDARY = re.compile(rb"={15}\d{19}==")


def _by_the_email_package(armored: bytes) -> bytes:
    outer = EmailMessage(policy=email.policy.SMTP)
    make_pgp_mime(outer, armored)
    return outer.as_bytes()


@pytest.mark.parametrize("armored", ARMOR)
def test_the_body_is_the_email_packages_but_for_the_boundary(armored: bytes) -> None:
    ours = pgp_mime_body(armored)
    theirs = _by_the_email_package(armored)

    assert len(set(BOUNDARY.findall(ours))) == 1
    assert BOUNDARY.sub(b"B", ours) == BOUNDARY.sub(b"B", theirs)


def test_each_body_has_a_boundary_of_its_own() -> None:
    first, second = (BOUNDARY.search(pgp_mime_body(ARMOR[0])) for _ in range(2))

    assert first is not None and second is not None
    assert first.group() != second.group()


def test_armor_that_is_not_ascii_is_refused() -> None:
    with pytest.raises(UnicodeDecodeError):
        pgp_mime_body("-----BEGIN PGP MESSAGE-----\nÄ\n".encode())
