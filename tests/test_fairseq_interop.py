"""fairseq interop (ondevice.nmt.fairseq_interop), checked against fairseq itself.

A tiny ``transformer`` is trained by fairseq-preprocess + fairseq-train (subprocesses, CPU, one thread)
on a synthetic corpus tokenized with our SentencePiece model; it must convert to our model with the
same logits and the same greedy translations as fairseq's SequenceGenerator, and our models must
round-trip through fairseq's checkpoint format.  Skipped without fairseq (see the module docstring of
fairseq_interop for the install command).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentencepiece")
fairseq = pytest.importorskip("fairseq")

from fairseq import checkpoint_utils  # noqa: E402
from fairseq.data import Dictionary  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402

from ondevice.errors import ConfigError, DataError  # noqa: E402
from ondevice.nmt import fairseq_interop as fi  # noqa: E402
from ondevice.nmt.model import TransformerConfig, TransformerModel  # noqa: E402
from ondevice.nmt.search import beam_search_nbest, greedy_search  # noqa: E402
from ondevice.nmt.tokenizer import Tokenizer, train_sentencepiece  # noqa: E402

BOS, PAD, EOS, UNK = 0, 1, 2, 3
VOCAB = 64
MAX_LEN_A, MAX_LEN_B = 1.2, 10  # our greedy_search defaults, passed to fairseq's generator too
NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"  # fairseq's torch.load of a pickled Namespace (torch >= 2.6)

pytestmark = [  # fairseq's own notices (hydra config API, forced unsafe load, attention mask types)
    pytest.mark.filterwarnings("ignore:(?s).*ConfigStore schema:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD:UserWarning"),
    pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:hydra.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:fairseq.*"),
    pytest.mark.filterwarnings("ignore:'pin_memory' argument:UserWarning"),
]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------- fixtures


def _corpus(rng: random.Random, n: int):
    """Word-by-word 'translation': each source word maps to one target word, same order."""
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po"]
    words = sorted({rng.choice(syll) + rng.choice(syll) for _ in range(300)})[:24]
    mapping = {w: w[::-1] + "x" for w in words}
    pairs = []
    for _ in range(n):
        ws = [rng.choice(words) for _ in range(rng.randint(1, 6))]
        pairs.append((" ".join(ws), " ".join(mapping[w] for w in ws)))
    return pairs


def _run(args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **{NO_WEIGHTS_ONLY: "1"})
    r = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{args[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """fairseq-preprocess + fairseq-train of a tiny transformer; SentencePiece ids == fairseq ids."""
    d = tmp_path_factory.mktemp("fairseq")
    rng = random.Random(0)
    splits = {"train": _corpus(rng, 1500), "valid": _corpus(rng, 40)}
    for split, pairs in splits.items():
        for i, lang in enumerate(("src", "tgt")):
            (d / f"{split}.{lang}").write_text("".join(p[i] + "\n" for p in pairs), encoding="utf-8")
    spm = train_sentencepiece([d / "train.src", d / "train.tgt"], d / "spm.model", vocab_size=VOCAB)
    tok = Tokenizer(spm)
    fi.write_fairseq_dict(tok, d / "dict.txt")
    for split, pairs in splits.items():
        for i, lang in enumerate(("src", "tgt")):
            pieces = tok.sp.Encode([p[i] for p in pairs], out_type=str)
            (d / f"{split}.tok.{lang}").write_text("".join(" ".join(x) + "\n" for x in pieces), encoding="utf-8")
    _run(["fairseq_cli.preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref", "train.tok",
          "--validpref", "valid.tok", "--destdir", "bin", "--srcdict", "dict.txt", "--joined-dictionary",
          "--workers", "1"], d)
    _run(["fairseq_cli.train", "bin", "--arch", "transformer", "--task", "translation",
          "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-embed-dim", "32",
          "--decoder-ffn-embed-dim", "64", "--encoder-layers", "1", "--decoder-layers", "1",
          "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--share-all-embeddings",
          "--dropout", "0.1", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "0.01",
          "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "20", "--criterion", "label_smoothed_cross_entropy",
          "--label-smoothing", "0.1", "--max-tokens", "1500", "--max-update", "150", "--cpu", "--seed", "1",
          "--save-dir", "ck", "--no-epoch-checkpoints", "--disable-validation", "--num-workers", "0",
          "--log-format", "simple", "--log-interval", "50"], d)
    ck = d / "ck" / "checkpoint_last.pt"
    assert ck.is_file()
    return {"dir": d, "ck": ck, "tok": tok, "dict": d / "dict.txt", "valid": splits["valid"]}


def _fairseq_load(path, **overrides):
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], arg_overrides=overrides or None)
    return models[0].eval(), cfg, task


def _fairseq_greedy(fs_model, tgt_dict, sentences: list[list[int]]) -> list[list[int]]:
    """fairseq's SequenceGenerator, beam 1, one sentence per batch (its max_len uses the padded width)."""
    gen = SequenceGenerator([fs_model], tgt_dict, beam_size=1, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B, min_len=1)
    out = []
    for s in sentences:
        sample = {"net_input": {"src_tokens": torch.tensor([s]), "src_lengths": torch.tensor([len(s)])}}
        with torch.no_grad():
            toks = gen.generate([fs_model], sample)[0][0]["tokens"].tolist()
        assert toks[-1] == EOS
        out.append(toks[:-1])
    return out


