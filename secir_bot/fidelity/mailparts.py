"""Matrix → mail: the MIME body that goes inside the list's one signed+encrypted mail.

The body is the text (quoted-printable UTF-8, as ``compose_inner`` writes it today), with
an optional HTML alternative, and the files as ``multipart/mixed`` after it, text first::

    multipart/mixed; protected-headers="v1"
      text/plain                      (or multipart/alternative: text/plain, text/html)
      application/pdf; name=…         Content-Disposition: attachment; filename=…
      …

File names are made safe (``attachments.safe_filename``) and written by the ``email``
package, RFC 2231-encoded when they are not ASCII; content types are checked to be a bare
``type/subtype``. No header value here comes unchecked from a member, so none can end a
header line (compose.py explains why that matters).

The renderer puts the protected headers (From, To, Subject, Message-ID, Date) in front of
``body.as_bytes()`` exactly as ``compose_inner`` does with its one text part, signs and
encrypts the whole once for all recipients.
"""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from secir_bot.fidelity.attachments import clean_content_type, safe_filename

HTML_PAGE = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n<body>\n{}\n</body></html>\n'
)


@dataclass(frozen=True)
class OutgoingFile:
    """A file to attach to the list's mail."""

    filename: str
    content_type: str
    data: bytes


def mail_body(
    text: str, *, html: str | None = None, files: Sequence[OutgoingFile] = ()
) -> EmailMessage:
    """The MIME entity of a post's mail, before encryption: text first, then the HTML
    alternative (already sanitised: ``sanitize.for_mail``) and the files. It carries
    ``protected-headers="v1"`` (the renderer adds the headers themselves)."""
    body = EmailMessage(policy=email.policy.SMTP)
    body.set_content(text, charset="utf-8", cte="quoted-printable")
    if html is not None:
        body.add_alternative(
            HTML_PAGE.format(html), subtype="html", charset="utf-8", cte="quoted-printable"
        )
    for index, file in enumerate(files, 1):
        ctype = clean_content_type(file.content_type)
        name = safe_filename(file.filename, ctype, index)
        maintype, subtype = ctype.split("/", 1)
        body.add_attachment(
            file.data, maintype=maintype, subtype=subtype, cte="base64", filename=name
        )
        # Older clients (Outlook among them) name a file by the Content-Type's name=.
        parts = body.get_payload()
        added = parts[-1] if isinstance(parts, list) else None
        if isinstance(added, EmailMessage):
            added.set_param("name", name)
    for part in body.walk():
        if part is not body:
            del part["MIME-Version"]  # the email package adds it to every part it makes
    body.set_param("protected-headers", "v1")
    return body
