"""fairseq interop: our checkpoints as fairseq ``transformer`` checkpoints and back.

:class:`~ondevice.nmt.model.TransformerModel` has fairseq 0.12's ``transformer`` module tree and
parameter names, so conversion is a matter of the configuration and of the vocabulary:

* :func:`write_fairseq_dict` writes a fairseq ``dict.txt`` in SentencePiece id order.  fairseq's
  ``Dictionary`` always reserves ``0 <s>``, ``1 <pad>``, ``2 </s>``, ``3 <unk>`` -- the special ids of
  our SentencePiece models (see :mod:`ondevice.nmt.tokenizer`) -- and ``dict.txt`` lists ids >= 4, so
  embedding row *i* is SentencePiece id *i* on both sides.  Use this file as
  ``fairseq-preprocess --srcdict dict.txt --joined-dictionary``: a dictionary *loaded* from a file is
  not padded (``Dictionary.load`` never calls ``pad_to_multiple_``); only a dictionary that
  fairseq-preprocess *builds* from data is sorted by frequency and padded to a multiple of 8 with
  ``madeupwordNNNN 0`` entries (and is then not in SentencePiece order at all).
* :func:`to_fairseq_checkpoint` writes a checkpoint that ``checkpoint_utils.load_model_ensemble_and_task``,
  ``TransformerModel.from_pretrained`` and fairseq-generate/-interactive load (task ``translation``,
  criterion ``label_smoothed_cross_entropy``, model ``transformer`` with our hyper-parameters), plus
  ``dict.{src}.txt`` / ``dict.{tgt}.txt`` next to it.
* :func:`from_fairseq_checkpoint` builds our model from a fairseq ``transformer``-family checkpoint
  (legacy ``args`` namespace or ``cfg``), rejecting with :class:`~ondevice.errors.ConfigError` every
  option our model does not compute, and loads the weights strictly.

Trailing ``madeupwordNNNN`` entries (count 0) of a dictionary are vocabulary padding: exporting with
such a ``dict.txt`` appends zero embedding rows, importing drops those rows.  Peri-LN has no fairseq
equivalent.  Everything here works without fairseq installed, except that
``to_fairseq_checkpoint(layout="cfg")`` uses fairseq to fill in its default config sections
(``layout="auto"`` then falls back to the legacy ``args`` layout, which every fairseq fills in itself).

Loading: fairseq's own checkpoints (and ``layout="args"`` ones) pickle an ``argparse.Namespace``, which
``torch.load`` refuses since torch 2.6 unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set when
*fairseq* loads them.  Our ``layout="cfg"`` checkpoints hold only plain containers and load without it.
:func:`from_fairseq_checkpoint` itself loads with ``weights_only=True`` and allows ``argparse.Namespace``.

Installing fairseq (only the interop tests need it).  fairseq 0.12.2 does not build on Python 3.11;
``fairseq-fixed`` does.  ``--no-deps`` keeps pip from replacing torch (and skips torchaudio, which only
the speech tasks import); ``fairseq.tasks`` imports scikit-learn at import time; omegaconf 2.3 needs the
antlr4 4.9 runtime.  The commands used (the compile took 4 minutes on 2 busy cores)::

    pip install cython==3.3.1
    MAX_JOBS=1 pip install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1 hydra-core==1.3.2 \\
        omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 bitarray tqdm
    pip install scikit-learn==1.9.1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

__all__ = [
    "FAIRSEQ_SPECIALS", "FAIRSEQ_TRANSFORMER_ARCHS", "write_fairseq_dict", "read_fairseq_dict",
    "to_fairseq_checkpoint", "from_fairseq_checkpoint", "fairseq_args_from_config",
    "config_from_fairseq_args",
]

FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary ids 0..3
_MADEUP = re.compile(r"madeupword\d{4}")
_EMBEDDING_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight")

# fairseq 0.12 architectures whose model class is fairseq.models.transformer.TransformerModel
FAIRSEQ_TRANSFORMER_ARCHS = (
    "transformer", "transformer_tiny", "transformer_iwslt_de_en", "transformer_wmt_en_de",
    "transformer_vaswani_wmt_en_de_big", "transformer_vaswani_wmt_en_fr_big", "transformer_wmt_en_de_big",
    "transformer_wmt_en_de_big_t2t",
)


# --------------------------------------------------------------------------- dictionaries


def _tokenizer(tokenizer_or_spm_path):
    from .tokenizer import Tokenizer

    if isinstance(tokenizer_or_spm_path, Tokenizer):
        return tokenizer_or_spm_path
    if isinstance(tokenizer_or_spm_path, (str, os.PathLike)):
        return Tokenizer(tokenizer_or_spm_path)
    raise ConfigError(f"expected a Tokenizer or the path of a SentencePiece model, got {tokenizer_or_spm_path!r}")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_fairseq_dict(tokenizer_or_spm_path, path: str | os.PathLike, pad_to_multiple: int = 1) -> Path:
    """Writes fairseq's ``dict.txt`` for a SentencePiece model: one ``<piece> 1`` line per id >= 4, in id order.

    fairseq adds ``<s> <pad> </s> <unk>`` (ids 0..3) itself, so ``Dictionary.load(path)`` maps every
    piece to its SentencePiece id and ``len(dictionary) == vocab_size``.  ``pad_to_multiple > 1``
    appends fairseq's padding entries (``madeupword0000 0``, ...) up to a multiple of it, as fairseq's
    ``Dictionary.pad_to_multiple_`` would; not needed by fairseq (a loaded dictionary is used as is).
    """
    tok = _tokenizer(tokenizer_or_spm_path)
    if isinstance(pad_to_multiple, bool) or not isinstance(pad_to_multiple, int) or pad_to_multiple < 1:
        raise ConfigError(f"pad_to_multiple must be a positive integer, got {pad_to_multiple!r}")
    lines = []
    seen = set(FAIRSEQ_SPECIALS)
    for i in range(len(FAIRSEQ_SPECIALS), tok.vocab_size):
        piece = tok.sp.IdToPiece(i)
        if not piece or any(c.isspace() for c in piece):
            raise DataError(f"{tok.path}: piece {i} ({piece!r}) is empty or contains whitespace, which a fairseq "
                            "dict.txt cannot represent")
        if piece in seen or _MADEUP.fullmatch(piece):
            raise DataError(f"{tok.path}: piece {i} ({piece!r}) collides with a fairseq special symbol")
        seen.add(piece)
        lines.append(f"{piece} 1\n")
    n, i = tok.vocab_size, 0
    while n % pad_to_multiple:
        lines.append(f"madeupword{i:04d} 0\n")
        n, i = n + 1, i + 1
    path = Path(path)
    _atomic_write_text(path, "".join(lines))
    return path


def read_fairseq_dict(path: str | os.PathLike) -> list[tuple[str, int]]:
    """The ``(symbol, count)`` entries of a fairseq ``dict.txt`` (ids 4, 5, ...; the specials are implicit)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"fairseq dictionary {path} does not exist") from None
    except (OSError, UnicodeError) as e:
        raise DataError(f"cannot read fairseq dictionary {path}: {e}") from None
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.rstrip().rsplit(" ", 1)
        if len(parts) == 2 and parts[1] == "#fairseq:overwrite":
            parts = parts[0].rsplit(" ", 1)
        if len(parts) != 2 or not parts[0] or not re.fullmatch(r"-?\d+", parts[1]):
            raise DataError(f"{path}:{n}: expected '<symbol> <count>', got {line!r}")
        entries.append((parts[0], int(parts[1])))
    return entries