def _pad(seqs: list[list[int]], left: bool) -> torch.Tensor:
    width = max(map(len, seqs))
    x = torch.full((len(seqs), width), PAD)
    for i, s in enumerate(seqs):
        if left:
            x[i, width - len(s):] = torch.tensor(s)
        else:
            x[i, :len(s)] = torch.tensor(s)
    return x


def _fairseq_logits(fs_model, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return fs_model(src, src.ne(PAD).sum(1), prev)[0]


def _tiny(norm="post", share=True, seed=0, vocab=VOCAB, **kw) -> TransformerModel:
    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=vocab, d_model=32, ffn_dim=48, heads=4, encoder_layers=2, decoder_layers=2,
                            norm=norm, share_all_embeddings=share, max_positions=128, **kw)
    model = TransformerModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so a swapped norm would show
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _random_batch(seed: int, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    src = [torch.randint(4, vocab, (n,), generator=g).tolist() + [EOS] for n in (7, 3, 5)]
    prev = [[EOS] + torch.randint(4, vocab, (n,), generator=g).tolist() for n in (6, 2, 4)]
    return src, prev


def _assert_same_state(a: TransformerModel, b: TransformerModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


# --------------------------------------------------------------------------- dictionary


def test_dict_txt_gives_fairseq_the_sentencepiece_ids(trained, tmp_path):
    tok = trained["tok"]
    d = Dictionary.load(str(trained["dict"]))
    assert len(d) == tok.vocab_size == VOCAB  # a loaded dictionary is not padded
    assert (d.bos(), d.pad(), d.eos(), d.unk()) == (BOS, PAD, EOS, UNK)
    assert all(d.index(tok.sp.IdToPiece(i)) == i for i in range(4, VOCAB))
    # fairseq-preprocess --srcdict kept it as is
    assert Dictionary.load(str(trained["dir"] / "bin" / "dict.src.txt")).symbols == d.symbols
    # padding like fairseq's pad_to_multiple_
    padded = fi.write_fairseq_dict(tok.path, tmp_path / "padded.txt", pad_to_multiple=24)
    d.pad_to_multiple_(24)
    dp = Dictionary.load(str(padded))
    assert len(dp) == 72 and dp.symbols == d.symbols and dp.symbols[-1] == "madeupword0007"
    assert fi.read_fairseq_dict(padded)[-8:] == [(f"madeupword{i:04d}", 0) for i in range(8)]
    with pytest.raises(ConfigError):
        fi.write_fairseq_dict(tok, tmp_path / "x.txt", pad_to_multiple=0)


# --------------------------------------------------------------------------- fairseq -> ours


def test_fairseq_trained_model_converts_with_identical_outputs(trained, monkeypatch):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    tok = trained["tok"]
    ours = fi.from_fairseq_checkpoint(trained["ck"], tokenizer=tok)
    assert not ours.training
    assert ours.config == TransformerConfig(vocab_size=VOCAB, d_model=32, ffn_dim=64, heads=2, encoder_layers=1,
                                            decoder_layers=1, dropout=0.1, norm="post", max_positions=1024,
                                            share_all_embeddings=True)
    fs, cfg, task = _fairseq_load(trained["ck"], data=str(trained["dir"] / "bin"))
    assert len(task.target_dictionary) == VOCAB

    valid = trained["valid"][:20]
    src = tok.encode([s for s, _ in valid])
    tgt = tok.encode([t for _, t in valid])

    # one teacher-forced forward pass: fairseq's default left-padded source, right-padded target
    src_t, prev_t = _pad(src, left=True), _pad([[EOS] + t[:-1] for t in tgt], left=False)
    with torch.no_grad():
        ref, got = _fairseq_logits(fs, src_t, prev_t), ours(src_t, prev_t)
    real = prev_t.ne(PAD)
    torch.testing.assert_close(got[real], ref[real], atol=1e-5, rtol=0)

    # greedy: fairseq's SequenceGenerator (beam 1) vs our greedy_search (batched, right-padded)
    fs_out = _fairseq_greedy(fs, task.target_dictionary, src)
    our_out = greedy_search(ours, _pad(src, left=False), MAX_LEN_A, MAX_LEN_B)
    assert our_out == fs_out
    assert all(BOS not in h for h in fs_out)  # fairseq does not forbid <s>; ours does (never needed here)
    max_lens = [int(MAX_LEN_A * len(s) + MAX_LEN_B) for s in src]
    ended_by_eos = sum(len(h) < m for h, m in zip(fs_out, max_lens))
    assert ended_by_eos >= 15, f"only {ended_by_eos}/20 hypotheses stopped before max length"
    # the tiny model learned something: most translations are right
    assert sum(o == t[:-1] for o, t in zip(our_out, tgt)) >= 3


def test_beam_search_matches_fairseq_nbest_and_scores(trained, monkeypatch):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    tok = trained["tok"]
    ours = fi.from_fairseq_checkpoint(trained["ck"], tokenizer=tok)
    fs, _, task = _fairseq_load(trained["ck"], data=str(trained["dir"] / "bin"))
    src = tok.encode([s for s, _ in trained["valid"][:20]])
    for beam, lenpen in ((4, 1.0), (3, 0.6)):
        gen = SequenceGenerator([fs], task.target_dictionary, beam_size=beam, max_len_a=MAX_LEN_A,
                                max_len_b=MAX_LEN_B, min_len=1, len_penalty=lenpen)
        for s in src:
            sample = {"net_input": {"src_tokens": torch.tensor([s]), "src_lengths": torch.tensor([len(s)])}}
            with torch.no_grad():
                ref = [(float(h["score"]), h["tokens"].tolist()[:-1]) for h in gen.generate([fs], sample)[0]]
            got = beam_search_nbest(ours, torch.tensor([s]), beam=beam, lenpen=lenpen)[0]
            assert [t for _, t in got] == [t for _, t in ref]
            assert [sc for sc, _ in got] == pytest.approx([sc for sc, _ in ref], abs=1e-4)


def test_fairseq_hub_loads_our_export_and_translates_the_same(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    ours = fi.from_fairseq_checkpoint(trained["ck"], tokenizer=trained["tok"])
    monkeypatch.delenv(NO_WEIGHTS_ONLY)  # our cfg-format file needs no unsafe unpickling
    out = fi.to_fairseq_checkpoint(ours, tmp_path / "model" / "checkpoint.pt", trained["dict"],
                                   source_lang="de", target_lang="en")
    assert (tmp_path / "model" / "dict.de.txt").read_text() == trained["dict"].read_text()
    state = torch.load(out, weights_only=True)
    assert state["args"] is None and state["cfg"]["model"]["_name"] == "transformer"
    assert state["cfg"]["task"]["source_lang"] == "de" and state["cfg"]["criterion"]["_name"] == \
        "label_smoothed_cross_entropy"

    from fairseq.models.transformer import TransformerModel as FairseqTransformer

    hub = FairseqTransformer.from_pretrained(str(tmp_path / "model"), checkpoint_file="checkpoint.pt",
                                             data_name_or_path=".")
    hub.eval()
    src = trained["tok"].encode([s for s, _ in trained["valid"][20:30]])
    hyps = hub.generate([torch.tensor(s) for s in src], beam=1, max_len_a=MAX_LEN_A, max_len_b=MAX_LEN_B)
    fs_out = [h[0]["tokens"].tolist()[:-1] for h in hyps]
    assert fs_out == greedy_search(ours, _pad(src, left=False), MAX_LEN_A, MAX_LEN_B)


# --------------------------------------------------------------------------- ours -> fairseq -> ours


@pytest.mark.parametrize("norm, share, fmt", [("post", True, "cfg"), ("pre", True, "args"), ("post", False, "args"),
                                              ("pre", False, "cfg")])
def test_round_trip(trained, tmp_path, monkeypatch, norm, share, fmt):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    model = _tiny(norm, share, seed=3)
    path = fi.to_fairseq_checkpoint(model, tmp_path / "fs.pt", trained["dict"], layout=fmt)
    fs, cfg, task = _fairseq_load(path)
    assert fs.cfg.encoder.normalize_before == (norm == "pre")
    assert (fs.encoder.embed_tokens.weight is fs.decoder.embed_tokens.weight) == share
    assert fs.decoder.share_input_output_embed == share

    src, prev = _random_batch(1)
    src_t, prev_t = _pad(src, left=True), _pad(prev, left=False)
    real = prev_t.ne(PAD)
    with torch.no_grad():
        torch.testing.assert_close(model(src_t, prev_t)[real], _fairseq_logits(fs, src_t, prev_t)[real],
                                   atol=1e-5, rtol=0)
    # incremental decoding on both sides (untrained: hypotheses run to max length)
    assert greedy_search(model, _pad(src, left=False)) == _fairseq_greedy(fs, task.target_dictionary, src)

    back = fi.from_fairseq_checkpoint(path)
    assert back.config == model.config
    _assert_same_state(back, model)
    assert (back.decoder.output_projection.weight is back.encoder.embed_tokens.weight) == share


def test_export_from_a_training_checkpoint_file(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    import dataclasses

    model = _tiny("pre", seed=4)
    ck = tmp_path / "checkpoint_best.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config), "update": 1234,
                "config": {"src": "en", "tgt": "de", "label_smoothing": 0.2}}, ck)
    path = fi.to_fairseq_checkpoint(ck, tmp_path / "out" / "fs.pt", trained["dict"])
    assert (tmp_path / "out" / "dict.en.txt").is_file() and (tmp_path / "out" / "dict.de.txt").is_file()
    fs, cfg, task = _fairseq_load(path)
    assert (cfg.task.source_lang, cfg.task.target_lang, cfg.criterion.label_smoothing) == ("en", "de", 0.2)
    assert torch.load(path, weights_only=True)["optimizer_history"][-1]["num_updates"] == 1234
    back = fi.from_fairseq_checkpoint(path, out_path=tmp_path / "ours.pt")
    _assert_same_state(back, model)
    saved = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert saved["model_config"] == dataclasses.asdict(model.config)


def test_without_fairseq_auto_format_writes_legacy_args(trained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fairseq", None)  # `import fairseq` raises ImportError
    model = _tiny(seed=5)
    path = fi.to_fairseq_checkpoint(model, tmp_path / "fs.pt", trained["dict"])
    monkeypatch.undo()
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(path, weights_only=True)
    assert state["cfg"] is None and state["args"].arch == "transformer"
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    fs, _, _ = _fairseq_load(path)
    src, prev = _random_batch(2)
    src_t, prev_t = _pad(src, left=True), _pad(prev, left=False)
    real = prev_t.ne(PAD)
    torch.testing.assert_close(model(src_t, prev_t)[real].detach(), _fairseq_logits(fs, src_t, prev_t)[real],
                               atol=1e-5, rtol=0)


def test_padded_dictionary_adds_and_drops_rows(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    padded = fi.write_fairseq_dict(trained["tok"], tmp_path / "dict.padded.txt", pad_to_multiple=24)
    model = _tiny(seed=6)
    path = fi.to_fairseq_checkpoint(model, tmp_path / "fs.pt", padded)
    fs, _, task = _fairseq_load(path)
    assert len(task.source_dictionary) == 72 and fs.encoder.embed_tokens.weight.shape == (72, 32)
    assert not fs.encoder.embed_tokens.weight[VOCAB:].any()
    src, prev = _random_batch(3)
    src_t, prev_t = _pad(src, left=True), _pad(prev, left=False)
    real = prev_t.ne(PAD)
    ref = _fairseq_logits(fs, src_t, prev_t)
    assert not ref[..., VOCAB:].any()  # zero rows: logit exactly 0
    torch.testing.assert_close(model(src_t, prev_t)[real].detach(), ref[..., :VOCAB][real], atol=1e-5, rtol=0)

    back = fi.from_fairseq_checkpoint(path, tokenizer=trained["tok"])  # dict found in the task's data dir
    _assert_same_state(back, model)
    kept = fi.from_fairseq_checkpoint(path, drop_madeupwords=False)
    assert kept.config.vocab_size == 72
    with pytest.raises(ConfigError, match="tokenizer"):
        fi.from_fairseq_checkpoint(path, tokenizer=trained["tok"], drop_madeupwords=False)


# --------------------------------------------------------------------------- errors


def test_peri_ln_and_non_fairseq_special_ids_are_config_errors(trained, tmp_path):
    with pytest.raises(ConfigError, match="Peri-LN"):
        fi.to_fairseq_checkpoint(_tiny("peri"), tmp_path / "fs.pt", trained["dict"])
    with pytest.raises(ConfigError, match="0/1/2/3"):
        fi.to_fairseq_checkpoint(_tiny(bos_id=1, pad_id=0), tmp_path / "fs.pt", trained["dict"])
    with pytest.raises(ConfigError, match="vocab_size"):
        fi.to_fairseq_checkpoint(_tiny(vocab=80), tmp_path / "fs.pt", trained["dict"])
    assert not (tmp_path / "fs.pt").exists()


def test_corrupt_or_wrong_files_are_data_errors(trained, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained["ck"].read_bytes()[:5000])
    for p in (garbage, truncated, tmp_path / "missing.pt"):
        with pytest.raises(DataError, match=str(p.name)):
            fi.from_fairseq_checkpoint(p)
        with pytest.raises(DataError):
            fi.to_fairseq_checkpoint(p, tmp_path / "fs.pt", trained["dict"])
    ours = tmp_path / "ours.pt"
    model = _tiny()
    import dataclasses

    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)}, ours)
    with pytest.raises(DataError, match="ondevice checkpoint"):
        fi.from_fairseq_checkpoint(ours)
    with pytest.raises(DataError, match="fairseq checkpoint"):
        fi.to_fairseq_checkpoint(trained["ck"], tmp_path / "fs.pt", trained["dict"])
    # a pickled object beyond tensors/containers/Namespace needs trusted=True
    odd = tmp_path / "odd.pt"
    torch.save({"model": {}, "args": argparse.Namespace(arch="transformer", data=Path("/x"))}, odd)
    with pytest.raises(DataError, match="trusted"):
        fi.from_fairseq_checkpoint(odd)
    with pytest.raises(DataError, match="embeddings"):
        fi.from_fairseq_checkpoint(odd, trusted=True)
    # a dictionary that does not belong to the checkpoint
    short = tmp_path / "short.txt"
    short.write_text("".join(trained["dict"].read_text().splitlines(True)[:-3]))
    with pytest.raises(DataError, match="dict_path"):
        fi.from_fairseq_checkpoint(trained["ck"], dict_path=short, trusted=True)
    bad = tmp_path / "bad.txt"
    bad.write_text("▁a 1\nno-count-here\n")
    with pytest.raises(DataError, match="bad.txt:2"):
        fi.read_fairseq_dict(bad)


def test_dictionary_in_another_order_is_rejected(trained, tmp_path):
    lines = trained["dict"].read_text().splitlines(True)
    shuffled = tmp_path / "dict.shuffled.txt"
    shuffled.write_text("".join(lines[1:] + lines[:1]))
    with pytest.raises(ConfigError, match="SentencePiece id order"):
        fi.from_fairseq_checkpoint(trained["ck"], dict_path=shuffled, tokenizer=trained["tok"], trusted=True)
    # without a tokenizer there is nothing to compare the order with
    assert fi.from_fairseq_checkpoint(trained["ck"], dict_path=shuffled, trusted=True).config.vocab_size == VOCAB


BASE_ARGS = dict(arch="transformer", encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_layers=1,
                 decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, share_all_embeddings=True)


@pytest.mark.parametrize("override, message", [
    (dict(encoder_learned_pos=True), "learned positional"),
    (dict(decoder_learned_pos=True), "learned positional"),
    (dict(layernorm_embedding=True), "layernorm-embedding"),
    (dict(no_scale_embedding=True), "no-scale-embedding"),
    (dict(activation_fn="gelu"), "gelu"),
    (dict(decoder_embed_dim=64), "embedding dims"),
    (dict(decoder_ffn_embed_dim=128), "FFN dims"),
    (dict(decoder_attention_heads=4), "attention heads"),
    (dict(encoder_normalize_before=True), "normalize_before"),
    (dict(no_token_positional_embeddings=True), "positional"),
    (dict(cross_self_attention=True), "cross"),
    (dict(adaptive_softmax_cutoff="50,100"), "adaptive"),
    (dict(decoder_output_dim=16), "projections"),
    (dict(encoder_normalize_before=True, decoder_normalize_before=True, no_decoder_final_norm=True), "final"),
    (dict(encoder_layers_to_keep="0"), "pruning"),
    (dict(arch="lstm"), "architecture"),
    (dict(arch="transformer_lm"), "architecture"),
    (dict(encoder_embed_dim=30, decoder_embed_dim=30, encoder_attention_heads=4, decoder_attention_heads=4),
     "divisible"),
])
def test_unsupported_fairseq_options_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        fi.config_from_fairseq_args({**BASE_ARGS, **override}, VOCAB)


def test_fairseq_config_mapping_and_arch_defaults():
    cfg = fi.config_from_fairseq_args({"arch": "transformer_wmt_en_de_big_t2t"}, 32000)
    assert (cfg.d_model, cfg.ffn_dim, cfg.heads, cfg.encoder_layers, cfg.norm, cfg.dropout, cfg.attention_dropout,
            cfg.activation_dropout, cfg.share_all_embeddings) == (1024, 4096, 16, 6, "pre", 0.3, 0.1, 0.1, False)
    cfg = fi.config_from_fairseq_args({"_name": "transformer_iwslt_de_en", "relu_dropout": 0.2,
                                       "share_all_embeddings": True, "max_target_positions": 256}, 100)
    assert (cfg.d_model, cfg.ffn_dim, cfg.heads, cfg.activation_dropout, cfg.max_positions) == (512, 1024, 4, 0.2, 256)
    # structured (hydra) sub-configs
    cfg = fi.config_from_fairseq_args({"_name": "transformer", "encoder": {"embed_dim": 64, "ffn_embed_dim": 96,
                                       "attention_heads": 4, "layers": 3, "normalize_before": True},
                                       "decoder": {"embed_dim": 64, "ffn_embed_dim": 96, "attention_heads": 4,
                                                   "layers": 2, "normalize_before": True}}, 100)
    assert (cfg.d_model, cfg.ffn_dim, cfg.heads, cfg.encoder_layers, cfg.decoder_layers, cfg.norm) == (
        64, 96, 4, 3, 2, "pre")
    # our config -> fairseq args -> our config
    for norm, share in (("post", True), ("pre", False)):
        ours = TransformerConfig(vocab_size=100, d_model=64, ffn_dim=96, heads=4, encoder_layers=3, decoder_layers=2,
                                 dropout=0.2, attention_dropout=0.1, activation_dropout=0.05, norm=norm,
                                 max_positions=300, share_all_embeddings=share)
        assert fi.config_from_fairseq_args(fi.fairseq_args_from_config(ours), 100) == ours


def _old_style(sd: dict) -> dict:
    """A state dict with the names of old fairseq versions (fused in_proj, layer_norms.N, no output_projection)."""
    old = {}
    for k, v in sd.items():
        if ".q_proj." in k or ".k_proj." in k or ".v_proj." in k:
            continue
        old[k] = v
    for k in sd:
        if ".q_proj." in k:
            kind = k.rsplit(".", 1)[1]
            prefix = k.split(".q_proj.")[0]
            old[f"{prefix}.in_proj_{kind}"] = torch.cat([sd[f"{prefix}.{p}.{kind}"] for p in ("q_proj", "k_proj",
                                                                                              "v_proj")])
    names = {"encoder": ["self_attn_layer_norm", "final_layer_norm"],
             "decoder": ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"]}
    for k in list(old):
        parts = k.split(".")
        if len(parts) == 5 and parts[1] == "layers" and parts[3] in names[parts[0]]:
            old[f"{parts[0]}.layers.{parts[2]}.layer_norms.{names[parts[0]].index(parts[3])}.{parts[4]}"] = old.pop(k)
    old.pop("decoder.output_projection.weight")
    return old


def test_old_fairseq_parameter_names_are_upgraded_like_fairseq(trained, tmp_path, monkeypatch):
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    model = _tiny("post", seed=7)
    path = fi.to_fairseq_checkpoint(model, tmp_path / "fs.pt", trained["dict"], layout="args")
    state = torch.load(path, weights_only=False)
    state["model"] = _old_style(state["model"])
    assert any(".in_proj_weight" in k for k in state["model"]) and any(".layer_norms.2." in k for k in state["model"])
    torch.save(state, tmp_path / "old.pt")
    _assert_same_state(fi.from_fairseq_checkpoint(tmp_path / "old.pt"), model)
    fs, _, _ = _fairseq_load(tmp_path / "old.pt")  # fairseq upgrades it the same way
    src, prev = _random_batch(4)
    src_t, prev_t = _pad(src, left=True), _pad(prev, left=False)
    real = prev_t.ne(PAD)
    torch.testing.assert_close(model(src_t, prev_t)[real].detach(), _fairseq_logits(fs, src_t, prev_t)[real],
                               atol=1e-5, rtol=0)


def test_pre_ln_checkpoint_without_version_is_rejected_as_fairseq_drops_its_final_norm(trained, tmp_path,
                                                                                         monkeypatch):
    """fairseq reads a missing ``encoder.version``/``decoder.version`` as version 1 and then ignores the
    final LayerNorms; our model (which defaults a missing version to 3) must not load such a file."""
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    model = _tiny("pre", seed=8)
    path = fi.to_fairseq_checkpoint(model, tmp_path / "fs.pt", trained["dict"], layout="args")
    state = torch.load(path, weights_only=False)
    del state["model"]["encoder.version"], state["model"]["decoder.version"]
    torch.save(state, tmp_path / "noversion.pt")
    with pytest.raises(ConfigError, match="final LayerNorm"):
        fi.from_fairseq_checkpoint(tmp_path / "noversion.pt")
    fs, _, _ = _fairseq_load(tmp_path / "noversion.pt", )
    assert fs.encoder.layer_norm is None and fs.decoder.layer_norm is None  # what fairseq does with it


def test_fairseq_decoder_only_tying_loads_as_untied_copies(trained, tmp_path, monkeypatch):
    """--share-decoder-input-output-embed without --share-all-embeddings: our model (one flag) holds the
    decoder embedding and the output projection as two equal matrices: same outputs, untied for training."""
    monkeypatch.setenv(NO_WEIGHTS_ONLY, "1")
    model = _tiny("post", share=False, seed=9)
    path = fi.to_fairseq_checkpoint(model, tmp_path / "fs.pt", trained["dict"], layout="args")
    state = torch.load(path, weights_only=False)
    state["args"].share_decoder_input_output_embed = True
    state["model"]["decoder.output_projection.weight"] = state["model"]["decoder.embed_tokens.weight"]
    torch.save(state, tmp_path / "tied.pt")
    fs, _, _ = _fairseq_load(tmp_path / "tied.pt")
    assert fs.decoder.output_projection.weight is fs.decoder.embed_tokens.weight
    ours = fi.from_fairseq_checkpoint(tmp_path / "tied.pt")
    assert not ours.config.share_all_embeddings
    assert torch.equal(ours.decoder.output_projection.weight, ours.decoder.embed_tokens.weight)
    src, prev = _random_batch(5)
    src_t, prev_t = _pad(src, left=True), _pad(prev, left=False)
    real = prev_t.ne(PAD)
    with torch.no_grad():
        torch.testing.assert_close(ours(src_t, prev_t)[real], _fairseq_logits(fs, src_t, prev_t)[real],
                                   atol=1e-5, rtol=0)


def test_dictionary_files_next_to_the_checkpoint(trained, tmp_path):
    model = _tiny(seed=10)
    fi.to_fairseq_checkpoint(model, tmp_path / "a.pt", trained["dict"], layout="args")
    fi.to_fairseq_checkpoint(model, tmp_path / "b.pt", trained["dict"], layout="args")  # same dict: fine
    padded = fi.write_fairseq_dict(trained["tok"], tmp_path / "other" / "dict.txt", pad_to_multiple=24)
    with pytest.raises(ConfigError, match="another vocabulary"):
        fi.to_fairseq_checkpoint(model, tmp_path / "c.pt", padded, layout="args")
    assert not (tmp_path / "c.pt").exists()
    # a task data directory whose dictionaries do not fit is ignored with a warning
    (tmp_path / "dict.src.txt").write_text((tmp_path / "dict.src.txt").read_text() + "extra 5\n")
    (tmp_path / "dict.tgt.txt").write_text((tmp_path / "dict.tgt.txt").read_text() + "extra 5\n")
    with pytest.warns(UserWarning, match="ignoring"):
        back = fi.from_fairseq_checkpoint(tmp_path / "a.pt")
    _assert_same_state(back, model)
    # ... but dictionaries that fit and differ between source and target are separate vocabularies
    lines = trained["dict"].read_text().splitlines(True)
    (tmp_path / "dict.src.txt").write_text("".join(lines))
    (tmp_path / "dict.tgt.txt").write_text("".join(lines[1:] + lines[:1]))
    with pytest.raises(ConfigError, match="differ"):
        fi.from_fairseq_checkpoint(tmp_path / "a.pt")
