"""Neural machine translation: tokenizer, fairseq-compatible Transformer, training, decoding, evaluation."""
