"""One writer per run folder: an OS-level lock held for the life of the writing process.

Any process that can create batches or write a run folder (submit, resume, cancel, a
service's background resumer) holds ``.pairbatch.lock`` in that folder. The lock is
``flock`` on POSIX and ``msvcrt.locking`` on Windows: the kernel releases it when the
process dies, so a ``kill -9`` never leaves a stale lock behind, and no timestamp has to
be guessed at. ``filelock`` was not used: it truncates the lock file on every attempt,
which would erase the holder's PID and host that the refusal message names.

Readers (``status``, loading results) take no lock: every file they read is replaced
atomically, so they always see a whole version.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

import orjson

from pairbatch.errors import PairbatchError

LOCK_NAME = ".pairbatch.lock"
# What this package's own atomic writes and downloads leave behind if the writer is
# killed mid-write (see pairbatch._fs.temp_name and Transport.download).
_STALE = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.(tmp|part)$")


class RunLockedError(PairbatchError):
    """Another process is writing this run folder."""


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    # A holder that has just taken the lock may not have written its name yet (only a
    # brand-new lock file is ever empty): look again for a moment before saying less.
    for _ in range(20):
        try:
            info = orjson.loads(path.read_bytes() or b"{}")
        except (OSError, orjson.JSONDecodeError):
            info = {}
        if isinstance(info, dict) and "pid" in info:
            break
        time.sleep(0.01)
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    what = f" ({info['command']})" if info.get("command") else ""
    return f"PID {info['pid']} on {info.get('host', '?')}{what}"


class RunLock:
    """The exclusive writer lock of one run folder (a context manager).

    ``acquire`` creates the folder's lock file if needed, takes the lock without waiting
    and writes who holds it; a second writer gets :class:`RunLockedError` naming that
    holder. The folder itself must exist.
    """

    def __init__(self, folder: str | os.PathLike[str], command: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise RunLockedError(
                f"{self.folder} is being written by {_holder(self.path)}; "
                "wait for it to finish (or stop it) and try again"
            )
        info = orjson.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        )
        # Written over the old holder's, then cut to length: a refused writer reading it
        # meanwhile sees a whole name (the old or the new), never an empty file.
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, info)
        os.ftruncate(fd, len(info))
        self._fd = fd
        self.remove_stale_temps()
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing drops the lock; the file stays (deleting it would race a waiter).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files of killed writes: while the lock is held no other
        pairbatch writer can own one."""
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.folder):
                if entry.is_file() and _STALE.match(entry.name):
                    stale = Path(entry.path)
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()
                        removed.append(stale)
        return removed

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.folder)!r}, held={self.held})"
