"""A shippable quantized translation model: one directory in the packed bit-plane format.

The normative specification is docs/packed-model.md; in short::

    manifest.json          format and version, model config, plan, bits, and every file's size and sha256
    matrices/<name>.bcq    one bit-plane file per quantized weight (docs/bitplane-format.md)
    dense.bin              every other parameter, raw little-endian, indexed in the manifest
    spm.model              the SentencePiece tokenizer

Why a directory of existing formats rather than one archive: each matrix stays a ``.bcq`` file that
the C++ reader validates and a runtime can map and run as it is, without repacking; the dense part
is raw arrays at aligned offsets (no pickle, nothing to execute when loading); the manifest's
hashes make the directory as tamper-evident as a single file; and its size on disk is simply the
sum of its files, so the size reported for a model is what a device stores.

* :func:`save_packed` writes a directory (atomically) from a fake-quantized or baked model plus BCQ
  results, or quantizes by an assignment/plan on the way;
* :func:`load_packed` verifies everything and rebuilds a :class:`TransformerModel` whose weights
  are the dequantized matrices, bit-identical to what fake quantization computed;
* :func:`packed_size` is the honest size bill; :func:`pack_checkpoint` is post-training
  quantization of a training checkpoint straight into a packed directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .. import bcq, bitplane
from ..errors import BCQFormatError, ConfigError, DataError
from ..staged_dir import StagedWriter, file_problem, replacing_dir
from .plan import QuantPlan

if TYPE_CHECKING:
    from torch import nn

    from ..nmt.model import TransformerModel
    from ..nmt.tokenizer import Tokenizer

__all__ = ["FORMAT", "FORMAT_VERSION", "MODEL_KIND", "PackedSize", "save_packed", "load_packed", "read_manifest",
           "packed_size", "pack_checkpoint", "is_packed_dir"]

FORMAT = "ondevice-packed-model"
FORMAT_VERSION = (1, 0)
MODEL_KIND = "nmt-transformer"
MANIFEST = "manifest.json"
MATRIX_DIR = "matrices"
DENSE_FILE = "dense.bin"
TOKENIZER_FILE = "spm.model"
DENSE_ALIGN = 64  # as the .bcq sections: a mapped dense.bin gives cache-line-aligned arrays
DENSE_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
ALPHA_DTYPES = ("float32", "float16")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


# --------------------------------------------------------------------------- parameters of a model


@dataclass(frozen=True)
class _Param:
    """One distinct parameter tensor of a model, under the name a plain (unparametrized) model gives it."""

    name: str
    aliases: tuple[str, ...]  # other names of the same tensor (the tied decoder embedding / output projection)
    module: Any  # torch.nn.Module owning it
    leaf: str  # attribute name in ``module``
    stored: Any  # the nn.Parameter: the plain one, or the latent weight under fake quantization

    def value(self):
        """The tensor the forward pass uses: through fake quantization when the weight is parametrized."""
        return getattr(self.module, self.leaf)


def _parameters(model: "nn.Module") -> dict[str, _Param]:
    """Distinct parameter tensors in module order, keyed by canonical name.

    Fake-quantized weights count under their plain name (not ``...parametrizations.weight.original``),
    and a tensor shared by several modules once, under its first name in module order -- the name
    :func:`~ondevice.quant.fake_quant.export_bcq` and :meth:`QuantPlan.assign` use -- so a source
    model (possibly parametrized) and a freshly built one list the same names.
    """
    found: dict[int, tuple[str, list[str], Any, str, Any]] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        if "parametrizations" in mname.split("."):
            continue  # the parametrization modules themselves (alpha-mode scales are not model parameters)
        plist = getattr(module, "parametrizations", None)
        leaves = [(leaf, p) for leaf, p in module._parameters.items() if p is not None]
        if plist is not None:
            leaves += [(leaf, plist[leaf].original) for leaf in plist.keys()]
        for leaf, stored in leaves:
            name = f"{mname}.{leaf}" if mname else leaf
            entry = found.get(id(stored))
            if entry is None:
                found[id(stored)] = (name, [], module, leaf, stored)
            elif name not in entry[1]:
                entry[1].append(name)
    return {name: _Param(name, tuple(aliases), module, leaf, stored)
            for name, aliases, module, leaf, stored in found.values()}


# --------------------------------------------------------------------------- writing


def _row_bits_histogram(row_bits: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(np.asarray(row_bits, dtype=np.uint8), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def _canonical_results(results: Mapping[str, bcq.BCQResult], params: dict[str, _Param]) -> dict[str, bcq.BCQResult]:
    """``results`` keyed by canonical name in model order; aliases accepted, shapes checked."""
    alias = {a: p.name for p in params.values() for a in (p.name, *p.aliases)}
    by_name: dict[str, bcq.BCQResult] = {}
    for key, r in results.items():
        name = alias.get(key)
        if name is None:
            raise ConfigError(f"BCQ result {key!r} is not a parameter of the model")
        if name in by_name:
            raise ConfigError(f"BCQ results {key!r} and {name!r} are the same tied tensor; give it once")
        shape = tuple(params[name].stored.shape)
        got = (r.signs.shape[0], r.signs.shape[2]) if r.signs.ndim == 3 else tuple(r.signs.shape)
        if got != shape:
            raise ConfigError(f"BCQ result {key!r} has shape {got}, the parameter {name} has {shape}")
        by_name[name] = r
    return {name: by_name[name] for name in params if name in by_name}


def is_packed_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a manifest.json naming this format (contents not verified)."""
    m = Path(path) / MANIFEST
    try:
        return json.loads(m.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_packed(model: "TransformerModel", tokenizer_model_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                src: str, tgt: str, bcq_results: Mapping[str, bcq.BCQResult] | None = None,
                assignment: Mapping[str, Any] | None = None, plan: QuantPlan | None = None,
                alpha_dtype: str | None = None, dense_dtype: str = "float32", iters: int = 15) -> dict[str, Any]:
    """Writes ``model`` as a packed model directory ``out_dir`` (replaced atomically); returns the manifest.

    What is quantized comes from, in this order: ``bcq_results`` (``{param name: BCQResult}``, e.g.
    QAT's :func:`~ondevice.quant.fake_quant.export_bcq`); else the model's fake quantization plus
    ``assignment`` (quantized now with the plan's group size / method / offset, defaults without a
    plan); else ``plan.assign(model)`` when the model carries no fake quantization.  Every other
    parameter goes to ``dense.bin`` as the forward pass sees it (a fake-quantized weight without a
    result is stored dequantized, in ``dense_dtype``).

    ``alpha_dtype`` is the ``.bcq`` scale storage (default: the plan's, else float32); ``dense_dtype``
    "float16" halves dense storage at the cost of exactness.  ``plan`` is recorded in the manifest.
    The same inputs always give byte-identical files.
    """
    import torch

    from ..nmt.model import TransformerConfig
    from ..nmt.tokenizer import Tokenizer
    from .fake_quant import export_bcq, fake_quant_modules

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, TransformerConfig):
        raise ConfigError("save_packed needs a TransformerModel (a model with a TransformerConfig .config)")
    for key, lang in (("src", src), ("tgt", tgt)):
        if not isinstance(lang, str) or not lang:
            raise ConfigError(f"{key} must be a non-empty language code, got {lang!r}")
    if plan is not None and not isinstance(plan, QuantPlan):
        raise ConfigError(f"plan must be a QuantPlan, got {type(plan).__name__}")
    alpha_dtype = alpha_dtype or (plan.alpha_dtype if plan is not None else "float32")
    if alpha_dtype not in ALPHA_DTYPES:
        raise ConfigError(f"alpha_dtype must be one of {', '.join(ALPHA_DTYPES)}, got {alpha_dtype!r}")
    if dense_dtype not in DENSE_DTYPES:
        raise ConfigError(f"dense_dtype must be one of {', '.join(DENSE_DTYPES)}, got {dense_dtype!r}")
    tok = Tokenizer(tokenizer_model_path)
    if tok.vocab_size != cfg.vocab_size:
        raise ConfigError(f"tokenizer {tokenizer_model_path} has {tok.vocab_size} pieces, the model's vocab_size "
                          f"is {cfg.vocab_size}")

    params = _parameters(model)
    if bcq_results is None:
        if assignment is None and plan is not None and not any(True for _ in fake_quant_modules(model)):
            assignment = plan.assign(model)
        opts = (dict(group_size=plan.group_size, method=plan.method, offset=plan.offset) if plan is not None
                else {})
        with torch.no_grad():
            bcq_results = export_bcq(model, assignment, iters=iters, alpha_dtype=alpha_dtype, **opts)
    results = _canonical_results(bcq_results, params)
    if not results:
        raise ConfigError("nothing to pack: no BCQ results")

    out = Path(os.path.abspath(out_dir))  # normalized, so the staging directory's name derives from a real name
    with replacing_dir(out, is_packed_dir, "a packed model directory") as tmp:
        w = StagedWriter(tmp)
        matrices = []
        for name, r in results.items():
            p = bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset)
            data = bitplane.to_bytes(p, alpha_dtype)
            rel = f"{MATRIX_DIR}/{name}.bcq"
            w.put(rel, data)
            matrices.append({"name": name, "aliases": list(params[name].aliases), "file": rel,
                             "shape": [p.rows, p.cols], "group_size": p.group_size, "offset": p.offset is not None,
                             "alpha_dtype": alpha_dtype, "row_bits": _row_bits_histogram(p.row_bits),
                             "average_bits": float(p.row_bits.mean(dtype=np.float64)),
                             "stored_bits_per_weight": 8.0 * len(data) / (p.rows * p.cols)})
        dense, blob = [], bytearray()
        dt = DENSE_DTYPES[dense_dtype]
        with torch.no_grad():
            for name, prm in params.items():
                if name in results:
                    continue
                arr = prm.value().detach().to(device="cpu", dtype=torch.float32).numpy()
                with np.errstate(over="ignore"):
                    stored = np.ascontiguousarray(arr, dtype=dt)
                if not np.isfinite(stored).all():
                    raise ConfigError(f"{name} has values that are not finite in {dense_dtype}")
                blob += bytes(-len(blob) % DENSE_ALIGN)
                dense.append({"name": name, "aliases": list(prm.aliases), "dtype": dense_dtype,
                              "shape": list(arr.shape), "offset": len(blob), "nbytes": stored.nbytes})
                blob += stored.tobytes()
        w.put(DENSE_FILE, bytes(blob))
        w.put(TOKENIZER_FILE, Path(tokenizer_model_path).read_bytes())

        q_params = sum(m["shape"][0] * m["shape"][1] for m in matrices)
        manifest = {
            "format": FORMAT, "format_version": "%d.%d" % FORMAT_VERSION, "model_kind": MODEL_KIND,
            "src": src, "tgt": tgt, "model_config": dataclasses.asdict(cfg),
            "quant_plan": plan.to_dict() if plan is not None else None,
            "average_bits": sum(m["average_bits"] * m["shape"][0] * m["shape"][1] for m in matrices) / q_params,
            "quantized_params": q_params,
            "dense_params": sum(int(np.prod(t["shape"], dtype=np.int64)) for t in dense),
            "tokenizer": TOKENIZER_FILE,
            "matrices": matrices,
            "dense": {"file": DENSE_FILE, "tensors": dense},
            "files": sorted(w.files, key=lambda f: f["path"]),
        }
        w.put(MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"), record=False)
    return manifest


# --------------------------------------------------------------------------- reading


def _bad(where: Path | str, msg: str) -> BCQFormatError:
    return BCQFormatError(f"{where}: {msg}")


def _field(obj: Any, key: str, types: type | tuple[type, ...], where: str) -> Any:
    """``obj[key]`` checked against ``types`` (bools are not ints), else a BCQFormatError naming ``where``."""
    if not isinstance(obj, dict):
        raise BCQFormatError(f"{where} must be a JSON object")
    if key not in obj:
        raise BCQFormatError(f"{where}: missing {key!r}")
    v = obj[key]
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
        raise BCQFormatError(f"{where}: {key!r} has the wrong type ({type(v).__name__})")
    return v


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise BCQFormatError(f"{where}: shape must be a list of non-negative integers, got {v!r}")
    return tuple(v)


def _member(root: Path, rel: Any, where: str) -> Path:
    """The path of a file named in the manifest, refusing anything that could leave the directory."""
    if not isinstance(rel, str) or not rel:
        raise BCQFormatError(f"{where}: file path must be a non-empty string, got {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or str(p) != rel or "\\" in rel or rel == MANIFEST:
        raise BCQFormatError(f"{where}: {rel!r} is not a plain relative path inside the model directory")
    return root.joinpath(*p.parts)


def read_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and structurally validates ``model_dir/manifest.json`` (files are not hashed here).

    A directory without a manifest raises DataError (it is not a packed model); a manifest that
    is not valid JSON, names another format, an unknown major version or misses a field raises
    BCQFormatError naming the manifest.
    """
    root = Path(model_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} does not exist: {root} is not a packed model directory")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _bad(path, f"not valid JSON: {e}") from None
    where = str(path)
    if _field(m, "format", str, where) != FORMAT:
        raise _bad(path, f"format is {m['format']!r}, expected {FORMAT!r}")
    version = _VERSION.match(_field(m, "format_version", str, where))
    if version is None or int(version.group(1)) != FORMAT_VERSION[0]:
        raise _bad(path, f"format_version {m['format_version']!r} is not supported (this reader knows "
                         f"{FORMAT_VERSION[0]}.x)")
    if _field(m, "model_kind", str, where) != MODEL_KIND:
        raise _bad(path, f"model_kind is {m['model_kind']!r}, expected {MODEL_KIND!r}")
    for key in ("src", "tgt", "tokenizer"):
        _field(m, key, str, where)
    _field(m, "model_config", dict, where)
    _field(m, "average_bits", (int, float), where)
    files = _field(m, "files", list, where)
    seen = set()
    for i, f in enumerate(files):
        w = f"{where}: files[{i}]"
        rel = _field(f, "path", str, w)
        _member(root, rel, w)
        if rel in seen:
            raise _bad(path, f"{rel} is listed twice in files")
        seen.add(rel)
        if _field(f, "size", int, w) < 0 or not _SHA256.match(_field(f, "sha256", str, w)):
            raise _bad(path, f"files[{i}] ({rel}) needs a size >= 0 and a lowercase hex sha256")
    referenced = [m["tokenizer"]]
    for i, e in enumerate(_field(m, "matrices", list, where)):
        w = f"{where}: matrices[{i}]"
        for key, typ in (("name", str), ("file", str), ("aliases", list), ("shape", list), ("group_size", int),
                         ("offset", bool), ("alpha_dtype", str), ("row_bits", dict)):
            _field(e, key, typ, w)
        if len(_shape(e["shape"], w)) != 2:
            raise _bad(path, f"matrices[{i}] ({e['name']}) shape must have two dimensions")
        referenced.append(e["file"])
    dense = _field(m, "dense", dict, where)
    referenced.append(_field(dense, "file", str, f"{where}: dense"))
    for i, t in enumerate(_field(dense, "tensors", list, f"{where}: dense")):
        w = f"{where}: dense.tensors[{i}]"
        for key, typ in (("name", str), ("aliases", list), ("dtype", str), ("shape", list), ("offset", int),
                         ("nbytes", int)):
            _field(t, key, typ, w)
        _shape(t["shape"], w)
    for rel in referenced:
        _member(root, rel, where)
        if rel not in seen:
            raise _bad(path, f"{rel} is used but not listed in files (no size and hash to verify it by)")
    return m


def _verify_files(root: Path, manifest: dict[str, Any]) -> None:
    """Every listed file exists with the listed size and sha256 (BCQFormatError naming the file)."""
    for f in manifest["files"]:
        path = _member(root, f["path"], str(root / MANIFEST))
        problem = file_problem(path, f["size"], f["sha256"])
        if problem:
            raise _bad(path, problem)


def _dequantize(p: bitplane.PackedPlanes):
    """The float32 matrix, accumulated exactly as :meth:`ondevice.bcq.BCQResult.dequantize` (offset, then
    plane by plane in float32) -- the arithmetic fake quantization uses -- so a loaded model reproduces
    the fake-quantized one bit for bit; :func:`ondevice.bitplane.dequantize` sums in float64 and may
    differ in the last bit."""
    signs, alpha = bitplane.unpack(p)
    groups = bitplane.num_groups(p.cols, p.group_size)
    offset = None if p.offset is None else p.offset.reshape(p.rows, groups)
    return bcq.BCQResult(signs, alpha, offset, p.row_bits, p.group_size).dequantize()


def _target(params: dict[str, _Param], entry: dict[str, Any], loaded: dict[str, str], where: str) -> _Param:
    """The model parameter a manifest entry fills, checking name, ties and that nothing is filled twice."""
    name = entry["name"]
    prm = params.get(name)
    if prm is None:
        raise BCQFormatError(f"{where}: {name!r} is not a parameter of the model its model_config describes")
    if sorted(entry["aliases"]) != sorted(prm.aliases):
        raise BCQFormatError(f"{where}: {name} is tied to {entry['aliases']}, the model_config ties it to "
                             f"{list(prm.aliases)}")
    if name in loaded:
        raise BCQFormatError(f"{where}: {name} is stored twice ({loaded[name]})")
    return prm


def load_packed(model_dir: str | os.PathLike) -> tuple["TransformerModel", "Tokenizer", dict[str, Any]]:
    """Loads a packed model directory: (model with dequantized weights, tokenizer, manifest).

    Everything is verified before use: each listed file's size and sha256, each ``.bcq`` file with the
    C++ reader (:func:`ondevice.bitplane.read_file`), every shape against ``model_config``, and that
    each parameter is stored exactly once.  Any problem raises BCQFormatError (DataError for a
    directory without manifest.json or an unusable tokenizer) naming the file.
    """
    import torch

    from ..nmt.model import TransformerConfig, TransformerModel
    from ..nmt.tokenizer import Tokenizer

    root = Path(model_dir)
    manifest = read_manifest(root)
    mpath = str(root / MANIFEST)
    _verify_files(root, manifest)
    try:
        cfg = TransformerConfig(**manifest["model_config"])
        model = TransformerModel(cfg)
    except (TypeError, ConfigError) as e:
        raise BCQFormatError(f"{mpath}: model_config does not describe a model: {e}") from None
    params = _parameters(model)
    loaded: dict[str, str] = {}
    with torch.no_grad():
        for i, e in enumerate(manifest["matrices"]):
            where = f"{mpath}: matrices[{i}]"
            prm = _target(params, e, loaded, where)
            path = _member(root, e["file"], where)
            try:
                p, alpha_dtype = bitplane.read_file(path)
            except BCQFormatError as err:  # the C++ reader's message names the path already
                raise (err if str(path) in str(err) else _bad(path, str(err))) from None
            want = tuple(prm.stored.shape)
            if (p.rows, p.cols) != want:
                raise _bad(path, f"{e['name']} is {p.rows}x{p.cols}, model_config needs {want[0]}x{want[1]}")
            listed = (tuple(e["shape"]), e["group_size"], e["offset"], e["alpha_dtype"], e["row_bits"])
            actual = ((p.rows, p.cols), p.group_size, p.offset is not None, alpha_dtype,
                      _row_bits_histogram(p.row_bits))
            if listed != actual:
                raise BCQFormatError(f"{where}: (shape, group size, offset, alpha dtype, row bits) {listed} "
                                     f"disagree with {path}: {actual}")
            prm.stored.copy_(torch.from_numpy(_dequantize(p)))
            loaded[e["name"]] = e["file"]
        dense = manifest["dense"]
        dpath = _member(root, dense["file"], mpath)
        blob = dpath.read_bytes()
        for i, t in enumerate(dense["tensors"]):
            where = f"{dpath} (manifest.json dense.tensors[{i}])"
            prm = _target(params, t, loaded, where)
            dt = DENSE_DTYPES.get(t["dtype"])
            if dt is None:
                raise BCQFormatError(f"{where}: dtype {t['dtype']!r} is not one of {', '.join(DENSE_DTYPES)}")
            shape, want = tuple(t["shape"]), tuple(prm.stored.shape)
            if shape != want:
                raise BCQFormatError(f"{where}: {t['name']} has shape {list(shape)}, model_config needs {list(want)}")
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            start = t["offset"]
            if t["nbytes"] != n or start < 0 or start % DENSE_ALIGN or start + n > len(blob):
                raise BCQFormatError(f"{where}: {t['name']} needs {n} bytes at a {DENSE_ALIGN}-byte aligned offset "
                                     f"inside the file's {len(blob)}; manifest.json says {t['nbytes']} at {start}")
            arr = np.frombuffer(blob, dtype=dt, count=n // dt.itemsize, offset=start).astype(np.float32)
            if not np.isfinite(arr).all():
                raise BCQFormatError(f"{where}: {t['name']} has non-finite values")
            prm.stored.copy_(torch.from_numpy(arr.reshape(shape)))
            loaded[t["name"]] = dense["file"]
    missing = [n for n in params if n not in loaded]
    if missing:
        raise BCQFormatError(f"{mpath}: parameter(s) stored nowhere: {', '.join(missing)}")
    tok = Tokenizer(_member(root, manifest["tokenizer"], mpath))
    if tok.vocab_size != cfg.vocab_size:
        raise _bad(root / manifest["tokenizer"], f"has {tok.vocab_size} pieces, model_config's vocab_size is "
                                                  f"{cfg.vocab_size}")
    model.eval()
    return model, tok, manifest


# --------------------------------------------------------------------------- size


@dataclass(frozen=True)
class PackedSize:
    """Bytes on disk of a packed model directory, by part, against the fp32 weights it replaces."""

    parts: dict[str, int]  # matrices, dense, tokenizer, manifest, other (files the manifest does not list)
    quantized_params: int
    dense_params: int
    average_bits: float  # bit-planes per quantized weight (the paper's number)

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def weight_bytes(self) -> int:
        """What stores the weights: every .bcq file (headers and alignment included) and dense.bin."""
        return self.parts["matrices"] + self.parts["dense"]

    @property
    def fp32_bytes(self) -> int:
        """The same parameters as raw float32 (a shared tensor once): an fp32 checkpoint's weights."""
        return 4 * (self.quantized_params + self.dense_params)

    @property
    def compression_ratio(self) -> float:
        return self.fp32_bytes / self.weight_bytes

    @property
    def bits_per_quantized_weight(self) -> float:
        """Stored bits per quantized weight: whole .bcq files, i.e. planes, scales, offsets, row bits, headers."""
        return 8.0 * self.parts["matrices"] / self.quantized_params

    @property
    def bits_per_parameter(self) -> float:
        """Stored bits per parameter of the model, dense parameters included."""
        return 8.0 * self.weight_bytes / (self.quantized_params + self.dense_params)

    def to_dict(self) -> dict[str, Any]:
        return {"parts": dict(self.parts), "total_bytes": self.total_bytes, "weight_bytes": self.weight_bytes,
                "fp32_bytes": self.fp32_bytes, "compression_ratio": self.compression_ratio,
                "quantized_params": self.quantized_params, "dense_params": self.dense_params,
                "average_bits": self.average_bits, "bits_per_quantized_weight": self.bits_per_quantized_weight,
                "bits_per_parameter": self.bits_per_parameter}


def packed_size(model_dir: str | os.PathLike) -> PackedSize:
    """The sizes of the files actually in ``model_dir`` (so ``total_bytes`` is the directory's size),
    grouped by their role in the manifest; parameter counts come from the manifest's shapes."""
    root = Path(model_dir)
    m = read_manifest(root)
    role = {e["file"]: "matrices" for e in m["matrices"]}
    role[m["dense"]["file"]] = "dense"
    role[m["tokenizer"]] = "tokenizer"
    parts = {"matrices": 0, "dense": 0, "tokenizer": 0, "manifest": 0, "other": 0}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        parts["manifest" if rel == MANIFEST else role.get(rel, "other")] += path.stat().st_size
    q = sum(e["shape"][0] * e["shape"][1] for e in m["matrices"])
    d = sum(int(np.prod(t["shape"], dtype=np.int64)) for t in m["dense"]["tensors"])
    return PackedSize(parts, q, d, float(m["average_bits"]))


# --------------------------------------------------------------------------- from a training checkpoint


def pack_checkpoint(model_dir: str | os.PathLike, plan: QuantPlan | Mapping | str, out_dir: str | os.PathLike, *,
                    src: str, tgt: str, checkpoint: str = "checkpoint_best.pt", frequencies_from=None,
                    iters: int = 15, alpha_dtype: str | None = None, dense_dtype: str = "float32") -> dict[str, Any]:
    """Post-training quantization of ``model_dir/checkpoint`` by ``plan`` straight into a packed directory.

    The weights are the ones :func:`~ondevice.quant.ptq.post_training_quantize` bakes into its
    checkpoint (same BCQ math and options), so both score the same; the packed directory is the
    form to ship.  ``frequencies_from`` is needed by a frequency-cluster embedding plan (see
    :func:`~ondevice.quant.ptq.resolve_frequencies`).  Returns :func:`packed_size`'s dict.
    """
    from ..nmt.evaluate import load_model
    from .ptq import _as_plan, resolve_frequencies

    plan = _as_plan(plan)
    model, tok = load_model(model_dir, checkpoint)
    plan.validate_for(model.config)
    assignment = plan.assign(model, resolve_frequencies(plan, tok, frequencies_from))
    save_packed(model, tok.path, out_dir, src=src, tgt=tgt, assignment=assignment, plan=plan, iters=iters,
                alpha_dtype=alpha_dtype, dense_dtype=dense_dtype)
    return packed_size(out_dir).to_dict()


def pack_qat_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, src: str, tgt: str,
                 dense_dtype: str = "float32") -> dict[str, Any]:
    """Packs the result of ``ondevice train qat`` (``run_dir/qat_final*``) into a packed directory.

    The matrices come from the run's BCQ export (the sign planes and scales training ended with),
    everything else from ``qat_final.pt``; the plan is the one recorded in ``qat_final.pt.json``.
    Returns :func:`packed_size`'s dict."""
    from ..nmt.evaluate import load_model
    from .qat import read_bcq_export

    run = Path(run_dir)
    meta_path = run / "qat_final.pt.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        plan = QuantPlan.from_dict(meta["plan"])
    except FileNotFoundError:
        raise DataError(f"{meta_path} does not exist: has `ondevice train qat` finished in {run}?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{meta_path} is not a QAT result description: {e}") from None
    model, tok = load_model(run, "qat_final.pt")
    results = read_bcq_export(run / "qat_final_bcq.pt")
    save_packed(model, tok.path, out_dir, src=src, tgt=tgt, bcq_results=results, plan=plan,
                alpha_dtype=plan.alpha_dtype, dense_dtype=dense_dtype)
    return packed_size(out_dir).to_dict()
