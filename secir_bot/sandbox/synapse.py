"""Run a throwaway Synapse homeserver on a loopback port.

The server comes from the installed ``matrix-synapse`` package and runs as a child process
with SQLite (in memory, ``/dev/shm``, when it is a throwaway), no federation (only the
``client`` listener, an empty federation whitelist, no federation sender, no key servers)
and every rate limit raised, so tests and demos can register and log in freely.

    hs = Synapse.start()
    try:
        user = hs.register("alice", "secret")   # {"user_id", "access_token", "device_id", ...}
    finally:
        hs.stop()

Users are made through the shared-secret admin API, so the server needs no open registration.
This module is synchronous on purpose: it serves both pytest fixtures and ``make demo``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from signedjson.key import generate_signing_key, write_signing_keys

from . import SandboxError
from .scratch import free_port, ram_tempdir

__all__ = ["Synapse"]

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

# Every rate limiter Synapse 1.163 reads from the config, raised far beyond anything a test
# suite does.  The default login burst is 5, which a suite that logs in repeatedly exceeds.
_UNLIMITED = {"per_second": 1000, "burst_count": 1000}
_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _UNLIMITED,
    "rc_registration": _UNLIMITED,
    "rc_login": {"address": _UNLIMITED, "account": _UNLIMITED, "failed_attempts": _UNLIMITED},
    "rc_admin_redaction": _UNLIMITED,
    "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
    "rc_joins_per_room": _UNLIMITED,
    "rc_key_requests": _UNLIMITED,
    "rc_3pid_validation": _UNLIMITED,
    "rc_invites": {"per_room": _UNLIMITED, "per_user": _UNLIMITED, "per_issuer": _UNLIMITED},
    "rc_third_party_invite": _UNLIMITED,
    "rc_media_create": _UNLIMITED,
    "rc_room_creation": _UNLIMITED,
    "rc_delayed_event_mgmt": _UNLIMITED,
    "rc_reports": _UNLIMITED,
    "rc_profile": _UNLIMITED,
    "rc_user_directory": _UNLIMITED,
    "rc_presence": {"per_user": _UNLIMITED},
}


def _secrets(directory: Path) -> dict[str, str]:
    """The server's secrets, made once per directory so a restarted sandbox keeps its users."""
    path = directory / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    made = {name: secrets.token_hex(32) for name in ("registration", "macaroon", "form")}
    path.touch(mode=0o600)
    path.write_text(json.dumps(made) + "\n")
    return made


def _homeserver_config(
    directory: Path, server_name: str, port: int, keys: dict[str, str]
) -> dict[str, Any]:
    return {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": str(directory / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                # Only the client API: with no 'federation' resource nothing can federate in.
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
        "log_config": str(directory / "log.yaml"),
        "media_store_path": str(directory / "media"),
        "signing_key_path": str(directory / "signing.key"),
        "registration_shared_secret": keys["registration"],
        "macaroon_secret_key": keys["macaroon"],
        "form_secret": keys["form"],
        "report_stats": False,
        "enable_registration": False,
        # The default of 12 rounds costs about 250 ms per registration and per login.
        "bcrypt_rounds": 4,
        "enable_metrics": False,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        # No process sends federation either: otherwise Synapse's federation sender still
        # works through every new event (the rooms' hosts, a database write), 5-10 ms of its
        # CPU per message here, for servers it may not reach anyway.
        "federation_sender_instances": [],
        "url_preview_enabled": False,
        "use_presence": False,
        **_RATE_LIMITS,
    }


