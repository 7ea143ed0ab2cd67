"""``secir-bot`` as an admin runs it: ``init``, ``member import`` and ``run``, as processes.

For ``run`` the benchmark puts a ``gpg`` wrapper first on the bot's PATH (the bot's process
only): it logs the start, end, exit code and operation of every gpg the bot runs, then
hands over to the real gpg. The wrapper waits for gpg instead of ``exec``-ing it, so that
it can log the end time; a bot that kills gpg on a deadline would kill only the wrapper,
which a benchmark run never provokes.

Start-up markers: the process start, the bot's "running" log line (imports and set-up
done), the first Matrix sync committed (the sync token changes in the bot's store; the
bot commits it with the sync's events, before deciding them), and "IMAP connected".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RUNNING_MARK = "secir-bot running for"
IMAP_MARK = "IMAP connected"
SYNC_TOKEN_KEY = "matrix.sync_token"
DB_NAME = "secir.sqlite"

CONFIG = """\
[store]
path = "store"

[list]
name = "SECIR bench"
address = "{list_address}"
list_id = "secir-bench.{domain}"
owner = "owner@{domain}"

[matrix]
homeserver = "{homeserver}"
user_id = "{bot_user_id}"
password_file = "secrets/matrix-password"
incident_room = "{incident_room}"
control_room = "{control_room}"
admins = ["{admin}"]

[imap]
host = "127.0.0.1"
port = {imap_port}
security = "plain"
username = "{list_address}"
password_file = "secrets/imap-password"
{imap_extra}
[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "plain"
max_recipients = {max_recipients}

[delivery]
retry_base = 0.5
retry_max = 5
{delivery_extra}
[crypto]
backend = "{backend}"
"""

WRAPPER = """\
#!/bin/bash
# secir-bot benchmark: log each gpg the bot runs, then run the real one.
start=$EPOCHREALTIME
{real} "$@"
rc=$?
end=$EPOCHREALTIME
ops=""; recipients=0; positional=0; skip=0
for a in "$@"; do
    if [ $skip = 1 ]; then skip=0; continue; fi
    case "$a" in
        -r|--recipient|-R|--hidden-recipient) recipients=$((recipients+1)); skip=1;;
        --homedir|--status-fd|--max-output|--passphrase-fd|--command-fd|--default-key|\\
        --local-user|-u|--output|-o|--trust-model|--logger-fd|--attribute-fd) skip=1;;
        -*) ops="$ops $a";;
        *) positional=$((positional+1));;
    esac
