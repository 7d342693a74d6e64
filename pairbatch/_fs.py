"""Crash-safe file writing: everything lands under a temporary name, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pairbatch.errors import InputError


def temp_name(path: str | os.PathLike[str]) -> Path:
    """A unique sibling of ``path`` that readers of ``path`` will never mistake for it."""
    target = Path(path)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Persist a rename; some filesystems do not allow opening a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, fsync: bool = True, sync_dir: bool = True
) -> Iterator[BinaryIO]:
    """Open a temporary sibling for binary writing; on success it replaces ``path``.

    If the body raises, or the process dies, ``path`` keeps its old content (or stays
    absent) and the temporary file is removed (or left as an ignorable ``.tmp``).
    ``sync_dir=False`` leaves the directory's fsync (which makes the rename durable) to
    the caller, who writes several files into it and syncs it once.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    handle = tmp.open("wb")
    try:
        yield handle
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())
        handle.close()
        tmp.replace(target)
        if fsync and sync_dir:
            fsync_dir(target.parent)
    except BaseException:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    with atomic_writer(path, fsync=fsync) as handle:
        handle.write(data)


def check_target(label: str, target: str | os.PathLike[str]) -> None:
    """Refuse an output path that cannot be written, before the work that makes its
    content: missing folders are made when it is written (:func:`atomic_writer`), so
    only a file in the way, or a folder as the target, is an error."""
    path = Path(target).absolute()
    if path.is_dir():
        raise InputError(f"{label}: {path} is a folder")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{label}: {ancestor} is a file, not a folder")