def _dict_padding(entries: list[tuple[str, int]]) -> int:
    """Number of trailing ``madeupwordNNNN`` entries with count 0 (fairseq's vocabulary padding)."""
    k = 0
    for sym, count in reversed(entries):
        if not (_MADEUP.fullmatch(sym) and count == 0):
            break
        k += 1
    return k


# --------------------------------------------------------------------------- configuration mapping


def fairseq_args_from_config(cfg) -> dict[str, Any]:
    """fairseq ``transformer`` model arguments (flat, as ``fairseq-train --arch transformer`` stores them)
    equivalent to our :class:`~ondevice.nmt.model.TransformerConfig`.  Peri-LN raises ConfigError."""
    cfg.validate()
    if cfg.norm == "peri":
        raise ConfigError("norm='peri' (Peri-LN) has no fairseq equivalent: fairseq's transformer has only "
                          "Post-LN and Pre-LN (normalize_before); such a model cannot be exported")
    ids = (cfg.bos_id, cfg.pad_id, cfg.eos_id, cfg.unk_id)
    if ids != (0, 1, 2, 3):
        raise ConfigError(f"fairseq's Dictionary fixes bos/pad/eos/unk to ids 0/1/2/3; this model uses {ids}")
    pre = cfg.norm == "pre"
    d = cfg.d_model
    return {
        "_name": "transformer", "arch": "transformer",
        "encoder_embed_path": None, "encoder_embed_dim": d, "encoder_ffn_embed_dim": cfg.ffn_dim,
        "encoder_layers": cfg.encoder_layers, "encoder_attention_heads": cfg.heads,
        "encoder_normalize_before": pre, "encoder_learned_pos": False,
        "decoder_embed_path": None, "decoder_embed_dim": d, "decoder_ffn_embed_dim": cfg.ffn_dim,
        "decoder_layers": cfg.decoder_layers, "decoder_attention_heads": cfg.heads,
        "decoder_normalize_before": pre, "decoder_learned_pos": False,
        "decoder_output_dim": d, "decoder_input_dim": d, "no_decoder_final_norm": False,
        "dropout": float(cfg.dropout), "attention_dropout": float(cfg.attention_dropout),
        "activation_dropout": float(cfg.activation_dropout), "activation_fn": "relu",
        "share_all_embeddings": cfg.share_all_embeddings,
        "share_decoder_input_output_embed": cfg.share_all_embeddings, "merge_src_tgt_embed": False,
        "adaptive_softmax_cutoff": None, "adaptive_softmax_dropout": 0, "adaptive_input": False,
        "tie_adaptive_weights": False, "no_token_positional_embeddings": False, "no_cross_attention": False,
        "cross_self_attention": False, "no_scale_embedding": False, "layernorm_embedding": False,
        "checkpoint_activations": False, "offload_activations": False,
        "encoder_layers_to_keep": None, "decoder_layers_to_keep": None, "encoder_layerdrop": 0,
        "decoder_layerdrop": 0, "quant_noise_pq": 0, "quant_noise_pq_block_size": 8, "quant_noise_scalar": 0,
        "max_source_positions": cfg.max_positions, "max_target_positions": cfg.max_positions,
    }


