"""The bot's own cross-signing identity: made once, kept, and checked at every start.

Element (and every client on matrix-rust-sdk) trusts a device that its owner signed: the
account's *master* key signs a *self-signing* key, which signs each device of the account.
A device without that chain shows a red "not verified by its owner" shield, and clients
that exclude insecure devices neither send it room keys nor decrypt what it sends.

``bootstrap_cross_signing`` (called by ``secir-bot init``, and by ``run`` when the store
holds no identity) makes the three ed25519 keys, uploads them (Synapse asks for no password
while the account has no master key; when it does, the account password answers the
interactive authentication), signs the bot's device with the self-signing key, and then
**re-reads** what the server serves and checks the whole chain. The private self-signing
and user-signing keys stay in ``store/matrix/cross-signing.json`` (0600) so that the bot can
sign again; the master private key is written once to a recovery file for the admin to keep
offline, or kept in the store when ``matrix.master_key`` says so.

An account that already has a master key the bot does not hold is refused loudly, with the
fix: ``secir-bot reset-cross-signing`` replaces it (with the password).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from secir_bot.bridges.matrix.client import ApiError, MatrixClient, open_client, write_private
from secir_bot.bridges.matrix.keys import (
    signing_bytes,
    unpadded_b64decode,
    unpadded_b64encode,
    user_keys,
)
from secir_bot.config import Config
from secir_bot.errors import MatrixIdentityError

log = logging.getLogger(__name__)

IDENTITY_FILE = "cross-signing.json"
RECOVERY_FILE = "matrix-master-key.recovery.json"  # in the store directory, to be moved away
RESET_HINT = (
    "Fix: run 'secir-bot reset-cross-signing -c <config>' (it replaces the account's "
    "cross-signing identity, using the Matrix password; members' clients will show that the "
    "bot's identity changed), or restore store/matrix/cross-signing.json from a backup of "
    "this bot."
)


def _public(key: Ed25519PrivateKey) -> str:
    return unpadded_b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def _seed(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return unpadded_b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))


def _key(seed: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(unpadded_b64decode(seed))


def sign(obj: dict[str, Any], user_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    """``obj`` with a signature of ``key`` added (under ``ed25519:<public key>``)."""
    signature = unpadded_b64encode(key.sign(signing_bytes(obj)))
    signed = {k: v for k, v in obj.items() if k != "unsigned"}
    sigs = {u: dict(s) for u, s in (obj.get("signatures") or {}).items()}
    sigs.setdefault(user_id, {})[f"ed25519:{_public(key)}"] = signature
    signed["signatures"] = sigs
    return signed


def key_object(user_id: str, usage: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    public = _public(key)
    return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{public}": public}}


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    master_public: str
    self_signing: Ed25519PrivateKey
    user_signing: Ed25519PrivateKey
    master: Ed25519PrivateKey | None  # only when the admin chose to keep it in the store

    @classmethod
    def load(cls, directory: Path) -> BotIdentity | None:
        path = directory / IDENTITY_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            data["user_id"],
            data["master_public"],
            _key(data["self_signing"]),
            _key(data["user_signing"]),
            _key(data["master"]) if data.get("master") else None,
        )

    def save(self, directory: Path) -> None:
        data = {
            "user_id": self.user_id,
            "master_public": self.master_public,
            "self_signing": _seed(self.self_signing),
            "user_signing": _seed(self.user_signing),
        }
        if self.master is not None:
            data["master"] = _seed(self.master)
        write_private(directory / IDENTITY_FILE, json.dumps(data, indent=1) + "\n")


async def _own_keys(client: MatrixClient) -> dict[str, Any]:
    return await client.api(
        "POST",
        "/v3/keys/query",
        {"device_keys": {client.user_id: []}},
        what="key query of the bot's own account",
    )


async def _upload_with_auth(
    client: MatrixClient, path: str, body: dict[str, Any], password: str | None, what: str
) -> None:
    """A call that may ask for interactive authentication: answered with the password."""
    try:
        await client.api("POST", path, body, what=what)
        return
    except ApiError as exc:
        if exc.status != 401 or "flows" not in exc.body:
            raise
        session = exc.body.get("session")
    if not password:
        raise MatrixIdentityError(
            f"{what}: the homeserver asks for the account password, and none is configured "
            "(matrix.password_file or matrix.password_env)"
        )
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
    }
    if session:
        auth["session"] = session
    try:
        await client.api("POST", path, {**body, "auth": auth}, what=what)
    except ApiError as exc:
        raise MatrixIdentityError(f"{what} was refused: {exc}") from exc


async def _sign_device(client: MatrixClient, identity: BotIdentity, answer: dict[str, Any]) -> None:
    device = ((answer.get("device_keys") or {}).get(client.user_id) or {}).get(client.device_id)
    if not isinstance(device, dict):
        raise MatrixIdentityError(
            f"the homeserver serves no keys for the bot's device {client.device_id}; "
            "the crypto store and the server disagree"
        )
    signed = sign(device, client.user_id, identity.self_signing)
    # Only our new signature is sent; the server merges it into what it holds.
    ssk_id = f"ed25519:{_public(identity.self_signing)}"
    signed["signatures"] = {client.user_id: {ssk_id: signed["signatures"][client.user_id][ssk_id]}}
    answer = await client.api(
        "POST",
        "/v3/keys/signatures/upload",
        {client.user_id: {client.device_id: signed}},
        what="upload of the device signature",
    )
    if answer.get("failures"):
        raise MatrixIdentityError(f"the device signature was refused: {answer['failures']}")


def _check(answer: dict[str, Any], client: MatrixClient, identity: BotIdentity) -> str | None:
    """What is wrong with the identity the server serves, or None."""
    served = user_keys(answer, client.user_id)
    if served.master != identity.master_public:
        return f"the server serves master key {served.master}, not {identity.master_public}"
    if served.self_signing != _public(identity.self_signing):
        return "the server serves another self-signing key, or one the master did not sign"
    device = served.devices.get(client.device_id)
    if device is None or not device.cross_signed:
        return f"the bot's device {client.device_id} is not signed by its self-signing key"
    return None


async def ensure_identity(
    client: MatrixClient,
    config: Config,
    directory: Path,
    password: str | None,
    *,
    reset: bool = False,
    recovery_dir: Path | None = None,
) -> tuple[BotIdentity, Path | None]:
    """The bot's identity as the server serves it; made (or with ``reset``, replaced) when
    needed. Returns it and the recovery file written, if one was (in ``recovery_dir``, by
    default the store directory)."""
    answer = await _own_keys(client)
    held = BotIdentity.load(directory)
    served_master = user_keys(answer, client.user_id).master
    if held is not None and not reset:
        if served_master != held.master_public:
            raise MatrixIdentityError(
                f"the bot's account now has another cross-signing identity (master key "
                f"{served_master}) than the one in the store ({held.master_public}): someone "
                f"reset it. {RESET_HINT}"
            )
        if _check(answer, client, held) is not None:
            await _sign_device(client, held, answer)
            answer = await _own_keys(client)
            if (problem := _check(answer, client, held)) is not None:
                raise MatrixIdentityError(f"cross-signing check failed: {problem}")
        return held, None
    if served_master is not None and not reset:
        raise MatrixIdentityError(
            f"the bot's Matrix account {client.user_id} already has cross-signing keys "
            f"(master key {served_master}) that this bot does not hold, so it cannot sign "
            f"its device and members' clients would show it as not verified. {RESET_HINT}"
        )
    master, ssk, usk = (Ed25519PrivateKey.generate() for _ in range(3))
    uid = client.user_id
    body = {
        "master_key": key_object(uid, "master", master),
        "self_signing_key": sign(key_object(uid, "self_signing", ssk), uid, master),
        "user_signing_key": sign(key_object(uid, "user_signing", usk), uid, master),
    }
    keep_master = config.matrix.master_key == "store"
    identity = BotIdentity(uid, _public(master), ssk, usk, master if keep_master else None)
    await _upload_with_auth(
        client, "/v3/keys/device_signing/upload", body, password, "upload of cross-signing keys"
    )
    # Saved before anything else can fail: the server now serves these keys.
    identity.save(directory)
    recovery = None
    if not keep_master:
        recovery = (recovery_dir or config.store_path) / RECOVERY_FILE
        write_private(
            recovery,
            json.dumps(
                {
                    "what": "master cross-signing key of a secir-bot Matrix account; keep "
                    "offline, needed only to re-establish this identity",
                    "user_id": uid,
                    "master_public": identity.master_public,
                    "master_private": _seed(master),
                },
                indent=1,
            )
            + "\n",
        )
    await _sign_device(client, identity, await _own_keys(client))
    if (problem := _check(await _own_keys(client), client, identity)) is not None:
        raise MatrixIdentityError(f"cross-signing was uploaded but does not check: {problem}")
    log.info("cross-signing identity %s set up for %s", identity.master_public, uid)
    return identity, recovery


async def bootstrap_cross_signing(
    config: Config,
    directory: Path,
    password: str | None,
    *,
    reset: bool = False,
    recovery_dir: Path | None = None,
) -> str:
    """``secir-bot init`` / ``reset-cross-signing``: make sure the bot's account has the
    cross-signing identity the store holds, and its device is signed; returns the master
    public key. ``recovery_dir``: where a new recovery file is written when that is not yet
    the store directory (``init`` builds a new store beside it and renames it at the end)."""
    client, _ = open_client(config, directory)
    try:
        identity, recovery = await ensure_identity(
            client, config, directory, password, reset=reset, recovery_dir=recovery_dir
        )
    except ApiError as exc:
        raise MatrixIdentityError(f"cross-signing set-up failed: {exc}") from exc
    finally:
        await client.close()
    log.info("the bot's Matrix identity: master key %s", identity.master_public)
    if recovery is not None:
        log.warning(
            "the private master key of the bot's Matrix identity was written to %s: move it "
            "offline now (the bot does not need it to run; see the admin manual)",
            config.store_path / RECOVERY_FILE,
        )
    return identity.master_public
