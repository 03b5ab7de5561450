"""Our fp32 translation model as a CTranslate2 model (int8 by default), converted once and cached.

The translation benchmark (``ondevice bench translate``) compares our runtime with CTranslate2 on
*the same trained model*, converted by CTranslate2's own converter framework, so the comparison is
about the engines and not about the models.  Two routes give the same network:

``method="spec"`` (default; needs only ``ctranslate2`` and torch)
    A :class:`ctranslate2.converters.Converter` whose ``_load`` fills a
    :class:`ctranslate2.specs.TransformerSpec` with CTranslate2's own fairseq layer setters
    (``ctranslate2.converters.fairseq.set_transformer_encoder_layer`` and friends).  They apply to our
    :class:`~ondevice.nmt.model.TransformerModel` unchanged because its module tree has fairseq's names
    (``self_attn.q_proj``, ``final_layer_norm``, ``embed_positions.weights``, ...).  Only the two
    top-level setters are replaced: they read fairseq attributes our model does not have
    (``layernorm_embedding``, ``project_in_dim``), all of which are "absent" for us.  Our LayerNorm
    epsilon (1e-5, as fairseq) is recorded; the fairseq converter leaves CTranslate2's default.

``method="fairseq"`` (needs fairseq importable; see :mod:`ondevice.nmt.fairseq_interop` to install it)
    Writes a real fairseq checkpoint with :func:`~ondevice.nmt.fairseq_interop.to_fairseq_checkpoint`
    and runs :class:`ctranslate2.converters.FairseqConverter` on it: the literal upstream path.

Either way the vocabulary is the SentencePiece model's pieces in id order (fairseq's dictionary order:
``<s> <pad> </s> <unk>`` then the pieces; CTranslate2 names padding ``<blank>``), the decoder starts
from ``</s>`` and ``</s>`` is appended to the source, as in fairseq and our decoders.  The tokenizer is
copied into the output (``spm.model``) so the directory is self-contained.

Caching: the output directory carries ``ondevice_ct2.json`` with the sha256 of the source files, the
ctranslate2 version, the quantization and the method; a matching stamp means the directory is reused.
The directory is written beside its destination and swapped in (:func:`ondevice.staged_dir.replacing_dir`),
so an interrupted conversion never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

__all__ = ["convert", "cached_convert", "source_files", "STAMP", "METHODS", "CT2_TOKENIZER"]

STAMP = "ondevice_ct2.json"
CT2_TOKENIZER = "spm.model"
METHODS = ("spec", "fairseq")
_CONVERTER_VERSION = 1  # bump when the conversion itself changes, to invalidate caches


def source_files(model_dir: str | os.PathLike, checkpoint: str | None = None) -> list[Path]:
    """The files a conversion (or an fp32 export) of ``model_dir`` reads: its checkpoint and tokenizer.

    A model card directory (``card.json``) names its checkpoint; a training directory uses
    ``checkpoint`` or ``checkpoint_best.pt``.  These are the inputs whose hashes key the caches."""
    d = Path(model_dir)
    if checkpoint is None:
        card = d / "card.json"
        if card.is_file():
            try:
                checkpoint = json.loads(card.read_text(encoding="utf-8")).get("checkpoint")
            except (OSError, ValueError) as e:
                raise DataError(f"{card}: unreadable model card: {e}") from None
            if not checkpoint:
                raise ConfigError(f"{d} is a model card without a checkpoint (a packed model?): the CTranslate2 "
                                  "conversion and the fp32 export need the fp32 model, e.g. models/nmt-en-de")
        else:
            checkpoint = "checkpoint_best.pt"
    files = [d / checkpoint, d / "spm.model"]
    for f in files:
        if not f.is_file():
            raise DataError(f"{f} does not exist (needed to convert {d})")
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stamp(model_dir: Path, checkpoint: str | None, quantization: str, method: str) -> dict[str, Any]:
    import ctranslate2

    return {"converter_version": _CONVERTER_VERSION, "ctranslate2": ctranslate2.__version__,
            "quantization": quantization, "method": method,
            "sources": {f.name: _sha256(f) for f in source_files(model_dir, checkpoint)}}


def _load_ours(model_dir: Path, checkpoint: str | None):
    """(model, tokenizer) of an fp32 model directory (model card or training directory)."""
    from ..nmt.evaluate import load_model

    ck = source_files(model_dir, checkpoint)[0].name
    model, tok = load_model(model_dir, ck)
    model.eval()
    for p in model.parameters():  # the converter calls .numpy() on parameters
        p.requires_grad_(False)
    return model, tok


def _vocabulary(tok, pad_id: int) -> list[str]:
    """Pieces in id order; CTranslate2 calls the padding token ``<blank>`` (as its fairseq converter does)."""
    return ["<blank>" if i == pad_id else tok.sp.IdToPiece(i) for i in range(tok.vocab_size)]


def build_spec(model, tok):
    """A filled :class:`ctranslate2.specs.TransformerSpec` for our model (see the module docstring)."""
    from ctranslate2.converters import fairseq as ct2_fairseq
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = model.config
    if cfg.norm == "peri":
        raise ConfigError("CTranslate2 has no Peri-LN Transformer: only post-LN and pre-LN models convert")
    if cfg.vocab_size != tok.vocab_size:
        raise DataError(f"model vocabulary {cfg.vocab_size} != tokenizer vocabulary {tok.vocab_size}")
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.encoder_layers, cfg.decoder_layers), cfg.heads, pre_norm=cfg.norm == "pre",
        activation=common_spec.Activation.RELU)
    enc, dec = model.encoder, model.decoder
    ct2_fairseq.set_input_layers(spec.encoder, enc)
    for layer_spec, layer in zip(spec.encoder.layer, enc.layers):
        ct2_fairseq.set_transformer_encoder_layer(layer_spec, layer)
    ct2_fairseq.set_input_layers(spec.decoder, dec)
    ct2_fairseq.set_linear(spec.decoder.projection, dec.output_projection)
    for layer_spec, layer in zip(spec.decoder.layer, dec.layers):
        ct2_fairseq.set_transformer_decoder_layer(layer_spec, layer)
    if cfg.norm == "pre":
        ct2_fairseq.set_layer_norm(spec.encoder.layer_norm, enc.layer_norm)
        ct2_fairseq.set_layer_norm(spec.decoder.layer_norm, dec.layer_norm)
    vocab = _vocabulary(tok, cfg.pad_id)
    spec.register_source_vocabulary(vocab)
    spec.register_target_vocabulary(vocab)
    spec.config.bos_token = tok.sp.IdToPiece(cfg.bos_id)
    spec.config.eos_token = tok.sp.IdToPiece(cfg.eos_id)
    spec.config.unk_token = tok.sp.IdToPiece(cfg.unk_id)
    spec.config.decoder_start_token = spec.config.eos_token  # fairseq starts decoding from eos
    spec.config.add_source_eos = True  # our sources end with eos
    spec.config.layer_norm_epsilon = 1e-5  # nn.LayerNorm(eps=1e-5), as fairseq
    return spec


def _spec_converter(model_dir: Path, checkpoint: str | None):
    from ctranslate2.converters import Converter

    class OndeviceTransformerConverter(Converter):
        """CTranslate2 converter for an ondevice (fairseq-layout) Transformer checkpoint."""

        def _load(self):
            model, tok = _load_ours(model_dir, checkpoint)
            return build_spec(model, tok)

    return OndeviceTransformerConverter()


def _fairseq_convert(model_dir: Path, checkpoint: str | None, out: Path, quantization: str) -> None:
    """The upstream route: our checkpoint as a fairseq checkpoint, then CTranslate2's FairseqConverter."""
    try:
        import fairseq  # noqa: F401
    except ImportError:
        raise ConfigError("method='fairseq' needs fairseq importable (see ondevice/nmt/fairseq_interop.py); "
                          "method='spec' does not") from None
    from ctranslate2.converters import FairseqConverter

    from ..nmt.fairseq_interop import to_fairseq_checkpoint, write_fairseq_dict

    ck, spm = source_files(model_dir, checkpoint)
    card = {}
    if (model_dir / "card.json").is_file():
        card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="ondevice-fairseq-") as tmp:
        t = Path(tmp)
        d = write_fairseq_dict(spm, t / "dict.txt")
        path = to_fairseq_checkpoint(ck, t / "checkpoint.pt", d, source_lang=card.get("src"),
                                     target_lang=card.get("tgt"), data_dir=t, layout="args", trusted=True)
        args = {}
        for name in ("src", "tgt"):
            if card.get(name):
                args["source_lang" if name == "src" else "target_lang"] = card[name]
        # the legacy layout pickles an argparse.Namespace (what the converter reads attributes from);
        # the file is ours, written just above
        FairseqConverter(str(path), str(t), unsafe_deserialization=True, **args).convert(
            str(out), quantization=quantization, force=True)


