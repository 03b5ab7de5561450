"""Packed model directories (ondevice.quant.packed_model, docs/packed-model.md): exact round trip,
mixed and per-row bits, deterministic bytes, atomic replacement, corruption detection, size accounting,
and scoring a packed model with ``evaluate``."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_nmt_train import make_corpus  # noqa: E402

from ondevice.errors import BCQFormatError, ConfigError, DataError  # noqa: E402
from ondevice.nmt.model import TransformerConfig, TransformerModel  # noqa: E402
from ondevice.quant import packed_model as pm  # noqa: E402
from ondevice.quant.fake_quant import apply_plan, export_bcq, remove_fake_quant  # noqa: E402
from ondevice.quant.plan import QuantPlan, size_report  # noqa: E402

# Per-layer lists, frequency-cluster embedding rows (4/3/2/1 bits), groups of 8 with offsets.
MIXED = dict(embedding={"ratio": 1, "bits": [4, 3, 2, 1]}, encoder_self_attn=[2, 3], encoder_ffn=2,
             decoder_self_attn=1, decoder_encoder_attn=3, decoder_ffn=4, method="greedy", group_size=8, offset=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(data dir, spm.model path, vocabulary size) of the synthetic pair."""
    from ondevice.nmt.tokenizer import Tokenizer, train_sentencepiece

    root = tmp_path_factory.mktemp("packed")
    data = make_corpus(root, n_train=200, n_valid=10)
    spm = train_sentencepiece([data / "train.en", data / "train.de"], root / "spm.model", vocab_size=60)
    return data, spm, Tokenizer(spm).vocab_size


def tiny(vocab: int, seed: int = 0, **kw) -> TransformerModel:
    torch.manual_seed(seed)
    args = dict(vocab_size=vocab, d_model=16, ffn_dim=40, heads=2, encoder_layers=2, decoder_layers=1,
                dropout=0.0)
    args.update(kw)
    with torch.no_grad():  # nonzero biases and LayerNorm parameters, so dense.bin is really tested
        m = TransformerModel(TransformerConfig(**args))
        for name, p in m.named_parameters():
            if not name.endswith("weight") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def fake_quantized(vocab: int, plan: QuantPlan, seed: int = 0, **kw) -> TransformerModel:
    m = tiny(vocab, seed, **kw)
    apply_plan(m, plan, np.random.default_rng(seed).integers(0, 1000, vocab))
    return m.eval()


