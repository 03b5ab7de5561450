"""The fairseq-compatible NMT Transformer (ondevice.nmt.model), its loss and reference decoders."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ondevice.errors import ConfigError  # noqa: E402
from ondevice.nmt.loss import label_smoothed_nll_loss  # noqa: E402
from ondevice.nmt.model import (DecoderCache, EncoderOut, SinusoidalPositionalEmbedding,  # noqa: E402
                                TransformerConfig, TransformerModel, reorder_encoder_out)
from ondevice.nmt.search import beam_search, beam_search_nbest, greedy_search  # noqa: E402

BOS, PAD, EOS, UNK = 0, 1, 2, 3


def tiny(norm="post", vocab=50, d=32, heads=4, ffn=64, layers=2, seed=0, **kw) -> TransformerModel:
    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=vocab, d_model=d, ffn_dim=ffn, heads=heads, encoder_layers=layers,
                            decoder_layers=layers, norm=norm, max_positions=64, **kw)
    return TransformerModel.from_config(cfg).eval()


def random_tokens(b, t, vocab, seed, lengths=None, left_pad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, vocab, (b, t), generator=g)
    if lengths is not None:
        for i, n in enumerate(lengths):
            if left_pad:
                x[i, : t - n] = PAD
            else:
                x[i, n:] = PAD
    return x


def fairseq_sinusoid(num, dim, padding_idx):
    """Direct (float64) transcription of fairseq SinusoidalPositionalEmbedding.get_embedding."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    emb = np.zeros((num, dim))
    for p in range(num):
        for i in range(half):
            emb[p, i] = math.sin(p * math.exp(-i * step))
            emb[p, half + i] = math.cos(p * math.exp(-i * step))
    emb[padding_idx] = 0
    return emb


# --------------------------------------------------------------------------- size and names


def test_transformer_base_parameter_counts_match_chung_et_al():
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(vocab_size=32768))
    total = model.num_parameters()
    assert abs(total - 60.9e6) / 60.9e6 < 0.01, total
    parts = {p: model.num_parameters(p) for p in ("embedding", "encoder", "decoder")}
    assert sum(parts.values()) == total  # shared matrix counted once, nothing missing
    assert abs(100 * parts["embedding"] / total - 27.6) < 1
    assert abs(100 * parts["encoder"] / total - 31.0) < 1
    assert abs(100 * parts["decoder"] / total - 41.4) < 1
    assert parts["embedding"] == 32768 * 512
    with pytest.raises(ValueError):
        model.num_parameters("attention")


def _fairseq_layer_keys(prefix, attns, norms):
    keys = []
    for a in attns:
        keys += [f"{prefix}.{a}.{p}_proj.{w}" for p in ("k", "v", "q", "out") for w in ("weight", "bias")]
    keys += [f"{prefix}.{m}.{w}" for m in ("fc1", "fc2", *norms) for w in ("weight", "bias")]
    return keys


