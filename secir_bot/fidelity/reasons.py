"""Why something was not relayed, as a code with parameters, and its English text.

Codes are what the wiring stores and passes on (the architecture's reason codes); the text
is looked up from the code when someone is told, so that other languages can follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TEXTS = {
    "attachment-too-large": (
        "the attachment {name} is {size} bytes, more than the list's limit of {limit} bytes "
        "per attachment"
    ),
    "attachments-too-large": (
        "the attachments add up to {size} bytes, more than the list's limit of {limit} bytes "
        "per message"
    ),
    "too-many-attachments": (
        "the message has {count} attachments, more than the list's limit of {limit}"
    ),
    "attachment-type-blocked": (
        "the attachment {name} is of a type the list does not relay ({type}); send it in a "
        "password-protected archive if the others need it"
    ),
    "attachment-type-not-allowed": (
        "the attachment {name} is of a type the list does not accept ({type})"
    ),
    "media-not-encrypted": (
        "the file {name} was uploaded without encryption, so the homeserver could read or "
        "change it; send it again from a client that encrypts files in encrypted rooms"
    ),
    "media-malformed": "the file {name} does not carry the keys to decrypt it ({detail})",
    "media-hash-mismatch": (
        "the file {name} did not match its checksum after download (changed on the server?)"
    ),
    "media-unavailable": "the file {name} could not be downloaded from the homeserver",
    "edit-not-author": "only the author of a message can correct it",
    "edit-other-room": "the edit belongs to another room",
    "edit-other-type": "the edit replaces an event of another type",
    "edit-of-edit": "an edit cannot itself be edited",
    "edit-unknown-original": "the message it corrects was not relayed by the list",
    "correction-not-author": (
        "only the author of a message can correct it; post your correction as a reply"
    ),
}


@dataclass(frozen=True)
class Refusal:
    """One reason not to relay something: a code and its parameters."""

    code: str
    params: dict[str, str | int] = field(default_factory=dict)

    def text(self) -> str:
        """The reason in English, for a member or an admin."""
        template = TEXTS.get(self.code)
        if template is None:
            return self.code
        try:
            return template.format(**self.params)
        except (KeyError, IndexError, ValueError):
            return self.code