def _set(a: dict, **defaults) -> None:
    for k, v in defaults.items():
        a.setdefault(k, v)


def _arch_defaults(a: dict, arch: str) -> dict:
    """Fill missing arguments as fairseq's architecture functions (``getattr(args, key, default)``) do."""
    a = dict(a)
    if arch == "transformer_tiny":
        _set(a, encoder_embed_dim=64, encoder_ffn_embed_dim=64, encoder_layers=2, encoder_attention_heads=2,
             decoder_layers=2, decoder_attention_heads=2)
    elif arch == "transformer_iwslt_de_en":
        _set(a, encoder_embed_dim=512, encoder_ffn_embed_dim=1024, encoder_attention_heads=4, encoder_layers=6,
             decoder_embed_dim=512, decoder_ffn_embed_dim=1024, decoder_attention_heads=4, decoder_layers=6)
    elif arch in ("transformer_vaswani_wmt_en_de_big", "transformer_vaswani_wmt_en_fr_big",
                  "transformer_wmt_en_de_big", "transformer_wmt_en_de_big_t2t"):
        if arch == "transformer_wmt_en_de_big_t2t":
            _set(a, encoder_normalize_before=True, decoder_normalize_before=True, attention_dropout=0.1,
                 activation_dropout=0.1)
        elif arch == "transformer_wmt_en_de_big":
            _set(a, attention_dropout=0.1)
        elif arch == "transformer_vaswani_wmt_en_fr_big":
            _set(a, dropout=0.1)
        _set(a, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16,
             encoder_normalize_before=False, decoder_embed_dim=1024, decoder_ffn_embed_dim=4096,
             decoder_attention_heads=16, dropout=0.3)
    # base_architecture
    _set(a, encoder_embed_dim=512, encoder_ffn_embed_dim=2048, encoder_layers=6, encoder_attention_heads=8,
         encoder_normalize_before=False, encoder_learned_pos=False)
    _set(a, decoder_embed_dim=a["encoder_embed_dim"], decoder_ffn_embed_dim=a["encoder_ffn_embed_dim"],
         decoder_layers=6, decoder_attention_heads=8, decoder_normalize_before=False, decoder_learned_pos=False,
         attention_dropout=0.0, activation_fn="relu", dropout=0.1, adaptive_softmax_cutoff=None,
         share_decoder_input_output_embed=False, share_all_embeddings=False, merge_src_tgt_embed=False,
         no_token_positional_embeddings=False, adaptive_input=False, no_cross_attention=False,
         cross_self_attention=False, no_scale_embedding=False, layernorm_embedding=False,
         tie_adaptive_weights=False, encoder_layers_to_keep=None, decoder_layers_to_keep=None,
         no_decoder_final_norm=False)
    _set(a, decoder_output_dim=a["decoder_embed_dim"], decoder_input_dim=a["decoder_embed_dim"])
    if a.get("activation_dropout") is None:
        a["activation_dropout"] = 0.0
    if not a["activation_dropout"]:  # fairseq: activation_dropout 0 falls back to the legacy relu_dropout
        a["activation_dropout"] = a.get("relu_dropout") or 0.0
    if a.get("max_target_positions") is None:
        a["max_target_positions"] = a.get("max_positions") or 1024
    if a.get("max_source_positions") is None:
        a["max_source_positions"] = a.get("max_positions") or 1024
    return a


