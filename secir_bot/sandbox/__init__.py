"""Throwaway servers for demos and tests: a real Synapse and an in-process mail server.

Nothing here is used by the bot at run time.  :mod:`.synapse` starts the installed
``matrix-synapse`` as a subprocess on a loopback port; :mod:`.mailserver` runs pymap (IMAP)
and aiosmtpd (SMTP) inside the caller's event loop.  Both need the ``sandbox`` extra.
"""

from __future__ import annotations


class SandboxError(RuntimeError):
    """A sandbox server could not be started, or refused a set-up request."""
