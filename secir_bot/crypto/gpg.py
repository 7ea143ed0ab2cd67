"""Running one gpg process: a deadline, bounded output, and gpg's status lines apart.

gpg is run directly with asyncio subprocesses rather than through python-gnupg, for three
reasons found on hostile mail: python-gnupg decodes gpg's stderr strictly (one armor header
line with invalid UTF-8 kills its reader thread, and thousands of them fill the pipe so that
gpg and python-gnupg wait on each other for ever), it has no deadline and no way to kill a
gpg that hangs, and it reads the machine-readable status lines from the same stream as
gpg's human messages, which quote attacker-chosen text.

Here the status lines come on a pipe of their own (``--status-fd``), stdout and stderr are
drained concurrently (stdout up to a limit, stderr keeping only a decoded tail), and the
whole call has a deadline after which the process is killed and ``GpgTimeout`` raised.
The status protocol is gpg's documented machine interface (``doc/DETAILS`` in GnuPG).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from secir_bot.crypto.children import reap_with_pidfds
from secir_bot.errors import CryptoError

T = TypeVar("T")

STATUS_PREFIX = b"[GNUPG:] "
MAX_STATUS_LINES = 2000  # a real message gives a dozen; more means a flood of signatures
STATUS_LINE_LIMIT = 2**16  # bytes; gpg's longest real lines (user ids, notations) are far shorter
# gpg's note for each key it looks at (one per recipient): not kept, nor counted as a flood.
CONSIDERED = STATUS_PREFIX + b"KEY_CONSIDERED "
STDERR_TAIL = 8192  # characters of gpg's human messages kept, for errors in our own calls
# Options for every call: no network, no questions, nothing from the user's gpg.conf.
BASE_OPTIONS = (
    "--batch",
    "--no-tty",
    "--yes",
    "--no-greeting",
    "--no-options",
    "--disable-dirmngr",
    "--no-auto-key-retrieve",
)


class GpgTimeout(CryptoError):
    """gpg did not finish before its deadline; the process was killed."""


class _OutputTooLarge(Exception):
    """stdout went past the caller's limit (internal: turned into ``Run.too_large``)."""


@dataclass(frozen=True)
class Run:
    """What one gpg process did."""

    returncode: int
    output: bytes  # stdout, at most the caller's limit
    status: tuple[tuple[str, str], ...]  # (keyword, arguments) of each status line
    stderr: str  # the tail of gpg's human messages, decoded without failing
    too_large: bool = False  # stdout went past the limit and gpg was stopped
    flooded: bool = False  # more status lines than MAX_STATUS_LINES (the rest not kept)

    def lines(self, keyword: str) -> list[str]:
        """The arguments of every status line with ``keyword``."""
        return [rest for key, rest in self.status if key == keyword]

    def has(self, keyword: str) -> bool:
        return any(key == keyword for key, _ in self.status)


def gpg_program() -> str:
    found = shutil.which("gpg")
    if found is None:
        raise CryptoError("gpg is not installed (Debian package gnupg)")
    return found