def _plain(obj) -> Any:
    """argparse.Namespace / Mapping / OmegaConf containers -> plain dicts and lists (recursively)."""
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        obj = OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _flatten_model_args(m: dict) -> dict:
    """Structured (hydra) ``encoder: {embed_dim: ..}`` sub-configs -> fairseq's flat ``encoder_embed_dim``."""
    m = dict(m)
    for sub in ("encoder", "decoder", "quant_noise"):
        if isinstance(m.get(sub), dict):
            for k, v in m.pop(sub).items():
                m.setdefault(f"{sub}_{k}", v)
    return m


def config_from_fairseq_args(model_args: Mapping, vocab_size: int):
    """Our :class:`~ondevice.nmt.model.TransformerConfig` for fairseq ``transformer`` model arguments
    (flat namespace or structured cfg); ConfigError for anything our model does not compute."""
    from .model import TransformerConfig

    a = _flatten_model_args(_plain(model_args))
    arch = a.get("arch") or a.get("_name")
    if arch not in FAIRSEQ_TRANSFORMER_ARCHS:
        raise ConfigError(f"unsupported fairseq architecture {arch!r}: only fairseq's TransformerModel "
                          f"({', '.join(FAIRSEQ_TRANSFORMER_ARCHS)}) converts")
    a = _arch_defaults(a, arch)

    def reject(cond: bool, what: str) -> None:
        if cond:
            raise ConfigError(f"fairseq checkpoint uses {what}, which ondevice's TransformerModel does not "
                              "implement")

    reject(bool(a["encoder_learned_pos"]) or bool(a["decoder_learned_pos"]),
           "learned positional embeddings (--encoder/decoder-learned-pos)")
    reject(bool(a["no_token_positional_embeddings"]), "no positional embeddings (--no-token-positional-embeddings)")
    reject(bool(a["layernorm_embedding"]), "a LayerNorm on the embeddings (--layernorm-embedding)")
    reject(bool(a["no_scale_embedding"]), "unscaled embeddings (--no-scale-embedding)")
    reject(bool(a["adaptive_input"]) or bool(a["adaptive_softmax_cutoff"]) or bool(a["tie_adaptive_weights"]),
           "adaptive input/softmax")
    reject(bool(a["cross_self_attention"]), "cross+self attention (--cross-self-attention)")
    reject(bool(a["no_cross_attention"]), "a decoder without encoder attention (--no-cross-attention)")
    reject(a["activation_fn"] != "relu", f"activation_fn={a['activation_fn']!r} (only relu is implemented)")
    reject(bool(a["encoder_layers_to_keep"]) or bool(a["decoder_layers_to_keep"]), "layer pruning (--*-layers-to-keep)")
    reject(bool(a["merge_src_tgt_embed"]), "merged source/target embeddings (--merge-src-tgt-embed)")
    reject(bool(a.get("char_inputs")), "character inputs")
    reject(bool(a.get("base_layers")), "BASE layers")
    reject(any(bool(a.get(k)) for k in ("scale_attn", "scale_fc", "scale_heads", "scale_resids")),
           "NormFormer scaling (--scale-attn/-fc/-heads/-resids)")
    reject(bool(a.get("encoder_xformers_att_config")) or bool(a.get("decoder_xformers_att_config")),
           "xformers attention")
    reject(bool(a["decoder_normalize_before"]) and bool(a["no_decoder_final_norm"]),
           "Pre-LN without the final decoder LayerNorm (--no-decoder-final-norm)")
    for enc, dec, what in (("encoder_embed_dim", "decoder_embed_dim", "embedding dims"),
                           ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim", "FFN dims"),
                           ("encoder_attention_heads", "decoder_attention_heads", "attention heads"),
                           ("encoder_normalize_before", "decoder_normalize_before", "normalize_before")):
        reject(a[enc] != a[dec], f"different encoder/decoder {what} ({enc}={a[enc]!r}, {dec}={a[dec]!r})")
    reject(a["decoder_input_dim"] != a["decoder_embed_dim"] or a["decoder_output_dim"] != a["decoder_embed_dim"],
           "decoder input/output projections (decoder_input_dim/decoder_output_dim != decoder_embed_dim)")

    try:
        cfg = TransformerConfig(
            vocab_size=int(vocab_size), d_model=a["encoder_embed_dim"], ffn_dim=a["encoder_ffn_embed_dim"],
            heads=a["encoder_attention_heads"], encoder_layers=a["encoder_layers"],
            decoder_layers=a["decoder_layers"], dropout=float(a["dropout"]),
            attention_dropout=float(a["attention_dropout"]), activation_dropout=float(a["activation_dropout"]),
            norm="pre" if a["encoder_normalize_before"] else "post",
            # fairseq caps generation at max_target_positions - 1; encoder positions are unbounded in both
            max_positions=int(a["max_target_positions"]),
            share_all_embeddings=bool(a["share_all_embeddings"]))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"fairseq model arguments do not form a valid configuration: {e}") from None
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------- loading files


