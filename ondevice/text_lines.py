"""Text input read line by line (files and stdin), in bounded memory.

Why a module of its own: ``ondevice translate -i big.txt`` and a pipe into stdin must not hold the
whole input in memory (a multi-gigabyte file, or one line of that size, would exhaust it), yet a
bad line must still be reported by its line number in the input (not by its index in a batch),
and a file's bad lines must be found before any translation work is done (:func:`count_lines`).

Lines end at ``"\\n"`` only (a ``"\\r"`` before it is dropped): ``str.splitlines()`` would also
break at form feeds, ``\\x1c``-``\\x1e``, NEL and U+2028/9, and the output would no longer match
the input line for line. A UTF-8 byte-order mark at the start is dropped. A missing final newline
does not lose the last line.
"""

from __future__ import annotations

import os
import stat
from itertools import chain, count
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import DataError

__all__ = ["MAX_INPUT_CHARS", "iter_lines", "open_input", "count_lines", "can_read_twice", "check_lines",
           "read_lines"]

MAX_INPUT_CHARS = 20_000  # one input line; longer lines are rejected before tokenization
# A line of more than 4 bytes per allowed character has more characters than allowed (UTF-8 uses
# at most 4 bytes per character), so no line longer than this is ever held in memory whole.
_MAX_LINE_BYTES = 4 * MAX_INPUT_CHARS + 5  # + "\r\n" + a byte-order mark
_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))


def _too_long(origin: str, number: int, chars: int) -> DataError:
    return DataError(f"{origin}: line {number} has {chars:,} characters, more than the limit of "
                     f"{MAX_INPUT_CHARS:,}; split it into sentences")


def _line_chars(pieces: Iterator[bytes]) -> int:
    """Characters of one UTF-8 line given in pieces, without its line ending (continuation bytes
    do not start a character; a "\r\n" split between two pieces still counts as the ending, and a
    "\r" at the end of the input is dropped as iter_lines drops it)."""
    n, last = 0, b""
    for piece in pieces:
        n += len(piece.translate(None, _CONTINUATION_BYTES))
        last = (last + piece)[-2:]
    tail = last[:-1] if last.endswith(b"\n") else last
    return n - last.endswith(b"\n") - tail.endswith(b"\r")


def _rest_of_line(stream: BinaryIO) -> Iterator[bytes]:
    """The rest of the current line, in 1 MiB pieces (never held whole)."""
    while piece := stream.readline(_CHUNK):
        yield piece
        if piece.endswith(b"\n"):
            return


def iter_lines(stream: BinaryIO, origin: str) -> Iterator[str]:
    """Each line of the binary ``stream`` as text. Raises DataError naming ``origin`` and the line
    (1-based) for invalid UTF-8 (with its byte offset in the input) and for a line over
    ``MAX_INPUT_CHARS`` characters (counted without ever holding such a line whole)."""
    offset = 0
    for number in count(1):
        raw = stream.readline(_MAX_LINE_BYTES)
        if not raw:
            return
        if len(raw) == _MAX_LINE_BYTES and not raw.endswith(b"\n"):  # more than the limit, however encoded
            head = raw.removeprefix(_BOM) if number == 1 else raw
            raise _too_long(origin, number, _line_chars(chain([head], _rest_of_line(stream))))
        start, offset = offset, offset + len(raw)
        if number == 1 and raw.startswith(_BOM):
            raw, start = raw[len(_BOM):], start + len(_BOM)
            if not raw:  # a file holding only a byte-order mark is empty
                return
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{origin}: line {number} is not valid UTF-8 (byte offset {start + e.start})") from None
        if len(text) > MAX_INPUT_CHARS:
            raise _too_long(origin, number, len(text))
        yield text


def open_input(path: str | os.PathLike) -> BinaryIO:
    """``path`` opened for binary reading; the OS's refusals as DataError naming the path."""
    p = Path(path)
    try:
        if p.is_dir():
            raise IsADirectoryError
        return open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"input file {p} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"input {p} is a directory, not a text file") from None
    except OSError as e:  # permission, a path through a file, ...
        raise DataError(f"cannot read input file {p}: {e.strerror or e}") from None


def count_lines(path: str | os.PathLike) -> int:
    """The number of lines of a text file, every line checked as :func:`iter_lines` checks it: one
    streaming pass, so that a bad line at the end is reported before hours of work on the rest."""
    with open_input(path) as f:
        return sum(1 for _ in iter_lines(f, str(path)))


def can_read_twice(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file. A pipe, ``/dev/stdin`` or ``<(command)`` can be read only
    once: checking its lines first (:func:`count_lines`) would leave nothing to translate."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # open_input will report it


def check_lines(path: str | os.PathLike) -> int | None:
    """The line count of a regular file after :func:`count_lines` checked every line, so that a bad
    line is reported before any work; None for a pipe (:func:`can_read_twice`): its lines are
    checked as they are read."""
    return count_lines(path) if can_read_twice(path) else None


def read_lines(path: str | os.PathLike) -> list[str]:
    """All lines of a (small) UTF-8 text file, e.g. a benchmark's test set."""
    with open_input(path) as f:
        return list(iter_lines(f, str(path)))
