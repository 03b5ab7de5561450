"""The native speech-intent recognizer (``ondevice._core.Understander``, C++ ``ondevice::Understander``)
against onnxruntime on small random SLU exports (quantized with bit-planes, and fp32): logits, labels and
scores (joint decoding over the manifest's valid intents; per-slot arg max without them), input checks,
corrupt model directories, threads. The model architecture is the shipped one's;
only the sizes are small, so the exports take well under a second."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from ondevice import _core  # noqa: E402

SLOTS = ("action", "object", "location")


def _small_export(out: Path, quantized: bool) -> Path:
    from ondevice.quant.fake_quant import apply_fake_quant, export_bcq, remove_fake_quant
    from ondevice.slu.export import export_slu
    from ondevice.slu.model import SLUConfig, SpeechIntentModel
    from ondevice.slu.quantize import SLUQuantPlan, assignment, pack_results

    torch.manual_seed(0)
    cfg = SLUConfig(conv_channels=16, d_model=32, heads=2, ffn_dim=64, layers=1, vq_codewords=8,
                    max_frames=256).validate()
    m = SpeechIntentModel(cfg).eval()
    del m.bert.mlm, m.bert.kd_proj  # pre-training heads: not exported
    packed = None
    if quantized:
        counts = np.random.default_rng(0).integers(0, 1000, cfg.num_tokens)
        apply_fake_quant(m, assignment(m, SLUQuantPlan(method="greedy"), counts), method="greedy")
        packed = pack_results(export_bcq(m))
        remove_fake_quant(m, bake=True)
    export_slu(m, out, packed)
    return out


@pytest.fixture(scope="module")
def slu_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("slu")
    return {"quantized": _small_export(root / "q", True), "fp32": _small_export(root / "f", False)}


def _audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 + 400 * t) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _ort_logits(model_dir: Path, pcm: np.ndarray) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_dir / "understand.onnx"), so, providers=["CPUExecutionProvider"])
    outs = sess.run([f"{s}_logits" for s in SLOTS], {"audio": pcm[None]})
    return {s: o[0] for s, o in zip(SLOTS, outs)}


def _softmax(x):
    e = np.exp(np.asarray(x, np.float64) - np.max(x))
    return e / e.sum()


def _best_valid(result, manifest, intents=None):
    """The labels of the best valid intent for a result's logits, computed in numpy (as the Python API)."""
    from ondevice.slu.intents import best_valid_intent

    lp = {s: np.log(np.maximum(_softmax(result[s]["logits"]), 1e-300)) for s in SLOTS}
    best, _ = best_valid_intent(lp, manifest["intents"] if intents is None else intents, manifest["slots"])
    return {"action": best.action, "object": best.object, "location": best.location}


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))  # manifest.json has no checksum of its own
    return dst


@pytest.mark.parametrize("which", ["quantized", "fp32"])
def test_native_logits_equal_onnxruntime(slu_models, which):
    """The exact ("reference") bit-plane kernel to 1e-4, the default two-pass LUT kernel to 1e-2 relative."""
    d = slu_models[which]
    exact = _core.Understander(str(d), 1, "reference")
    fast = _core.Understander(str(d))
    manifest = json.loads((d / "manifest.json").read_text())
    lengths = [manifest["min_samples"], 8000, 16000 + 7, 41000]
    for k, n in enumerate(lengths):
        pcm = _audio(n / 16000, k)[:n]
        assert pcm.size == n
        want = _ort_logits(d, pcm)
        got, got_fast = exact.understand(pcm), fast.understand(pcm)
        assert list(got) == list(SLOTS)
        for s in SLOTS:
            logits = np.asarray(got[s]["logits"], np.float32)
            assert logits.shape == want[s].shape == (len(manifest["slots"][s]),)
            scale = max(1.0, float(np.abs(want[s]).max()))
            np.testing.assert_allclose(logits, want[s], atol=1e-4 * scale, rtol=0, err_msg=f"{which} n={n} {s}")
            np.testing.assert_allclose(got_fast[s]["logits"], want[s], atol=1e-2 * scale, rtol=0,
                                       err_msg=f"{which} lut16 n={n} {s}")
        # labels: the best of the manifest's valid intents; score: the label's softmax probability
        assert exact.joint_decoding and len(manifest["intents"]) == 31
        assert {s: got[s]["label"] for s in SLOTS} == _best_valid(got, manifest)
        for s in SLOTS:
            i = manifest["slots"][s].index(got[s]["label"])
            assert got[s]["score"] == pytest.approx(_softmax(got[s]["logits"])[i], abs=1e-6)
            assert 0 <= got[s]["score"] <= 1


