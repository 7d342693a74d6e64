"""Checking a per-job file against what was recorded when pairbatch wrote it.

A run folder lives for days, on laptops and shared drives; files get cut, garbled,
deleted or replaced. Before a file is sent to a provider (paid for) or settled into
results it is checked against its :class:`~pairbatch.models.FileCheck`, and a mismatch
is an error naming the file: it is never silently "repaired" into lost pairs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pairbatch.errors import PairbatchError
from pairbatch.models import FileCheck

_CHUNK = 1 << 20


class DamagedFileError(PairbatchError):
    """A run-folder file that is missing, unreadable, or not what was written."""

    def __init__(self, path: str | os.PathLike[str], problem: str, remedy: str = "") -> None:
        self.path = Path(path)
        self.problem = problem
        text = f"{self.path}: {problem}"
        super().__init__(f"{text}; {remedy}" if remedy else text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe(
    path: str | os.PathLike[str], *, rows: int | None = None, hashed: bool = False
) -> FileCheck:
    """The record of a file just written."""
    target = Path(path)
    return FileCheck(
        name=target.name,
        size=target.stat().st_size,
        rows=rows,
        sha256=sha256_file(target) if hashed else None,
    )


def verify(
    path: str | os.PathLike[str],
    check: FileCheck | None,
    *,
    rows: int | None = None,
    remedy: str = "",
    data: bytes | None = None,
) -> None:
    """Raise :class:`DamagedFileError` unless ``path`` is what ``check`` recorded.

    ``rows`` is the row count the caller read from the file, compared when the record
    has one. With no record (a run made by an older version) only existence is checked.
    ``data``: the file's bytes as the caller read them (then those are checked, and the
    file is not read again).
    """
    target = Path(path)
    if data is not None:
        size = len(data)
    else:
        try:
            size = target.stat().st_size
        except FileNotFoundError:
            raise DamagedFileError(target, "the file is missing", remedy) from None
        except OSError as exc:
            raise DamagedFileError(target, f"cannot be read ({exc.strerror})", remedy) from None
    if check is None:
        return
    if size != check.size:
        raise DamagedFileError(target, f"holds {size} bytes but {check.size} were written", remedy)
    if rows is not None and check.rows is not None and rows != check.rows:
        raise DamagedFileError(target, f"holds {rows} rows but {check.rows} were written", remedy)
    if check.sha256 is None:
        return
    digest = sha256_file(target) if data is None else hashlib.sha256(data).hexdigest()
    if digest != check.sha256:
        raise DamagedFileError(target, "its content changed since it was written", remedy)