def _torch_load(path: Path, trusted: bool, what: str):
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    try:
        if trusted:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise DataError(f"{path} needs objects beyond tensors, containers and argparse.Namespace to load "
                            f"({str(e).splitlines()[-1][:200]}); pass trusted=True if you trust the file") from None
        raise DataError(f"{path} is not a readable checkpoint (corrupt or not a torch file): {e}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, AttributeError, ImportError,
            KeyError, IndexError) as e:
        raise DataError(f"{path} is not a readable checkpoint (corrupt or not a torch file): "
                        f"{type(e).__name__}: {str(e)[:300]}") from None


def _load_ours(model_or_path, trusted: bool):
    """(model, checkpoint dict or {}) from a TransformerModel or one of our checkpoint files."""
    from .model import TransformerConfig, TransformerModel

    if isinstance(model_or_path, TransformerModel):
        return model_or_path, {}
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise ConfigError(f"expected a TransformerModel or a checkpoint path, got {type(model_or_path).__name__}")
    path = Path(model_or_path)
    ck = _torch_load(path, trusted, "checkpoint")
    if not isinstance(ck, dict):
        raise DataError(f"{path} is not an ondevice checkpoint (a {type(ck).__name__}, not a dict)")
    if "model_config" not in ck or "model" not in ck:
        hint = "; it looks like a fairseq checkpoint (use from_fairseq_checkpoint)" if (
            "cfg" in ck or "args" in ck) else ""
        raise DataError(f"{path} is not an ondevice checkpoint (needs 'model' and 'model_config'){hint}")
    try:
        cfg = TransformerConfig(**ck["model_config"])
    except TypeError as e:
        raise DataError(f"{path}: bad model_config: {e}") from None
    model = TransformerModel(cfg)
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: weights do not match model_config: {str(e)[:500]}") from None
    return model, ck


# --------------------------------------------------------------------------- export


def _fairseq_cfg_container(flat: dict) -> dict:
    """What fairseq-train stores as ``cfg`` for these flat arguments (fairseq's own defaults for every
    section), with the model section as a plain dict instead of an ``argparse.Namespace``."""
    import warnings

    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    with warnings.catch_warnings():  # hydra's deprecation notices about fairseq's own config usage
        warnings.simplefilter("ignore")
        cfg = convert_namespace_to_omegaconf(argparse.Namespace(**flat))
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container = {k: _plain(v) for k, v in container.items()}
    return container


