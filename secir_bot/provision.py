"""Setting a list up (``secir-bot init``): the store, the list key, the bot's Matrix device.

All or nothing. A new store is built in a temporary directory beside the configured one
(same file system, mode 0700) and renamed into place only when every step has succeeded, so
a failed ``init`` (a wrong Matrix password, an unreachable homeserver, a bad key file) leaves
nothing behind and the next one starts clean.

An existing store is never rebuilt: ``init`` only adds a Matrix device when the store has
none (after an admin moved ``credentials.json`` away to register a new device), and removes
what that attempt created if it fails. Its list key is never replaced: ``--import-key`` with
another key is refused (rotation is a manual procedure, see the admin manual).

Used by the CLI and by the sandbox; the Matrix work itself is done by the Matrix bridge.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from secir_bot import fileperms
from secir_bot.bridges.matrix import bootstrap_cross_signing, login_once
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.errors import ConfigError, ServiceError, StoreError
from secir_bot.store import DB_NAME, LIST_FPR_KEY, Store

log = logging.getLogger(__name__)


async def init(
    config: Config, import_key: Path | None = None, *, reset_cross_signing: bool = False
) -> str:
    """Create what is missing of the store; return the list key's fingerprint.

    ``reset_cross_signing`` replaces a cross-signing identity that the account has and the
    store does not hold (``secir-bot reset-cross-signing``), instead of refusing it."""
    password = _matrix_password(config)
    armored = None
    if import_key is not None:
        armored = await asyncio.to_thread(import_key.read_text, encoding="utf-8")
    target = config.store_path
    if (target / DB_NAME).exists():
        return await _complete(config, password, armored, reset_cross_signing)
    if target.exists() and any(target.iterdir()):
        raise StoreError(
            f"{target} exists but holds no store (a copy, or something else?); "
            "move it away and run init again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, so the final rename stays on one file system and is atomic.
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        fpr = await _list_key(build, config, armored)
        await _matrix_device(
            config, build / "matrix", password, recovery_dir=build, reset=reset_cross_signing
        )
        # Private even when the caller's umask is not (the CLI sets 0077; a library caller
        # such as the sandbox may not).
        fileperms.tighten(build)
        # rename() replaces an empty directory (one the admin made for the store) too.
        os.rename(build, target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return fpr


def _matrix_password(config: Config) -> str | None:
    """The password for the one-time login: checked before anything is made."""
    if not config.matrix.password.configured:
        return None
    return config.matrix.password.read()


async def _list_key(directory: Path, config: Config, armored: str | None) -> str:
    """The database and the keyring in ``directory``, with a new or imported list key."""
    store = Store.open(directory, create=True)
    keyring = Keyring.create(directory / "gnupg")
    try:
        if armored is not None:
            fpr = await _import_list_key(keyring, armored)
        else:
            fpr = await keyring.generate(f"{config.list.name} list", config.list.address)
        store.kv.put(LIST_FPR_KEY, fpr)
        log.info("list key %s", fpr)
        return fpr
    finally:
        # The agent must not keep running on a directory that is about to be renamed.
        await asyncio.to_thread(keyring.close)
        store.close()


async def _import_list_key(keyring: Keyring, armored: str) -> str:
    fprs = await keyring.import_key(armored)
    info = [k for k in await keyring.keys(fprs) if k.has_secret]
    if len(info) != 1:
        raise StoreError("--import-key must hold exactly one secret key")
    return info[0].fingerprint


async def _matrix_device(
    config: Config,
    directory: Path,
    password: str | None,
    *,
    recovery_dir: Path | None = None,
    reset: bool = False,
) -> None:
    """Log the bot's device in once and give the account its cross-signing identity; the
    crypto store, credentials and identity keys land in ``directory``."""
    if password is None:
        raise ConfigError(
            [
                "matrix.password_file or matrix.password_env: needed by init to log the "
                "bot's device in once"
            ]
        )
    try:
        creds = await login_once(config, directory, password, secrets.token_urlsafe(32))
    except (OSError, TimeoutError) as exc:  # aiohttp's connection errors are OSErrors
        raise ServiceError(
            f"cannot reach the homeserver {config.matrix.homeserver}: {type(exc).__name__}: {exc}"
        ) from exc
    log.info("Matrix device %s logged in; keep store/ safe, it holds its keys", creds.device_id)
    # Part of the same all-or-nothing step: a device without its owner's signature is one
    # that Element's default mode refuses to talk to.
    await bootstrap_cross_signing(
        config, directory, password, recovery_dir=recovery_dir, reset=reset
    )


async def _complete(
    config: Config, password: str | None, armored: str | None, reset: bool = False
) -> str:
    """An existing store: check the list key, add a Matrix device if it has none."""
    store = Store.open(config.store_path)
    try:
        fpr = store.kv.get(LIST_FPR_KEY)
    finally:
        store.close()
    if not fpr:
        raise StoreError(
            f"the store at {config.store_path} has no list key (left by an older, failed "
            "init?); move it away and run init again"
        )
    if armored is not None:
        await _check_same_key(config, fpr, armored)
    matrix = config.store_path / "matrix"
    if not (matrix / "credentials.json").exists():
        before = set(matrix.iterdir()) if matrix.is_dir() else set()
        try:
            await _matrix_device(config, matrix, password, reset=reset)
        except BaseException:
            # Take back what this attempt made; what was there before stays.
            for path in set(matrix.iterdir()) - before if matrix.is_dir() else ():
                path.unlink(missing_ok=True)
            raise
    else:
        # A store from before cross-signing, or an identity to check: made or confirmed.
        await bootstrap_cross_signing(config, matrix, password, reset=reset)
    fileperms.tighten(matrix)
    return fpr


async def _check_same_key(config: Config, fpr: str, armored: str) -> None:
    """``--import-key`` on an initialised store must name the key it already has."""
    home = Path(tempfile.mkdtemp(prefix="gi"))  # short: gpg-agent's socket lives in it
    scratch = Keyring.create(home)
    try:
        imported = await _import_list_key(scratch, armored)
    finally:
        await asyncio.to_thread(scratch.close)
        shutil.rmtree(home, ignore_errors=True)
    if imported != fpr:
        raise StoreError(
            f"the store already has list key {fpr}; --import-key holds {imported}. "
            "Replacing the list key is a manual procedure (admin manual, list key rotation)."
        )
