"""Quantization-aware training building blocks (ondevice.quant.fake_quant)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ondevice import bcq  # noqa: E402
from ondevice.errors import ConfigError  # noqa: E402
from ondevice.nmt.model import TransformerConfig, TransformerModel  # noqa: E402
from ondevice.quant.fake_quant import (BCQFakeQuant, alpha_parameters, apply_fake_quant, apply_plan,  # noqa: E402
                                       attach_optimizer, bcq_quantize_tensor, export_bcq, fake_quant_step,
                                       remove_fake_quant, to_alpha_tuning)
from ondevice.quant.plan import QuantPlan  # noqa: E402
from torch.nn.utils import parametrize  # noqa: E402

EOS, PAD = 2, 1
VOCAB = 100


def tiny_model(seed=0, **kw) -> TransformerModel:
    torch.manual_seed(seed)
    args = dict(vocab_size=VOCAB, d_model=16, ffn_dim=32, heads=2, encoder_layers=2, decoder_layers=1,
                dropout=0.0)
    args.update(kw)
    return TransformerModel(TransformerConfig(**args))


def mixed_plan(**kw) -> QuantPlan:
    d = dict(embedding={"ratio": 2, "bits": [4, 3, 2, 1]}, encoder_self_attn=[2, 3], encoder_ffn=2,
             decoder_self_attn=1, decoder_encoder_attn=3, decoder_ffn=2, method="greedy")
    d.update(kw)
    return QuantPlan.from_dict(d)


FREQS = np.random.default_rng(7).integers(0, 1000, VOCAB)


def batch(seed=0, b=4, t=6, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (b, t), generator=g)
    tgt = torch.randint(4, vocab, (b, t), generator=g)
    return src, tgt


def loss_fn(model, src, tgt):
    prev = torch.cat([torch.full((tgt.shape[0], 1), EOS), tgt[:, :-1]], dim=1)
    logits = model(src, prev)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))


def reference_quantized(model, assignment, plan) -> TransformerModel:
    """A plain copy of ``model`` whose assigned weights are replaced by bcq.quantize(...).dequantize()."""
    ref = copy.deepcopy(model)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, bits in assignment.items():
            w = params[name]
            r = bcq.quantize(w.detach().double().numpy(), bits, group_size=plan.group_size, method=plan.method,
                             offset=plan.offset)
            w.copy_(torch.from_numpy(r.dequantize()))
    return ref


def latent(model, name):
    mod = model.get_submodule(name.rsplit(".", 1)[0])
    return mod.parametrizations.weight.original if parametrize.is_parametrized(mod, "weight") else mod.weight


# --------------------------------------------------------------------------- tensor level


def test_bcq_quantize_tensor_reuses_bcq_math():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 24, generator=g)
    bits = torch.tensor([1, 2, 3, 4] * 10)
    for kw in (dict(method="greedy"), dict(method="alternating", group_size=8),
               dict(method="uniform", offset=True, group_size=16)):
        q = bcq_quantize_tensor(w, bits, **kw)
        ref = bcq.quantize(w.double().numpy(), bits.numpy(), **kw).dequantize()
        assert q.dtype == w.dtype and q.shape == w.shape and q.device == w.device
        assert torch.equal(q, torch.from_numpy(ref))
    q64 = bcq_quantize_tensor(w.double(), 2)
    assert q64.dtype == torch.float64
    assert torch.equal(q64, torch.from_numpy(bcq.quantize(w.double().numpy(), 2).dequantize()).double())
    assert not torch.equal(bcq_quantize_tensor(w, 2), w)


def test_fake_quant_module_dequantize_matches_numpy():
    w = torch.randn(37, 20, generator=torch.Generator().manual_seed(1))
    bits = np.array([1, 2, 3, 4, 2] * 7 + [3, 1])
    for kw in (dict(method="greedy"), dict(method="alternating", group_size=8, offset=True)):
        p = BCQFakeQuant(w, bits, **kw)
        ref = bcq.quantize(w.double().numpy(), bits, **kw)
        assert torch.equal(p(w), torch.from_numpy(ref.dequantize()))
        assert torch.equal(p.dequantize(), torch.from_numpy(ref.dequantize()))  # rebuilt from packed state
        r = p.result()
        assert np.array_equal(r.signs, ref.signs) and np.array_equal(r.alpha, ref.alpha)
        assert np.array_equal(r.row_bits, ref.row_bits) and r.group_size == ref.group_size
    with pytest.raises(ValueError):
        BCQFakeQuant(w, 5)
    with pytest.raises(ConfigError, match="refresh_every"):
        BCQFakeQuant(w, 2, refresh_every=0)


def test_float16_scales_are_what_training_sees():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    p = BCQFakeQuant(w, 3, method="greedy", offset=True, alpha_dtype="float16")
    r = bcq.quantize(w.double().numpy(), 3, method="greedy", offset=True)
    r16 = bcq.BCQResult(r.signs, r.alpha.astype(np.float16).astype(np.float32),
                        r.offset.astype(np.float16).astype(np.float32), r.row_bits, r.group_size)
    assert torch.equal(p(w), torch.from_numpy(r16.dequantize()))
    assert not torch.equal(p(w), torch.from_numpy(r.dequantize()))


# --------------------------------------------------------------------------- model level


def test_forward_equals_model_with_bcq_weights_and_ste_gradients():
    model = tiny_model()
    plan = mixed_plan()
    assignment = plan.assign(model, FREQS)
    ref = reference_quantized(model, assignment, plan)
    apply_plan(model, plan, FREQS)
    src, tgt = batch()
    out, ref_out = model(src, tgt), ref(src, tgt)
    assert torch.equal(out, ref_out)
    # encoder and incremental decoder paths use the quantized weights too
    enc, ref_enc = model.encode(src), ref.encode(src)
    assert torch.equal(enc.out, ref_enc.out)
    cache, ref_cache = model.new_cache(), ref.new_cache()
    step = torch.full((src.shape[0], 1), EOS)
    assert torch.equal(model.decode(step, enc, cache), ref.decode(step, ref_enc, ref_cache))
    # STE: the latent fp32 weight gets exactly the gradient w.r.t. the quantized weight
    loss_fn(model, src, tgt).backward()
    loss_fn(ref, src, tgt).backward()
    ref_params = dict(ref.named_parameters())
    for name in assignment:
        g = latent(model, name).grad
        assert g is not None and g.abs().sum() > 0, name
        torch.testing.assert_close(g, ref_params[name].grad, rtol=1e-5, atol=1e-7)
    for name, p in model.named_parameters():  # biases and norms train as usual
        if name.endswith(".bias") and p.grad is not None:
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-5, atol=1e-7)


def test_tied_embedding_is_quantized_once_and_stays_tied():
    model = tiny_model()
    ps = apply_plan(model, mixed_plan(), FREQS)
    assert "encoder.embed_tokens.weight" in ps and "decoder.output_projection.weight" not in ps
    enc, dec, out = model.encoder.embed_tokens, model.decoder.embed_tokens, model.decoder.output_projection
    assert enc.parametrizations.weight.original is out.parametrizations.weight.original
    assert enc.parametrizations.weight[0] is out.parametrizations.weight[0]
    assert torch.equal(enc.weight, out.weight) and dec is enc
    n_distinct = len({id(p) for p in model.parameters()})
    assert n_distinct == len(list(model.parameters()))
    remove_fake_quant(model)
    assert model.encoder.embed_tokens.weight is model.decoder.output_projection.weight
    assert isinstance(model.decoder.output_projection.weight, torch.nn.Parameter)


def test_untied_embeddings_get_their_own_parametrizations():
    model = tiny_model(share_all_embeddings=False)
    ps = apply_plan(model, mixed_plan(), FREQS)
    names = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.output_projection.weight"}
    assert names <= set(ps)
    assert len({id(ps[n]) for n in names}) == 3


@pytest.mark.parametrize("every", [1, 3])
def test_refresh_every_n_steps(every):
    model = tiny_model()
    ps = apply_plan(model, mixed_plan(), FREQS, refresh_every=every)
    p = ps["decoder.layers.0.fc1.weight"]
    emb = ps["encoder.embed_tokens.weight"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    attach_optimizer(model, opt)
    assert p.num_refreshes == 1 and int(p.quantized_at) == 0  # quantized when attached
    for step in range(10):
        before = p._q.clone()
        loss = loss_fn(model, *batch(step))
        expect_refresh = step > 0 and step % every == 0
        assert p.num_refreshes == 1 + step // every
        assert emb.num_refreshes == 1 + step // every  # shared by 3 modules, still once per refresh
        assert int(p.quantized_at) == every * (step // every)
        w = latent(model, "decoder.layers.0.fc1.weight")
        if expect_refresh:  # re-quantized from the current latent weight
            assert torch.equal(p._q, bcq_quantize_tensor(w, 2, method="greedy"))
        else:  # the cached quantization is used even though the latent weight moved
            assert torch.equal(p._q, before)
        opt.zero_grad()
        loss.backward()
        opt.step()  # the hook counts the step
        assert int(p.step) == step + 1
    assert not torch.equal(latent(model, "decoder.layers.0.fc1.weight"), bcq_quantize_tensor(w, 2, method="greedy"))


def toy_copy_batch(g, vocab=20, b=16, t=5):
    x = torch.randint(4, vocab, (b, t), generator=g)
    return x, x


def test_qat_2bit_reduces_loss_on_copy_task():
    model = tiny_model(seed=3, vocab_size=20, d_model=32, ffn_dim=64)
    apply_plan(model, QuantPlan.uniform(2, method="greedy"), refresh_every=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    attach_optimizer(model, opt)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = loss_fn(model, *toy_copy_batch(g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses


def test_alpha_tuning_changes_only_alpha():
    model = tiny_model()
    ps = apply_plan(model, mixed_plan(offset=True), FREQS, mode="alpha")
    latents = {n: latent(model, n).detach().clone() for n in ps}
    signs = {n: p.signs.clone() for n, p in ps.items()}
    alphas = {n: p.alpha.detach().clone() for n, p in ps.items()}
    offsets = {n: p.offset.clone() for n, p in ps.items()}
    params = alpha_parameters(model)
    assert len(params) == len(ps) and all(p.requires_grad for p in params)
    opt = torch.optim.Adam(params, lr=1e-2)
    for step in range(5):
        loss = loss_fn(model, *batch(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in ps.items():
        assert torch.equal(p.signs, signs[n]), n
        assert torch.equal(latent(model, n), latents[n]) and latent(model, n).grad is None, n
        assert not latent(model, n).requires_grad, n  # frozen: an optimizer over all parameters skips it
        assert torch.equal(p.offset, offsets[n]), n
        assert not torch.equal(p.alpha.detach(), alphas[n]), n
        # planes beyond a row's bits stay empty
        assert (p.alpha.detach()[~p.plane_mask] == 0).all(), n
    # the weight is sum_i alpha_i B_i + offset with the tuned alphas; export normalises alpha >= 0
    src, tgt = batch(9)
    out = model(src, tgt)
    res = export_bcq(model)
    assert all((r.alpha >= 0).all() for r in res.values())
    for n, r in res.items():
        assert torch.equal(torch.from_numpy(r.dequantize()), ps[n].dequantize().detach()), n
    remove_fake_quant(model, bake=True)
    assert torch.equal(model(src, tgt), out)
    assert all(p.requires_grad for p in model.parameters())


def test_to_alpha_tuning_keeps_the_current_quantization():
    model = tiny_model()
    apply_plan(model, mixed_plan(), FREQS, refresh_every=2)
    src, tgt = batch(1)
    before = model(src, tgt).detach()
    params = to_alpha_tuning(model)
    assert len(params) > 0 and torch.equal(model(src, tgt), before)
    loss_fn(model, src, tgt).backward()
    assert latent(model, "encoder.layers.0.fc1.weight").grad is None
    assert all(p.grad is not None for p in params)


@pytest.mark.parametrize("mode", ["ste", "alpha"])
def test_remove_fake_quant_bakes_the_quantized_weights(mode):
    model = tiny_model()
    plan = mixed_plan()
    assignment = plan.assign(model, FREQS)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_plan(model, plan, FREQS, mode=mode, refresh_every=5)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for step in range(3):  # the latent weights move away from the cached quantization
        loss = loss_fn(model, *batch(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        fake_quant_step(model)
    src, tgt = batch(5)
    out = model(src, tgt).detach()
    res = export_bcq(model)
    assert set(res) == set(assignment)
    baked = copy.deepcopy(model)
    remove_fake_quant(baked, bake=True)
    assert not any(parametrize.is_parametrized(m) for m in baked.modules())
    assert set(dict(baked.named_parameters())) == set(original)
    assert torch.equal(baked(src, tgt), out)
    params = dict(baked.named_parameters())
    for name, r in res.items():  # the export is exactly what was baked
        assert torch.equal(params[name], torch.from_numpy(r.dequantize())), name
        assert np.array_equal(r.row_bits, np.broadcast_to(assignment[name], r.row_bits.shape)), name
    assert baked.encoder.embed_tokens.weight is baked.decoder.output_projection.weight
    # bake=False gives back the latent weights
    remove_fake_quant(model, bake=False)
    latents = dict(model.named_parameters())
    if mode == "alpha":
        assert all(torch.equal(latents[n], original[n]) for n in assignment)
    else:
        assert not torch.equal(latents["decoder.layers.0.fc2.weight"], params["decoder.layers.0.fc2.weight"])


def test_state_dict_resume_is_identical():
    plan = mixed_plan()

    def run(model, opt, steps, start):
        losses = []
        for step in range(start, start + steps):
            loss = loss_fn(model, *batch(step))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    model = tiny_model()
    apply_plan(model, plan, FREQS, refresh_every=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    attach_optimizer(model, opt)
    run(model, opt, 4, 0)  # stop between two refreshes (last at step 3, next at 6)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    expected = run(model, opt, 5, 4)

    resumed = tiny_model(seed=123)  # different init: everything must come from the checkpoint
    apply_plan(resumed, plan, FREQS, refresh_every=3)
    opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    attach_optimizer(resumed, opt2)
    buf.seek(0)
    ck = torch.load(buf)
    resumed.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    assert run(resumed, opt2, 5, 4) == expected
    for (n, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n


def test_export_from_a_plain_model_and_errors():
    model = tiny_model()
    plan = mixed_plan()
    assignment = plan.assign(model, FREQS)
    res = export_bcq(model, assignment, method="greedy")
    params = dict(model.named_parameters())
    for name, bits in assignment.items():
        ref = bcq.quantize(params[name].detach().double().numpy(), bits, method="greedy")
        assert np.array_equal(res[name].dequantize(), ref.dequantize())
    with pytest.raises(ConfigError, match="nothing to export"):
        export_bcq(model)
    with pytest.raises(ConfigError, match="not the weight"):
        apply_fake_quant(model, {"encoder.layers.0.fc1.bias": 2})
    # an alias of the tied embedding is the same tensor
    ps = apply_fake_quant(model, {"decoder.output_projection.weight": 2}, method="greedy")
    assert list(ps) == ["encoder.embed_tokens.weight"]
    assert parametrize.is_parametrized(model.encoder.embed_tokens, "weight")
    with pytest.raises(ConfigError, match="already"):
        apply_fake_quant(model, {"encoder.embed_tokens.weight": 2})


def test_phases_quantize_blocks_incrementally():
    """Retraining in phases: quantize the embedding, then the encoder, then the decoder."""
    model = tiny_model()
    plan = mixed_plan()
    full = plan.assign(model, FREQS)
    ref = reference_quantized(model, full, plan)
    phases = [lambda n: "embed" in n, lambda n: n.startswith("encoder.layers"), lambda n: n.startswith("decoder")]
    done = {}
    for in_phase in phases:
        part = {n: b for n, b in full.items() if in_phase(n)}
        assert part and not set(part) & set(done)
        done.update(apply_fake_quant(model, part, method=plan.method))
    assert set(done) == set(full)
    from ondevice.quant import apply_fake_quant as lazily_imported
    assert lazily_imported is apply_fake_quant
    src, tgt = batch(2)
    assert torch.equal(model(src, tgt), ref(src, tgt))