def logits(model, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    src, prev = torch.randint(4, vocab, (3, 7), generator=g), torch.randint(4, vocab, (3, 5), generator=g)
    with torch.no_grad():
        return model(src, prev)


def files_of(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["mixed", "uniform_f16_untied"])
def test_round_trip_is_exact_and_sizes_add_up(corpus, tmp_path, case):
    data, spm, vocab = corpus
    if case == "mixed":
        plan, kw = QuantPlan.from_dict(MIXED), {}
    else:  # alternating BCQ, float16 scales, separate encoder / decoder embeddings and output projection
        plan, kw = QuantPlan.uniform(2, alpha_dtype="float16"), {"share_all_embeddings": False}
    model = fake_quantized(vocab, plan, **kw)
    ref = logits(model, vocab)
    out = tmp_path / "packed"
    manifest = pm.save_packed(model, spm, out, src="en", tgt="de", plan=plan)

    loaded, tok, on_disk = pm.load_packed(out)
    assert torch.equal(logits(loaded, vocab), ref)  # bit-identical to the fake-quantized model
    assert on_disk == json.loads(json.dumps(manifest)) and tok.vocab_size == vocab
    assert on_disk["format"] == pm.FORMAT and on_disk["format_version"] == "1.0"
    assert (on_disk["src"], on_disk["tgt"], on_disk["model_kind"]) == ("en", "de", "nmt-transformer")
    assert QuantPlan.from_dict(on_disk["quant_plan"]) == plan
    assert TransformerConfig(**on_disk["model_config"]) == model.config
    mats = {m["name"]: m for m in on_disk["matrices"]}
    emb = mats["encoder.embed_tokens.weight"]
    if case == "mixed":  # tied: stored once, its other names recorded; rows at 4/3/2/1 bits
        assert emb["aliases"] == ["decoder.embed_tokens.weight", "decoder.output_projection.weight"]
        assert len(mats) == 1 + 2 * 6 + 10 and set(emb["row_bits"]) == {"1", "2", "3", "4"}
        assert mats["encoder.layers.1.self_attn.q_proj.weight"]["row_bits"] == {"3": 16}
        assert emb["group_size"] == 8 and emb["offset"] and emb["alpha_dtype"] == "float32"
    else:
        assert emb["aliases"] == [] and "decoder.output_projection.weight" in mats
        assert all(m["alpha_dtype"] == "float16" and m["row_bits"] == {"2": m["shape"][0]} for m in mats.values())
    dense = {t["name"] for t in on_disk["dense"]["tensors"]}
    assert "encoder.layers.0.fc1.bias" in dense and not dense & set(mats)

    # Size accounting: the parts are exactly the files on disk.
    size = pm.packed_size(out)
    disk = files_of(out)
    assert size.total_bytes == sum(len(b) for b in disk.values())
    assert size.parts["matrices"] == sum(len(b) for k, b in disk.items() if k.endswith(".bcq"))
    assert (size.parts["dense"], size.parts["tokenizer"], size.parts["manifest"], size.parts["other"]) == \
        (len(disk["dense.bin"]), len(disk["spm.model"]), len(disk["manifest.json"]), 0)
    assert size.fp32_bytes == 4 * sum(p.numel() for p in loaded.parameters())
    freqs = np.random.default_rng(0).integers(0, 1000, vocab)
    report = size_report(plan, loaded, freqs)
    # .bcq files = the plan's honest matrix bytes + a 128-byte header and alignment gaps per file
    assert report.quantized_bytes < size.parts["matrices"] <= report.quantized_bytes + len(mats) * (128 + 3 * 63)
    assert size.average_bits == pytest.approx(report.average_bits)
    assert size.weight_bytes < size.fp32_bytes and size.bits_per_quantized_weight > size.average_bits


def test_baked_model_with_results_packs_to_the_same_bytes(corpus, tmp_path):
    _, spm, vocab = corpus
    plan = QuantPlan.from_dict(MIXED)
    model = fake_quantized(vocab, plan)
    pm.save_packed(model, spm, tmp_path / "a", src="en", tgt="de", plan=plan)
    pm.save_packed(model, spm, tmp_path / "b", src="en", tgt="de", plan=plan)
    results = export_bcq(model)
    remove_fake_quant(model, bake=True)
    ref = logits(model, vocab)
    # aliases of the tied tensor are accepted as result names
    results["decoder.output_projection.weight"] = results.pop("encoder.embed_tokens.weight")
    pm.save_packed(model, spm, tmp_path / "c", src="en", tgt="de", plan=plan, bcq_results=results)
    a = files_of(tmp_path / "a")
    assert a == files_of(tmp_path / "b") == files_of(tmp_path / "c")  # deterministic, whatever the route
    assert torch.equal(logits(pm.load_packed(tmp_path / "c")[0], vocab), ref)


def test_float16_dense_and_argument_errors(corpus, tmp_path):
    _, spm, vocab = corpus
    plan = QuantPlan.uniform(3, method="greedy")
    model = fake_quantized(vocab, plan)
    pm.save_packed(model, spm, tmp_path / "f32", src="en", tgt="de", plan=plan)
    pm.save_packed(model, spm, tmp_path / "f16", src="en", tgt="de", plan=plan, dense_dtype="float16")
    s32, s16 = pm.packed_size(tmp_path / "f32"), pm.packed_size(tmp_path / "f16")
    payload = [sum(t["nbytes"] for t in pm.read_manifest(tmp_path / d)["dense"]["tensors"]) for d in ("f32", "f16")]
    assert payload[1] * 2 == payload[0]  # (the file also holds 64-byte alignment gaps)
    assert s16.parts["dense"] < s32.parts["dense"] and s16.parts["matrices"] == s32.parts["matrices"]
    torch.testing.assert_close(logits(pm.load_packed(tmp_path / "f16")[0], vocab), logits(model, vocab),
                               rtol=0, atol=2e-2)

    plain = tiny(vocab)
    with pytest.raises(ConfigError, match="nothing to export"):
        pm.save_packed(plain, spm, tmp_path / "x", src="en", tgt="de")
    with pytest.raises(ConfigError, match="vocab_size"):
        pm.save_packed(tiny(vocab + 1), spm, tmp_path / "x", src="en", tgt="de", plan=plan)
    with pytest.raises(ConfigError, match="not a parameter"):
        pm.save_packed(plain, spm, tmp_path / "x", src="en", tgt="de", bcq_results={"nope.weight": None})
    with pytest.raises(ConfigError, match="src"):
        pm.save_packed(model, spm, tmp_path / "x", src="", tgt="de", plan=plan)
    assert not (tmp_path / "x").exists()
    # a plan alone quantizes a plain model now (post-training)
    pm.save_packed(plain, spm, tmp_path / "ptq", src="en", tgt="de", plan=plan)
    assert pm.load_packed(tmp_path / "ptq")[2]["average_bits"] == 3


def test_atomic_replace(corpus, tmp_path, monkeypatch):
    _, spm, vocab = corpus
    plan = QuantPlan.uniform(2, method="greedy")
    out = tmp_path / "model"
    pm.save_packed(fake_quantized(vocab, plan, seed=1), spm, out, src="en", tgt="de", plan=plan)
    new = fake_quantized(vocab, plan, seed=2)
    pm.save_packed(new, spm, out, src="en", tgt="de", plan=plan)  # replaces the old directory
    assert torch.equal(logits(pm.load_packed(out)[0], vocab), logits(new, vocab))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old copies left
    before = files_of(out)

    calls = []

    def failing_to_bytes(p, alpha_dtype="float32"):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_to_bytes(p, alpha_dtype)

    real_to_bytes = pm.bitplane.to_bytes
    monkeypatch.setattr(pm.bitplane, "to_bytes", failing_to_bytes)
    with pytest.raises(OSError, match="disk full"):
        pm.save_packed(fake_quantized(vocab, plan, seed=3), spm, out, src="en", tgt="de", plan=plan)
    monkeypatch.undo()
    assert files_of(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    run = tmp_path / "run"  # not a packed model: never replaced
    run.mkdir()
    (run / "checkpoint_best.pt").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="refusing to replace"):
        pm.save_packed(new, spm, run, src="en", tgt="de", plan=plan)
    assert (run / "checkpoint_best.pt").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run"]


def _edit_manifest(fn):
    def damage(d: Path) -> None:
        m = json.loads((d / "manifest.json").read_text())
        fn(m)
        (d / "manifest.json").write_text(json.dumps(m))
    return damage


def _rehash(d: Path, rel: str, m: dict) -> None:
    for f in m["files"]:
        if f["path"] == rel:
            import hashlib

            data = (d / rel).read_bytes()
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()


def _truncate_and_rehash(d: Path) -> None:
    """A damaged .bcq whose manifest entry was updated to match: the .bcq reader itself must catch it."""
    rel = "matrices/encoder.layers.0.fc1.weight.bcq"
    f = d / rel
    f.write_bytes(f.read_bytes()[:-40])
    m = json.loads((d / "manifest.json").read_text())
    _rehash(d, rel, m)
    (d / "manifest.json").write_text(json.dumps(m))


def _flip(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0x10
    path.write_bytes(bytes(b))


FC1 = "matrices/encoder.layers.0.fc1.weight.bcq"
DAMAGE = {
    "truncated bcq": (lambda d: (d / FC1).write_bytes((d / FC1).read_bytes()[:-1]), FC1),
    "truncated bcq, manifest rehashed": (_truncate_and_rehash, FC1),
    "flipped byte in dense.bin": (lambda d: _flip(d / "dense.bin", 70), "dense.bin"),
    "flipped byte in spm.model": (lambda d: _flip(d / "spm.model", 100), "spm.model"),
    "deleted bcq": (lambda d: (d / FC1).unlink(), FC1),
    "deleted tokenizer": (lambda d: (d / "spm.model").unlink(), "spm.model"),
    "deleted manifest": (lambda d: (d / "manifest.json").unlink(), "manifest.json"),
    "manifest not JSON": (lambda d: (d / "manifest.json").write_text("{\"format\": "), "manifest.json"),
    "unknown version": (_edit_manifest(lambda m: m.update(format_version="2.0")), "manifest.json"),
    "other format": (_edit_manifest(lambda m: m.update(format="zip")), "manifest.json"),
    "manifest matrix shape": (_edit_manifest(lambda m: m["matrices"][1].update(shape=[40, 24])),
                              "manifest.json"),
    "manifest row bits": (_edit_manifest(lambda m: m["matrices"][0].update(row_bits={"2": 60})),
                          "encoder.embed_tokens.weight.bcq"),
    "manifest dense shape": (_edit_manifest(lambda m: m["dense"]["tensors"][0].update(shape=[8])), "dense.bin"),
    "model_config changed": (_edit_manifest(lambda m: m["model_config"].update(ffn_dim=48)), FC1),
    "unknown parameter": (_edit_manifest(lambda m: m["dense"]["tensors"][0].update(name="encoder.fc9.bias")),
                          "dense.bin"),
    "missing parameter": (_edit_manifest(lambda m: m["dense"]["tensors"].pop()), "manifest.json"),
    "stored twice": (_edit_manifest(lambda m: m["dense"]["tensors"][0].update(
        name=m["dense"]["tensors"][1]["name"])), "dense.bin"),
    "ties differ": (_edit_manifest(lambda m: m["matrices"][0].update(aliases=[])), "manifest.json"),
    "path leaves the directory": (_edit_manifest(lambda m: m["files"][0].update(path="../x.bcq")), "manifest.json"),
    "unlisted file used": (_edit_manifest(lambda m: m["files"].pop(0)), "manifest.json"),
    "missing field": (_edit_manifest(lambda m: m["dense"].pop("tensors")), "manifest.json"),
    "bool for an int": (_edit_manifest(lambda m: m["files"][0].update(size=True)), "manifest.json"),
}


@pytest.fixture(scope="module")
def saved(corpus, tmp_path_factory):
    _, spm, vocab = corpus
    plan = QuantPlan.from_dict(MIXED)
    d = tmp_path_factory.mktemp("saved") / "packed"
    pm.save_packed(fake_quantized(vocab, plan), spm, d, src="en", tgt="de", plan=plan)
    return d


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_corruption_raises_a_typed_error_naming_the_file(saved, tmp_path, kind):
    damage, named = DAMAGE[kind]
    d = tmp_path / "packed"
    shutil.copytree(saved, d)
    pm.load_packed(d)  # the copy is fine
    damage(d)
    with pytest.raises((BCQFormatError, DataError), match=re.escape(named)) as e:
        pm.load_packed(d)
    assert kind != "deleted manifest" or e.type is DataError


def test_pack_checkpoint_and_evaluate_a_packed_dir(corpus, tmp_path):
    from ondevice.nmt.evaluate import evaluate, load_model
    from ondevice.quant.ptq import quantize_model_

    data, spm, vocab = corpus
    run = tmp_path / "run"
    run.mkdir()
    model = tiny(vocab, seed=4)
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config)},
               run / "checkpoint_best.pt")
    shutil.copy(spm, run / "spm.model")
    plan = QuantPlan.uniform(2, method="greedy")
    size = pm.pack_checkpoint(run, plan, tmp_path / "packed", src="en", tgt="de")
    assert size == pm.packed_size(tmp_path / "packed").to_dict() and size["compression_ratio"] > 1
    # the same weights post_training_quantize bakes into its checkpoint
    ptq = quantize_model_(copy.deepcopy(model), plan.assign(model), plan)
    ref = logits(ptq, vocab)
    for ck in (None, "packed"):
        loaded, tok = load_model(tmp_path / "packed", ck)
        assert torch.equal(logits(loaded, vocab), ref)
    assert torch.equal(logits(load_model(run)[0], vocab), logits(model, vocab))  # training dirs as before
    with pytest.raises(DataError, match="manifest.json"):
        load_model(run, "packed")
    result = evaluate(tmp_path / "packed", data, "test_bible", "en", "de", beam=1, limit=3, progress=False)
    assert result["checkpoint"] == "packed" and result["sentences"] == 3
