"""The one error tree of secir-bot.

Outcomes of policy (drop, reject) are *values* (see ``steps.Decision``), never
exceptions. Exceptions mean that something broke::

    SecirError
     ├── ConfigError          the configuration file is missing or invalid (lists every problem)
     ├── ServiceError         a server refused the bot's login, or could not be reached
     ├── StoreError           the state directory or database is unusable
     │    └── StoreMissing    ``secir-bot init`` has not been run for this store
     ├── CryptoError          gpg failed for a reason other than bad input
     ├── MemberError          a member record or key is not acceptable (message says why)
     ├── WhoisError           no usable answer from the whois server (whois.py, one subclass
     │                        per failure: unreachable, timeout, too large, refused, ...)
     ├── MatrixIdentityError  the bot's Matrix cross-signing identity is unusable (says the fix)
     └── DeliveryError        a delivery attempt failed
          ├── TransientDeliveryError   worth retrying later (network, 4xx, rate limit)
          └── PermanentDeliveryError   will never succeed (5xx, room gone, no keys)

Foreign exceptions (nio responses, gnupg results, SMTP/IMAP errors) are translated into
these at the boundary module that talks to the library.
"""

from __future__ import annotations


class SecirError(Exception):
    """Base of every error raised by secir-bot itself."""


class ConfigError(SecirError):
    """The configuration is invalid; ``problems`` lists each one by dotted key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class ServiceError(SecirError):
    """A server (homeserver, IMAP, SMTP) refused the bot's login or could not be reached."""


class StoreError(SecirError):
    """The state directory or its database cannot be used."""


class SignatureSeen(StoreError):
    """A signature recorded already: its post was accepted meanwhile (a replay decided at
    the same time as its original)."""


class StoreMissing(StoreError):
    """The store has not been initialised (run ``secir-bot init``)."""


class CryptoError(SecirError):
    """gpg failed in a way that is not the input's fault."""


class MemberError(SecirError):
    """A member record or its key cannot be accepted."""


class MatrixIdentityError(SecirError):
    """The bot's Matrix cross-signing identity cannot be made or used; says how to fix it."""


class DeliveryError(SecirError):
    """A delivery attempt failed."""


class TransientDeliveryError(DeliveryError):
    """A delivery failure that is worth retrying."""


class PermanentDeliveryError(DeliveryError):
    """A delivery failure that will not go away by retrying."""