def test_state_dict_keys_equal_fairseq_transformer():
    model = tiny("post", layers=1)
    expected = ["encoder.version", "encoder.embed_tokens.weight", "encoder.embed_positions._float_tensor",
                "decoder.version", "decoder.embed_tokens.weight", "decoder.embed_positions._float_tensor",
                "decoder.output_projection.weight"]
    expected += _fairseq_layer_keys("encoder.layers.0", ["self_attn"], ["self_attn_layer_norm", "final_layer_norm"])
    expected += _fairseq_layer_keys("decoder.layers.0", ["self_attn", "encoder_attn"],
                                    ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"])
    assert sorted(model.state_dict()) == sorted(expected)
    assert model.state_dict()["encoder.version"].tolist() == [3.0]


def test_state_dict_spot_names_and_final_norms_per_variant():
    spot = ["encoder.embed_tokens.weight", "encoder.embed_positions._float_tensor",
            "encoder.layers.1.self_attn.k_proj.weight", "encoder.layers.1.self_attn.out_proj.bias",
            "encoder.layers.0.self_attn_layer_norm.weight", "encoder.layers.1.fc1.weight",
            "encoder.layers.1.fc2.bias", "encoder.layers.1.final_layer_norm.bias",
            "decoder.embed_tokens.weight", "decoder.layers.1.self_attn.v_proj.weight",
            "decoder.layers.0.encoder_attn.q_proj.bias", "decoder.layers.1.encoder_attn_layer_norm.weight",
            "decoder.layers.1.final_layer_norm.weight", "decoder.output_projection.weight"]
    finals = {"encoder.layer_norm.weight", "encoder.layer_norm.bias", "decoder.layer_norm.weight",
              "decoder.layer_norm.bias"}
    peri_extra = {f"{side}.layers.{i}.{n}.{w}" for i in range(2) for w in ("weight", "bias")
                  for side, names in (("encoder", ("self_attn_out_layer_norm", "ffn_out_layer_norm")),
                                      ("decoder", ("self_attn_out_layer_norm", "encoder_attn_out_layer_norm",
                                                   "ffn_out_layer_norm")))
                  for n in names}
    keys = {norm: set(tiny(norm).state_dict()) for norm in ("post", "pre", "peri")}
    for norm, k in keys.items():
        assert set(spot) <= k, norm
    assert not finals & keys["post"]
    assert keys["pre"] == keys["post"] | finals
    assert keys["peri"] == keys["post"] | finals | peri_extra
    assert not any("weights" in k for k in keys["post"])  # the sinusoid table is not persistent


def test_tied_output_projection_shares_storage_with_embeddings():
    model = tiny("pre")
    emb = model.encoder.embed_tokens.weight
    assert model.decoder.embed_tokens.weight is emb
    assert model.decoder.output_projection.weight is emb
    sd = model.state_dict()
    ptrs = {sd[k].data_ptr() for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                                       "decoder.output_projection.weight")}
    assert ptrs == {emb.data_ptr()}
    with torch.no_grad():
        emb[5, 0] += 1.0  # one matrix: a change shows in all three
    assert model.decoder.output_projection.weight[5, 0] == emb[5, 0]

    untied = tiny("post", share_all_embeddings=False)
    w = [untied.encoder.embed_tokens.weight, untied.decoder.embed_tokens.weight,
         untied.decoder.output_projection.weight]
    assert len({p.data_ptr() for p in w}) == 3
    assert untied.num_parameters("embedding") == 3 * 50 * 32
    assert untied.num_parameters() == sum(untied.num_parameters(p) for p in ("embedding", "encoder", "decoder"))


def test_state_dict_round_trip_and_newer_fairseq_checkpoints_load():
    a, b = tiny("pre", seed=1), tiny("pre", seed=2)
    src, prev = random_tokens(2, 5, 50, 0), random_tokens(2, 4, 50, 1)
    sd = a.state_dict()
    # newer fairseq drops the dummy buffer; old ones may carry the table: both load strictly
    del sd["encoder.embed_positions._float_tensor"]
    sd["decoder.embed_positions.weights"] = torch.zeros(3, 3)
    b.load_state_dict(sd, strict=True)
    with torch.no_grad():
        assert torch.equal(a(src, prev), b(src, prev))
    assert b.decoder.output_projection.weight is b.encoder.embed_tokens.weight


def test_initialization_follows_fairseq():
    model = tiny("post", d=64, heads=4, ffn=128, vocab=40)
    emb = model.encoder.embed_tokens.weight
    assert torch.all(emb[PAD] == 0)
    assert abs(emb[emb.abs().sum(1) > 0].std().item() - 64 ** -0.5) < 0.02
    attn = model.encoder.layers[0].self_attn
    bound_qkv = math.sqrt(6 / 128) / math.sqrt(2)  # xavier_uniform, gain 1/sqrt(2)
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        assert 0.9 * bound_qkv < proj.weight.abs().max() <= bound_qkv
    assert 0.9 * math.sqrt(6 / 128) < attn.out_proj.weight.abs().max() <= math.sqrt(6 / 128)
    assert torch.all(attn.out_proj.bias == 0)


# --------------------------------------------------------------------------- semantics


