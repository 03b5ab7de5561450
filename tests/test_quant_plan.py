"""Mixed-precision plans (ondevice.quant.plan) and Algorithm 1 (ondevice.quant.embedding_bits)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ondevice import bcq, bitplane
from ondevice.errors import ConfigError, DataError
from ondevice.quant import embedding_bits as eb
from ondevice.quant.plan import (PLANS_DIR, EmbeddingClusters, QuantPlan, average_bits, average_bits_by_block,
                                 builtin_plan, model_matrices, size_report, unquantized_param_count)

PAPER_PLAN = {  # the shipped paper plan's values, restated so the test fails if the file drifts
    "embedding": {"ratio": 1, "bits": [4, 3, 2, 1]}, "encoder_self_attn": 3, "encoder_ffn": 4,
    "decoder_self_attn": 2, "decoder_encoder_attn": 3, "decoder_ffn": 1,
}


def base_plan(**kw) -> dict:
    d = {"embedding": 2, "encoder_self_attn": 3, "encoder_ffn": 2, "decoder_self_attn": 2,
         "decoder_encoder_attn": 3, "decoder_ffn": 1}
    d.update(kw)
    return d


# --------------------------------------------------------------------------- Algorithm 1


@pytest.mark.parametrize("r, paper, digits", [(1, 2.5, 2), (2, 1.73, 2), (4, 1.3, 1), (8, 1.1, 1)])
def test_algorithm1_reproduces_paper_average_bits(r, paper, digits):
    v = 32768
    avg = eb.cluster_average_bits(v, r, (4, 3, 2, 1))
    # the paper's numbers, at the precision it prints them (1.3 and 1.1 are 1.318 and 1.142 rounded)
    assert round(avg, digits) == paper
    # the cluster-size rule: sizes proportional to 1, r, r^2, r^3 (closed form up to integer rounding)
    closed = (4 + 3 * r + 2 * r ** 2 + r ** 3) / (1 + r + r ** 2 + r ** 3)
    assert avg == pytest.approx(closed, abs=1e-4)
    sizes = eb.cluster_sizes(v, r, 4)
    assert sizes.sum() == v
    assert np.allclose(sizes / sizes[0], [1, r, r * r, r ** 3], rtol=2e-3)
    # the per-row bits from frequencies have the same average, whatever the frequencies
    freqs = np.random.default_rng(r).integers(0, 50, v)
    rb = eb.embedding_bits(freqs, r)
    assert rb.dtype == np.uint8 and rb.shape == (v,)
    assert rb.mean() == pytest.approx(avg, abs=1e-12)
    assert np.bincount(rb, minlength=5)[1:][::-1].tolist() == sizes.tolist()


def test_cluster_sizes_always_sum_to_vocab():
    for v in (1, 3, 4, 7, 100, 32767):
        for r in (0.5, 1, 1.5, 2, 8):
            s = eb.cluster_sizes(v, r, 4)
            assert s.sum() == v and (s >= 0).all()
    assert eb.cluster_sizes(8, 1, 4).tolist() == [2, 2, 2, 2]
    assert eb.cluster_sizes(15, 2, 4).tolist() == [1, 2, 4, 8]


def test_frequent_words_never_get_fewer_bits():
    rng = np.random.default_rng(0)
    freqs = rng.integers(0, 20, 2000)  # many ties
    for r in (1, 2, 4):
        rb = eb.embedding_bits(freqs, r).astype(int)
        more = freqs[:, None] > freqs[None, :]
        assert not (more & (rb[:, None] < rb[None, :])).any()


def test_ties_are_broken_by_id_deterministically():
    freqs = np.zeros(16, dtype=np.int64)
    rb = eb.embedding_bits(freqs, 1)
    assert rb.tolist() == [4] * 4 + [3] * 4 + [2] * 4 + [1] * 4
    freqs = np.array([5, 9, 5, 5, 0, 9, 1, 1])
    assert eb.frequency_rank(freqs).tolist() == [1, 5, 0, 2, 3, 6, 7, 4]
    assert np.array_equal(eb.embedding_bits(freqs, 1), eb.embedding_bits(freqs.copy(), 1))
    # demoted ids (padding) rank last whatever their count
    assert eb.frequency_rank(freqs, demote_ids=(1,)).tolist() == [5, 0, 2, 3, 6, 7, 4, 1]


def test_algorithm1_rejects_bad_specs():
    with pytest.raises(ConfigError, match="ratio"):
        eb.embedding_bits(np.ones(8), 0)
    with pytest.raises(ConfigError, match="bits"):
        eb.embedding_bits(np.ones(8), 1, (1, 2))  # increasing: frequent words would get fewer bits
    with pytest.raises(ConfigError, match="bits"):
        eb.embedding_bits(np.ones(8), 1, (5, 1))
    with pytest.raises(ConfigError, match="frequencies"):
        eb.embedding_bits(np.ones((2, 4)), 1)


class _FakeTokenizer:
    """Splits on spaces; ids = 4 + index in a fixed word list; eos (2) appended, as Tokenizer.encode."""

    words = ["a", "b", "c", "d"]
    vocab_size = 10

    def encode(self, texts, add_eos=True):
        return [[4 + self.words.index(w) for w in t.split()] + ([2] if add_eos else []) for t in texts]


def test_token_frequencies_counts_ids_and_eos_once_per_sentence(tmp_path):
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    f1.write_text("a b a\n\nc\n", encoding="utf-8")
    f2.write_text("a d\n   \nb\n", encoding="utf-8")
    counts = eb.token_frequencies(_FakeTokenizer(), [f1, f2], batch_lines=2)
    assert counts.dtype == np.int64
    assert counts.tolist() == [0, 0, 4, 0, 3, 2, 1, 1, 0, 0]  # bos, pad, eos=4 sentences, unk, a, b, c, d
    assert eb.token_frequencies(_FakeTokenizer(), [f1], max_lines=1).tolist()[:6] == [0, 0, 1, 0, 2, 1]
    rb = eb.embedding_bits(counts, 1, demote_ids=(1,))
    assert rb[2] == 4 and rb[4] == 4 and rb[1] == 1  # eos and 'a' are frequent, pad is last
    with pytest.raises(DataError):
        eb.token_frequencies(_FakeTokenizer(), [tmp_path / "missing.txt"])


def test_token_frequencies_with_sentencepiece(tmp_path):
    pytest.importorskip("sentencepiece")
    from ondevice.nmt.tokenizer import EOS, PAD, Tokenizer, train_sentencepiece

    text = tmp_path / "train.txt"
    lines = [f"the cat {w} the dog" for w in ("sat", "ran", "ate", "slept")] * 20
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = Tokenizer(train_sentencepiece([text], tmp_path / "spm.model", vocab_size=40))
    counts = eb.token_frequencies(tok, [text])
    assert counts.shape == (tok.vocab_size,)
    assert counts[EOS] == len(lines) and counts[PAD] == 0
    assert counts.sum() == sum(len(x) for x in tok.encode(lines))


# --------------------------------------------------------------------------- plans


def test_plan_json_round_trip(tmp_path):
    p = QuantPlan.from_dict(base_plan(embedding={"ratio": 2, "bits": [4, 3, 2, 1]}, encoder_ffn=[2, 3, 4],
                                      group_size=64, method="uniform", offset=True, alpha_dtype="float16",
                                      note="hello"))
    assert p.embedding == EmbeddingClusters(2.0, (4, 3, 2, 1))
    assert p.encoder_ffn == (2, 3, 4)
    path = tmp_path / "sub" / "plan.json"
    p.save(path)
    assert sorted(x.name for x in path.parent.iterdir()) == ["plan.json"]  # no temporary file left
    q = QuantPlan.load(path)
    assert q == p
    assert json.loads(path.read_text())["embedding"] == {"ratio": 2, "bits": [4, 3, 2, 1]}
    assert QuantPlan.from_dict(q.to_dict()) == p
    assert QuantPlan.from_dict(json.loads(json.dumps(QuantPlan.uniform(3).to_dict()))) == QuantPlan.uniform(3)


BAD = [
    (base_plan(encoder_fnn=2), "encoder_fnn"),
    ({k: v for k, v in base_plan().items() if k != "decoder_ffn"}, "decoder_ffn"),
    (base_plan(encoder_self_attn=0), "encoder_self_attn"),
    (base_plan(encoder_self_attn=5), "encoder_self_attn"),
    (base_plan(decoder_ffn="2"), "decoder_ffn"),
    (base_plan(decoder_ffn=True), "decoder_ffn"),
    (base_plan(decoder_ffn=2.0), "decoder_ffn"),
    (base_plan(encoder_ffn=[2, 5]), "encoder_ffn[1]"),
    (base_plan(encoder_ffn=[]), "encoder_ffn"),
    (base_plan(decoder_encoder_attn=[3, None]), "decoder_encoder_attn[1]"),
    (base_plan(embedding=0), "embedding"),
    (base_plan(embedding=[2, 2]), "embedding"),
    (base_plan(embedding={"ratio": 0}), "embedding.ratio"),
    (base_plan(embedding={"ratio": "2"}), "embedding.ratio"),
    (base_plan(embedding={"bits": [4, 3]}), "embedding.ratio"),
    (base_plan(embedding={"ratio": 2, "bits": [1, 2]}), "embedding.bits"),
    (base_plan(embedding={"ratio": 2, "bits": [5, 1]}), "embedding.bits"),
    (base_plan(embedding={"ratio": 2, "bits": []}), "embedding.bits"),
    (base_plan(embedding={"ratio": 2, "bitz": [4]}), "embedding.bitz"),
    (base_plan(group_size=12), "group_size"),
    (base_plan(group_size=0), "group_size"),
    (base_plan(group_size=-8), "group_size"),
    (base_plan(group_size="64"), "group_size"),
    (base_plan(group_size=True), "group_size"),
    (base_plan(method="kmeans"), "method"),
    (base_plan(offset="yes"), "offset"),
    (base_plan(method="uniform", offset=False), "offset"),
    (base_plan(alpha_dtype="bfloat16"), "alpha_dtype"),
    (base_plan(note=3), "note"),
]


@pytest.mark.parametrize("d, key", BAD, ids=[k for _, k in BAD])
def test_plan_validation_names_the_key(d, key, tmp_path):
    with pytest.raises(ConfigError) as e:
        QuantPlan.from_dict(d)
    assert key in str(e.value)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError) as e:
        QuantPlan.load(path)
    assert key in str(e.value) and "p.json" in str(e.value)


def test_plan_load_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        QuantPlan.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="object"):
        QuantPlan.load(bad)
    with pytest.raises(ConfigError, match="missing.json"):
        QuantPlan.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="no built-in plan"):
        builtin_plan("nope")


# --------------------------------------------------------------------------- the model

torch = pytest.importorskip("torch")
from ondevice.nmt.model import TransformerConfig, TransformerModel  # noqa: E402


def tiny_cfg(**kw) -> TransformerConfig:
    args = dict(vocab_size=100, d_model=16, ffn_dim=32, heads=2, encoder_layers=2, decoder_layers=1)
    args.update(kw)
    return TransformerConfig(**args)


def tiny_model(**kw) -> TransformerModel:
    torch.manual_seed(0)
    return TransformerModel(tiny_cfg(**kw))


def linear_and_embedding_weights(model) -> dict[str, object]:
    """Independent of the code under test: the first name of every distinct Linear/Embedding weight."""
    out, seen = {}, set()
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)) and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            out[name + ".weight"] = mod.weight
    return out


@pytest.mark.parametrize("shared", [True, False])
def test_assignment_covers_exactly_linear_weights_and_embedding(shared):
    model = tiny_model(share_all_embeddings=shared)
    plan = QuantPlan.from_dict(base_plan(embedding={"ratio": 2}, encoder_self_attn=[2, 4], decoder_ffn=[1]))
    freqs = np.arange(100)[::-1]
    a = plan.assign(model, frequencies=freqs)
    expected = linear_and_embedding_weights(model)
    assert set(a) == set(expected)
    assert not any(k.endswith(".bias") or "norm" in k for k in a)
    params = dict(model.named_parameters())
    assert all(params[k].dim() == 2 for k in a)
    n_emb = 1 if shared else 3
    emb = [k for k, v in a.items() if isinstance(v, np.ndarray)]
    assert len(emb) == n_emb
    if shared:
        assert emb == ["encoder.embed_tokens.weight"]
        assert "decoder.output_projection.weight" not in a  # the same tensor, quantized once
    for k in emb:
        assert a[k].shape == (100,) and a[k].dtype == np.uint8
        assert a[k][0] == 4 and a[k][2] == 4 and a[k][99] == 1
        assert a[k][1] == 1  # id 1 = pad (count 98) is demoted to the last rank
    assert a["encoder.layers.0.self_attn.q_proj.weight"] == 2
    assert a["encoder.layers.1.self_attn.out_proj.weight"] == 4
    assert a["encoder.layers.1.fc2.weight"] == 2
    assert a["decoder.layers.0.encoder_attn.k_proj.weight"] == 3
    assert a["decoder.layers.0.self_attn.v_proj.weight"] == 2
    assert a["decoder.layers.0.fc1.weight"] == 1
    # int embedding bits need no frequencies; clusters do
    assert QuantPlan.uniform(2).assign(model)["encoder.embed_tokens.weight"] == 2
    with pytest.raises(ConfigError, match="frequencies"):
        plan.assign(model)


def test_layer_lists_are_checked_against_the_model():
    model = tiny_model()  # 2 encoder layers, 1 decoder layer
    for key, value in (("encoder_ffn", [2, 2, 2]), ("decoder_self_attn", [2, 2])):
        plan = QuantPlan.from_dict(base_plan(**{key: value}))
        for call in (lambda: plan.assign(model), lambda: plan.validate_for(model.config),
                     lambda: average_bits(plan, model.config), lambda: size_report(plan, model)):
            with pytest.raises(ConfigError) as e:
                call()
            assert key in str(e.value)


@pytest.mark.parametrize("norm", ["post", "pre", "peri"])
@pytest.mark.parametrize("shared", [True, False])
def test_config_layout_matches_the_model(norm, shared):
    cfg = tiny_cfg(norm=norm, share_all_embeddings=shared)
    torch.manual_seed(0)
    model = TransformerModel(cfg)
    weights = linear_and_embedding_weights(model)
    specs = model_matrices(cfg)
    assert [s.name for s in specs] == list(weights)
    assert all((s.rows, s.cols) == tuple(weights[s.name].shape) for s in specs)
    ids = {id(w) for w in weights.values()}
    assert unquantized_param_count(cfg) == sum(p.numel() for p in model.parameters() if id(p) not in ids)
    plan = QuantPlan.from_dict(base_plan(embedding={"ratio": 4}, encoder_ffn=[1, 4]))
    assert average_bits_by_block(plan, cfg) == pytest.approx(average_bits_by_block(plan, model))
    assert size_report(plan, cfg).to_dict() == size_report(plan, model).to_dict()


def test_paper_plan_average_bits_on_transformer_base():
    plan = builtin_plan("paper_2.6bit")
    assert {k: v for k, v in plan.to_dict().items() if k in PAPER_PLAN} == PAPER_PLAN
    cfg = TransformerConfig(vocab_size=32768)  # Transformer-base, 6+6 layers; no model is allocated
    blocks = average_bits_by_block(plan, cfg)
    assert blocks["embedding"] == 2.5
    assert round(blocks["encoder"], 1) == 3.7 and round(blocks["decoder"], 1) == 1.8
    assert round(average_bits(plan, cfg), 1) == 2.6
    # by hand: embedding V*d at 2.5; per encoder layer 4d^2 at 3 + 2*d*ffn at 4; per decoder layer
    # 4d^2 at 2 + 4d^2 at 3 + 2*d*ffn at 1
    d, f, v = 512, 2048, 32768
    bits = v * d * 2.5 + 6 * (4 * d * d * 3 + 2 * d * f * 4) + 6 * (4 * d * d * 2 + 4 * d * d * 3 + 2 * d * f * 1)
    n = v * d + 6 * (4 * d * d + 2 * d * f) + 6 * (8 * d * d + 2 * d * f)
    assert average_bits(plan, cfg) == pytest.approx(bits / n)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_uniform_plans(bits):
    plan = builtin_plan(f"uniform_{bits}bit")
    assert plan == QuantPlan.uniform(bits, method=plan.method, name=plan.name, note=plan.note)
    assert average_bits(plan, TransformerConfig(vocab_size=32768)) == bits


def test_shipped_plans_load():
    names = sorted(p.stem for p in PLANS_DIR.glob("*.json"))
    assert names == ["ours_2.3bit", "ours_2.6bit", "paper_2.6bit", "sens_2.3bit", "sens_2.6bit", "uniform_2bit",
                     "uniform_3bit", "uniform_4bit"]
    for n in names:
        assert builtin_plan(n).name == n


@pytest.mark.parametrize("name", ["ours_2.3bit", "ours_2.6bit", "sens_2.3bit", "sens_2.6bit"])
def test_own_plans_stay_within_their_budget_on_the_en_de_model(name):
    """The project's mixes are named by the average bits they must not exceed on the shipped
    d256 6+3 en-de model (vocab 8000), the model they were chosen for."""
    cfg = TransformerConfig(vocab_size=8000, d_model=256, ffn_dim=1024, heads=4, encoder_layers=6,
                            decoder_layers=3)
    budget = float(name.split("_")[1].removesuffix("bit"))
    assert budget - 0.05 < average_bits(builtin_plan(name), cfg) <= budget


def test_size_report_matches_hand_computation():
    model = tiny_model()
    plan = QuantPlan.uniform(2, group_size=8, offset=True, alpha_dtype="float16")
    rep = size_report(plan, model)
    # by hand, in the .bcq layout: 32-row tiles, ceil(cols/8) bytes per plane row, fp16 scales per
    # (row, plane, group of 8), fp16 offsets per (row, group), one row-bits byte per row
    expected_q = 0
    for name, w in linear_and_embedding_weights(model).items():
        rows, cols = w.shape
        tiles, groups = math.ceil(rows / 32), math.ceil(cols / 8)
        b = tiles * 32 * 2 * math.ceil(cols / 8) + 2 * tiles * 32 * 2 * groups + 2 * rows * groups + rows
        m = next(m for m in rep.matrices if m.name == name)
        assert m.bytes == b, name
        expected_q += b
    n_all = sum(p.numel() for p in model.parameters())
    n_other = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias") or "norm" in n)
    assert rep.quantized_bytes == expected_q
    assert rep.unquantized_params == n_other and rep.unquantized_bytes == 4 * n_other
    assert rep.quantized_params + rep.unquantized_params == n_all
    assert rep.fp32_bytes == 4 * n_all
    assert rep.total_bytes == expected_q + 4 * n_other
    assert rep.compression_ratio == pytest.approx(4 * n_all / (expected_q + 4 * n_other))
    assert rep.average_bits == 2.0 and rep.bits_per_weight == pytest.approx(8 * expected_q / rep.quantized_params)
    d = rep.to_dict()
    assert d["total_bytes"] == rep.total_bytes and len(d["matrices"]) == len(rep.matrices)
    assert "smaller" in rep.format()


def test_size_report_agrees_with_the_packer():
    """Per-matrix bytes equal the arrays ondevice.bitplane.pack produces for the real BCQ result
    (what BCQMatrix.nbytes counts), mixed per-row embedding bits included."""
    model = tiny_model()
    plan = QuantPlan.from_dict(base_plan(embedding={"ratio": 2}, group_size=8, offset=True, method="greedy"))
    freqs = np.random.default_rng(3).integers(0, 1000, 100)
    rep = size_report(plan, model, frequencies=freqs)
    assignment = plan.assign(model, freqs)
    weights = linear_and_embedding_weights(model)
    for m in rep.matrices:
        w = weights[m.name].detach().double().numpy()
        r = bcq.quantize(w, assignment[m.name], group_size=8, method="greedy", offset=True)
        p = bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset)
        assert m.bytes == p.planes.nbytes + p.row_bits.nbytes + 4 * (p.alpha.size + p.offset.size), m.name
    # rows of the embedding in vocabulary order cost at least as much as rows sorted by frequency
    emb = lambda rep: next(m for m in rep.matrices if m.kind == "embedding")  # noqa: E731
    assert emb(rep).bytes >= emb(size_report(plan, model)).bytes
    assert emb(rep).average_bits == emb(size_report(plan, model)).average_bits