def to_fairseq_checkpoint(model_or_checkpoint, out_path: str | os.PathLike, dict_path: str | os.PathLike, *,
                          source_lang: str | None = None, target_lang: str | None = None,
                          data_dir: str | os.PathLike | None = None, layout: str = "auto",
                          label_smoothing: float | None = None, trusted: bool = False) -> Path:
    """Writes our model (a :class:`TransformerModel` or one of our checkpoint files) as a fairseq 0.12
    ``transformer`` checkpoint, and ``dict.{source_lang}.txt`` / ``dict.{target_lang}.txt`` (copies of
    ``dict_path``, see :func:`write_fairseq_dict`) into ``data_dir`` (default: next to ``out_path``),
    the directory recorded as the translation task's ``data``.

    ``layout``: ``"cfg"`` -- fairseq >= 0.10 layout (``args: None``, a full ``cfg`` made with fairseq's
    defaults, needs fairseq importable; holds only plain containers); ``"args"`` -- legacy layout (an
    ``argparse.Namespace`` of flat arguments that fairseq completes when loading; needs no fairseq here);
    ``"auto"`` -- ``"cfg"`` when fairseq is importable, else ``"args"``.  Languages default to the
    ``src``/``tgt`` of a training checkpoint's config, else ``"src"``/``"tgt"``.
    """
    import torch

    model, ck = _load_ours(model_or_checkpoint, trusted)
    cfg = model.config
    flat = fairseq_args_from_config(cfg)  # ConfigError for Peri-LN etc.
    train_cfg = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    source_lang = source_lang or train_cfg.get("src") or "src"
    target_lang = target_lang or train_cfg.get("tgt") or "tgt"
    if source_lang == target_lang:
        raise ConfigError(f"source_lang and target_lang must differ, got {source_lang!r} twice")
    if label_smoothing is None:
        label_smoothing = float(train_cfg.get("label_smoothing", 0.1))
    if layout == "auto":
        try:
            import fairseq  # noqa: F401
            layout = "cfg"
        except ImportError:
            layout = "args"
    if layout not in ("cfg", "args"):
        raise ConfigError(f"layout must be 'auto', 'cfg' or 'args', got {layout!r}")

    # vocabulary: dict.txt must describe exactly our rows (+ trailing madeupword padding)
    dict_path = Path(dict_path)
    entries = read_fairseq_dict(dict_path)
    n_dict = len(FAIRSEQ_SPECIALS) + len(entries)
    pad_rows = _dict_padding(entries)
    if n_dict - pad_rows != cfg.vocab_size:
        raise ConfigError(f"{dict_path} describes {n_dict} symbols ({pad_rows} of them padding) but the model has "
                          f"vocab_size {cfg.vocab_size}; write it with write_fairseq_dict from the model's tokenizer")

    out_path = Path(out_path)
    data_dir = Path(data_dir) if data_dir is not None else out_path.parent
    text = dict_path.read_text(encoding="utf-8")
    dict_files = [data_dir / f"dict.{lang}.txt" for lang in (source_lang, target_lang)]
    for f in dict_files:
        if f.exists() and f.read_text(encoding="utf-8") != text:
            raise ConfigError(f"{f} exists with another vocabulary; remove it or choose another data_dir")

    # weights: our state dict (fairseq's parameter names); embeddings padded with zero rows for
    # madeupwords, tied matrices kept as one tensor in the file
    state = {}
    embeddings: dict[int, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        if k in _EMBEDDING_KEYS:
            ptr = v.data_ptr()
            if ptr not in embeddings:
                v = v.cpu()
                embeddings[ptr] = torch.cat([v, v.new_zeros(pad_rows, v.size(1))]) if pad_rows else v.clone()
            state[k] = embeddings[ptr]
        else:
            state[k] = v.cpu().clone()

    task = {"task": "translation", "data": str(data_dir.resolve()), "source_lang": source_lang,
            "target_lang": target_lang, "left_pad_source": True, "left_pad_target": False, "load_alignments": False,
            "max_source_positions": cfg.max_positions, "max_target_positions": cfg.max_positions}
    crit = {"criterion": "label_smoothed_cross_entropy", "label_smoothing": float(label_smoothing),
            "report_accuracy": False, "ignore_prefix_size": 0, "sentence_avg": False}
    all_args = {**flat, **task, **crit, "seed": 1}
    num_updates = int((ck.get("state") or {}).get("updates", ck.get("update", 0)) or 0)
    out = {
        "args": None, "cfg": None, "model": state, "criterion": {},
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": None},
                               "num_updates": num_updates}],
        "task_state": {},
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True},
                        "val_loss": None, "previous_training_time": 0.0},
        "last_optimizer_state": None,
        "ondevice": {"model_config": dataclasses.asdict(cfg)},
    }
    if layout == "args":
        out["args"] = argparse.Namespace(**all_args)
    else:
        try:
            container = _fairseq_cfg_container(all_args)
        except ImportError as e:
            raise ConfigError(f"layout='cfg' needs fairseq importable ({e}); use layout='args'") from None
        model_section = dict(container.get("model") or {})
        model_section.update(flat)
        container["model"] = model_section
        out["cfg"] = container

    data_dir.mkdir(parents=True, exist_ok=True)
    for f in dict_files:
        if not f.exists():
            _atomic_write_text(f, text)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    torch.save(out, tmp)
    os.replace(tmp, out_path)
    return out_path


# --------------------------------------------------------------------------- import