def test_joint_decoding_over_the_manifest_intents(slu_models, tmp_path):
    src = slu_models["quantized"]
    manifest = json.loads((src / "manifest.json").read_text())
    u = _core.Understander(str(src), 1)
    assert u.joint_decoding and u.intents == [tuple(it) for it in manifest["intents"]]
    inputs = [_audio(0.4 + 0.5 * k, 30 + k) for k in range(4)] + [np.zeros(8000, np.float32)]
    # Without "intents" (an older export): each slot's arg max (first on ties).
    old = _core.Understander(str(_edited_copy(src, tmp_path / "old", lambda m: m.pop("intents"))), 1)
    assert not old.joint_decoding and old.intents == []
    argmax = []
    for pcm in inputs:
        r = old.understand(pcm)
        for s in SLOTS:
            i = int(np.argmax(r[s]["logits"]))
            assert r[s]["label"] == manifest["slots"][s][i]
            assert r[s]["score"] == pytest.approx(_softmax(r[s]["logits"])[i], abs=1e-6)
        argmax.append(tuple(r[s]["label"] for s in SLOTS))
        assert [r[s]["logits"] for s in SLOTS] == [u.understand(pcm)[s]["logits"] for s in SLOTS]
    # Every combination but the arg max ones: the best of the rest (never the arg max).
    rest = [[a, o, l] for a in manifest["slots"]["action"] for o in manifest["slots"]["object"]
            for l in manifest["slots"]["location"] if (a, o, l) not in argmax]
    np.random.default_rng(0).shuffle(rest)
    for name, valid in (("rest", rest), ("some", rest[::7]), ("one", rest[:1])):
        d = _edited_copy(src, tmp_path / name, lambda m, v=valid: m.update(intents=v))
        j = _core.Understander(str(d), 1)
        assert j.intents == [tuple(it) for it in valid]
        for pcm, am in zip(inputs, argmax):
            r = j.understand(pcm)
            labels = {s: r[s]["label"] for s in SLOTS}
            assert labels == _best_valid(r, manifest, valid), name
            assert tuple(labels.values()) != am
            for s in SLOTS:
                i = manifest["slots"][s].index(labels[s])
                assert r[s]["score"] == pytest.approx(_softmax(r[s]["logits"])[i], abs=1e-6)


def test_malformed_intents_are_format_errors(slu_models, tmp_path):
    src = slu_models["fp32"]
    a, o, l = (json.loads((src / "manifest.json").read_text())["slots"][s][0] for s in SLOTS)
    cases = {
        "empty": ([], "no intents"),
        "not a list": ({"x": 1}, "expected an array"),
        "key": (["activate_lights_none"], "expected an array"),
        "short": ([[a, o]], "3 labels"),
        "long": ([[a, o, l, l]], "3 labels"),
        "number": ([[a, 1, l]], "expected a string"),
        "label": ([[a, o, "no such room"]], "not one of the location labels"),
        "action": ([["no such action", o, l]], "not one of the action labels"),
        "duplicate": ([[a, o, l], [a, o, l]], "duplicate intent"),
    }
    from ondevice.onnx_export.errors import OnnxModelError
    from ondevice.understander import Understander

    for name, (intents, msg) in cases.items():
        d = _edited_copy(src, tmp_path / name.replace(" ", "_"), lambda m, v=intents: m.update(intents=v))
        for check in (True, False):
            with pytest.raises(_core.FormatError, match=msg) as e:
                _core.Understander(str(d), verify_checksums=check)
            assert str(d / "manifest.json") in str(e.value) and "/intents" in str(e.value)
        for backend in ("native", "onnxruntime"):
            with pytest.raises((OnnxModelError, _core.FormatError), match="intents"):
                Understander(d, threads=1, backend=backend)


