"""The email bridge: IMAP IDLE in, SMTP out, and the list's PGP/MIME mail.

conn.py     connections to the mail servers: TLS, the IMAP login, the SMTP session, and
            the probes of ``secir-bot doctor``
imap.py     receiving: the list mailbox, durable before anything is decided
smtp.py     sending: the outbox's email deliveries
smtpsend.py the SMTP hand-off of one row: batches, pipelined envelopes, parallel connections
render.py   posts and answers as signed and encrypted PGP/MIME mail (at decision time)
bridge.py   ``EmailBridge``, composing the receiver and the sender behind the Bridge protocol
"""

from secir_bot.bridges.email.bridge import EmailBridge
from secir_bot.bridges.email.conn import ImapError, close_imap
from secir_bot.bridges.email.imap import IMAP_FIXES
from secir_bot.bridges.email.render import EmailRenderer
from secir_bot.bridges.email.smtp import SMTP_FIXES

__all__ = ["IMAP_FIXES", "SMTP_FIXES", "EmailBridge", "EmailRenderer", "ImapError", "close_imap"]
