"""A user's table that Polars cannot read is refused in one line saying where it breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairbatch.cli_study import read_qualities
from pairbatch.design import read_samples
from pairbatch.errors import InputError
from pairbatch.pairs import load_pairs
from pairbatch.tables import read_table

HEADER = b"ID1,text1,ID2,text2\n"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param(
            b'a,"open,b,c\n', "the row starting at line 2: unexpected end of data", id="open-quote"
        ),
        # An open quote runs to the end of the file: the row where it opened is named.
        pytest.param(
            b'a,b,c,d\ne,"open,f,g\nh,i,j,k\nl,m,n,o\n',
            "the row starting at line 3: unexpected end of data",
            id="open-quote-early",
        ),
        pytest.param(b"a,b,c,d,e\n", "row 1 (line 2) has 5 field(s), the header has 4", id="wide"),
        # A quoted newline: the row count and the line count part.
        pytest.param(
            b'a,"two\nlines",b,c\nd,e,f,g,h\n',
            "row 2 (line 4) has 5 field(s), the header has 4",
            id="wide-after-multiline",
        ),
        pytest.param(b"a,h\xe9llo,b,c\n", "line 2 is not UTF-8 text (0xe9 at byte 4", id="latin-1"),
    ],
)
def test_a_broken_pairs_csv_names_where_it_breaks(tmp_path: Path, body: bytes, where: str) -> None:
    path = tmp_path / "pairs.csv"
    path.write_bytes(HEADER + body)
    with pytest.raises(InputError) as caught:
        load_pairs(path)
    message = str(caught.value)
    assert message.startswith(f"cannot read pairs file {path}: {where}"), message
    assert "\n" not in message
    # Polars' advice is about its own reader options, which a CLI user cannot set.
    assert "truncate_ragged_lines" not in message and "infer_schema" not in message


def test_samples_and_qualities_files_share_the_reading(tmp_path: Path) -> None:
    samples = tmp_path / "samples.csv"
    samples.write_bytes(b'ID,text\na,"open\n')
    with pytest.raises(
        InputError, match=r"cannot read samples file .*: the row starting at line 2: unexpected end"
    ):
        read_samples(samples)
    qualities = tmp_path / "q.tsv"
    qualities.write_bytes(b"text\tquality\nx\t1\ty\n")
    with pytest.raises(InputError, match=r"qualities file .*: row 1 \(line 2\) has 3 field"):
        read_qualities(str(qualities))


def test_a_damaged_parquet_file_gives_polars_first_line_only(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="cannot read pairs file") as caught:
        read_table(path, "pairs")
    assert "\n" not in str(caught.value)


def test_ids_stay_text_and_a_wrong_suffix_is_named(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"ID1\ttext1\tID2\ttext2\n007\tx\t7\ty\n")
    assert load_pairs(path)["ID1"].to_list() == ["007"]
    other = tmp_path / "pairs.txt"
    other.write_bytes(HEADER)
    with pytest.raises(InputError, match=r"must end in \.csv, \.tsv or \.parquet"):
        load_pairs(other)


@pytest.mark.parametrize(
    ("header", "hint"),
    [
        ("id1,TEXT1,id2,text2", "found 'id1' for 'ID1', 'TEXT1' for 'text1', 'id2' for 'ID2'"),
        ("ID1;text1;ID2;text2", "is it ';'-separated?"),
    ],
)
def test_missing_columns_say_what_was_found(tmp_path: Path, header: str, hint: str) -> None:
    path = tmp_path / "pairs.csv"
    path.write_text(f"{header}\na,b,c,d\n".replace(",", header[3]))
    with pytest.raises(InputError, match="must contain columns") as caught:
        load_pairs(path)
    assert hint in str(caught.value)
