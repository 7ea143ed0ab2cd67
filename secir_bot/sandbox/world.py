"""A complete small world: a list, its members on both channels, and the bot.

Used by ``make demo`` and by the integration tests, so the demo shows exactly what the
tests prove. Given a running Synapse and a mail server (any: the in-process sandbox one or
Dovecot + Postfix), it registers Matrix users, makes each person an OpenPGP key, creates
the encrypted incident and control rooms, writes a config file, runs ``init`` and
``member add`` the way an admin would, and starts the bot in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from secir_bot import config as config_mod
from secir_bot import fileperms
from secir_bot.app import App
from secir_bot.config import Config
from secir_bot.crypto import Keyring
from secir_bot.members import MemberRequest, add_member
from secir_bot.provision import init
from secir_bot.sandbox.operators import MailOperator, MatrixOperator
from secir_bot.sandbox.synapse import Synapse
from secir_bot.store import Store


@dataclass(frozen=True)
class Person:
    key: str  # short handle used by tests: "alice"
    name: str
    tld: str
    matrix: bool = True
    email: bool = True
    member: bool = True
    # The test drives this account with its own client (an Element-grade one): the world
    # registers and invites it but starts no nio device for it.
    own_client: bool = False


DEFAULT_PEOPLE = (
    Person("alice", "Alice Jansen", ".nl"),
    Person("bob", "Bob Silva", ".br", matrix=False),
    Person("carol", "Carol Tanaka", ".jp", email=False),
)

CONFIG_TEMPLATE = """\
[store]
path = "store"

[list]
name = "SECIR"
address = "{list_address}"
list_id = "{list_id}"
owner = "{owner}"
echo_to_sender = false

[matrix]
homeserver = "{homeserver}"
user_id = "{bot_user_id}"
password_file = "secrets/matrix-password"
incident_room = "{incident_room}"
control_room = "{control_room}"
admins = ["{admin}"]
undecryptable_report_after = {undecryptable_after}
{matrix_extra}

[imap]
host = "{mail_host}"
port = {imap_port}
security = "{imap_security}"
username = "{list_address}"
password_file = "secrets/imap-password"
idle_timeout = 30
poll_interval = 2
{imap_extra}

[smtp]
host = "{mail_host}"
port = {smtp_port}
security = "{smtp_security}"
{smtp_extra}

