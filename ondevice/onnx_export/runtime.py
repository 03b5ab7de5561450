"""The onnxruntime translation backend: greedy and beam decoding over an exported model directory.

It runs stock onnxruntime (CPU provider) on the files as exported, with the decoding rules of the
PyTorch reference (:mod:`ondevice.onnx_export.decoding`), so it is the reference the C++ runtime is
compared with, and what ``ondevice translate --backend onnxruntime`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .decoding import Special, State, beam_search_nbest, greedy_search
from .manifest import read_manifest

__all__ = ["OnnxTranslator"]


class OnnxTranslator:
    """Translates with an exported ONNX model directory (``ondevice export nmt``).

    The manifest and every file's hash are verified before the sessions start. ``threads``: onnxruntime
    intra-op threads (0 = its default, all cores). Decoding options mirror
    :func:`ondevice.nmt.evaluate.translate`."""

    def __init__(self, model_dir: str | os.PathLike, threads: int = 0, beam_size: int = 4, lenpen: float = 1.0,
                 max_len_a: float = 1.2, max_len_b: int = 10, max_tokens: int = 2048):
        import onnxruntime as ort

        from ..nmt.tokenizer import Tokenizer

        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads must be an integer >= 0, got {threads!r}")
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.beam_size = self._check_beam(beam_size)
        self.lenpen, self.max_len_a, self.max_len_b, self.max_tokens = lenpen, max_len_a, max_len_b, max_tokens
        cfg = self.manifest["model_config"]
        ids = self.manifest["special_ids"]
        self.special = Special(ids["bos"], ids["pad"], ids["eos"], self.manifest["vocab_size"], cfg["max_positions"])
        self.tokenizer = Tokenizer(self.model_dir / self.manifest["tokenizer"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # onnxruntime warns about every weight declared as a graph input; that is the export's design
        # (it keeps the bit-planes from being constant-folded to float), so only errors are logged
        opts.log_severity_level = 3
        # the bit-plane function bodies dequantize into large per-call temporaries; an arena would keep
        # their peak reserved for the session's lifetime (measured: 195 MB instead of 50 MB, export/README.md)
        opts.enable_cpu_mem_arena = False
        graphs = self.manifest["graphs"]
        self._encoder = ort.InferenceSession(str(self.model_dir / graphs["encoder"]["file"]), opts,
                                             providers=["CPUExecutionProvider"])
        self._decoder = ort.InferenceSession(str(self.model_dir / graphs["decoder_step"]["file"]), opts,
                                             providers=["CPUExecutionProvider"])
        kv = self.manifest["kv_cache"]
        self._kv = kv
        self._enc_outputs = graphs["encoder"]["outputs"]
        self._past = list(zip(kv["past_self_k"], kv["present_self_k"])) + list(zip(kv["past_self_v"],
                                                                                    kv["present_self_v"]))
        self._dec_outputs = ["logits"] + [present for _, present in self._past]

    @staticmethod
    def _check_beam(beam_size: int) -> int:
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= 64:
            raise ConfigError(f"beam_size must be an integer in 1..64, got {beam_size!r}")
        return beam_size

    # -- the two graphs
    def encode(self, src_tokens: np.ndarray) -> State:
        """Runs the encoder on int64 ``src_tokens`` [B, S]; returns the decoder's state (empty self cache)."""
        out = dict(zip(self._enc_outputs, self._encoder.run(self._enc_outputs, {"src_tokens": src_tokens})))
        state = {name: out[name] for name in ["src_pad_mask", *self._kv["cross_k"], *self._kv["cross_v"]]}
        empty = np.zeros((src_tokens.shape[0], self._kv["heads"], 0, self._kv["head_dim"]), dtype=np.float32)
        for past, _ in self._past:
            state[past] = empty
        return state

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One decoder step: logits [B, V] for the next token, and the state with the grown cache."""
        outs = self._decoder.run(self._dec_outputs, {"tokens": tokens, **state})
        new = dict(state)
        for (past, _), value in zip(self._past, outs[1:]):
            new[past] = value
        return outs[0], new

    # -- decoding
    def generate(self, src_tokens: np.ndarray, beam_size: int | None = None) -> list[list[int]]:
        """Token ids (without eos) of the best hypothesis for each row of padded ``src_tokens`` [B, S]."""
        beam = self.beam_size if beam_size is None else self._check_beam(beam_size)
        src = np.asarray(src_tokens, dtype=np.int64)
        state = self.encode(src)
        if beam == 1:
            return greedy_search(self.step, state, src, self.special, self.max_len_a, self.max_len_b)
        nbest = beam_search_nbest(self.step, state, src, self.special, beam, self.lenpen, self.max_len_a,
                                  self.max_len_b)
        return [hyps[0][1] if hyps else [] for hyps in nbest]

    def translate_batch(self, sentences: Sequence[str], beam_size: int | None = None) -> list[str]:
        """Translations in input order; empty or whitespace-only inputs give "". Sentences are batched by
        length as :func:`ondevice.nmt.evaluate.translate` batches them, so both see the same batches."""
        if isinstance(sentences, str):
            raise ConfigError("translate_batch expects a list of sentences, not one string")
        beam = self.beam_size if beam_size is None else self._check_beam(beam_size)
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise ConfigError(f"sentence {i} is {type(s).__name__}, not str")
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        out = [""] * len(sentences)
        ids = self.tokenizer.encode([sentences[i] for i in todo])
        limit = self.special.max_positions
        for i, x in zip(todo, ids):
            if len(x) > limit:
                raise DataError(f"sentence {i} is {len(x)} tokens long, more than the model's {limit}")
        order = np.argsort([len(x) for x in ids], kind="stable")
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(ids[order[end]]) * (end - start + 1) * beam <= self.max_tokens:
                end += 1
            batch = order[start:end]
            src = np.full((len(batch), max(len(ids[j]) for j in batch)), self.special.pad, dtype=np.int64)
            for r, j in enumerate(batch):
                src[r, : len(ids[j])] = ids[j]
            for j, text in zip(batch, self.tokenizer.decode(self.generate(src, beam))):
                out[todo[j]] = text
            start = end
        return out
