"""Matrix key material as the homeserver serves it, checked signature by signature.

A ``/keys/query`` answer is only a claim of the homeserver: every device object must carry
a valid signature of its own ed25519 key, and a cross-signing key is only taken if the key
above it signed it (master → self-signing → device). The checks follow the spec's signing
rules (canonical JSON without ``signatures`` and ``unsigned``), with ``canonicaljson`` for
the encoding and ``cryptography``'s Ed25519 for the signatures; nothing here is hand-made
crypto. Pure functions, no I/O: the trust module asks the server and feeds the answer in.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import Any

from canonicaljson import encode_canonical_json
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)


def unpadded_b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def unpadded_b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def signing_bytes(obj: dict[str, Any]) -> bytes:
    """The bytes a Matrix signature covers: canonical JSON without the two unsigned keys."""
    return bytes(
        encode_canonical_json({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})
    )


def signed_by(obj: Any, user_id: str, key_id: str, public_key: str) -> bool:
    """Whether ``obj`` carries a valid signature of ``user_id``'s ed25519 ``public_key``
    under ``ed25519:<key_id>``."""
    if not isinstance(obj, dict):
        return False
    try:
        signature = obj["signatures"][user_id][f"ed25519:{key_id}"]
        key = Ed25519PublicKey.from_public_bytes(unpadded_b64decode(public_key))
        key.verify(unpadded_b64decode(signature), signing_bytes(obj))
    except (KeyError, TypeError, ValueError, binascii.Error, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class DeviceKeys:
    """One device whose keys carry a valid self-signature."""

    user_id: str
    device_id: str
    ed25519: str
    curve25519: str
    cross_signed: bool  # signed by its owner's self-signing key (which the master signed)
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class UserKeys:
    """What the homeserver serves for one user, reduced to what verified."""

    user_id: str
    master: str | None  # the master public key, if the user has cross-signing
    self_signing: str | None  # only if signed by ``master``
    devices: dict[str, DeviceKeys]
    rejected: tuple[str, ...] = ()  # device ids whose objects did not verify


def _single_key(obj: Any, user_id: str, usage: str) -> str | None:
    """The one ed25519 key of a cross-signing key object for ``user_id`` and ``usage``."""
    if not isinstance(obj, dict) or obj.get("user_id") != user_id:
        return None
    if usage not in (obj.get("usage") or []):
        return None
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        return None
    ((key_id, key),) = keys.items()
    if not isinstance(key, str) or key_id != f"ed25519:{key}":
        return None
    return key


def user_keys(answer: dict[str, Any], user_id: str) -> UserKeys:
    """The verified keys of ``user_id`` in a ``/keys/query`` answer."""
    master = _single_key((answer.get("master_keys") or {}).get(user_id), user_id, "master")
    ssk_obj = (answer.get("self_signing_keys") or {}).get(user_id)
    ssk = _single_key(ssk_obj, user_id, "self_signing")
    if ssk is not None and (master is None or not signed_by(ssk_obj, user_id, master, master)):
        log.warning("self-signing key of %s is not signed by its master key; ignored", user_id)
        ssk = None
    devices: dict[str, DeviceKeys] = {}
    rejected: list[str] = []
    served = (answer.get("device_keys") or {}).get(user_id) or {}
    for device_id, obj in served.items() if isinstance(served, dict) else ():
        keys = obj.get("keys") if isinstance(obj, dict) else None
        ed = keys.get(f"ed25519:{device_id}") if isinstance(keys, dict) else None
        curve = keys.get(f"curve25519:{device_id}") if isinstance(keys, dict) else None
        if (
            not isinstance(ed, str)
            or not isinstance(curve, str)
            or obj.get("user_id") != user_id
            or obj.get("device_id") != device_id
            or not signed_by(obj, user_id, device_id, ed)
        ):
            rejected.append(str(device_id))
            continue
        cross = ssk is not None and signed_by(obj, user_id, ssk, ssk)
        devices[device_id] = DeviceKeys(user_id, device_id, ed, curve, cross, obj)
    if rejected:
        log.warning("device keys of %s without a valid self-signature: %s", user_id, rejected)
    return UserKeys(user_id, master, ssk, devices, tuple(rejected))