def test_sinusoidal_positions_equal_fairseq_formula():
    d, pad = 10, PAD
    table = SinusoidalPositionalEmbedding.get_embedding(40, d, pad)
    np.testing.assert_allclose(table.numpy(), fairseq_sinusoid(40, d, pad), atol=2e-5)
    pe = SinusoidalPositionalEmbedding(d, pad, init_size=8)  # grows on demand
    ref = torch.tensor(fairseq_sinusoid(40, d, pad), dtype=torch.float32)
    tokens = torch.tensor([[7, 8, 9, 10, PAD, PAD], [PAD, PAD, 7, 8, 9, 10]])
    out = pe(tokens)
    expect = torch.stack([ref[[2, 3, 4, 5, 1, 1]], ref[[1, 1, 2, 3, 4, 5]]])  # positions start at pad+1
    torch.testing.assert_close(out, expect, atol=2e-5, rtol=0)
    assert torch.all(out[0, 4:] == 0) and torch.all(out[1, :2] == 0)
    inc = pe(torch.tensor([[7, 8], [9, 10]]), start=30)  # incremental: continue from the cache length
    torch.testing.assert_close(inc, ref[[32, 33]].expand(2, 2, d), atol=2e-5, rtol=0)


def test_encoder_embedding_and_layers_match_independent_reference():
    """Post-LN layers are torch.nn.Transformer{Encoder,Decoder}Layer (norm_first=False) with fairseq's
    parameters; pre-LN ones norm_first=True.  Embeddings: sqrt(d) * E[x] + sinusoid(positions)."""
    for norm in ("post", "pre"):
        model = tiny(norm, d=32, heads=4, ffn=64, layers=1)
        d = 32
        src = random_tokens(2, 6, 50, 3, lengths=[6, 4])
        prev = random_tokens(2, 5, 50, 4)
        ref_layer = torch.nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True,
                                                     norm_first=norm == "pre").eval()
        ref_dec = torch.nn.TransformerDecoderLayer(d, 4, 64, dropout=0.0, batch_first=True,
                                                   norm_first=norm == "pre").eval()

        def copy_attn(dst, a):
            dst.in_proj_weight.data = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach()
            dst.in_proj_bias.data = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]).detach()
            dst.out_proj.weight.data, dst.out_proj.bias.data = a.out_proj.weight.detach(), a.out_proj.bias.detach()

        def copy_ln(dst, src_ln):
            dst.weight.data, dst.bias.data = src_ln.weight.detach(), src_ln.bias.detach()

        el, dl = model.encoder.layers[0], model.decoder.layers[0]
        copy_attn(ref_layer.self_attn, el.self_attn)
        ref_layer.linear1, ref_layer.linear2 = el.fc1, el.fc2
        copy_ln(ref_layer.norm1, el.self_attn_layer_norm)
        copy_ln(ref_layer.norm2, el.final_layer_norm)
        copy_attn(ref_dec.self_attn, dl.self_attn)
        copy_attn(ref_dec.multihead_attn, dl.encoder_attn)
        ref_dec.linear1, ref_dec.linear2 = dl.fc1, dl.fc2
        copy_ln(ref_dec.norm1, dl.self_attn_layer_norm)
        copy_ln(ref_dec.norm2, dl.encoder_attn_layer_norm)
        copy_ln(ref_dec.norm3, dl.final_layer_norm)

        table = torch.tensor(fairseq_sinusoid(64, d, PAD), dtype=torch.float32)
        emb = model.encoder.embed_tokens.weight
        with torch.no_grad():
            pos = torch.tensor([[2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 1, 1]])
            x = math.sqrt(d) * emb[src] + table[pos]
            x = x * src.ne(PAD).unsqueeze(-1)
            h = ref_layer(x, src_key_padding_mask=src.eq(PAD))
            if norm == "pre":
                h = model.encoder.layer_norm(h)
            enc = model.encode(src)
            valid = src.ne(PAD)
            torch.testing.assert_close(enc.out[valid], h[valid], atol=1e-5, rtol=1e-5)
            assert torch.equal(enc.padding_mask, src.eq(PAD))

            y = math.sqrt(d) * emb[prev] + table[torch.arange(2, 7)]
            causal = torch.triu(torch.full((5, 5), float("-inf")), 1)
            y = ref_dec(y, enc.out, tgt_mask=causal, memory_key_padding_mask=enc.padding_mask)
            if norm == "pre":
                y = model.decoder.layer_norm(y)
            torch.testing.assert_close(model.decode(prev, enc), y @ emb.T, atol=1e-5, rtol=1e-5)