async def run(
    home: Path,
    args: Sequence[str],
    data: bytes = b"",
    *,
    deadline: float,
    max_output: int | None = None,
) -> Run:
    """Run ``gpg --homedir home ARGS`` with ``data`` on stdin; kill it after ``deadline``."""
    reap_with_pidfds()
    status_read, status_write = os.pipe()
    loop = asyncio.get_running_loop()
    status_reader = asyncio.StreamReader(limit=STATUS_LINE_LIMIT)
    try:
        # Connected before gpg starts, so that no await lies between its start and the
        # ``finally`` below that kills and reaps it (a cancellation there left gpg running).
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(status_reader), os.fdopen(status_read, "rb", 0)
        )
    except BaseException:
        os.close(status_write)
        raise
    started = False
    try:
        # Started to the end even when cancelled meanwhile: asyncio's own clean-up of a
        # start cut short does not survive a second cancellation and leaves gpg running.
        proc, cancelled = await _unhurried(
            asyncio.create_subprocess_exec(
                gpg_program(),
                "--homedir",
                str(home),
                *BASE_OPTIONS,
                "--status-fd",
                str(status_write),
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(status_write,),
            )
        )
        started = True
    except OSError as exc:
        raise CryptoError(f"gpg could not be started: {type(exc).__name__}") from exc
    finally:
        os.close(status_write)  # the child has its copy; EOF comes when gpg exits
        if not started:
            transport.close()
    status: list[tuple[str, str]] = []
    flooded = False
    stderr_tail = bytearray()
    output = bytearray()
    too_large = False

    async def feed() -> None:
        assert proc.stdin is not None
        # gpg may stop reading early (bad input, or killed): that is its answer, not ours.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(data)
            await proc.stdin.drain()
        proc.stdin.close()

    async def read_output() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(2**16):
            output.extend(chunk)
            if max_output is not None and len(output) > max_output:
                raise _OutputTooLarge

    async def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(2**14):
            stderr_tail.extend(chunk)
            del stderr_tail[: max(0, len(stderr_tail) - 4 * STDERR_TAIL)]

    def take(line: bytes) -> None:
        nonlocal flooded
        if not line.startswith(STATUS_PREFIX) or line.startswith(CONSIDERED):
            return
        if len(status) >= MAX_STATUS_LINES or len(line) > STATUS_LINE_LIMIT:
            flooded = True
            return
        text = line[len(STATUS_PREFIX) :].decode("utf-8", errors="replace").rstrip("\r")
        key, _, rest = text.partition(" ")
        status.append((key, rest))

    async def read_status() -> None:
        # Read in chunks and split them here: a line at a time through the stream reader
        # cost ~40 µs a line, and gpg writes one per recipient (37 ms of CPU per post to
        # 1000). A line longer than STATUS_LINE_LIMIT is not from a sane gpg: dropped up to
        # its end, and the run counts as flooded.
        nonlocal flooded
        pending = b""
        skipping = False
        while chunk := await status_reader.read(2**16):
            if skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                chunk, skipping = chunk[end + 1 :], False
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                take(line)
            if len(pending) > STATUS_LINE_LIMIT:
                flooded, skipping, pending = True, True, b""
        if pending:
            take(pending)

    try:
        if cancelled:
            raise asyncio.CancelledError
        async with asyncio.timeout(deadline):
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(feed())
                    tg.create_task(read_output())
                    tg.create_task(read_stderr())
                    tg.create_task(read_status())
            except* _OutputTooLarge:
                too_large = True
                _kill(proc)
            returncode = await proc.wait()
    except TimeoutError:
        raise GpgTimeout(f"gpg did not finish within {deadline:g} s") from None
    finally:
        _kill(proc)
        await _reaped(proc)
        transport.close()
        await _stdin_closed(proc)
    return Run(
        returncode=returncode,
        output=bytes(output[: max_output if too_large else None]),
        status=tuple(status),
        stderr=stderr_tail.decode("utf-8", errors="replace")[-STDERR_TAIL:],
        too_large=too_large,
        flooded=flooded,
    )


async def _reaped(proc: asyncio.subprocess.Process) -> None:
    """Wait until a killed gpg has ended and is reaped, through any further cancellation
    (SIGKILL ends it at once), which is passed on afterwards: a caller that gave up before
    must not leave a gpg behind for its event loop's end."""
    if proc.returncode is not None:
        return
    _, cancelled = await _unhurried(proc.wait())
    if cancelled:
        raise asyncio.CancelledError


async def _stdin_closed(proc: asyncio.subprocess.Process) -> None:
    """gpg's stdin closed, and how its pipe ended heard, through any cancellation (passed
    on afterwards). gpg killed with input unread (a cancelled run) ends the pipe with a
    BrokenPipeError that Python 3.11 keeps for ``wait_closed`` alone, and logs as an error
    nobody retrieved when nothing waited for it."""
    if proc.stdin is None:
        return
    proc.stdin.close()
    _, cancelled = await _unhurried(_closed_quietly(proc.stdin))
    if cancelled:
        raise asyncio.CancelledError


async def _closed_quietly(stream: asyncio.StreamWriter) -> None:
    # gpg may stop reading early (bad input, or killed): that is its answer, not ours.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await stream.wait_closed()


async def _unhurried(pending: Awaitable[T]) -> tuple[T, bool]:
    """Await ``pending`` to its end whatever cancellation comes meanwhile, and say whether
    one came (for the caller to pass on). Only for what ends soon by itself."""
    task = asyncio.ensure_future(pending)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    return task.result(), cancelled


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
