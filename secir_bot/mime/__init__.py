"""MIME for the list, the pure e-mail codec: parse what members send, compose what the list
sends. No I/O: used by the steps, the email renderer and the sandbox alike.

headers.py    header values, Message-IDs, machine-made mail, the parsing bounds
envelope.py   what can be read before decryption (``Envelope``)
content.py    what a decrypted mail holds (``Content``), HTML-only mail to text
compose.py    the list's PGP/MIME mail (protected headers inside, list headers outside)

Inbound mail is only *read* with Python's ``email`` package; the bytes that a signature
covers are cut out of the original text, never re-serialised.
"""

from secir_bot.mime.compose import (
    LOOP_HEADER,
    ListHeaders,
    compose_inner,
    compose_outer,
    make_pgp_mime,
    neutral,
)
from secir_bot.mime.content import (
    MAX_HTML_CHARS,
    NOT_ONE_CLEARSIGNED,
    Content,
    clearsigned_block,
    html_to_text,
    inline_content,
    parse_decrypted,
    split_multipart,
)
from secir_bot.mime.envelope import (
    ARMOR_BEGIN,
    ARMOR_END,
    CLEARSIGN_BEGIN,
    OUTSIDE_THE_ARMOR,
    Envelope,
    parse_envelope,
)
from secir_bot.mime.headers import (
    MAX_MESSAGE_ID,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    MalformedMail,
    from_address,
    message_id_of,
    outer_recipients,
    recipients_of,
)

__all__ = [
    "ARMOR_BEGIN",
    "ARMOR_END",
    "CLEARSIGN_BEGIN",
    "LOOP_HEADER",
    "MAX_HTML_CHARS",
    "MAX_MESSAGE_ID",
    "MAX_MIME_DEPTH",
    "MAX_MIME_PARTS",
    "NOT_ONE_CLEARSIGNED",
    "OUTSIDE_THE_ARMOR",
    "Content",
    "Envelope",
    "ListHeaders",
    "MalformedMail",
    "clearsigned_block",
    "compose_inner",
    "compose_outer",
    "from_address",
    "html_to_text",
    "inline_content",
    "make_pgp_mime",
    "message_id_of",
    "neutral",
    "outer_recipients",
    "parse_decrypted",
    "parse_envelope",
    "recipients_of",
    "split_multipart",
]
