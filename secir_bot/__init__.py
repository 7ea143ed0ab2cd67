"""secir-bot: a secure incident-response channel for ccTLD operators.

One asyncio process mirrors an end-to-end encrypted Matrix room and a PGP-encrypted
mailing list both ways, durably. See README.md and docs/ for the manuals.
"""

__version__ = "0.1.0"
