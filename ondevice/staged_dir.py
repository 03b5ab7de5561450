"""Model directories written atomically, and the hashed file lists their manifests carry.

Packed models (docs/packed-model.md) and ONNX exports (export/README.md) are directories of
several files described by a manifest with each file's size and sha256.  Both are written into
a staging directory beside the destination and swapped in with two renames, so a reader sees
the old directory or the new one, never a mix; both are read back by checking every listed file
against its entry.  The mechanics live here once; each format keeps its own manifest fields and
error type.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from .atomic import _umask, fsync_dir
from .errors import ConfigError

__all__ = ["replacing_dir", "StagedWriter", "file_problem"]


@contextmanager
def replacing_dir(out_dir: Path, replaceable: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yields an empty staging directory beside ``out_dir``; on success it replaces ``out_dir``.

    An existing ``out_dir`` is replaced only when it is empty or ``replaceable(out_dir)`` (e.g. "is
    an earlier export"), so a mistyped path never deletes, say, a training run; ``what`` names the
    kind of directory in that error.  The staging directory is fsynced before the swap.  On any
    error it is removed and ``out_dir`` is untouched."""
    parent = out_dir.parent
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ConfigError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not replaceable(out_dir):
        raise ConfigError(f"refusing to replace {out_dir}: it is not empty and not {what}")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give what mkdir would
        yield tmp
        for sub in [p for p in tmp.rglob("*") if p.is_dir()] + [tmp]:
            fsync_dir(sub)
        if out_dir.exists():
            old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
            os.rename(out_dir, old)
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class StagedWriter:
    """Writes files (fsynced) into a staging directory and records each one's manifest entry
    ``{"path", "size", "sha256"}`` in ``files``."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[dict[str, Any]] = []

    def put(self, rel: str, data: bytes, record: bool = True) -> None:
        path = self.root.joinpath(*PurePosixPath(rel).parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if record:
            self.files.append({"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def file_problem(path: Path, size: int, sha256: str) -> str | None:
    """What is wrong with ``path`` against its manifest entry, or None when it matches."""
    if not path.is_file():
        return "missing (listed in manifest.json)"
    actual = path.stat().st_size
    if actual != size:
        return f"is {actual} bytes, manifest.json says {size} (truncated or replaced?)"
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != sha256:
        return "sha256 does not match manifest.json (the file is corrupt or was modified)"
    return None
