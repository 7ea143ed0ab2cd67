"""Reaping gpg processes without a thread each (Python 3.11 on Linux).

asyncio learns that a child process ended from its child watcher. Python 3.11's default,
``ThreadedChildWatcher``, starts one thread per process, which waits in ``waitpid``: two
thread starts per relayed member mail (decrypt, then sign+encrypt), and the GIL handed to
and fro for each. Linux tells the same through a pidfd (``os.pidfd_open``, Linux 5.3),
which the event loop watches like any other file descriptor. Python 3.12 reaps that way by
default; its watcher is what ``PidfdWatcher`` is, in the form 3.11 can install.

3.11's own ``asyncio.PidfdChildWatcher`` does not fit: it is bound to the loop it was
attached to, so a second loop (each ``asyncio.run`` of the CLI, each test) would find it
inactive. This one uses the loop that starts the process, whichever that is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVarTuple

_Ts = TypeVarTuple("_Ts")
log = logging.getLogger(__name__)


class PidfdWatcher(asyncio.AbstractChildWatcher):
    """Calls back when a child exits, from the running loop, through the child's pidfd."""

    def add_child_handler(
        self, pid: int, callback: Callable[[int, int, *_Ts], object], *args: *_Ts
    ) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

    @staticmethod
    def _reap(
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        loop.remove_reader(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped elsewhere: its exit status is gone
            returncode = 255
            log.warning("child process %d was reaped elsewhere; exit status unknown", pid)
        else:
            returncode = os.waitstatus_to_exitcode(status)
        os.close(pidfd)
        callback(pid, returncode, *args)

    def remove_child_handler(self, pid: int) -> bool:
        return True  # asyncio never calls it; the reader goes when the child has exited

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        pass  # no loop of its own: each child is watched on the loop that started it

    def close(self) -> None:
        pass

    def is_active(self) -> bool:
        return True

    def __enter__(self) -> PidfdWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass


def _pidfd_works() -> bool:
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False  # 3.12 reaps through pidfds already
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # an older kernel, or a sandbox that forbids the call
        return False
    return True


_PIDFDS = _pidfd_works()


def reap_with_pidfds() -> None:
    """Make asyncio reap child processes through pidfds, where it would start threads.

    Cheap when already so. Nothing changes on Python 3.12 and later, nor where pidfds are
    missing (the threads stay).
    """
    if _PIDFDS and not isinstance(asyncio.get_child_watcher(), PidfdWatcher):
        asyncio.set_child_watcher(PidfdWatcher())