def test_peri_ln_normalizes_input_and_output_of_every_sublayer():
    model = tiny("peri", layers=1)
    el, dl = model.encoder.layers[0], model.decoder.layers[0]
    with torch.no_grad():  # give the output norms non-trivial affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    src = random_tokens(2, 5, 50, 60, lengths=[5, 3])
    prev = random_tokens(2, 4, 50, 61)
    mask = src.eq(PAD)

    def ffn(layer, x):
        return layer.fc2(torch.relu(layer.fc1(x)))

    with torch.no_grad():
        x = model.encoder.embed_scale * model.encoder.embed_tokens(src) + model.encoder.embed_positions(src)
        x = x * (~mask).unsqueeze(-1)
        h = el.self_attn_layer_norm(x)
        x = x + el.self_attn_out_layer_norm(el.self_attn(h, h, key_padding_mask=mask))
        x = x + el.ffn_out_layer_norm(ffn(el, el.final_layer_norm(x)))
        x = model.encoder.layer_norm(x)
        enc = model.encode(src)
        torch.testing.assert_close(enc.out, x, atol=1e-5, rtol=0)

        y = model.decoder.embed_scale * model.decoder.embed_tokens(prev) + model.decoder.embed_positions(prev)
        h = dl.self_attn_layer_norm(y)
        causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
        y = y + dl.self_attn_out_layer_norm(dl.self_attn(h, h, attn_mask=causal))
        h = dl.encoder_attn_layer_norm(y)
        y = y + dl.encoder_attn_out_layer_norm(dl.encoder_attn(h, enc.out, key_padding_mask=mask))
        y = y + dl.ffn_out_layer_norm(ffn(dl, dl.final_layer_norm(y)))
        y = model.decoder.layer_norm(y)
        torch.testing.assert_close(model.decode(prev, enc), model.decoder.output_projection(y), atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["post", "pre", "peri"])
def test_incremental_decoding_matches_full_forward(norm):
    model = tiny(norm)
    src = random_tokens(3, 7, 50, 10, lengths=[7, 5, 3])
    prev = random_tokens(3, 6, 50, 11)
    prev[:, 0] = EOS
    with torch.no_grad():
        enc = model.encode(src)
        full = model.decode(prev, enc)
        cache = model.new_cache()
        steps = [model.decode(prev[:, t:t + 1], enc, cache) for t in range(6)]
        assert cache.length == 6 and cache.self_k[0].shape == (3, 4, 6, 8) and cache.cross_k[1].shape[2] == 7
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
        # several new positions at once (a forced prefix), then single steps
        cache = model.new_cache()
        chunked = [model.decode(prev[:, :3], enc, cache), model.decode(prev[:, 3:5], enc, cache),
                   model.decode(prev[:, 5:], enc, cache)]
        torch.testing.assert_close(torch.cat(chunked, dim=1), full, atol=1e-5, rtol=0)

        # reorder mid-way (beam search style: permute and duplicate rows), then continue
        cache = model.new_cache()
        for t in range(3):
            model.decode(prev[:, t:t + 1], enc, cache)
        order = torch.tensor([2, 0, 0, 1])
        cache.reorder(order)
        enc2 = reorder_encoder_out(enc, order)
        assert isinstance(enc2, EncoderOut) and enc2.out.shape[0] == 4
        new_prev = torch.cat([prev[order, :3], random_tokens(4, 3, 50, 12)], dim=1)
        tail = [model.decode(new_prev[:, t:t + 1], enc2, cache) for t in range(3, 6)]
        ref = model(src[order], new_prev)[:, 3:]
        torch.testing.assert_close(torch.cat(tail, dim=1), ref, atol=1e-5, rtol=0)