def convert(model_dir: str | os.PathLike, out_dir: str | os.PathLike, quantization: str = "int8",
            method: str = "spec", checkpoint: str | None = None) -> Path:
    """Converts the fp32 model in ``model_dir`` to a CTranslate2 model directory ``out_dir`` (replaced
    atomically; an existing directory is replaced only if it is an earlier conversion)."""
    from ..atomic import atomic_write_text
    from ..staged_dir import replacing_dir

    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    d, out = Path(model_dir), Path(out_dir)
    stamp = _stamp(d, checkpoint, quantization, method)

    def earlier(p: Path) -> bool:
        return (p / STAMP).is_file() or (p / "model.bin").is_file()

    with replacing_dir(out, earlier, "a CTranslate2 model directory") as tmp:
        model_out = tmp / "model"  # CTranslate2 insists on creating (or, forced, replacing) its directory
        if method == "spec":
            _spec_converter(d, checkpoint).convert(str(model_out), quantization=quantization, force=True)
        else:
            _fairseq_convert(d, checkpoint, model_out, quantization)
        for f in model_out.iterdir():
            os.replace(f, tmp / f.name)
        model_out.rmdir()
        shutil.copyfile(source_files(d, checkpoint)[1], tmp / CT2_TOKENIZER)
        atomic_write_text(tmp / STAMP, json.dumps(stamp, indent=1) + "\n")
    return out


def cached_convert(model_dir: str | os.PathLike, out_dir: str | os.PathLike, quantization: str = "int8",
                   method: str = "spec", checkpoint: str | None = None) -> tuple[Path, bool]:
    """``(out_dir, reused)``: converts unless ``out_dir`` already holds this conversion of these exact files."""
    out = Path(out_dir)
    try:
        have = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if have is not None and have == _stamp(Path(model_dir), checkpoint, quantization, method) \
            and (out / "model.bin").is_file():
        return out, True
    return convert(model_dir, out, quantization, method, checkpoint), False


def model_files(ct2_dir: str | os.PathLike) -> list[Path]:
    """What CTranslate2 loads from a converted directory, plus the tokenizer the engine uses."""
    d = Path(ct2_dir)
    return sorted(f for f in d.iterdir() if f.is_file() and f.name != STAMP)
