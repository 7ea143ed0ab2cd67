"""Launchers for the real servers the integration tests run against.

:class:`MailStack` is a private Dovecot (IMAP + LMTP) behind a private Postfix (SMTP) from the
Debian packages, on loopback ports, for the domain ``test.example`` only.  :class:`GpgWorld`
is one GnuPG home holding every test key, made in a single ``gpg --batch --gen-key`` call,
from which per-role keyrings are exported.

Both keep their state in short ``mkdtemp`` directories directly under the temp dir: Dovecot
and gpg-agent create Unix sockets there, and a socket path may not exceed 107 bytes, which
pytest's ``tmp_path`` easily does.  Comments say why each unusual setting is there.

:class:`TestCA` is a throwaway certificate authority (made with ``openssl`` once per test
session) and a server certificate it signed for 127.0.0.1; given one, the mail stack also
speaks IMAPS, SMTPS and STARTTLS, and Postfix offers SMTP AUTH through Dovecot.
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
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import leaks

from secir_bot.sandbox.scratch import free_port, short_tempdir

DOMAIN = "test.example"
HOSTNAME = "mx.test.example"
START_TIMEOUT = 15.0


class ServerError(RuntimeError):
    """A test server could not be started or configured."""


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


def _listening(port: int) -> bool:
    """Whether something accepts connections on ``port`` (for servers silent until spoken to)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _banner(port: int, timeout: float = 1.0) -> bytes:
    """The first line a server sends on ``port``, or b"" if it does not answer yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            return sock.recv(512)
    except OSError:
        return b""


# --------------------------------------------------------------------------------------------
# TLS

CERT_DAYS = 30  # long enough that nothing warns "expires soon" during a test session


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA and a server certificate it signed (CN and SAN 127.0.0.1, localhost).

    ``ca`` is what clients trust (through ``SSL_CERT_FILE`` or a config's ``ca_file``);
    ``cert`` and ``key`` are what the servers present.  Another ``TestCA`` is a "wrong CA".
    """

    directory: Path
    ca: Path
    cert: Path
    key: Path

    __test__ = False  # a class named Test* that pytest must not collect

    @classmethod
    def create(cls, name: str = "secir test CA", days: int = CERT_DAYS) -> TestCA:
        directory = short_tempdir("ca")
        directory.chmod(0o755)  # Dovecot and Postfix read the certificate after start-up
        ca, ca_key = directory / "ca.pem", directory / "ca.key"
        cert, key, csr = directory / "cert.pem", directory / "key.pem", directory / "req.csr"
        ext = directory / "ext.cnf"
        ext.write_text(
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        steps = [
            ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", days, "-subj",
             f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", days, "-extfile", ext],
        ]  # fmt: skip
        try:
            for step in steps:
                result = subprocess.run(
                    [_program("openssl"), *map(str, step)], capture_output=True, check=False
                )
                if result.returncode != 0:
                    raise ServerError(f"openssl {step[0]} failed:\n{result.stderr.decode()}")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        for private in (ca_key, key):
            private.chmod(0o600)
        return cls(directory, ca, cert, key)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Dovecot + Postfix

_DOVECOT_CONF = """\
instance_name = dovecot-{imap_port}
hostname = {hostname}
base_dir = {root}/run
state_dir = {root}/state
listen = 127.0.0.1
protocols = imap lmtp
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
# A failed login is normally answered after 2 s, to slow down guessing; tests want it now.
auth_failure_delay = 0
log_path = {root}/dovecot.log
first_valid_uid = {mail_uid}
mail_location = maildir:~/Maildir
mail_fsync = never
# Dovecot's "* OK Still here", every 2 minutes in IDLE, ends the bot's IDLE as a new mail would,
# so a new mail the bot was not told of would still be read within 2 minutes and a test could
# miss it. Once an hour, a mail the bot overlooked stays unread for the length of any test.
imap_idle_notify_interval = 60 mins
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
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
# Postfix asks Dovecot to check SMTP AUTH passwords (the same users as IMAP).
service auth {{
  inet_listener auth {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
"""

# With a TestCA: the plain listener stays (the tests' own checks use it) and IMAPS listens.
_DOVECOT_SSL = """\
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}"""

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
# Towards Dovecot's LMTP on loopback: no TLS.
lmtp_tls_security_level = none
# SMTP AUTH, checked by Dovecot; mynetworks may still send without it, as before.
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{auth_port}
# Answer a failed AUTH at once (the default sleeps a second per error).
smtpd_error_sleep_time = 0
{tls}"""

# With a TestCA: the certificate for the two TLS services below (the plain port stays as it
# was, without STARTTLS, so that clients which upgrade whenever they can keep working).
_POSTFIX_TLS = """\
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
# One log line per TLS session, so a test can see that TLS was used.
smtpd_tls_loglevel = 1
"""

# Every service unchrooted (5th column 'n'), no port-25 listener: never Debian's master.cf.
_POSTFIX_MASTER = """\
127.0.0.1:{smtp_port} inet n - n - - smtpd
{smtps}pickup    unix  n - n 60    1 pickup
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
tlsmgr    unix  - - n 1000? 1 tlsmgr
"""

# Submission with STARTTLS offered (port 587 style), and implicit TLS (port 465 style): the
# same smtpd, wrapped in TLS from the first byte. Each logs under its own name.
_POSTFIX_TLS_SERVICES = """\
127.0.0.1:{submission_port} inet n - n - - smtpd -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=may
127.0.0.1:{smtps_port} inet n - n - - smtpd -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt
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

    def __init__(self, tls: TestCA | None = None) -> None:
        self.tls = tls
        self.imap_port = free_port()
        self.lmtp_port = free_port()
        self.smtp_port = free_port()
        self.auth_port = free_port()
        # Without a TestCA these stay closed (port 0 means "no listener" to Dovecot).
        self.imaps_port = free_port() if tls else 0
        self.submission_port = free_port() if tls else 0
        self.smtps_port = free_port() if tls else 0
        self.dovecot_dir = short_tempdir("dv")
        self.postfix_dir = short_tempdir("pf")
        self._users_dir = self.dovecot_dir / "users"
        mail_user = pwd.getpwnam("mail")  # Debian's mail user (uid 8) owns every mailbox
        self._uid, self._gid = mail_user.pw_uid, mail_user.pw_gid
        self._dovecot: subprocess.Popen[bytes] | None = None
        self._postfix: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, users: Mapping[str, str], tls: TestCA | None = None) -> MailStack:
        """Start Dovecot, then Postfix, with ``users`` (address -> password) able to log in.

        With ``tls``, Dovecot also listens for IMAPS on ``imaps_port``, Postfix offers
        STARTTLS on ``submission_port`` and implicit TLS on ``smtps_port``.
        """
        stack = cls(tls)
        try:
            for address, password in users.items():
                stack.add_user(address, password)
            stack._configure_dovecot()
            stack.start_dovecot()
            stack._configure_postfix()
            stack.start_postfix()
        except BaseException:
            stack.stop()
            raise
        return stack

    def add_user(self, address: str, password: str) -> None:
        """Add a mailbox user, usable at once (a changed password may take a second)."""
        leaks.secret(password)
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
        # Dovecot's auth process runs as an unprivileged user: the modes are set, not left to
        # the umask (the bot's CLI sets 0077, and a test that runs it in-process keeps it).
        for directory in (self._users_dir, path.parent):
            directory.chmod(0o755)
        # Write and rename, so Dovecot never reads half a line.
        partial = path.with_name(f".{local}.new")
        partial.write_text(entry)
        partial.chmod(0o644)
        partial.replace(path)

    def dovecot_log(self, chars: int = 3000) -> str:
        return _tail(self.dovecot_dir / "dovecot.log", chars)

    def postfix_log(self, chars: int = 3000) -> str:
        return _tail(self.postfix_dir / "postfix.log", chars)

    def logs(self) -> str:
        """Both servers' logs, for an assertion message."""
        return f"--- postfix ---\n{self.postfix_log()}\n--- dovecot ---\n{self.dovecot_log()}"

    def handovers(self, address: str) -> list[str]:
        """How each of Postfix's attempts to hand mail for ``address`` to Dovecot ended
        ("sent", "deferred", "bounced"), oldest first."""
        told = f" to=<{address.lower()}>, "
        return [
            line.rsplit(" status=", 1)[1].split(" ", 1)[0]
            for line in self.postfix_log(10**7).splitlines()
            if told in line and " status=" in line
        ]

    def flush_queue(self) -> None:
        """Have Postfix try its deferred mail now (``postqueue -f``), not at its next retry."""
        flushed = subprocess.run(
            [_program("postqueue"), "-c", str(self.postfix_dir / "etc"), "-f"],
            capture_output=True,
            text=True,
            check=False,
        )
        if flushed.returncode != 0:
            raise ServerError(f"postqueue -f: {flushed.stderr}\n{self.postfix_log()}")

    def _configure_dovecot(self) -> None:
        root = self.dovecot_dir
        root.chmod(0o755)
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir()
        os.chown(root / "mail", self._uid, self._gid)
        self._users_dir.mkdir(exist_ok=True)
        self._users_dir.chmod(0o755)
        ssl = "ssl = no"
        if self.tls is not None:
            ssl = _DOVECOT_SSL.format(cert=self.tls.cert, key=self.tls.key)
        config = _DOVECOT_CONF.format(
            root=root,
            hostname=HOSTNAME,
            imap_port=self.imap_port,
            imaps_port=self.imaps_port,
            lmtp_port=self.lmtp_port,
            auth_port=self.auth_port,
            mail_uid=self._uid,
            ssl=ssl,
        )
        (root / "dovecot.conf").write_text(config)

    def start_dovecot(self) -> None:
        """Start Dovecot (again, after ``stop_dovecot``: same ports, users and mail)."""
        root = self.dovecot_dir
        with open(root / "stdout.log", "ab") as output:
            # -F keeps the master as our child; its own session lets stop() kill the whole group.
            self._dovecot = subprocess.Popen(
                [_program("dovecot"), "-F", "-c", str(root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = {self.imap_port: b"* OK", self.lmtp_port: b"220"}
        # IMAPS and auth say nothing before a handshake: an accepted connection is enough.
        ready.update({port: b"" for port in (self.imaps_port, self.auth_port) if port})
        self._wait(self._dovecot, "dovecot", ready)

    def _configure_postfix(self) -> None:
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
            "smtps_port": self.smtps_port,
            "auth_port": self.auth_port,
            "tls": "",
            "smtps": "",
        }
        if self.tls is not None:
            values["tls"] = _POSTFIX_TLS.format(cert=self.tls.cert, key=self.tls.key)
            values["smtps"] = _POSTFIX_TLS_SERVICES.format(
                submission_port=self.submission_port, smtps_port=self.smtps_port
            )
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

    def start_postfix(self) -> None:
        """Start Postfix (again, after ``stop_postfix``: same ports and queue)."""
        root = self.postfix_dir
        with open(root / "stdout.log", "ab") as output:
            self._postfix = subprocess.Popen(
                [_program("postfix"), "-c", str(root / "etc"), "start-fg"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready = {self.smtp_port: b"220"}
        if self.tls is not None:
            ready[self.submission_port] = b"220"
            ready[self.smtps_port] = b""  # silent until the TLS handshake
        self._wait(self._postfix, "postfix", ready)

    def _wait(self, process: subprocess.Popen[bytes], name: str, banners: dict[int, bytes]) -> None:
        """Wait until each port shows its banner (b"": until it accepts a connection)."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = dict(banners)
        while waiting:
            if process.poll() is not None:
                raise ServerError(f"{name} exited with {process.returncode}:\n{self.logs()}")
            for port, expected in list(waiting.items()):
                if _banner(port).startswith(expected) if expected else _listening(port):
                    del waiting[port]
            if waiting and time.monotonic() > deadline:
                raise ServerError(f"{name} not ready on {sorted(waiting)}:\n{self.logs()}")
            if waiting:
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill both servers and delete their directories; fast, and safe to call twice."""
        self.stop_postfix()
        self.stop_dovecot()
        shutil.rmtree(self.postfix_dir, ignore_errors=True)
        shutil.rmtree(self.dovecot_dir, ignore_errors=True)

    def stop_postfix(self) -> None:
        """Stop Postfix at once (mail in its queue stays for ``start_postfix``)."""
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

    def stop_dovecot(self) -> None:
        """Stop Dovecot at once, as a crash would (the mailboxes stay for ``start_dovecot``)."""
        if self._dovecot is not None:
            # A graceful Dovecot stop sleeps a fixed second; nothing here needs grace.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._dovecot.pid, signal.SIGKILL)
            self._dovecot.wait()
            self._dovecot = None

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
        home = short_tempdir("g")
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