def test_cache_batch_mismatch_is_a_clear_error():
    model = tiny()
    src = random_tokens(2, 4, 50, 0)
    with torch.no_grad():
        enc = model.encode(src)
        cache = model.new_cache()
        model.decode(torch.full((2, 1), EOS), enc, cache)
        cache.reorder(torch.tensor([0, 1, 1]))
        with pytest.raises(ValueError, match="reorder"):
            model.decode(torch.full((2, 1), EOS), enc, cache)
    assert isinstance(cache, DecoderCache)


@pytest.mark.parametrize("left_pad", [False, True])
def test_padding_invariance(left_pad):
    model = tiny("post")
    long = random_tokens(1, 9, 50, 20)
    short = random_tokens(1, 4, 50, 21)
    batch = torch.full((2, 9), PAD)
    batch[0] = long[0]
    if left_pad:
        batch[1, 5:] = short[0]
    else:
        batch[1, :4] = short[0]
    prev = random_tokens(2, 5, 50, 22)
    with torch.no_grad():
        alone = model.encode(short)
        batched = model.encode(batch)
        sl = slice(5, 9) if left_pad else slice(0, 4)
        torch.testing.assert_close(batched.out[1, sl], alone.out[0], atol=1e-5, rtol=0)
        assert batched.padding_mask[1].sum() == 5 and not batched.padding_mask[0].any()
        torch.testing.assert_close(model.decode(prev[1:], EncoderOut(batched.out[1:], batched.padding_mask[1:])),
                                   model.decode(prev[1:], alone), atol=1e-5, rtol=0)
        # without the mask the padding would leak in: the test can tell
        unmasked = EncoderOut(batched.out[1:], torch.zeros_like(batched.padding_mask[1:]))
        assert not torch.allclose(model.decode(prev[1:], unmasked), model.decode(prev[1:], alone), atol=1e-3)


def test_fully_masked_rows_stay_finite():
    """fairseq's -inf masks give NaN for a query that sees no key; ours stay finite (and equal elsewhere)."""
    model = tiny("pre").train()
    src = random_tokens(2, 5, 50, 70, lengths=[5, 0])  # second sentence is all padding
    prev = random_tokens(2, 4, 50, 71, lengths=[4, 2], left_pad=True)  # left-padded decoder input
    logits = model(src, prev)
    assert torch.isfinite(logits).all()
    logits[0].sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_decoder_is_causal():
    model = tiny("pre")
    src = random_tokens(2, 6, 50, 30)
    prev = random_tokens(2, 7, 50, 31)
    changed = prev.clone()
    changed[:, 4] = (prev[:, 4] - 4 + 1) % 46 + 4
    with torch.no_grad():
        a, b = model(src, prev), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().amax(dim=-1).min() > 1e-4


# --------------------------------------------------------------------------- loss


def test_label_smoothed_loss_hand_computation():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.4, 0.1], [0.1, 0.2, 0.3, 0.4]])
    lprobs = probs.log()
    target = torch.tensor([0, 2, 1])
    eps = 0.1
    loss, nll = label_smoothed_nll_loss(lprobs, target, eps, ignore_index=1)
    # row 2 has target 1 == ignore_index: only rows 0 and 1 count
    nll_hand = -(math.log(0.7) + math.log(0.4))
    smooth_hand = -(sum(math.log(p) for p in (0.7, 0.1, 0.1, 0.1)) + sum(math.log(p) for p in (0.25, 0.25, 0.4, 0.1)))
    eps_i = eps / 3
    assert nll.item() == pytest.approx(nll_hand, rel=1e-6)
    assert loss.item() == pytest.approx((1 - eps - eps_i) * nll_hand + eps_i * smooth_hand, rel=1e-6)

    # epsilon = 0 is the plain NLL (summed); no ignore_index: every row counts
    loss0, nll0 = label_smoothed_nll_loss(lprobs, target, 0.0)
    ref = torch.nn.functional.nll_loss(lprobs, target, reduction="sum")
    assert loss0.item() == pytest.approx(ref.item(), rel=1e-6) and nll0.item() == pytest.approx(ref.item(), rel=1e-6)

    # ignored rows contribute exactly 0, whatever their log-probs; ignore_index may be outside the vocab
    lp2 = lprobs.clone()
    lp2[2] = torch.tensor([-50.0, -1.0, -7.0, -3.0])
    assert torch.equal(label_smoothed_nll_loss(lp2, target, eps, 1)[0], loss)
    t3 = torch.tensor([0, 2, -100])
    assert label_smoothed_nll_loss(lprobs, t3, eps, -100)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError):
        label_smoothed_nll_loss(lprobs, target[:2], eps)


