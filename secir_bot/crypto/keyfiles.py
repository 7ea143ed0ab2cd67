"""Key files that are not armoured: a ``.gpg`` file of ``gpg --export`` attached to a mail.

Thunderbird attaches keys armoured (``.asc``); a person on mutt or a shell more often
attaches the binary output of ``gpg --export``. The commands read keys as the armoured
text a person would paste, so a binary file is turned into that text by gpg itself, in a
throwaway home: nothing of it reaches the list's keyring here.
"""

from __future__ import annotations

from secir_bot.crypto.keyring import scratch_keyring
from secir_bot.errors import CryptoError

PRIVATE_HEADER = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n"


async def armor_keys(data: bytes) -> str:
    """The keys of binary OpenPGP ``data`` as armoured public key blocks, one per key.

    "" when gpg finds no key in it. When it holds secret key material the answer is a
    private key block's header only, so that ``keycheck.vet`` refuses it with its warning
    (the key is exposed) instead of taking the public part silently.
    """
    async with scratch_keyring() as ring:
        try:
            fingerprints = await ring.import_key(data)
        except CryptoError:
            return ""
        if any(key.has_secret for key in await ring.keys(fingerprints)):
            return PRIVATE_HEADER
        return "".join([await ring.export_public(fpr) for fpr in fingerprints])