def _log_config(directory: Path) -> dict[str, Any]:
    return {
        "version": 1,
        "formatters": {
            "precise": {"format": "%(asctime)s %(name)s:%(lineno)d %(levelname)s %(message)s"}
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(directory / "homeserver.log"),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
        "root": {"level": "INFO", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


class Synapse:
    """A running throwaway Synapse; make one with :meth:`start`, end it with :meth:`stop`."""

    def __init__(
        self,
        *,
        process: subprocess.Popen[bytes],
        output: IO[bytes],
        url: str,
        server_name: str,
        shared_secret: str,
        directory: Path,
        owns_directory: bool,
    ) -> None:
        self.url = url
        self.server_name = server_name
        self.shared_secret = shared_secret
        self.directory = directory
        self._process = process
        self._output = output
        self._owns_directory = owns_directory

    @classmethod
    def start(
        cls, directory: Path | None = None, server_name: str = "test.local", *, port: int = 0
    ) -> Synapse:
        """Write a config into ``directory`` (a new temporary one if None, in memory where
        the machine has room: ``scratch.ram_tempdir``) and start Synapse.

        ``port`` 0 picks a free loopback port.  Returns once ``GET /health`` answers 200.
        Raises :class:`SandboxError` with the end of the server's log if it exits or is not
        ready within :data:`START_TIMEOUT` seconds.  A directory made here is deleted by
        :meth:`stop`; a given one is kept, and starting on it again reuses its database,
        signing key and secrets, so users and rooms survive a restart.
        """
        owns_directory = directory is None
        if directory is None:
            directory = ram_tempdir("syn")  # in memory where there is room: a throwaway
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        keys = _secrets(directory)
        config = _homeserver_config(directory, server_name, port, keys)
        # JSON is a subset of YAML, so the standard library can write Synapse's config files.
        (directory / "homeserver.yaml").write_text(json.dumps(config, indent=2) + "\n")
        (directory / "log.yaml").write_text(json.dumps(_log_config(directory), indent=2) + "\n")
        if not (directory / "signing.key").exists():
            # Writing the key in-process saves the ~1 s of a `--generate-keys` run.
            with open(directory / "signing.key", "w") as key_file:
                write_signing_keys(key_file, [generate_signing_key("a_sandbox")])

        output = open(directory / "stdout.log", "ab")  # closed by stop()
        command = [sys.executable, "-m", "synapse.app.homeserver"]
        process = subprocess.Popen(
            [*command, "-c", str(directory / "homeserver.yaml")],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
        server = cls(
            process=process,
            output=output,
            url=f"http://127.0.0.1:{port}",
            server_name=server_name,
            shared_secret=keys["registration"],
            directory=directory,
            owns_directory=owns_directory,
        )
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise SandboxError(
                    f"Synapse exited with status {self._process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"Synapse not ready after {START_TIMEOUT:.0f} s:\n" + self.log_tail()
                )
            time.sleep(0.05)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log and of its stdout/stderr, for failure messages."""
        parts = []
        for name in ("homeserver.log", "stdout.log"):
            path = self.directory / name
            if path.exists():
                text = path.read_text(errors="replace")[-chars:]
                parts.append(f"--- {name} ---\n{text}")
        return "\n".join(parts)

    def user_id(self, localpart: str) -> str:
        """The full Matrix ID of ``localpart`` on this server."""
        return f"@{localpart}:{self.server_name}"

    def register(self, localpart: str, password: str, admin: bool = False) -> dict[str, Any]:
        """Create a user with the shared-secret admin API and return Synapse's answer.

        The answer holds ``user_id``, ``access_token``, ``device_id`` and ``home_server``;
        the token and device can be used directly (nio's ``restore_login``), with no login.
        """
        endpoint = self.url + "/_synapse/admin/v1/register"
        nonce = str(self._request(endpoint)["nonce"])
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode()]))
        mac.update(b"\x00admin" if admin else b"\x00notadmin")
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac.hexdigest(),
        }
        return self._request(endpoint, body)

    def _request(self, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            what = f"{request.get_method()} {url}: {exc.code} {detail}"
            raise SandboxError(f"Synapse refused {what}") from exc
        return answer

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`); idempotent."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._output.close()
        if self._owns_directory and self.directory.exists():
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (the benchmark reads its CPU time)."""
        return self._process.pid

    def __enter__(self) -> Synapse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Synapse {self.server_name} at {self.url} pid={self._process.pid}>"
