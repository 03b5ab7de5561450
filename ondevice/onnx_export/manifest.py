"""``manifest.json`` of an exported ONNX model directory: what the files are, and proof they are intact.

Specified in export/README.md. A reader checks the format and its major version, that the op sets are
exactly the ones it implements (an ``ondevice`` v2 op would otherwise run under v1's semantics), that
each graph file declares those op sets, and each listed file's size and sha256, before any graph runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..staged_dir import file_problem
from .errors import OnnxModelError
from .ops import DOMAIN, DOMAIN_VERSION, IR_VERSION, ONNX_OPSET

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ENCODER_FILE", "DECODER_FILE", "WEIGHTS_FILE",
           "TOKENIZER_FILE", "OPSETS", "file_entry", "read_manifest", "is_onnx_export_dir"]

FORMAT = "ondevice-onnx-model"
FORMAT_VERSION = (1, 0)
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder_step.onnx"
WEIGHTS_FILE = "weights.bin"
TOKENIZER_FILE = "spm.model"
OPSETS = {"ai.onnx": ONNX_OPSET, DOMAIN: DOMAIN_VERSION}  # exactly what this package writes and reads
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def file_entry(rel: str, data: bytes) -> dict[str, Any]:
    return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def is_onnx_export_dir(path: Path) -> bool:
    """Whether ``path`` has a manifest.json naming this format (contents not verified)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _bad(where: Path | str, msg: str) -> OnnxModelError:
    return OnnxModelError(f"{where}: {msg}")


def _get(obj: Any, key: str, typ: type | tuple[type, ...], where: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _bad(where, f"missing {key!r}")
    v = obj[key]
    if isinstance(v, bool) and typ is not bool or not isinstance(v, typ):
        raise _bad(where, f"{key!r} has the wrong type ({type(v).__name__})")
    return v


def _member(root: Path, rel: Any, where: Path) -> Path:
    """A listed path, refusing anything that could leave the directory."""
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or str(p) != rel or "\\" in rel or rel == MANIFEST:
        raise _bad(where, f"{rel!r} is not a plain relative path inside the model directory")
    return root.joinpath(*p.parts)


def _check_opsets(opsets: Any, where: Path) -> None:
    if not isinstance(opsets, dict):
        raise _bad(where, "'opsets' must be an object")
    for domain, version in opsets.items():
        if domain not in OPSETS:
            raise _bad(where, f"op set {domain!r} is unknown to this reader (it knows {sorted(OPSETS)})")
        if version != OPSETS[domain]:
            raise _bad(where, f"op set {domain!r} version {version!r} is not supported (this reader implements "
                              f"version {OPSETS[domain]})")


def _check_graph_opsets(path: Path) -> None:
    """The graph file's own op-set imports (what a runtime obeys) must match too."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises its own DecodeError
        raise _bad(path, f"not an ONNX model: {e}") from None
    _check_opsets({(o.domain or "ai.onnx"): o.version for o in model.opset_import}, path)
    for f in model.functions:
        if f.domain != DOMAIN:
            raise _bad(path, f"function {f.domain}.{f.name} is outside the {DOMAIN!r} domain")
        _check_opsets({(o.domain or "ai.onnx"): o.version for o in f.opset_import}, path)
    if model.ir_version > IR_VERSION:
        raise _bad(path, f"IR version {model.ir_version} is newer than this reader's {IR_VERSION}")


def read_manifest(model_dir: str | Path, verify_files: bool = True) -> dict[str, Any]:
    """Reads and validates ``model_dir/manifest.json``; with ``verify_files`` also every listed file's size
    and sha256 and the graphs' op sets. Raises :class:`OnnxModelError` naming the file at fault."""
    root = Path(model_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise _bad(root, "has no manifest.json: not an exported ONNX model directory (ondevice export nmt)")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"not valid JSON: {e}") from None
    if _get(m, "format", str, path) != FORMAT:
        raise _bad(path, f"format is {m['format']!r}, expected {FORMAT!r}")
    version = _VERSION.match(_get(m, "format_version", str, path))
    if version is None or int(version.group(1)) != FORMAT_VERSION[0]:
        raise _bad(path, f"format_version {m['format_version']!r} is not supported (this reader knows "
                         f"{FORMAT_VERSION[0]}.x)")
    _check_opsets(_get(m, "opsets", dict, path), path)
    for key, typ in (("model_kind", str), ("quantized", bool), ("src", str), ("tgt", str), ("model_config", dict),
                     ("special_ids", dict), ("graphs", dict), ("tokenizer", str), ("weights", str), ("files", list)):
        _get(m, key, typ, path)
    listed = listed_files(root, m["files"], path)
    graphs = [_get(_get(m["graphs"], kind, dict, path), "file", str, path) for kind in ("encoder", "decoder_step")]
    for rel in [m["tokenizer"], m["weights"], *graphs]:
        _member(root, rel, path)
        if rel not in listed:
            raise _bad(path, f"{rel} is used but not listed in files (no size and hash to verify it by)")
    if verify_files:
        verify_listed_files(root, listed)
        for rel in graphs:
            _check_graph_opsets(_member(root, rel, path))
    return m


def listed_files(root: Path, files: Any, where: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` list by path, each entry checked for shape (a path inside ``root``,
    listed once, a size >= 0 and a sha256); shared by every model kind's manifest reader."""
    if not isinstance(files, list):
        raise _bad(where, f"'files' must be a list, got {type(files).__name__}")
    listed: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(files):
        rel = _get(f, "path", str, where)
        _member(root, rel, where)
        if rel in listed:
            raise _bad(where, f"{rel} is listed twice in files")
        if _get(f, "size", int, where) < 0 or not _SHA256.match(_get(f, "sha256", str, where)):
            raise _bad(where, f"files[{i}] ({rel}) needs a size >= 0 and a lowercase hex sha256")
        listed[rel] = f
    return listed


def verify_listed_files(root: Path, listed: dict[str, dict[str, Any]]) -> None:
    """Checks each listed file's size and sha256 (a truncated copy or a stray edit is named, not loaded)."""
    for rel, entry in listed.items():
        p = root / rel
        problem = file_problem(p, entry["size"], entry["sha256"])
        if problem:
            raise _bad(p, problem)
