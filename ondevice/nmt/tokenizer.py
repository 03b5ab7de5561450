"""SentencePiece tokenizer: one joint source+target vocabulary, trained by the pipeline.

Special ids follow fairseq's dictionary order (bos 0, pad 1, eos 2, unk 3), so
a model's embedding rows line up with a fairseq ``dict.txt`` written in
SentencePiece order, and checkpoints convert without re-indexing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError

BOS, PAD, EOS, UNK = 0, 1, 2, 3


def train_sentencepiece(texts: Iterable[str | os.PathLike], model_path: str | os.PathLike, vocab_size: int = 8000,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        max_sentences: int = 2_000_000) -> Path:
    """Trains a joint model on the given text files (one sentence per line); writes ``model_path`` atomically.

    ``vocab_size`` is an upper bound: a corpus too small for it gets a smaller vocabulary (the
    model takes its size from the tokenizer) rather than an error.

    Training is deterministic for the same inputs and options (single thread, no sampling below
    ``max_sentences`` lines).
    """
    import sentencepiece as spm

    files = [Path(t) for t in texts]
    for f in files:
        if not f.is_file():
            raise DataError(f"tokenizer training input {f} does not exist")
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        prefix = Path(tmp) / "spm"
        try:
            spm.SentencePieceTrainer.train(
                input=",".join(map(str, files)), model_prefix=str(prefix), vocab_size=vocab_size,
                model_type=model_type, character_coverage=character_coverage, bos_id=BOS, pad_id=PAD,
                eos_id=EOS, unk_id=UNK, input_sentence_size=max_sentences, shuffle_input_sentence=False,
                num_threads=1, minloglevel=2, hard_vocab_limit=False)
        except RuntimeError as e:
            raise DataError(f"SentencePiece training failed: {e}") from None
        os.replace(prefix.with_suffix(".model"), model_path)
    return model_path


class Tokenizer:
    """Encodes text to ids (with eos appended, as the model expects) and decodes ids to text."""

    def __init__(self, model_path: str | os.PathLike):
        import sentencepiece as spm

        path = Path(model_path)
        if not path.is_file():
            raise DataError(f"tokenizer model {path} does not exist")
        self.path = path
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError) as e:
            raise DataError(f"{path} is not a SentencePiece model: {e}") from None
        if (self.sp.bos_id(), self.sp.pad_id(), self.sp.eos_id(), self.sp.unk_id()) != (BOS, PAD, EOS, UNK):
            raise DataError(f"{path}: special ids must be bos 0, pad 1, eos 2, unk 3 (fairseq order)")

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    def encode(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        ids = self.sp.Encode(list(texts), out_type=int)
        return [x + [EOS] for x in ids] if add_eos else ids

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return [self.sp.Decode([i for i in seq if i > UNK or i == UNK]) for seq in ids]
