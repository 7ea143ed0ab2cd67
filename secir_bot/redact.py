"""Keeping secrets out of the logs, whatever a library does with them.

Libraries log what they send. aioimaplib masks the IMAP password in its debug log, but only
in the form it was given, while it sends the password quoted; a password with a ``"`` or a
``\\`` was therefore logged in clear under ``-v``. So every secret the bot reads is
registered here (``Secret.read`` in the config does it), and :class:`SecretFilter` replaces
it, in every form a library may print (as given, IMAP-quoted, and each as Python shows a
string or bytes), with ``********``.

The filter sits on the handlers that ``secir-bot`` sets up, and on the loggers of the
libraries that handle secrets, so the bot stays clean when it runs inside another program
(the tests, the sandbox) with handlers of its own. Logging is process-wide, and so is the
set of secrets.
"""

from __future__ import annotations

import logging

MASK = "********"
# The loggers of libraries that see the bot's passwords (aioimaplib logs every command it
# sends at debug level).
LIBRARY_LOGGERS = ("aioimaplib.aioimaplib", "aiosmtplib")

_forms: set[str] = set()


def _imap_quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def forms_of(value: str) -> set[str]:
    """Every spelling of ``value`` that may appear in a log line."""
    spelled = {value, _imap_quoted(value)}
    for text in list(spelled):
        spelled.add(repr(text)[1:-1])
        spelled.add(repr(text.encode())[2:-1])
    return {s for s in spelled if s}


def secret(value: str) -> str:
    """Register ``value`` as a secret; return it unchanged."""
    if value:
        _forms.update(forms_of(value))
    return value


def redact(text: str) -> str:
    # Longest first, so that a form containing another is masked whole.
    for form in sorted((f for f in _forms if f in text), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


class SecretFilter(logging.Filter):
    """Masks every registered secret in a record's message; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _forms:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a library's broken format string: leave it to the handler
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


FILTER = SecretFilter()


def install(handlers: list[logging.Handler] | None = None) -> None:
    """Put the filter on the libraries' loggers and on ``handlers`` (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if FILTER not in logger.filters:
            logger.addFilter(FILTER)
    for handler in handlers or []:
        if FILTER not in handler.filters:
            handler.addFilter(FILTER)
