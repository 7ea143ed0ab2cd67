"""Launchers for the real servers the integration tests run against.

:class:`MailStack` is a private Dovecot (IMAP + LMTP) behind a private Postfix (SMTP) from the
Debian packages, on loopback ports, for the domain ``test.example`` only.  :class:`GpgWorld`
is one GnuPG home holding every test key, made in a single ``gpg --batch --gen-key`` call,
from which per-role keyrings are exported.

Both keep their state in short ``mkdtemp`` directories directly under the temp dir: Dovecot
and gpg-agent create Unix sockets there, and a socket path may not exceed 107 bytes, which
pytest's ``tmp_path`` easily does.  Comments say why each unusual setting is there.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

DOMAIN = "test.example"
HOSTNAME = "mx.test.example"
START_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A test server could not be started or configured."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _short_tempdir(prefix: str) -> Path:
    """A new directory whose Unix socket paths stay well under the 107-byte limit."""
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def _program(name: str) -> str:
    # /usr/sbin is not on every user's PATH, but that is where Debian puts both daemons.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise ServerError(f"{name} is not installed; run scripts/setup.sh")
    return found


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"({path.name} was not written)"


def _banner(port: int, timeout: float = 1.0) -> bytes:
    """The first line a server sends on ``port``, or b"" if it does not answer yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.recv(512)
    except OSError:
        return b""


# --------------------------------------------------------------------------------------------
# Dovecot + Postfix

_DOVECOT_CONF = """\
instance_name = dovecot-{imap_port}
hostname = {hostname}
base_dir = {root}/run
state_dir = {root}/state
listen = 127.0.0.1
protocols = imap lmtp
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# A failed login is normally answered after 2 s, to slow down guessing; tests want it now.
auth_failure_delay = 0
log_path = {root}/dovecot.log
first_valid_uid = {mail_uid}
mail_location = maildir:~/Maildir
mail_fsync = never
# One passwd-file per user.  Dovecot re-checks a passwd-file at most once a second, so a user
# added to a shared file right after a lookup stays unknown for up to a second; a new file is
# read at once.  Names are matched in lower case, as real servers do.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {root}/users/%Ld/%Ln
}}
# Users come from the same files, so LMTP refuses unknown addresses (Postfix then bounces the
# mail to its sender, as a real server does).
userdb {{
  driver = passwd-file
  args = username_format=%Lu {root}/users/%Ld/%Ln
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"""

_POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
# There is no syslog here: without a log file Postfix's errors are invisible.
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
myhostname = {hostname}
mydomain = {domain}
myorigin = $mydomain
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
virtual_mailbox_domains = {domain}
virtual_mailbox_maps = static:ok
virtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}
default_transport = error:5.7.1 no mail outside the test domain
relay_transport = error:5.7.1 no mail outside the test domain
delay_warning_time = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

