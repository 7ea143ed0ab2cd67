"""OpenPGP for the list: the only package that runs gpg.

``gpg`` runs one gpg process with a deadline and reads its status lines; ``keys`` reads key
listings; ``keyring`` is the list's keyring (keys, decryption, signatures). Every call has
a deadline after which gpg is killed (``GpgTimeout``), and nothing of gpg's own types or
human messages leaves this package.
"""

from secir_bot.crypto.gpg import GpgTimeout
from secir_bot.crypto.keyfiles import armor_keys
from secir_bot.crypto.keyring import Decrypted, Keyring, Verified, inspect_key
from secir_bot.crypto.keys import MIN_RSA_BITS, KeyInfo

__all__ = [
    "MIN_RSA_BITS",
    "Decrypted",
    "GpgTimeout",
    "KeyInfo",
    "Keyring",
    "Verified",
    "armor_keys",
    "inspect_key",
]
