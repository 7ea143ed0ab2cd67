"""Scratch resources on this machine for throwaway servers: loopback ports, short directories,
directories in memory.

Used by the sandbox, the tests' server fixtures and the benchmark, so that each picks ports
and directories the same way.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
from pathlib import Path

from secir_bot.sandbox import SandboxError

_PORTS_GIVEN: set[int] = set()  # never hand out one port twice in a process

RAM = Path("/dev/shm")  # a tmpfs on Linux: files in memory, fsync costs nothing
RAM_ROOM = 1 << 30  # bytes it must have free before a throwaway server's files go there


def free_port() -> int:
    """A loopback port nobody listens on, below the kernel's range for outgoing connections.

    A port picked by binding to 0 comes from the ephemeral range, which client connections
    also draw from: one of them can hold the port by the time the server binds it ("Address
    already in use"). Ports below that range are never handed out to clients.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10000, max(low, 10001))
        if port in _PORTS_GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _PORTS_GIVEN.add(port)
            return port
    raise SandboxError("no free port found below the ephemeral range")


def short_tempdir(prefix: str) -> Path:
    """A new directory whose Unix socket paths stay well under the 107-byte limit (gpg-agent's,
    Dovecot's): a long temporary directory (pytest's, say) is not used."""
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def ram_tempdir(prefix: str, ram: Path = RAM) -> Path:
    """A new directory in memory (``ram``, when it has ``RAM_ROOM`` free and is writable),
    else in the system's temporary directory.

    For the files of a throwaway server, such as the database of the tests' and the
    benchmark's Synapse: a SQLite commit there waits for no disk (Synapse's ~10 commits per
    event each fsync on a disk, which on a busy machine made each message 25-30 ms slower),
    and a server that lives for one run has nothing to keep across a machine crash. A
    server whose files must outlive the machine's next start (``make demo``'s) is given its
    directory instead.
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ram if ram_has_room(ram) else None))


def ram_has_room(ram: Path = RAM) -> bool:
    """Whether ``ram`` exists, is writable and has ``RAM_ROOM`` bytes free."""
    try:
        free = os.statvfs(ram)
    except OSError:
        return False  # no such file system here
    return free.f_bavail * free.f_frsize >= RAM_ROOM and os.access(ram, os.W_OK)