# --------------------------------------------------------------------------- search


def test_greedy_equals_beam_of_one_and_scores_are_fairseq_scores():
    model = tiny("post", vocab=30, seed=5)
    src = random_tokens(4, 6, 30, 40, lengths=[6, 5, 3, 1])
    src[0, 5] = EOS
    greedy = greedy_search(model, src, max_len_a=1.0, max_len_b=4)
    for lenpen in (0.0, 1.0, 2.0):
        assert beam_search(model, src, beam=1, lenpen=lenpen, max_len_a=1.0, max_len_b=4) == greedy
    # batching does not change results (per-sentence max length, padding mask)
    assert [greedy_search(model, src[i:i + 1, : int(src[i].ne(PAD).sum())], 1.0, 4)[0] for i in range(4)] == greedy

    # n-best scores are sum(log p incl. eos) / len**lenpen, sorted best first
    nbest = beam_search_nbest(model, src, beam=3, lenpen=0.7, max_len_a=1.0, max_len_b=4)
    with torch.no_grad():
        for i, hyps in enumerate(nbest):
            assert len(hyps) == 3
            assert [h[0] for h in hyps] == sorted((h[0] for h in hyps), reverse=True)
            for score, toks in hyps:
                prev = torch.tensor([[EOS] + toks])
                lp = torch.log_softmax(model(src[i:i + 1], prev)[0].float(), -1)
                total = lp[torch.arange(len(toks) + 1), torch.tensor(toks + [EOS])].sum().item()
                assert score == pytest.approx(total / (len(toks) + 1) ** 0.7, abs=1e-4)
    assert not model.training


def _copy_batch(n, g, vocab=20):
    lengths = torch.randint(3, 7, (n,), generator=g)
    width = int(lengths.max()) + 1
    src = torch.full((n, width), PAD)
    prev = torch.full((n, width), PAD)
    tgt = torch.full((n, width), PAD)
    seqs = []
    for i, n_i in enumerate(lengths.tolist()):
        s = torch.randint(4, vocab, (n_i,), generator=g)
        seqs.append(s.tolist())
        src[i, :n_i], src[i, n_i] = s, EOS
        tgt[i, :n_i], tgt[i, n_i] = s, EOS
        prev[i, 0], prev[i, 1:n_i + 1] = EOS, s
    return src, prev, tgt, seqs