# Every service unchrooted (5th column 'n'), no port-25 listener: never Debian's master.cf.
_POSTFIX_MASTER = """\
127.0.0.1:{smtp_port} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
lmtp      unix  - - n -     - lmtp
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def _make_postfix_dirs(queue: Path, data: Path) -> bool:
    """Create the queue and data directories as the package's postfix-files list says.

    Returns False (and leaves the job to Postfix's own start-up check) if the list is not
    where ``postconf`` says it is.
    """
    meta = subprocess.run(
        [_program("postconf"), "-d", "-h", "meta_directory"], capture_output=True, check=False
    )
    listing = Path(meta.stdout.decode().strip() or ".") / "postfix-files"
    if meta.returncode != 0 or not listing.is_file():
        return False
    places = {"$queue_directory": queue, "$data_directory": data}
    names = {"$mail_owner": "postfix", "$setgid_group": "postdrop"}
    for line in listing.read_text().splitlines():
        # path:type:owner:group:mode:flags, e.g. $queue_directory/public:d:$mail_owner:...
        fields = line.split(":")
        if len(fields) < 5 or fields[1] != "d":
            continue
        top, _, rest = fields[0].partition("/")
        if top not in places:
            continue
        path = places[top] / rest if rest else places[top]
        path.mkdir(exist_ok=True)
        owner, group = (names.get(field, field) for field in fields[2:4])
        uid = -1 if owner == "-" else pwd.getpwnam(owner).pw_uid
        gid = -1 if group == "-" else grp.getgrnam(group).gr_gid
        os.chown(path, uid, gid)
        path.chmod(int(fields[4], 8))
    return True


class MailStack:
    """A private Postfix (SMTP) delivering over LMTP into a private Dovecot (IMAP).

    Only ``@test.example`` is accepted; other domains are refused at RCPT.  Mail to a
    ``test.example`` address without a user is accepted, then bounced by LMTP.
    Must run as root (Postfix's master and Dovecot's uid switching need it).
    """

    def __init__(self) -> None:
        self.imap_port = _free_port()
        self.lmtp_port = _free_port()
        self.smtp_port = _free_port()
        self.dovecot_dir = _short_tempdir("dv")
        self.postfix_dir = _short_tempdir("pf")
        self._users_dir = self.dovecot_dir / "users"
        mail_user = pwd.getpwnam("mail")  # Debian's mail user (uid 8) owns every mailbox
        self._uid, self._gid = mail_user.pw_uid, mail_user.pw_gid
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._postfix: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, users: Mapping[str, str]) -> MailStack:
        """Start Dovecot, then Postfix, with ``users`` (address -> password) able to log in."""
        stack = cls()
        try:
            for address, password in users.items():
                stack.add_user(address, password)
            stack._start_dovecot()
            stack._start_postfix()
        except BaseException:
            stack.stop()
            raise
        return stack

    def add_user(self, address: str, password: str) -> None:
        """Add a mailbox user, usable at once (a changed password may take a second)."""
        address = address.lower()
        local, _, domain = address.rpartition("@")
        text = address + password
        if not local or not domain or any(c in text for c in ":/\n") or local.startswith("."):
            raise ServerError(f"cannot store user {address!r} in a passwd-file")
        # user:password:uid:gid:gecos:home:shell:extra; Dovecot's userdb needs uid, gid and
        # home on the line itself (default_fields do not fill in a short line).
        home = self.dovecot_dir / "mail" / domain / local
        entry = f"{address}:{{PLAIN}}{password}:{self._uid}:{self._gid}::{home}::\n"
        path = self._users_dir / domain / local
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write and rename, so Dovecot never reads half a line.
        partial = path.with_name(f".{local}.new")
        partial.write_text(entry)
        partial.replace(path)

    def dovecot_log(self) -> str:
        return _tail(self.dovecot_dir / "dovecot.log")

    def postfix_log(self) -> str:
        return _tail(self.postfix_dir / "postfix.log")

    def logs(self) -> str:
        """Both servers' logs, for an assertion message."""
        return f"--- postfix ---\n{self.postfix_log()}\n--- dovecot ---\n{self.dovecot_log()}"

    def _start_dovecot(self) -> None:
        root = self.dovecot_dir
        root.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir()
        os.chown(root / "mail", self._uid, self._gid)
        self._users_dir.mkdir(exist_ok=True)
        config = _DOVECOT_CONF.format(
            root=root,
            hostname=HOSTNAME,
            imap_port=self.imap_port,
            lmtp_port=self.lmtp_port,
            mail_uid=self._uid,
        )
        (root / "dovecot.conf").write_text(config)
        with open(root / "stdout.log", "wb") as output:
            # -F keeps the master as our child; its own session lets stop() kill the whole group.
            self._dovecot = subprocess.Popen(
                [_program("dovecot"), "-F", "-c", str(root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait(self._dovecot, "dovecot", {self.imap_port: b"* OK", self.lmtp_port: b"220"})

    def _start_postfix(self) -> None:
        root = self.postfix_dir
        root.chmod(0o755)
        (root / "etc").mkdir()
        (root / "queue").mkdir(mode=0o755)
        values = {
            "root": root,
            "hostname": HOSTNAME,
            "domain": DOMAIN,
            "lmtp_port": self.lmtp_port,
            "smtp_port": self.smtp_port,
        }
        main_cf, master_cf = root / "etc" / "main.cf", root / "etc" / "master.cf"
        main_cf.write_text(_POSTFIX_MAIN.format(**values))
        master_cf.write_text(_POSTFIX_MASTER.format(**values))
        # Postfix waits until main.cf is about a second old before it trusts it; back-dating
        # the files saves ~2 s per start.
        past = time.time() - 60
        for path in (main_cf, master_cf):
            os.utime(path, (past, past))
        if _make_postfix_dirs(root / "queue", root / "data"):
            # postfix-script skips its integrity check (~0.25 s, which only creates these
            # directories in a fresh instance) when this file exists.
            (root / "queue" / "quick-start").touch()
        with open(root / "stdout.log", "wb") as output:
            self._postfix = subprocess.Popen(
                [_program("postfix"), "-c", str(root / "etc"), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait(self._postfix, "postfix", {self.smtp_port: b"220"})

    def _wait(self, process: subprocess.Popen[bytes], name: str, banners: dict[int, bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        waiting = dict(banners)
        while waiting:
            if process.poll() is not None:
                raise ServerError(f"{name} exited with {process.returncode}:\n{self.logs()}")
            for port, expected in list(waiting.items()):
                if _banner(port).startswith(expected):
                    del waiting[port]
            if waiting and time.monotonic() > deadline:
                raise ServerError(f"{name} not ready on {sorted(waiting)}:\n{self.logs()}")
            if waiting:
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill both servers and delete their directories; fast, and safe to call twice."""
        if self._postfix is not None:
            # The master is a grandchild (postfix -> postfix-script -> master); SIGTERM to it
            # ends Postfix at once, unlike `postfix stop`, which polls in 1 s steps.
            pid_file = self.postfix_dir / "queue" / "pid" / "master.pid"
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            try:
                self._postfix.wait(5)
            except subprocess.TimeoutExpired:
                pass
            # Sweep what is left of the session we started (the master's children).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._postfix.pid, signal.SIGKILL)
            self._postfix.wait()
            self._postfix = None
        if self._dovecot is not None:
            # A graceful Dovecot stop sleeps a fixed second; nothing here needs grace.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._dovecot.pid, signal.SIGKILL)
            self._dovecot.wait()
            self._dovecot = None
        shutil.rmtree(self.postfix_dir, ignore_errors=True)
        shutil.rmtree(self.dovecot_dir, ignore_errors=True)

    def __enter__(self) -> MailStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# GnuPG

KeyKind = Literal["normal", "expired", "revoked", "signonly"]


@dataclass(frozen=True)
class KeySpec:
    """One test key.

    ``kind``: "normal" (ed25519 primary, cv25519 encryption subkey, no expiry); "expired"
    (the same, created in 2020 and expired a day later); "revoked" (normal, then revoked with
    the certificate gpg stores at generation); "signonly" (no encryption subkey).
    """

    email: str
    name: str
    kind: KeyKind = "normal"


def _key_parameters(spec: KeySpec) -> str:
    lines = [
        "%no-protection",
        "Key-Type: eddsa",
        "Key-Curve: ed25519",
        "Key-Usage: sign",
    ]
    if spec.kind != "signonly":
        lines += ["Subkey-Type: ecdh", "Subkey-Curve: cv25519", "Subkey-Usage: encrypt"]
    lines += [f"Name-Real: {spec.name}", f"Name-Email: {spec.email}"]
    if spec.kind == "expired":
        # gpg refuses an expiry date in the past, but accepts a creation date in the past
        # with an expiry relative to it.  Nothing needs faking the clock.
        lines += ["Creation-Date: 20200101T000000", "Expire-Date: 1d"]
    else:
        lines += ["Expire-Date: 0"]
    lines.append("%commit")
    return "\n".join(lines) + "\n"


# The people of the test suite.  Keys are independent of any list: a test decides who is a
# member.  Dave is meant as an outsider, Mallory as an attacker; the last three keys are
# unusable in the way their names say.
TEST_KEYS: tuple[KeySpec, ...] = (
    KeySpec("alice@test.example", "Alice Jansen"),
    KeySpec("bob@test.example", "Bob Silva"),
    KeySpec("carol@test.example", "Carol Tanaka"),
    KeySpec("dave@test.example", "Dave Outsider"),
    KeySpec("mallory@test.example", "Mallory"),
    KeySpec("expired@test.example", "Expired Key", "expired"),
    KeySpec("revoked@test.example", "Revoked Key", "revoked"),
    KeySpec("signonly@test.example", "Sign Only", "signonly"),
)


def password_for(address: str) -> str:
    """The mail password every test user gets: ``pw-<localpart>``."""
    return "pw-" + address.partition("@")[0]


MAIL_USERS: dict[str, str] = {
    address: password_for(address)
    for address in (
        "list@test.example",
        "alice@test.example",
        "bob@test.example",
        "carol@test.example",
        "dave@test.example",
        "mallory@test.example",
    )
}


class GpgWorld:
    """A GnuPG home with every test key, and the per-role homes made from it.

    Every home is a short directory under the temp dir (gpg-agent's socket lives inside it);
    :meth:`close` stops each home's agent and deletes it.
    """

    def __init__(self) -> None:
        self.home = self._new_home()
        self.specs: dict[str, KeySpec] = {}
        self._fingerprints: dict[str, str] = {}
        self._homes: list[Path] = [self.home]

    @classmethod
    def create(
        cls, specs: Iterable[KeySpec | tuple[str, str] | tuple[str, str, KeyKind]]
    ) -> GpgWorld:
        """Make a world holding a key for each spec (``KeySpec`` or ``(email, name[, kind])``)."""
        world = cls()
        try:
            world.generate(specs)
        except BaseException:
            world.close()
            raise
        return world

    @staticmethod
    def _new_home() -> Path:
        home = _short_tempdir("g")
        home.chmod(0o700)
        return home

    def gpg(
        self, home: Path, *args: str, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run gpg on ``home``; raise :class:`ServerError` with its stderr if it fails."""
        command = ["gpg", "--homedir", str(home), "--batch", "--yes", *args]
        result = subprocess.run(command, input=input, capture_output=True, check=False)
        if result.returncode != 0:
            raise ServerError(
                f"{' '.join(command)} failed:\n{result.stderr.decode(errors='replace')}"
            )
        return result

    def generate(
        self, specs: Iterable[KeySpec | tuple[str, str] | tuple[str, str, KeyKind]]
    ) -> None:
        """Add keys to the world: one gpg call for all of them, then the revocations."""
        new = [s if isinstance(s, KeySpec) else KeySpec(*s) for s in specs]
        for spec in new:
            if spec.email in self.specs:
                raise ServerError(f"the world already has a key for {spec.email}")
        if not new:
            return
        parameters = "".join(_key_parameters(spec) for spec in new)
        self.gpg(self.home, "--gen-key", input=parameters.encode())
        for spec in new:
            self.specs[spec.email] = spec
            self._fingerprints[spec.email] = self._lookup_fingerprint(spec.email)
        for spec in new:
            if spec.kind == "revoked":
                # gpg wrote a revocation certificate at generation, its armour line escaped
                # with a leading colon so it is not imported by accident.
                fpr = self._fingerprints[spec.email]
                text = (self.home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
                text = text.replace(":-----BEGIN PGP", "-----BEGIN PGP", 1)
                self.gpg(self.home, "--import", input=text.encode())

    def _lookup_fingerprint(self, email: str) -> str:
        listing = self.gpg(self.home, "--with-colons", "--list-keys", f"<{email}>").stdout.decode()
        fingerprints = []
        previous = ""
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] == "fpr" and previous == "pub":
                fingerprints.append(fields[9])
            previous = fields[0]
        if len(fingerprints) != 1:
            raise ServerError(f"expected one key for {email}, found {fingerprints}")
        return fingerprints[0]

    def fingerprint(self, email: str) -> str:
        """The primary key fingerprint (40 hex digits, upper case)."""
        return self._fingerprints[email]

    def export_public(self, email: str) -> str:
        """The ASCII-armoured public key, with its revocation if it has one."""
        return self.gpg(self.home, "--armor", "--export", self.fingerprint(email)).stdout.decode()

    def export_secret(self, email: str) -> str:
        """The ASCII-armoured secret key (unprotected)."""
        out = self.gpg(self.home, "--armor", "--export-secret-keys", self.fingerprint(email))
        return out.stdout.decode()

    def make_home(self, emails: Iterable[str], secret: bool = True) -> Path:
        """A new GNUPGHOME holding ``emails``' keys: secret and public, or public only.

        Imported keys get no ownertrust, as in any fresh keyring: encrypt with
        ``always_trust=True`` (python-gnupg) or mark them trusted in the test.
        """
        fingerprints = [self.fingerprint(email) for email in emails]
        home = self._new_home()
        self._homes.append(home)
        if fingerprints:
            export = "--export-secret-keys" if secret else "--export"
            keys = self.gpg(self.home, export, *fingerprints).stdout
            self.gpg(home, "--import", input=keys)
        return home

    def close(self) -> None:
        """Stop the gpg-agent of every home and delete them all."""
        for home in self._homes:
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"],
                capture_output=True,
                check=False,
            )
            shutil.rmtree(home, ignore_errors=True)
        self._homes.clear()

    def __enter__(self) -> GpgWorld:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