def _upgrade_state_dict(sd: dict, share_input_output: bool) -> dict:
    """fairseq's ``upgrade_state_dict_named`` renames for old checkpoints: fused ``in_proj_*`` ->
    ``q/k/v_proj``, ``layer_norms.N`` -> named norms, ``decoder.embed_out`` -> ``output_projection``."""
    sd = dict(sd)
    for k in [k for k in sd if k.endswith(".in_proj_weight") or k.endswith(".in_proj_bias")]:
        prefix, kind = k.rsplit(".in_proj_", 1)
        t = sd.pop(k)
        dim = t.size(0) // 3
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{prefix}.{name}.{kind}"] = t[i * dim:(i + 1) * dim]
    maps = {"encoder": {"0": "self_attn_layer_norm", "1": "final_layer_norm"},
            "decoder": {"0": "self_attn_layer_norm", "1": "encoder_attn_layer_norm", "2": "final_layer_norm"}}
    for k in [k for k in sd if ".layer_norms." in k]:
        m = re.fullmatch(r"(encoder|decoder)(\.layers\.\d+)\.layer_norms\.(\d)\.(weight|bias)", k)
        if m and m.group(3) in maps[m.group(1)]:
            sd[f"{m.group(1)}{m.group(2)}.{maps[m.group(1)][m.group(3)]}.{m.group(4)}"] = sd.pop(k)
    if "decoder.output_projection.weight" not in sd:
        src = "decoder.embed_tokens.weight" if share_input_output else "decoder.embed_out"
        if src in sd:
            sd["decoder.output_projection.weight"] = sd[src]
    if not share_input_output:
        sd.pop("decoder.embed_out", None)
    return sd


def _find_dicts(task_args: dict) -> list[Path]:
    """``dict.{src}.txt`` and ``dict.{tgt}.txt`` of the task's data directory (relative paths resolve from
    the working directory, as in fairseq); with unknown languages, the directory's only two ``dict.*.txt``."""
    data = task_args.get("data")
    if not isinstance(data, str) or not data:
        return []
    d = Path(data.split(os.pathsep)[0])
    langs = [task_args.get("source_lang"), task_args.get("target_lang")]
    try:
        if all(isinstance(x, str) and x for x in langs):
            paths = [d / f"dict.{x}.txt" for x in langs]
            return paths if all(p.is_file() for p in paths) else []
        paths = sorted(d.glob("dict.*.txt"))
        return paths if len(paths) == 2 else []
    except OSError:
        return []


def _checkpoint_dictionary(path: Path, dict_path, task_args: dict, rows: int) -> list[tuple[str, int]] | None:
    """The dictionary entries of a checkpoint with ``rows`` embedding rows: ``dict_path`` (must fit), else the
    task's data directory (ignored with a warning when it does not fit), else None."""
    import warnings

    if dict_path is not None:
        entries = read_fairseq_dict(dict_path)
        if len(FAIRSEQ_SPECIALS) + len(entries) != rows:
            raise DataError(f"{path}: the dictionary {dict_path} has {len(FAIRSEQ_SPECIALS) + len(entries)} symbols "
                            f"but the embeddings have {rows} rows; pass the dict.txt the model was trained with as "
                            "dict_path")
        return entries
    paths = _find_dicts(task_args)
    try:
        found = [read_fairseq_dict(p) for p in paths]
    except DataError as e:
        warnings.warn(f"{path}: ignoring the task's dictionaries: {e}", stacklevel=3)
        return None
    if not found:
        return None
    if any(len(FAIRSEQ_SPECIALS) + len(e) != rows for e in found):
        warnings.warn(f"{path}: ignoring {', '.join(map(str, paths))}: their size does not match the embeddings "
                      f"({rows} rows); pass dict_path", stacklevel=3)
        return None
    if any(e != found[0] for e in found[1:]):
        raise ConfigError(f"{path}: source and target dictionaries differ ({paths[0]} vs {paths[1]}); our model has "
                          "one joint vocabulary")
    return found[0]


