"""Why an item was dropped or refused: one code per reason, its English text in one table.

A step returns ``reject("not-encrypted")`` or ``drop("automated", why=...)``; the text the
sender, the admins and the log see is looked up here from the code and its parameters. The
codes are kebab-case names (as Mailman names its rules) and stay stable: translations will
key on the same codes, one table per language.
"""

from __future__ import annotations

from collections.abc import Mapping

# Why a message from a device other than a trusted one is refused, by the bridge's verdict
# (``model.DeviceVerdict``); the code is "device-" and the verdict.
_DEVICE = {
    "blocked": "sent from a Matrix device that the bot blocked because its keys changed",
    "mismatch": "the message names one device but was encrypted by another (a possible forgery)",
    "unknown": "sent from a Matrix device that the homeserver does not list for the sender",
    "refused": "sent from a Matrix account that may not post in this room",
    "forwarded": "its room key came forwarded, so its sender cannot be verified",
    "unsigned": (
        "sent from a Matrix device that its owner has not verified (signed with their "
        "cross-signing identity); verify it from another of your sessions (in Element: "
        "Settings, Sessions) and send the message again"
    ),
    "identity-changed": (
        "the sender's Matrix identity (cross-signing keys) changed and waits for an admin "
        "to confirm it"
    ),
    "no-cross-signing": (
        "this list accepts only Matrix devices verified by their owner, and the sender's "
        "account has no cross-signing; set it up (in Element: Settings, Security & Privacy) "
        "and verify this session, then send the message again"
    ),
}

ENGLISH: dict[str, str] = {
    # -- mail, before decryption
    "too-large": "the mail is larger than the list's limit of {limit} bytes",
    "unreadable": "unreadable mail: {why}",
    "own-mail": "the list's own mail came back",
    "from-list-address": "mail from the list address itself",
    "automated": "{why}",
    "signed-not-encrypted": "the mail is signed but not encrypted to the list key",
    "not-encrypted": "the mail is not encrypted to the list key",
    # -- mail, decryption and signature
    "undecryptable": "the mail could not be decrypted with the list key ({status})",
    "unreadable-content": "the decrypted content is unreadable: {why}",
    "malformed": "{why}",
    "two-signatures": (
        "the mail carries more than one signature; sign it once, with your registered key"
    ),
    "not-signed": "the mail is not signed; sign it with your registered key",
    "bad-signature": "the signature does not verify ({status})",
    # -- mail, sender policy
    "signer-not-member": "the signing key {key} does not belong to a member",
    "signer-inactive": "the signing key belongs to a member who is {status}",
    "replayed": (
        "this signed message was received before; a repeated signature is not relayed "
        "(send a new message instead)"
    ),
    "signed-in-future": (
        "the signature is dated {minutes:.0f} minutes in the future; the list accepts at most "
        "{skew:g} seconds of clock difference (check your computer's clock)"
    ),
    "signature-too-old": (
        "the signature was made {days:.0f} days ago; the list accepts signatures up to "
        "{max_days:g} days old"
    ),
    "signed-from-other-member": (
        "the signed From address belongs to another member than the signing key ({email})"
    ),
    "from-other-member": (
        "the From address belongs to another member than the signing key ({email})"
    ),
    "addressed-elsewhere": (
        "the signed content is addressed to others, not to the list: a signed mail sent "
        "elsewhere is not relayed (write to the list itself)"
    ),
    # -- files, either channel (the reasons of fidelity.reasons, joined)
    "files-refused": (
        "the message was not relayed, so that no one reads it without its files: {why}"
    ),
    "correction-not-author": (
        "only the author of a message can correct it; post your correction as a reply"
    ),
    # -- Matrix events
    "not-json": "stored event is not JSON",
    "malformed-event": "malformed event (its content is not an object)",
    "own-event": "own event",
    "not-a-message": "not a message ({type})",
    "relayed-by-bot": "relayed by the bot",
    "notice": "notice (automated)",
    "command-line": "a command (answered by the bot, never relayed)",
    "invitation-accepted": "the bot's invitation to a direct chat was accepted",
    "not-for-the-list": "a message in the control room or a direct chat that is not a command",
    "reaction": "a reaction ({key}): counted in the room, not mailed one by one",
    "edit-malformed": "an edit without a well-formed new text",
    "edit-unknown-original": "an edit of a message that the list did not relay",
    "edit-not-text": "an edit that replaces a message with a {msgtype}, not text",
    "edit-not-author": "an edit by someone other than the message's author (invalid)",
    "redaction-unknown": "a redaction of a message that the list did not relay",
    "redaction-not-author": "a redaction of someone else's message (a moderator's)",
    "not-e2e": "the message was not end-to-end encrypted; it is not relayed",
    **{f"device-{v}": f"{text}; the message is not relayed" for v, text in _DEVICE.items()},
    "device-untrusted": (
        "sent from a Matrix device the bot does not trust ({verdict}); the message is not relayed"
    ),
    "sender-not-member": "{sender} is not a member; the message is not relayed",
    "sender-inactive": "{sender} is {status}; the message is not relayed",
    "not-text": "{msgtype} messages are not mirrored yet; send text",
    "empty": "empty message",
    # -- any channel (steps/policy.py)
    "command": "the list command '{word}' (answered by mail, not posted)",
    # -- mail on the request address (steps/request.py)
    "commands": "commands for the list",
    "nomination": "a nomination for a subscription case",
    "proof": "a nominee's answer to their key challenge",
    "command-unaddressed": (
        "a command mail must name {request} in its signed headers (send it as PGP/MIME "
        "from a client that protects the headers, such as Thunderbird); nothing was done"
    ),
    "command-addressed-elsewhere": (
        "the signed content is addressed to others, not to {request}: a signed mail sent "
        "elsewhere runs no command; nothing was done"
    ),
    "no-text": "the {what} has no readable text",
}


def text(code: str, params: Mapping[str, object]) -> str:
    """The English text of a reason; a code without an entry is shown as itself."""
    template = ENGLISH.get(code)
    return code if template is None else template.format(**params)
