"""Operators as real clients, for the demo and the tests.

A ``MailOperator`` is a person with a mail account and an OpenPGP key: it builds PGP/MIME
or inline-PGP mail signed with its own key and encrypted to the list key, sends it over
SMTP, and reads the list's mail over IMAP, decrypting it with its own key. A
``MatrixOperator`` is a matrix-nio client with its own device and crypto store that
syncs in the background and records the decrypted messages it sees.
"""

from secir_bot.sandbox.operators.base import ReceivedMail, SeenEvent, wait_until
from secir_bot.sandbox.operators.mail import MailOperator
from secir_bot.sandbox.operators.matrix import MatrixOperator

__all__ = ["MailOperator", "MatrixOperator", "ReceivedMail", "SeenEvent", "wait_until"]
