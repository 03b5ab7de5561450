"""Line reading for `translate` (ondevice/text_lines.py) and the streaming atomic writer: line
endings, UTF-8 errors by line and byte offset, over-long lines refused without being held in
memory, and a failed write that leaves the destination as it was."""

from __future__ import annotations

import io
import os
import tracemalloc

import pytest

from ondevice.atomic import atomic_open
from ondevice.errors import DataError
from ondevice.text_lines import MAX_INPUT_CHARS, can_read_twice, count_lines, iter_lines, open_input, read_lines


def _lines(data: bytes) -> list[str]:
    return list(iter_lines(io.BytesIO(data), "in.txt"))


def test_lines_end_at_newline_only():
    assert _lines(b"\xef\xbb\xbfone\r\ntwo\x0cstill two\xe2\x80\xa8too\n\nlast") == \
        ["one", "two\x0cstill two\u2028too", "", "last"]
    assert _lines(b"") == [] and _lines(b"\n") == [""] and _lines(b"a\rb\n") == ["a\rb"]
    assert _lines(b"x\n\xef\xbb\xbfy\n") == ["x", "\ufeffy"]  # a BOM is dropped only at the start
    assert _lines(b"\xef\xbb\xbf") == [] and _lines(b"\xef\xbb\xbf\n") == [""]  # a BOM alone is an empty file


def test_invalid_utf8_names_line_and_byte_offset_in_the_input():
    with pytest.raises(DataError, match=r"in.txt: line 3 is not valid UTF-8 \(byte offset 13\)"):
        _lines(b"\xef\xbb\xbfok\nfine\nab\xff\n")
    with pytest.raises(DataError, match=r"line 1 is not valid UTF-8 \(byte offset 0\)"):
        _lines(b"\xc3\x28")
    lines = iter_lines(io.BytesIO(b"good\n\xff\n"), "stdin")
    assert next(lines) == "good"  # lines before a bad one are still delivered, in order
    with pytest.raises(DataError, match="stdin: line 2"):
        next(lines)


@pytest.mark.parametrize("char", ["a", "\u00e9", "\u20ac", "\U0001f600"])
def test_line_length_limit_counts_characters_not_bytes(char):
    ok = char * MAX_INPUT_CHARS
    assert _lines(b"\xef\xbb\xbf" + ok.encode() + b"\r\n") == [ok]  # the boundary, BOM and CRLF included
    with pytest.raises(DataError, match=f"line 2 has {MAX_INPUT_CHARS + 1:,} characters, more than the "
                                        f"limit of {MAX_INPUT_CHARS:,}; split it into sentences"):
        _lines(b"x\n" + (ok + char).encode() + b"\nnext\n")


def test_over_long_line_length_ignores_a_split_line_ending():
    """The count of an over-long line leaves out its "\\r\\n" even when the first read stops
    between the two (the line is read in pieces)."""
    from ondevice import text_lines

    n = text_lines._MAX_LINE_BYTES - 1  # the first read ends with the "\r", the next piece is "\n"
    for data in (b"a" * n + b"\r\nnext\n", b"a" * n + b"\nnext\n", b"a" * n, b"a" * n + b"\r"):
        with pytest.raises(DataError, match=f"line 1 has {n:,} characters"):
            _lines(data)


def test_a_huge_line_is_measured_without_holding_it():
    """A 40 MB line (no newline at all) is refused with its true length while the reader's Python
    allocations stay far below the line's size."""
    n = 40_000_000

    class LettersA(io.RawIOBase):  # a file of n b"a" that exists only as it is read
        pos = 0

        def readable(self):
            return True

        def readinto(self, b):
            k = min(len(b), n - self.pos)
            b[:k] = b"a" * k
            self.pos += k
            return k

    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"line 1 has {n:,} characters"):
            list(iter_lines(io.BufferedReader(LettersA()), "big.txt"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_files(tmp_path):
    f = tmp_path / "in.txt"
    f.write_bytes(b"a\nb\n\nc")
    assert count_lines(f) == 4 and read_lines(f) == ["a", "b", "", "c"]
    f.write_bytes(b"a\n" * 1000 + b"\xff")
    with pytest.raises(DataError, match="in.txt: line 1001 is not valid UTF-8"):
        count_lines(f)
    with pytest.raises(DataError, match="does not exist"):
        open_input(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="is a directory"):
        open_input(tmp_path)
    with pytest.raises(DataError, match="cannot read input file .*in.txt/x"):
        open_input(f / "x")
    os.mkfifo(tmp_path / "fifo")
    assert can_read_twice(f) and not can_read_twice(tmp_path / "fifo") and not can_read_twice("/dev/null")


def test_atomic_open_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(b"old\n")
    with pytest.raises(DataError):
        with atomic_open(target) as f:
            f.write(b"half of the new\n")
            raise DataError("line 7 is bad")
    assert target.read_bytes() == b"old\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_open(target) as f:
        for k in range(3):
            f.write(b"%d\n" % k)
    assert target.read_bytes() == b"0\n1\n2\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
