"""``ondevice.Translator``: translate text with a shipped or trained model (the public Python API).

A Translator holds one loaded model and decodes batches of sentences.  ``model=None`` is the
project's default model (the quantized English->German model shipped with the package).  The
``native`` backend (the default) runs the exported ONNX graphs (``ondevice export nmt``) in the C++
runtime: LUT bit-plane kernels on the memory-mapped weights, C++ tokenizer and beam search, no
PyTorch needed.  The ``torch`` backend runs the PyTorch reference decoder on the model's dequantized
weights; the ``onnxruntime`` backend decodes the same ONNX export with stock onnxruntime (the
reference for parity tests).

Inputs are checked the way a user needs: empty lines translate to empty lines (so line counts
of files are kept), a sentence longer than the model can position is a clear error naming its
index, and a file that is not UTF-8 is a DataError naming the line.  One Translator may be
shared by several threads and gives the same results as sequential calls: the native backend
releases the GIL and runs calls in parallel; the others are serialized by a lock (the torch
backend's decoder is not re-entrant).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from .errors import ConfigError, DataError
from .text_lines import MAX_INPUT_CHARS

__all__ = ["Translator", "default_model_dir", "BACKENDS", "MAX_INPUT_CHARS"]

BACKENDS = ("native", "torch", "onnxruntime")
DEFAULT_MODEL = "nmt-en-de-bcq"
#: Most threads a Translator or Understander accepts (far beyond any device's cores; larger is a typo).
MAX_THREADS = 1024


def default_model_dir() -> Path:
    """Where the default model lives: ``$ONDEVICE_MODEL`` if set, else the copy installed inside the
    package (``ondevice/models/``), else the source checkout's ``models/`` directory."""
    env = os.environ.get("ONDEVICE_MODEL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for d in (here / "models" / DEFAULT_MODEL, here.parent / "models" / DEFAULT_MODEL):
        if (d / "manifest.json").is_file() or (d / "card.json").is_file():
            return d
    raise DataError(f"the default model {DEFAULT_MODEL!r} is not installed (looked in {here / 'models'} and "
                    f"{here.parent / 'models'}); pass a model directory or set ONDEVICE_MODEL")


class Translator:
    """Translates sentences with one model.

    ``model``: a packed model directory, a model card directory, a training directory (its
    ``checkpoint_best.pt``), an ONNX export directory (backends "native" and "onnxruntime"; a model
    card directory with an ``onnx/`` export works too), or None for the default model.  ``threads``:
    threads of the backend per call (0 = all usable cores).  ``beam_size``: default beam (1 = greedy)."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int = 0, backend: str = "native",
                 beam_size: int = 4, max_len_a: float = 1.2, max_len_b: int = 10):
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
            raise ConfigError(f"threads must be an integer in 0..{MAX_THREADS} (0: all usable cores), got {threads!r}")
        self.beam_size = self._check_beam(beam_size)
        self.model_dir = Path(model) if model is not None else default_model_dir()
        if not self.model_dir.is_dir():
            raise DataError(f"model directory {self.model_dir} does not exist")
        self.backend = backend
        self.max_len_a, self.max_len_b = float(max_len_a), int(max_len_b)
        self._lock = threading.Lock()
        self._onnx = None
        self._native = None
        # A model card directory keeps its ONNX export in onnx/ (models/*/README.md).
        onnx_dir = self.model_dir / "onnx" if (self.model_dir / "onnx" / "manifest.json").is_file() \
            else self.model_dir
        if backend == "native":
            self._native = _load_native(onnx_dir, threads or _usable_cores())
            self._max_tokens = int(self._native.max_positions)
            return
        if backend == "onnxruntime":
            from .onnx_export import OnnxTranslator

            self._onnx = OnnxTranslator(onnx_dir, threads=threads, beam_size=beam_size, max_len_a=max_len_a,
                                        max_len_b=max_len_b)
            self._tok = self._onnx.tokenizer
            self._max_tokens = int(self._onnx.special.max_positions)
            return
        import torch

        if threads:
            torch.set_num_threads(threads)
        self._model, self._tok = self._load(self.model_dir)
        self._max_tokens = int(self._model.config.max_positions)

    @staticmethod
    def _check_beam(beam_size: int) -> int:
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= 64:
            raise ConfigError(f"beam_size must be an integer in 1..64, got {beam_size!r}")
        return beam_size

    @staticmethod
    def _load(d: Path):
        from .model_card import CARD_FILE, load_card, load_card_model
        from .nmt.evaluate import load_model

        if (d / "manifest.json").is_file():
            return load_model(d, "packed")
        if (d / CARD_FILE).is_file():
            return load_card_model(d, load_card(d))
        return load_model(d, None)

    def translate_batch(self, sentences: Sequence[str], beam_size: int | None = None) -> list[str]:
        """Translations of ``sentences`` in order; empty or whitespace-only inputs give ""."""
        from .nmt.evaluate import translate

        if isinstance(sentences, str):
            raise ConfigError("translate_batch expects a list of sentences, not one string")
        beam = self.beam_size if beam_size is None else self._check_beam(beam_size)
        texts = []
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise ConfigError(f"sentence {i} is {type(s).__name__}, not str")
            if len(s) > MAX_INPUT_CHARS:
                raise DataError(f"sentence {i} has {len(s):,} characters, more than the limit of "
                                f"{MAX_INPUT_CHARS:,}; split it into sentences")
            if not s.isascii():
                try:  # lone surrogates: e.g. a command-line argument that was not UTF-8
                    s.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise DataError(f"sentence {i} is not valid UTF-8 text ({e.reason} at character "
                                    f"{e.start})") from None
            texts.append(" ".join(s.split()))
        todo = [i for i, t in enumerate(texts) if t]
        out = [""] * len(texts)
        if not todo:
            return out
        if self._native is not None:
            return self._translate_native(texts, beam)
        ids = self._tok.encode([texts[i] for i in todo])
        for i, x in zip(todo, ids):
            if len(x) > self._max_tokens:
                raise DataError(f"sentence {i} is {len(x)} tokens long, more than the model's {self._max_tokens}")
        with self._lock:
            if self._onnx is not None:
                hyps = self._onnx.translate_batch([texts[i] for i in todo], beam)
            else:
                hyps = translate(self._model, self._tok, [texts[i] for i in todo], beam=beam,
                                 max_len_a=self.max_len_a, max_len_b=self.max_len_b)
        for i, h in zip(todo, hyps):
            out[i] = h
        return out

    def _translate_native(self, texts: list[str], beam: int) -> list[str]:
        from . import _core

        try:
            return self._native.translate_batch(texts, beam_size=beam, max_len_a=self.max_len_a,
                                                max_len_b=float(self.max_len_b))
        except _core.ArgumentError as e:  # e.g. "sentence 3: input is 2000 tokens long, more than ..."
            raise DataError(str(e)) from None

    def translate(self, sentence: str, beam_size: int | None = None) -> str:
        """One sentence."""
        return self.translate_batch([sentence], beam_size)[0]

    def translate_stream(self, stream: BinaryIO, origin: str = "input", beam_size: int | None = None,
                         batch_lines: int = 64) -> Iterator[str]:
        """Translations of the lines of a binary ``stream`` (a file, stdin), in order, read and
        translated ``batch_lines`` at a time: memory stays bounded whatever the input's size. A bad
        line is a DataError naming ``origin`` and its line number, raised when its batch is read:
        the batches before it have been yielded, none of its own batch."""
        from .text_lines import iter_lines

        lines = iter_lines(stream, origin)
        first = 1
        while True:
            batch = [line for _, line in zip(range(batch_lines), lines)]
            if not batch:
                return
            try:
                yield from self.translate_batch(batch, beam_size)
            except DataError as e:  # "sentence 3 ..." is the batch's index: name the input's line
                m = re.match(r"sentence (\d+)(.*)", str(e), re.S)
                if m is None:
                    raise
                raise DataError(f"{origin}: line {first + int(m[1])}{m[2]}") from None
            first += len(batch)

    def translate_file(self, source: str | os.PathLike, target: str | os.PathLike, beam_size: int | None = None,
                       batch_lines: int = 64, progress: bool = True) -> int:
        """Translates a UTF-8 text file line by line into ``target``; returns the number of lines.

        Every line of a regular file is checked (UTF-8, length) before the first is translated (a
        pipe can be read only once: its lines are checked as they come); the translations are
        streamed into a temporary file that replaces ``target`` only when all are done, so an error
        leaves ``target`` as it was, and memory stays bounded whatever the input's size."""
        from .atomic import atomic_open, check_output_path
        from .progress import Progress
        from .text_lines import check_lines, open_input

        check_output_path(target)
        total = check_lines(source)
        bar = Progress("translate", total=total, unit="line", enabled=progress)
        n = 0
        try:
            with open_input(source) as f, atomic_open(target) as out:
                for t in self.translate_stream(f, str(source), beam_size, batch_lines):
                    out.write(t.encode("utf-8") + b"\n")
                    n += 1
                    bar.update()
        finally:
            bar.close()
        return n


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _load_native(onnx_dir: Path, threads: int):
    """The C++ translator over an export directory; its load errors as OnnxModelError."""
    from . import _core
    from .onnx_export.errors import OnnxModelError

    if not (onnx_dir / "manifest.json").is_file():
        raise DataError(f"{onnx_dir} is not an ONNX export (no manifest.json): the native backend runs "
                        f"`ondevice export nmt` output; use backend='torch' for other model directories")
    try:
        return _core.Translator(str(onnx_dir), threads=threads)
    except (_core.FormatError, _core.ArgumentError) as e:
        raise OnnxModelError(str(e)) from None