def test_understander_properties_and_determinism(slu_models):
    d = slu_models["quantized"]
    u = _core.Understander(str(d), threads=2)
    manifest = json.loads((d / "manifest.json").read_text())
    assert u.sample_rate == 16000 and u.min_samples == manifest["min_samples"] and u.max_samples == 30 * 16000
    assert u.threads == 2 and _core.Understander(str(d)).threads >= 1  # 0: one per hardware thread
    for s in SLOTS:
        assert u.labels(s) == manifest["slots"][s]
    with pytest.raises(_core.ArgumentError, match="no slot"):
        u.labels("intent")
    pcm = _audio(1.2, 3)
    first = u.understand(pcm)
    for _ in range(3):
        assert u.understand(pcm) == first
    # float64 input is converted; the result is the same as float32's.
    assert u.understand(pcm.astype(np.float64)) == first
    # a short utterance's buffers stay pooled (bounded), so repeated calls allocate nothing new
    kept = u.pool_stats()
    assert 0 < kept["bytes_held"] <= _core.UNDERSTANDER_POOL_KEEP_BYTES
    u.understand(pcm)
    assert u.pool_stats()["heap_allocations"] == kept["heap_allocations"]


def test_understander_input_errors(slu_models):
    u = _core.Understander(str(slu_models["fp32"]), 1)
    lo, hi = u.min_samples, u.max_samples
    with pytest.raises(_core.ArgumentError, match=rf"audio too short: {lo - 1} samples, at least {lo} \(.* s\)"):
        u.understand(np.zeros(lo - 1, np.float32))
    with pytest.raises(_core.ArgumentError, match="audio too short: 0 samples"):
        u.understand(np.zeros(0, np.float32))
    with pytest.raises(_core.ArgumentError, match=rf"audio too long: {hi + 1} samples"):
        u.understand(np.zeros(hi + 1, np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        pcm = _audio(0.5, 1)
        pcm[100] = bad
        with pytest.raises(_core.ArgumentError, match="audio sample 100 is"):
            u.understand(pcm)
    with pytest.raises(TypeError):
        u.understand(np.zeros((2, 16000), np.float32))  # one utterance: a 1-D array
    assert set(u.understand(np.zeros(16000, np.float32))) == set(SLOTS)  # silence: the model's guess


def test_understander_rejects_corrupt_model_directories(slu_models, tmp_path):
    src = slu_models["quantized"]

    def copy(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    with pytest.raises(_core.FormatError):
        _core.Understander(str(tmp_path / "missing"))
    d = copy("flipped")
    w = bytearray((d / "weights.bin").read_bytes())
    w[len(w) // 2] ^= 1
    (d / "weights.bin").write_bytes(bytes(w))
    with pytest.raises(_core.FormatError, match="weights.bin: sha256 differs"):
        _core.Understander(str(d))
    d = copy("truncated")
    (d / "understand.onnx").write_bytes(b"not a model")
    for check in (True, False):
        with pytest.raises(_core.FormatError, match="understand.onnx"):
            _core.Understander(str(d), verify_checksums=check)

    def edited(name, edit):
        d = copy(name)
        m = json.loads((d / "manifest.json").read_text())
        edit(m)
        (d / "manifest.json").write_text(json.dumps(m))
        return str(d)

    cases = {
        "kind": (lambda m: m.update(model_kind="nmt-transformer"), "not a speech-intent model"),
        "rate": (lambda m: m.update(sample_rate=8000), "sample_rate 8000"),
        "unlisted": (lambda m: m.update(files=[f for f in m["files"] if f["path"] != "understand.onnx"]),
                     "not listed"),
        "slot": (lambda m: m["slots"].pop("location"), "missing key 'location'"),
        "extra slot": (lambda m: m["slots"].update(room=["a"]), "unknown slot 'room'"),
        "output": (lambda m: m["graphs"]["understand"].update(outputs=["action_logits", "object_logits", "x"]),
                   "no output 'x'"),
        "min": (lambda m: m.update(min_samples=0), "min_samples"),
        "labels": (lambda m: m["slots"].update(action=m["slots"]["action"][:-1]), None),
    }
    for name, (edit, msg) in cases.items():
        d = edited(name, edit)
        if msg is None:  # fewer labels than logits: found at run time, still a FormatError
            with pytest.raises(_core.FormatError, match="labels"):
                _core.Understander(d).understand(_audio(0.5, 0))
        else:
            with pytest.raises(_core.FormatError, match=msg):
                _core.Understander(d)


def test_understander_shared_by_threads_equals_sequential(slu_models):
    u = _core.Understander(str(slu_models["quantized"]), 1)
    inputs = [_audio(0.4 + 0.3 * i, i) for i in range(4)]
    want = [u.understand(x) for x in inputs]
    got: dict[int, list] = {}

    def work(t):
        got[t] = [u.understand(inputs[(k + t) % 4]) for k in range(8)]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in range(4):
        assert got[t] == [want[(k + t) % 4] for k in range(8)]


def test_public_understander_native_equals_onnxruntime_backend(slu_models):
    """ondevice.Understander(backend="native") (this binding) and backend="onnxruntime" agree."""
    from ondevice.understander import Understander

    d = slu_models["fp32"]
    native, reference = Understander(d, threads=1, backend="native"), Understander(d, threads=1, backend="onnxruntime")
    manifest = json.loads((d / "manifest.json").read_text())
    for k in range(3):
        pcm = _audio(0.7 + 0.5 * k, 10 + k)
        a, b = native.understand(pcm, 16000), reference.understand(pcm, 16000)
        for s in SLOTS:
            np.testing.assert_allclose(a.logits[s], b.logits[s], atol=1e-4)
            np.testing.assert_allclose(a.scores[s], b.scores[s], atol=1e-4)
        assert a.key == b.key
        assert [a.action, a.object, a.location] in manifest["intents"]


@pytest.mark.parametrize("variant", ["no intents", "restricted intents"])
def test_public_understander_backends_agree_on_other_intent_lists(slu_models, tmp_path, variant):
    """An older export without "intents" (the runtime's arg max, decoded over FSC's 31 in Python) and a
    manifest with its own list (decoded by the runtime): both backends give the same labels."""
    from ondevice.slu.intents import INTENTS
    from ondevice.understander import Understander

    if variant == "no intents":
        edit, valid = (lambda m: m.pop("intents")), [[i.action, i.object, i.location] for i in INTENTS]
    else:
        valid = json.loads((slu_models["fp32"] / "manifest.json").read_text())["intents"][::3]
        edit = lambda m: m.update(intents=valid)  # noqa: E731
    d = _edited_copy(slu_models["fp32"], tmp_path / "m", edit)
    native, reference = Understander(d, threads=1, backend="native"), Understander(d, threads=1, backend="onnxruntime")
    assert native._native.joint_decoding == (variant != "no intents")
    for k in range(6):
        pcm = _audio(0.5 + 0.3 * k, 40 + k)
        a, b = native.understand(pcm, 16000), reference.understand(pcm, 16000)
        assert a.key == b.key and [a.action, a.object, a.location] in valid


@pytest.mark.parametrize("rates", [(16000, 15000), (16000, 17000), (16000, 12000), (16000, 24000), (44100, 16000),
                                   (8000, 16000)])
def test_native_resample_equals_python(rates):
    """The C++ resampler (the speed ensemble's) computes ondevice.slu.audio.resample's samples, odd lengths too."""
    from ondevice.slu.audio import resample

    rng = np.random.default_rng(rates[1])
    for n in (1, 2, 37, 1001, 16007):
        x = (0.5 * rng.standard_normal(n)).astype(np.float32)
        want = resample(x, *rates)
        got = np.asarray(_core.resample(x, *rates), np.float32)
        assert got.shape == want.shape == (-(-n * rates[1] // rates[0]),)
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0, err_msg=f"{rates} n={n}")
    assert _core.resample(np.zeros(0, np.float32), *rates) == []
    with pytest.raises(_core.ArgumentError, match="positive"):
        _core.resample(np.ones(4, np.float32), 0, 16000)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


def test_speed_ensemble_is_the_mean_log_softmax_of_resampled_runs(slu_models, tmp_path):
    """With "ensemble_rates", each slot's logits are the mean over the rates of the log-softmax of the
    graph run on the audio resampled to that rate; copies too long for the model are left out; the
    option off gives the plain run; both public backends compute the same."""
    from ondevice.slu.audio import resample
    from ondevice.understander import Understander

    rates = [15000, 16000, 17000]
    d = _edited_copy(slu_models["fp32"], tmp_path / "ens", lambda m: m.update(ensemble_rates=rates, max_seconds=1.0))
    manifest = json.loads((d / "manifest.json").read_text())
    native = _core.Understander(str(d), 1, "reference")
    single = _core.Understander(str(d), 1, "reference", speed_ensemble=False)
    assert native.ensemble_rates == rates and native.speed_ensemble and not single.speed_ensemble
    for k, n in enumerate([8000, 16000 + 7 - 7, 12345]):  # 16000 samples: the 17000 Hz copy is too long
        pcm = _audio(n / 16000, 70 + k)[:n]
        used = [r for r in rates if len(resample(pcm, 16000, r)) <= 16000]
        assert (n == 16000) == (17000 not in used)
        runs = [_ort_logits(d, resample(pcm, 16000, r).astype(np.float32)) for r in used]
        got, plain = native.understand(pcm), single.understand(pcm)
        for s in SLOTS:
            want = np.mean([_log_softmax(r[s]) for r in runs], axis=0)
            np.testing.assert_allclose(got[s]["logits"], want, atol=1e-4, err_msg=f"n={n} {s}")
            np.testing.assert_allclose(plain[s]["logits"], runs[used.index(16000)][s], atol=1e-4)
        assert {s: got[s]["label"] for s in SLOTS} == _best_valid(got, manifest)
    a, b = Understander(d, threads=1), Understander(d, threads=1, backend="onnxruntime")
    assert a.ensemble_rates == b.ensemble_rates == rates
    assert Understander(d, threads=1, backend="onnxruntime", speed_ensemble=False).ensemble_rates == [16000]
    for k in range(3):
        pcm = _audio(0.5 + 0.2 * k, 80 + k)
        x, y = a.understand(pcm, 16000), b.understand(pcm, 16000)
        for s in SLOTS:
            np.testing.assert_allclose(x.logits[s], y.logits[s], atol=1e-3)
        assert x.key == y.key


@pytest.mark.parametrize("rates,msg", [([], "16000"), ([16000, 16000], "duplicate"), ([15000], "16000"),
                                       ([16000, 30000], "outside"), ("16000", "expected an array"),
                                       ([16000, 15000.5], "integer")])
def test_malformed_ensemble_rates_are_format_errors(slu_models, tmp_path, rates, msg):
    from ondevice.onnx_export.errors import OnnxModelError
    from ondevice.understander import Understander

    d = _edited_copy(slu_models["fp32"], tmp_path / "m", lambda m: m.update(ensemble_rates=rates))
    with pytest.raises(_core.FormatError, match=msg) as e:
        _core.Understander(str(d))
    assert "ensemble_rates" in str(e.value)
    with pytest.raises(OnnxModelError, match="ensemble_rates"):
        Understander(d, threads=1, backend="onnxruntime")


def _with_nan_action_bias(src: Path, dst: Path) -> Path:
    """A copy whose action-head bias holds a NaN, with the manifest's size and sha256 updated: a model
    that loads (its checksums match) but computes non-finite logits, as a corrupt export would."""
    import hashlib

    import onnx

    shutil.copytree(src, dst)
    graph = onnx.load(str(dst / "understand.onnx"), load_external_data=False)
    bias = next(t for t in graph.graph.initializer if t.name.endswith("heads.action.bias"))
    offset = int({e.key: e.value for e in bias.external_data}["offset"])
    w = bytearray((dst / "weights.bin").read_bytes())
    w[offset:offset + 4] = np.array([np.nan], "<f4").tobytes()
    (dst / "weights.bin").write_bytes(bytes(w))
    m = json.loads((dst / "manifest.json").read_text())
    for f in m["files"]:
        if f["path"] == "weights.bin":
            f["size"], f["sha256"] = len(w), hashlib.sha256(w).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_public_understander_errors_are_typed(slu_models, tmp_path):
    """Whatever goes wrong reaches a Python user as an OndeviceError subclass on both backends:
    corrupt files and non-finite model output as OnnxModelError, bad audio as AudioError starting
    with its source, never the binding's own exception types or an AttributeError."""
    from ondevice.errors import AudioError, ConfigError, OndeviceError
    from ondevice.onnx_export.errors import OnnxModelError
    from ondevice.understander import Understander

    assert issubclass(_core.Error, RuntimeError) and not issubclass(_core.FormatError, _core.Error)
    src = slu_models["quantized"]
    flipped = tmp_path / "flipped"
    shutil.copytree(src, flipped)
    w = bytearray((flipped / "weights.bin").read_bytes())
    w[len(w) // 2] ^= 1
    (flipped / "weights.bin").write_bytes(bytes(w))
    with pytest.raises(OnnxModelError, match="weights.bin: sha256 differs"):
        Understander(flipped, threads=1)

    nan = _with_nan_action_bias(src, tmp_path / "nan")
    with pytest.raises(_core.FormatError, match="non-finite action logit"):
        _core.Understander(str(nan), 1).understand(_audio(0.5, 0))
    for backend in ("native", "onnxruntime"):
        with pytest.raises(OnnxModelError, match=r"non-finite action logit \(nan\).*corrupt"):
            Understander(nan, threads=1, backend=backend).understand(_audio(0.5, 0))

    edits = {
        "slots list": (lambda m: m.update(slots=[["a"]]), "'slots' must map"),
        "slots null": (lambda m: m.update(slots=None), "'slots' must map"),
        "no understand graph": (lambda m: m.update(graphs={}), "'understand' graph"),
        "min null": (lambda m: m.update(min_samples=None), "min_samples must be a whole number"),
        "min text": (lambda m: m.update(min_samples="abc"), "min_samples must be a whole number"),
        "max text": (lambda m: m.update(max_seconds="x"), "max_seconds must be a number"),
    }
    for name, (edit, msg) in edits.items():
        d = _edited_copy(src, tmp_path / name.replace(" ", "_"), edit)
        for backend in ("native", "onnxruntime"):
            with pytest.raises(OnnxModelError, match=msg):
                Understander(d, threads=1, backend=backend)

    for backend in ("native", "onnxruntime"):
        u = Understander(src, threads=1, backend=backend)
        lo = u.manifest["min_samples"]
        with pytest.raises(AudioError, match=rf"^audio: audio too short: {lo - 100} samples at 16 kHz"):
            u.understand(_audio((lo - 100) / 16000, 1))
        with pytest.raises(AudioError, match=r"^audio: 1 sample\(s\) beyond \+-2\^31"):
            u.understand(np.concatenate([_audio(0.5, 1), [3e38]]).astype(np.float32))
        loud = u.understand(_audio(0.5, 2) * np.float32(2.0 ** 31))
        assert loud.key == u.understand(_audio(0.5, 2)).key  # the level normalisation: same answer
    with pytest.raises(_core.ArgumentError, match=r"audio sample 3 is 3e\+38, beyond \+-2\^32"):
        _core.Understander(str(src), 1).understand(np.array([0.1] * 3 + [3e38] + [0.1] * 8000, np.float32))
    for threads in (-1, 1025, 10 ** 11):
        with pytest.raises(ConfigError, match=r"threads must be an integer in 0\.\.1024"):
            Understander(src, threads=threads)
    with pytest.raises(OndeviceError):
        Understander(tmp_path / "missing")
