"""Atomic file writes, used by everything that writes models, data and reports.

A temporary file in the destination's directory is written, flushed to disk,
given the mode a plain ``open()`` would leave (mkstemp creates 0600): an existing
destination's own mode (a private 0600 file stays private), else 0666 less the umask, and
renamed over the destination; on any failure the temporary file is removed
and the previous file, if any, is untouched.
"""

from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Flushes a directory's entries (renames, new files) to disk; best effort where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    try:
        st = path.stat()
    except OSError:
        return 0o666 & ~_umask()
    # Permission bits only: open() for writing would clear setuid/setgid too.
    return st.st_mode & 0o777 if stat.S_ISREG(st.st_mode) else 0o666 & ~_umask()


def check_output_path(path: str | os.PathLike) -> None:
    """Refuse, before any work, a destination that :func:`atomic_write_bytes` could not write: a
    missing or non-directory parent, a directory at ``path``, a parent without write permission.
    Raises DataError naming ``path`` (long jobs call this first, so that their result is not lost
    at the end to an error about a temporary file)."""
    from .errors import DataError

    p = Path(path)
    directory = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise DataError(f"output {p} is a directory; give a file name")
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise DataError(f"cannot write {p}: its directory {directory} {what}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {p}: no permission to create files in {directory}")


def check_output_dir(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output directory that could not be created or written: a file
    in its place or among its parents, or no permission. Raises DataError naming ``path``."""
    from .errors import DataError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"output {p} is a file; give a directory")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"cannot create {p}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {p}: no permission to create files in {existing}")


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into, piece by piece (output too large to hold
    in memory); it replaces ``path`` only when the ``with`` block ends without an exception."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    check_output_path(path)  # a missing directory or a directory in its place: a DataError naming it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)  # make the rename itself durable


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8, "\\n" line endings exactly as given."""
    atomic_write_bytes(path, text.encode("utf-8"))