done
echo "$start $end $rc $recipients $positional$ops" >> {log}
exit $rc
"""


@dataclass(frozen=True)
class GpgCall:
    start: float
    end: float
    returncode: int
    recipients: int
    positional: int  # key ids given to a listing, files, ...
    options: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def kind(self) -> str:
        o = set(self.options)
        if "--encrypt" in o or "-e" in o:
            return "sign+encrypt" if ("--sign" in o or "-s" in o) else "encrypt"
        for option, name in (
            ("--list-secret-keys", "list-secret-keys"),
            ("--list-keys", "list-keys"),
            ("--list-public-keys", "list-keys"),
            ("--decrypt", "decrypt"),
            ("--verify", "verify"),
            ("--import", "import"),
            ("--version", "version"),
            ("--export", "export"),
        ):
            if option in o:
                return name
        return "other"


@dataclass
class Start:
    """When the bot process reached each start-up marker (seconds after the spawn)."""

    running: float | None = None
    synced: float | None = None
    imap: float | None = None


def secir_bot_command() -> list[str]:
    if os.environ.get("SECIR_BENCH_CPROFILE"):  # scripts/cprofile_bot.py
        return [sys.executable, str(Path(__file__).parent.parent / "cprofile_bot.py")]
    script = Path(sys.executable).with_name("secir-bot")
    return [str(script)] if script.exists() else [sys.executable, "-m", "secir_bot"]


def bot_env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The tests' asyncio debug mode would slow the bot down: never measure with it.
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("PYTHONDEVMODE", None)
    if extra_path is not None:
        env["PATH"] = f"{extra_path}:{env.get('PATH', '')}"
    return env


def cli(config: Path, *args: str, gpg_wrapper: Path | None = None) -> tuple[float, str]:
    """Run ``secir-bot ARGS -c config``; return (seconds, output). Raises on failure."""
    command = [*secir_bot_command(), *args, "-c", str(config)]
    start = time.perf_counter()
    result = subprocess.run(
        command,
        capture_output=True,
        check=False,
        cwd=config.parent,
        env=bot_env(gpg_wrapper),
    )
    elapsed = time.perf_counter() - start
    output = (result.stdout + result.stderr).decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{output[-3000:]}")
    return elapsed, output


class Bot:
    """The bot's directory, config, gpg wrapper and (while running) its process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config = directory / "config.toml"
        self.store = directory / "store"
        self.wrapper_dir = directory / "gpgwrap"
        self.gpg_log = directory / "gpg-calls.log"
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.spawned_at = 0.0
        self._install_wrapper()

    def _install_wrapper(self) -> None:
        real = shutil.which("gpg")
        if real is None:
            raise RuntimeError("gpg is not installed")
        self.wrapper_dir.mkdir(parents=True, exist_ok=True)
        wrapper = self.wrapper_dir / "gpg"
        wrapper.write_text(WRAPPER.format(real=real, log=self.gpg_log))
        wrapper.chmod(0o755)

    def write_config(self, **values: object) -> None:
        secrets = self.directory / "secrets"
        secrets.mkdir(mode=0o700, exist_ok=True)
        (secrets / "matrix-password").write_text(f"{values.pop('matrix_password')}\n")
        (secrets / "imap-password").write_text(f"{values.pop('imap_password')}\n")
        self.config.write_text(CONFIG.format(**values))

    def set_servers(self, *, imap_port: int, smtp_port: int) -> None:
        """Point the config at other IMAP and SMTP ports (the bot must be stopped)."""
        lines = []
        section = ""
        for line in self.config.read_text().splitlines():
            if line.startswith("["):
                section = line.strip("[]")
            if line.startswith("port = ") and section in ("imap", "smtp"):
                line = f"port = {imap_port if section == 'imap' else smtp_port}"
            lines.append(line)
        self.config.write_text("\n".join(lines) + "\n")

    def init(self) -> float:
        return cli(self.config, "init")[0]

    def import_members(self, file: Path) -> tuple[float, int]:
        """``secir-bot member import``; (seconds, gpg runs it made)."""
        before = len(self.gpg_calls())
        elapsed, output = cli(
            self.config, "member", "import", str(file), gpg_wrapper=self.wrapper_dir
        )
        added = output.count("added ")
        if added == 0:
            raise RuntimeError(f"member import added nobody:\n{output[-2000:]}")
        return elapsed, len(self.gpg_calls()) - before

    # -- running ----------------------------------------------------------------------

    def decided_at(self, since: float) -> list[float]:
        """When each mail relayed since ``since`` was decided (its room rows committed)."""
        path = self.store / DB_NAME
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT decided_at FROM inbox WHERE source = 'email' AND state = 'relayed'"
                " AND decided_at >= ? ORDER BY decided_at",
                [since],
            ).fetchall()
        return [float(r[0]) for r in rows]

    def _sync_token(self) -> str | None:
        path = self.store / DB_NAME
        if not path.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                row = db.execute("SELECT value FROM kv WHERE key = ?", [SYNC_TOKEN_KEY]).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else str(row[0])

    async def start(self, timeout: float = 120.0) -> Start:
        """Spawn ``secir-bot run``; return once its first sync is committed and IMAP is up."""
        assert self.process is None, "the bot is already running"
        self.runs += 1
        self.log_path = self.directory / f"bot-run{self.runs}.log"
        before = self._sync_token()
        # The spawn is the start of the start-up figure: done here, not in a thread.
        log = open(self.log_path, "wb")  # noqa: ASYNC230
        self.spawned_at = time.time()
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [*secir_bot_command(), "run", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            env=bot_env(self.wrapper_dir),
            start_new_session=True,
        )
        log.close()
        marks = Start()
        deadline = time.monotonic() + timeout
        while marks.synced is None or marks.imap is None:
            now = time.time() - self.spawned_at
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the bot exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            text = self.log_path.read_text(errors="replace")
            if marks.running is None and RUNNING_MARK in text:
                marks.running = now
            if marks.imap is None and IMAP_MARK in text:
                marks.imap = now
            if marks.synced is None and self._sync_token() not in (None, before):
                marks.synced = now
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the bot was not ready after {timeout:.0f}s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.01)
        return marks

    def rss(self) -> tuple[float, float]:
        """(current, peak) resident memory of the bot's Python process, in MiB."""
        assert self.process is not None
        values: dict[str, float] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def cpu(self) -> float:
        """CPU seconds the bot's process has used so far (all its threads; not gpg's)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        # utime and stime, fields 14 and 15 of proc(5), counted from the state field (3).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def children_cpu(self) -> float:
        """CPU seconds of the bot's children that have ended (its gpg runs; not gpg-agent)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        # cutime and cstime, fields 16 and 17 of proc(5).
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an admin's service manager would; the exit code."""
        process = self.process
        if process is None:
            return 0
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def kill(self) -> None:
        """Last resort on the way out (an exception in the benchmark)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def log_text(self) -> str:
        return "" if self.log_path is None else self.log_path.read_text(errors="replace")

    def gpg_calls(self, since: float = 0.0, until: float = float("inf")) -> list[GpgCall]:
        """The gpg runs logged by the wrapper that started in [since, until]."""
        if not self.gpg_log.exists():
            return []
        out = []
        for line in self.gpg_log.read_text().splitlines():
            parts = line.split()
            if len(parts) < 5:
                continue
            call = GpgCall(
                float(parts[0]),
                float(parts[1]),
                int(parts[2]),
                int(parts[3]),
                int(parts[4]),
                tuple(parts[5:]),
            )
            if since <= call.start <= until:
                out.append(call)
        return out

    def close(self) -> None:
        self.kill()
        subprocess.run(
            ["gpgconf", "--homedir", str(self.store / "gnupg"), "--kill", "all"],
            capture_output=True,
            check=False,
        )