@pytest.fixture(scope="module")
def copy_model():
    """A tiny model trained for 300 steps (a few seconds) to copy its input."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=20, d_model=32, ffn_dim=64, heads=2, encoder_layers=1, decoder_layers=1,
                            dropout=0.0, norm="post", max_positions=64)
    model = TransformerModel(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        src, prev, tgt, _ = _copy_batch(64, g)
        lprobs = torch.log_softmax(model(src, prev).float(), dim=-1)
        loss, _ = label_smoothed_nll_loss(lprobs.view(-1, 20), tgt.view(-1), 0.1, ignore_index=PAD)
        opt.zero_grad()
        (loss / tgt.ne(PAD).sum()).backward()
        opt.step()
    torch.set_num_threads(old)
    return model


def test_beam_search_on_a_trained_copy_model(copy_model):
    src, _, _, seqs = _copy_batch(32, torch.Generator().manual_seed(99))
    beam_out = beam_search(copy_model, src, beam=4)
    greedy_out = greedy_search(copy_model, src)
    # one miss tolerated for floating-point differences between machines; untrained it is ~0 / 32
    assert sum(o == s for o, s in zip(beam_out, seqs)) >= 31
    assert sum(o == s for o, s in zip(greedy_out, seqs)) >= 31
    assert beam_search(copy_model, src[:1], beam=4) == [beam_out[0]]
    assert copy_model.training  # the caller's mode is restored


def test_search_never_emits_pad_or_bos_and_stops_at_max_len():
    model = tiny("peri", vocab=30, seed=7)
    src = random_tokens(3, 6, 30, 50, lengths=[6, 4, 2])
    orig = model.decode

    def boost(prev, enc, cache=None, *, idx):  # make some tokens overwhelmingly likely
        logits = orig(prev, enc, cache).clone()
        logits[..., idx] += 1e4
        return logits

    model.decode = lambda p, e, c=None: boost(p, e, c, idx=[PAD, BOS])
    for out in (greedy_search(model, src), beam_search(model, src, beam=3)):
        assert all(PAD not in h and BOS not in h and EOS not in h and len(h) >= 1 for h in out)
    # eos cannot come first (fairseq's min_len=1): an eos-loving model still emits one token
    model.decode = lambda p, e, c=None: boost(p, e, c, idx=[EOS])
    for out in (greedy_search(model, src), beam_search(model, src, beam=3)):
        assert [len(h) for h in out] == [1, 1, 1]

    def no_eos(prev, enc, cache=None):
        logits = orig(prev, enc, cache).clone()
        logits[..., EOS] -= 1e4
        return logits

    model.decode = no_eos
    for a, b in ((0.0, 5), (1.0, 2), (1.5, 0.5)):
        expected = [int(a * n + b) for n in (6, 4, 2)]  # per-sentence source length (non-pad tokens)
        for out in (greedy_search(model, src, a, b), beam_search(model, src, beam=2, max_len_a=a, max_len_b=b)):
            assert [len(h) for h in out] == expected
            assert all(EOS not in h and PAD not in h for h in out)
    model.decode = orig
    # without tampering, lengths still respect the bound
    assert all(len(h) <= 3 for h in beam_search(model, src, beam=4, max_len_a=0, max_len_b=3))


def test_search_argument_errors():
    model = tiny(vocab=10)
    src = random_tokens(1, 3, 10, 0)
    with pytest.raises(ConfigError):
        beam_search(model, src, beam=0)
    with pytest.raises(ConfigError):
        beam_search(model, src, beam=6)  # 2 * beam > vocab
    with pytest.raises(ConfigError):
        greedy_search(model, src[0])


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_model=100, heads=8), "divisible"),
    (dict(norm="sandwich"), "norm"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(ffn_dim=-1), "ffn_dim"),
    (dict(encoder_layers=0), "encoder_layers"),
    (dict(heads=0), "heads"),
    (dict(d_model=2, heads=1), "d_model"),
    (dict(max_positions=0), "max_positions"),
    (dict(dropout=1.0), "dropout"),
    (dict(pad_id=2), "distinct"),
    (dict(unk_id=64), "unk_id"),
    (dict(bos_id=-1), "bos_id"),
    (dict(d_model=512.0), "integer"),
])
def test_config_validation_errors(kwargs, message):
    base = dict(vocab_size=64, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1)
    base.update(kwargs)
    cfg = TransformerConfig(**base)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()
    with pytest.raises(ConfigError):
        TransformerModel.from_config(cfg)
    assert issubclass(ConfigError, ValueError)


def test_valid_config_and_model_config_attribute():
    cfg = TransformerConfig(vocab_size=64, d_model=32, heads=4, ffn_dim=64, encoder_layers=1, decoder_layers=1)
    cfg.validate()
    model = TransformerModel.from_config(cfg)
    assert model.config is cfg
    logits = model(random_tokens(2, 5, 64, 0), random_tokens(2, 3, 64, 1))
    assert logits.shape == (2, 3, 64)
