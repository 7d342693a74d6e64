"""verify() on bytes the caller already read: the same verdicts as on the file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pairbatch.integrity import DamagedFileError, describe, verify
from pairbatch.pairs import read_segment_pairs


def test_bytes_checked_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "batch_01_pairs.parquet"
    frame = pl.DataFrame({"custom_id": ["r-0-1", "r-0-2"], "ID1": ["a", "b"]})
    frame.write_parquet(path)
    check = describe(path, rows=2, hashed=True)
    data = path.read_bytes()
    assert read_segment_pairs(path, data).equals(frame)
    verify(path, check, rows=2, data=data)
    changed = data[:-9] + bytes([data[-9] ^ 1]) + data[-8:]
    with pytest.raises(DamagedFileError, match="content changed"):
        verify(path, check, rows=2, data=changed)
    with pytest.raises(DamagedFileError, match="bytes but"):
        verify(path, check, rows=2, data=data[:-1])