[delivery]
retry_base = 0.2
retry_max = 2
{delivery_extra}
"""


def offline_config(directory: Path, domain: str) -> Config:
    """A valid config that needs no server (for benchmarks and unit tests of the relay)."""
    (directory / "pw").write_text("x\n")
    data = {
        "list": {
            "address": f"list@{domain}",
            "list_id": f"secir.{domain}",
            "owner": f"owner@{domain}",
        },
        "matrix": {
            "homeserver": "http://127.0.0.1:1",
            "user_id": f"@bot:{domain}",
            "incident_room": f"!i:{domain}",
            "control_room": f"!c:{domain}",
            "admins": [f"@admin:{domain}"],
        },
        "imap": {"host": "127.0.0.1", "username": "list", "password_file": "pw"},
        "smtp": {"host": "127.0.0.1"},
    }
    return config_mod.parse(data, directory / "config.toml")


@dataclass
class World:
    synapse: Synapse
    directory: Path
    domain: str
    mail_host: str
    smtp_port: int
    imap_port: int
    add_mail_user: Callable[[str, str], Any]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    people: dict[str, Person] = field(default_factory=dict)
    mx: dict[str, MatrixOperator] = field(default_factory=dict)
    matrix_ids: dict[str, str] = field(default_factory=dict)
    mail: dict[str, MailOperator] = field(default_factory=dict)
    keyrings: dict[str, Keyring] = field(default_factory=dict)
    admin: MatrixOperator | None = None
    config: Config | None = None
    config_path: Path | None = None
    list_fpr: str = ""
    incident_room: str = ""
    control_room: str = ""
    app: App | None = None
    app_task: asyncio.Task[None] | None = None
    _homes: list[Path] = field(default_factory=list)

    @property
    def list_address(self) -> str:
        return f"list-{self.tag}@{self.domain}"

    def address(self, key: str) -> str:
        return f"{key}-{self.tag}@{self.domain}"

    async def _mail_user(self, address: str, password: str) -> None:
        result = self.add_mail_user(address, password)
        if inspect.isawaitable(result):
            await result

    def _register(self, localpart: str) -> dict[str, Any]:
        return self.synapse.register(localpart, "pw-" + localpart)

    def _operator_dir(self, name: str) -> Path:
        path = self.directory / "clients" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def setup(
        self,
        people: tuple[Person, ...] = DEFAULT_PEOPLE,
        undecryptable_after: float = 300.0,
        encrypted_incident_room: bool = True,
        imap_extra: str = "",
        matrix_extra: str = "",
        *,
        imap_security: str = "plain",
        imap_port: int | None = None,
        smtp_security: str = "plain",
        smtp_port: int | None = None,
        smtp_extra: str = "",
        delivery_extra: str = "",
    ) -> None:
        """Everything up to (not including) starting the bot.

        The bot's IMAP and SMTP settings default to plain on the world's ports; the
        keyword arguments set others (TLS ports, ``ca_file``) for the bot alone.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        hs = self.synapse
        bot = await asyncio.to_thread(self._register, f"secir-{self.tag}")
        admin_reg = await asyncio.to_thread(self._register, f"admin-{self.tag}")
        self.admin = MatrixOperator(
            hs.url,
            admin_reg["user_id"],
            admin_reg["device_id"],
            admin_reg["access_token"],
            self._operator_dir("admin"),
        )
        await self.admin.start()
        for person in people:
            self.people[person.key] = person
            if person.matrix:
                reg = await asyncio.to_thread(self._register, f"{person.key}-{self.tag}")
                self.matrix_ids[person.key] = reg["user_id"]
                if person.own_client:
                    continue
                op = MatrixOperator(
                    hs.url,
                    reg["user_id"],
                    reg["device_id"],
                    reg["access_token"],
                    self._operator_dir(person.key),
                )
                await op.start()
                self.mx[person.key] = op
        self.incident_room = await self.admin.create_room(
            f"SECIR incidents {self.tag}",
            [bot["user_id"], *self.matrix_ids.values()],
            encrypted=encrypted_incident_room,
            # The bot removes revoked members (kick needs 50 by default).
            power={bot["user_id"]: 50},
        )
        self.control_room = await self.admin.create_room(
            f"SECIR control {self.tag}", [bot["user_id"]]
        )
        await self._mail_user(self.list_address, "pw-list")

        secrets_dir = self.directory / "secrets"
        secrets_dir.mkdir(mode=0o700, exist_ok=True)
        for name, password in (
            ("matrix-password", f"pw-secir-{self.tag}"),
            ("imap-password", "pw-list"),
        ):
            # Private, as an admin keeps them (check-config warns about readable ones).
            path = secrets_dir / name
            path.touch(mode=0o600)
            path.chmod(0o600)
            path.write_text(password + "\n")
        self.config_path = self.directory / "config.toml"
        self.config_path.write_text(
            CONFIG_TEMPLATE.format(
                list_address=self.list_address,
                list_id=f"secir-{self.tag}.{self.domain}",
                owner=self.address("owner"),
                homeserver=hs.url,
                bot_user_id=bot["user_id"],
                incident_room=self.incident_room,
                control_room=self.control_room,
                admin=self.admin.user_id,
                mail_host=self.mail_host,
                imap_port=imap_port or self.imap_port,
                imap_security=imap_security,
                smtp_port=smtp_port or self.smtp_port,
                smtp_security=smtp_security,
                undecryptable_after=undecryptable_after,
                imap_extra=imap_extra,
                matrix_extra=matrix_extra,
                smtp_extra=smtp_extra,
                delivery_extra=delivery_extra,
            )
        )
        self.config = config_mod.load(self.config_path)
        self.list_fpr = await init(self.config)

        store = Store.open(self.config.store_path)
        bot_ring = Keyring(self.config.store_path / "gnupg")
        list_public = await bot_ring.export_public(self.list_fpr)
        try:
            for person in people:
                home = Path(tempfile.mkdtemp(prefix="go"))
                self._homes.append(home)
                ring = Keyring.create(home)
                self.keyrings[person.key] = ring
                address = self.address(person.key)
                fpr = await ring.generate(person.name, address)
                await ring.import_key(list_public)
                if person.email:
                    await self._mail_user(address, "pw-" + person.key)
                    self.mail[person.key] = MailOperator(
                        address=address,
                        name=person.name,
                        keyring=ring,
                        fingerprint=fpr,
                        password="pw-" + person.key,
                        smtp_port=self.smtp_port,
                        imap_port=self.imap_port,
                        host=self.mail_host,
                    )
                if person.member:
                    channels = ",".join(
                        c for c, on in (("matrix", person.matrix), ("email", person.email)) if on
                    )
                    await add_member(
                        store,
                        bot_ring,
                        MemberRequest(
                            tld=person.tld,
                            name=person.name,
                            email=address,
                            key=await ring.export_public(fpr),
                            matrix_id=self.matrix_ids.get(person.key),
                            channels=channels,
                        ),
                    )
        finally:
            bot_ring.close()
            store.close()
        # As the CLI's umask would have it (gpg rewrote the keyring under this process's).
        fileperms.tighten(self.config.store_path)

    async def start_bot(self, *, mail: bool = True) -> App:
        """Start the bot and wait until it serves; ``mail=False``: without its IMAP session
        (for a test in which the bot cannot log in)."""
        assert self.config is not None and self.admin is not None
        self.app = App(self.config)
        self.app_task = asyncio.create_task(self.app.run(), name="bot")
        await self.admin.wait_joined(self.incident_room, [self.config.matrix.user_id])
        await self.admin.wait_joined(self.control_room, [self.config.matrix.user_id])
        if mail:
            await asyncio.wait_for(self.app.email.connected.wait(), 15)
        await asyncio.wait_for(self.app.matrix.synced.wait(), 15)
        for op in [*self.mx.values(), self.admin]:
            await op.wait_joined(self.incident_room, [self.config.matrix.user_id])
            await op.know_devices_of(self.config.matrix.user_id)
        return self.app

    async def stop_bot(self) -> None:
        if self.app_task is not None:
            self.app_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.app_task
            if (
                self.app_task.done()
                and not self.app_task.cancelled()
                and self.app_task.exception() is not None
            ):
                raise self.app_task.exception()  # type: ignore[misc]
        self.app = None
        self.app_task = None

    async def close(self) -> None:
        try:
            await self.stop_bot()
        finally:
            await self._close_clients()

    async def _close_clients(self) -> None:
        for op in [*self.mx.values(), *([self.admin] if self.admin else [])]:
            await op.stop()
        for ring in self.keyrings.values():
            await asyncio.to_thread(ring.close)
        for home in self._homes:
            shutil.rmtree(home, ignore_errors=True)


async def notices(world: World) -> list[str]:
    """Bodies of the bot's notices in the control room, as the admin sees them."""
    assert world.admin is not None and world.config is not None
    return [
        e.body
        for e in world.admin.events
        if e.room_id == world.control_room and e.sender == world.config.matrix.user_id
    ]
