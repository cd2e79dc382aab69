"""One process per run directory: an exclusive lock held while a run trains.

The lock is an OS advisory lock (``flock``) on ``DIR/run.lock``: it is
released by the kernel when the holder exits, however it exits, so there are
no stale locks to clean up. The file records who holds it (process, host,
start time, command), for the message a second process gets.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["RunDirectoryInUse", "RunLock"]

LOCK_NAME = "run.lock"


class RunDirectoryInUse(RuntimeError):
    """Another process holds the run directory."""


class RunLock:
    """An exclusive lock on the run directory ``directory`` (created if needed).

    Use as a context manager, or :meth:`acquire` / :meth:`release`.

    Raises:
        RunDirectoryInUse: from :meth:`acquire` when another process holds it,
            naming the holder.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no flock (Windows): run unlocked rather than not at all
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirectoryInUse(
                f"{self.directory} is in use by another run ({holder}); wait for it to finish, "
                "stop it, or choose another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return (f"process {info.get('pid')} on {info.get('host')} since {info.get('since')}: "
            f"{info.get('command', '')}").strip()
