"""Atomic file writes, used by everything that writes models, data and reports.

A temporary file in the destination's directory is written, flushed to disk,
given the mode a plain ``open()`` would give it (mkstemp creates 0600), and
renamed over the destination; on any failure the temporary file is removed
and the previous file, if any, is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)  # make the rename itself durable


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8, "\\n" line endings exactly as given."""
    atomic_write_bytes(path, text.encode("utf-8"))
