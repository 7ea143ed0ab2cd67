"""The store is private: directories 0700 and files 0600, all the way down.

The state directory holds the list's secret key, the bot's Matrix keys and access token, and
the text of every post. Every ``secir-bot`` command sets the umask to 0077 so that what it
creates is private; a store made or copied without care (an old version, a restore with the
wrong modes) is found by :func:`too_open` (``doctor`` reports it) and fixed by
:func:`tighten` (``run`` does, with a warning for each path).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def too_open(root: Path) -> list[tuple[Path, int]]:
    """Directories and regular files below ``root`` (and itself) that others may use."""
    found = []
    for path in [root, *sorted(root.rglob("*"))]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # gone meanwhile (a socket or lock file of gpg-agent, say)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            continue  # sockets and links: gpg-agent makes its own sockets private
        if stat.S_IMODE(st.st_mode) & 0o077:
            found.append((path, stat.S_IMODE(st.st_mode)))
    return found


def tighten(root: Path) -> list[str]:
    """Make everything below ``root`` private; say what was changed."""
    changed = []
    for path, mode in too_open(root):
        wanted = DIR_MODE if path.is_dir() else FILE_MODE
        os.chmod(path, wanted)
        changed.append(f"{path} had mode {mode:04o}; set to {wanted:04o}")
    return changed