def from_fairseq_checkpoint(path: str | os.PathLike, dict_path: str | os.PathLike | None = None,
                            tokenizer=None, *, drop_madeupwords: bool = True, trusted: bool = False,
                            out_path: str | os.PathLike | None = None):
    """Our :class:`~ondevice.nmt.model.TransformerModel` (eval mode) from a fairseq ``transformer`` checkpoint.

    The configuration comes from the checkpoint's ``args`` namespace or ``cfg.model``; options our model
    does not compute raise ConfigError.  The weights load strictly (old fairseq names are upgraded as
    fairseq does).  The dictionary (``dict_path``, else ``dict.{src}.txt``/``dict.{tgt}.txt`` in the
    task's data directory when present) is checked against the embedding rows; its trailing
    ``madeupwordNNNN`` padding entries (count 0: never seen in training) are dropped from the
    embeddings when ``drop_madeupwords``.  With ``tokenizer`` (a Tokenizer or SentencePiece model path)
    the dictionary must list the SentencePiece pieces in id order (ConfigError otherwise).
    ``out_path``: also save the model as one of our checkpoints (``model`` + ``model_config``).
    ``trusted``: unpickle arbitrary objects (``weights_only=False``); by default only tensors,
    containers and ``argparse.Namespace`` load.
    """
    import torch

    from .model import TransformerModel

    path = Path(path)
    state = _torch_load(path, trusted, "fairseq checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("model"), Mapping):
        raise DataError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    if state.get("args") is not None:
        model_args = task_args = _plain(state["args"])
    elif state.get("cfg") is not None:
        c = _plain(state["cfg"])
        if not isinstance(c, dict) or not isinstance(c.get("model"), dict):
            raise DataError(f"{path}: fairseq cfg has no model section")
        model_args, task_args = c["model"], c.get("task") or {}
    else:
        hint = " (it is an ondevice checkpoint; load it directly)" if "model_config" in state else ""
        raise DataError(f"{path} is not a fairseq checkpoint: neither 'args' nor 'cfg' is set{hint}")
    if not isinstance(model_args, dict) or not isinstance(task_args, dict):
        raise DataError(f"{path}: unexpected fairseq config types")

    arch = model_args.get("arch") or model_args.get("_name")
    if arch not in FAIRSEQ_TRANSFORMER_ARCHS:
        raise ConfigError(f"{path}: unsupported fairseq architecture {arch!r}: only fairseq's TransformerModel "
                          f"({', '.join(FAIRSEQ_TRANSFORMER_ARCHS)}) converts")
    flat = _arch_defaults(_flatten_model_args(model_args), arch)
    share_all = bool(flat.get("share_all_embeddings"))
    share_io = share_all or bool(flat.get("share_decoder_input_output_embed"))
    sd = {k: v for k, v in state["model"].items()}
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError(f"{path}: the model state dict holds non-tensor values")
    sd = _upgrade_state_dict(sd, share_io)
    if "encoder.embed_tokens.weight" not in sd or "decoder.embed_tokens.weight" not in sd:
        raise DataError(f"{path}: no encoder/decoder token embeddings: not a fairseq transformer")
    rows = sd["encoder.embed_tokens.weight"].size(0)
    if sd["decoder.embed_tokens.weight"].size(0) != rows:
        raise ConfigError(f"{path}: separate source ({rows}) and target "
                          f"({sd['decoder.embed_tokens.weight'].size(0)}) vocabularies; our model has one "
                          "joint vocabulary")

    # dictionary checks and padding rows
    entries = _checkpoint_dictionary(path, dict_path, task_args, rows)
    pad_rows = _dict_padding(entries) if entries is not None and drop_madeupwords else 0
    vocab = rows - pad_rows
    if tokenizer is not None:
        tok = _tokenizer(tokenizer)
        if vocab != tok.vocab_size:
            raise ConfigError(f"{path}: {vocab} vocabulary rows{' after dropping padding' if pad_rows else ''} but "
                              f"the tokenizer has {tok.vocab_size} pieces")
        if entries is not None:
            pieces = [tok.sp.IdToPiece(i) for i in range(len(FAIRSEQ_SPECIALS), tok.vocab_size)]
            symbols = [s for s, _ in entries[:vocab - len(FAIRSEQ_SPECIALS)]]
            bad = next((i for i, (a, b) in enumerate(zip(symbols, pieces)) if a != b), None)
            if bad is not None:
                raise ConfigError(
                    f"{path}: the fairseq dictionary is not in SentencePiece id order (id {bad + 4}: "
                    f"{symbols[bad]!r} vs piece {pieces[bad]!r}); preprocess with fairseq-preprocess "
                    "--srcdict <write_fairseq_dict output> --joined-dictionary")

    cfg = config_from_fairseq_args(model_args, vocab)
    if pad_rows:
        for k in _EMBEDDING_KEYS:
            if k in sd:
                sd[k] = sd[k][:vocab]
    if share_all:
        base = sd["encoder.embed_tokens.weight"]
        for k in _EMBEDDING_KEYS[1:]:
            if k in sd and not torch.equal(sd[k], base):
                raise DataError(f"{path}: share_all_embeddings is set but {k} differs from the encoder embeddings")
    if cfg.norm == "pre":  # fairseq ignores the final LayerNorms of pre-version-3 checkpoints
        ev = float(sd.get("encoder.version", torch.tensor([1.0])).reshape(-1)[0])
        dv = float(sd.get("decoder.version", torch.tensor([1.0])).reshape(-1)[0])
        if ev < 2 or dv <= 2:
            raise ConfigError(f"{path}: old checkpoint (encoder/decoder version {ev:g}/{dv:g}) for which fairseq "
                              "drops the final LayerNorm of a Pre-LN model; our model cannot represent that")

    model = TransformerModel(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise DataError(f"{path}: the weights do not fit the configuration: {str(e)[:800]}") from None
    model.eval()
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(cfg),
                    "fairseq_source": str(path)}, tmp)
        os.replace(tmp, out_path)
    return model
