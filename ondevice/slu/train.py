"""`ondevice train slu`: the whole SLU recipe as resumable stages in one run directory.

    vq        vq-wav2vec contrastive pre-training of the feature encoder, k-means VQ  -> tokenizer.pt
    dereverb  only with ``dereverb_steps`` > 0: the front end retrained so that training utterances
              through the corpus's reverb give their dry tokens (slu/dereverb.py)      -> tokenizer.pt
              (the vq stage's kept as tokenizer_vq.pt)
    tokens    every split tokenized by the frozen tokenizer                            -> tokens.npz
    bert      masked-span pre-training of the BERT on the training tokens             -> bert_mlm.pt
    teacher   text teacher (the NMT model's pre-trained encoder) fine-tuned on the
              training transcripts                                                    -> teacher.pt
    kd1       stage-1 KD: the BERT's [CLS] regressed onto the teacher's utterance
              vector on paired audio/transcripts (no labels)                          -> bert_kd1.pt
    finetune  the four fine-tunings of the ablation (no KD / stage 1 / stage 2 / both)
              and their held-out accuracies; the training split's speed copies
              (``speed_copies``) are tokenized first                 -> tokens_speed.npz, ft_*.pt/json, ablation.json
    quantize  mixed-precision BCQ of the chosen variant: front end quantized, corpus re-tokenized,
              BERT retrained with fake quantization; exported to ONNX                 -> onnx/, quantized.json

A stage whose output exists is skipped, so an interrupted run continues where it stopped
(the vq stage also resumes mid-way from its checkpoint).  Outputs are written atomically.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from ..translator import MAX_THREADS
from .dataset import load_split
from .model import SLUConfig

STAGES = ("vq", "dereverb", "tokens", "bert", "teacher", "kd1", "finetune", "quantize")
KD_LOGIT_VARIANTS = ("stage2", "both")  # the fine-tunings with stage-2 KD (L1 to the teacher's logits)


@dataclass
class SLUTrainConfig:
    corpus: str = "data/slu"
    out: str = "runs/slu"
    model: dict = field(default_factory=dict)
    vq_steps: int = 2000
    vq_batch: int = 16
    dereverb_steps: int = 0       # > 0: the dereverb stage's steps (reverb-invariant front end, slu/dereverb.py)
    dereverb_pairs: int = 4000    # dry training utterances paired with a reverberant copy for it
    bert_steps: int = 2000
    teacher_epochs: int = 30
    kd1_steps: int = 1500
    finetune_epochs: int = 6
    finetune_lr: float = 1e-3
    finetune_cycles: int = 1      # the fine-tuning schedule (finetune_epochs) run this many times in a row, each
    #                               cycle from the previous one's best weights (warm restarts; docs/slu-model.md)
    finetune_from: str = ""       # a fine-tuned checkpoint (a run's ft_*.pt) every variant continues from, with
    #                               its schedule restarted (warm restart), instead of the MLM/stage-1 BERT
    finetune_average: int = 0     # > 0: also the mean weights of each cycle's last this many epochs (SWA), kept
    #                               when they validate better than the best epoch (distill.finetune's average_last)
    warp: float = 0.15            # time-warp augmentation while fine-tuning (distill.time_warp)
    kd_weight: float = 0.1        # stage-2 L1(student, teacher logits) weight (1.0 drowned the CE: docs/slu-model.md)
    variants: tuple = ("none", "stage1", "stage2", "both")
    teacher: str = "models/nmt-en-de"  # the pre-trained text encoder (a training or shipped NMT model dir)
    ship_variant: str = "both"    # the fine-tuning that is quantized and exported
    quant_plan: dict = field(default_factory=dict)  # SLUQuantPlan fields
    front_qat_steps: int = 400   # front-end retraining towards the fp32 tokens (quantize.retrain_front_end)
    front_qat_lr: float = 3e-5
    qat_epochs: int = 3
    ensemble_rates: tuple = (15000, 16000, 17000)  # the export's speed ensemble (understander.py); () for none
    reverb_copies: int = 0        # training utterances also tokenized this many times, each in a random synthetic
    #                               room (ondevice/slu/reverb.py); drawn like the speed copies
    speed_copies: tuple = (15000, 17000)  # training utterances also tokenized at these rates, read as 16 kHz
    #                                       (speed perturbation); fine-tuning and QAT draw one version each time
    transfer: str = ""            # a transfer set (`ondevice data slu-transfer`): unlabelled sentences whose teacher
    #                               slot distributions fine-tuning and QAT also match (distill.transfer_loss)
    transfer_weight: float = 1.0
    transfer_batch: int = 16      # transfer sentences per fine-tuning step (beside the batch of 32 commands)
    transfer_target: str = "logits"  # "logits": the fine-tuned teacher's slot distributions (KL); "encoder": the
    #                               pre-trained text encoder's vectors (stage-1 MSE), for the commands too
    qat_lr: float = 3e-4
    qat_refresh_every: int = 8
    limit: int | None = None      # utterances per split (tests and smoke runs)
    threads: int = 0
    seed: int = 0


def save_torch(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


class Run:
    """The run directory: config, log, stage outputs."""

    def __init__(self, cfg: SLUTrainConfig):
        self.cfg = cfg
        self.dir = Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model_cfg = SLUConfig.from_dict(cfg.model) if cfg.model else SLUConfig().validate()
        self._log = open(self.dir / "train.log", "a", encoding="utf-8")
        self._splits: dict[str, Any] = {}

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
        self._log.write(msg + "\n")
        self._log.flush()

    def split(self, name: str):
        if name not in self._splits:
            self._splits[name] = load_split(self.cfg.corpus, name, limit=self.cfg.limit)
        return self._splits[name]

    def path(self, name: str) -> Path:
        return self.dir / name


def stage_vq(run: Run) -> None:
    from .pretrain import pretrain_tokenizer

    out = run.path("tokenizer.pt")
    if out.exists():
        return
    ckpt = run.path("tokenizer.ckpt")
    state = load_torch(ckpt) if ckpt.exists() else None
    tok = pretrain_tokenizer(run.split("train"), run.model_cfg, steps=run.cfg.vq_steps, batch=run.cfg.vq_batch,
                             seed=run.cfg.seed, log=run.log, state=state,
                             checkpoint=lambda s: save_torch(ckpt, s))
    save_torch(out, {"config": run.model_cfg.to_dict(), "encoder": tok.encoder.state_dict(),
                     "vq_logits": tok.vq_logits.state_dict()})


DEREVERB_VALID_PAIRS = 150  # validation pairs the dereverb stage measures token agreement on


def _dry_mask(run: Run, split: str) -> np.ndarray:
    """Utterances of ``split`` the corpus rendered without augmentation (its manifest's kind "clean")."""
    from .dataset import read_manifest

    rows = read_manifest(Path(run.cfg.corpus) / f"{split}.jsonl")[: run.cfg.limit]
    return np.array([(r.get("augmentation") or {}).get("kind") == "clean" for r in rows], dtype=bool)


def stage_dereverb(run: Run) -> None:
    """Retrain the vq stage's front end to be reverb-invariant (:mod:`.dereverb`); the original is
    kept as tokenizer_vq.pt and the result records what it measured under the key "dereverb"."""
    from .dereverb import reverb_pairs, token_agreement, train_dereverb

    if run.cfg.dereverb_steps == 0:
        return
    path = run.path("tokenizer.pt")
    if not path.is_file():
        raise ConfigError(f"the dereverb stage retrains {path}: run the vq stage first (or copy a tokenizer.pt in)")
    state = load_torch(path)
    if "dereverb" in state:
        done = state["dereverb"]
        if (done.get("steps"), done.get("requested_pairs")) != (run.cfg.dereverb_steps, run.cfg.dereverb_pairs):
            run.log(f"dereverb: {path} was already retrained ({done.get('steps')} steps on {done.get('pairs')} "
                    f"pairs); kept (remove it and restore tokenizer_vq.pt to retrain with these settings)")
        return
    # The tokens must come from the tokenizer; BERT checkpoints made on the old tokens may be reused on
    # purpose (fine-tuning continued on the new tokens, as experiments/slu-dereverb did).
    if run.path("tokens.npz").exists():
        raise ConfigError(f"{run.path('tokens.npz')} was made by the tokenizer before the dereverb stage: remove "
                          "it, or run without dereverb_steps")
    teacher = load_tokenizer(path)
    dry, wet = reverb_pairs(run.split("train"), _dry_mask(run, "train"), run.cfg.dereverb_pairs, run.cfg.seed)
    v_dry, v_wet = reverb_pairs(run.split("valid"), _dry_mask(run, "valid"), DEREVERB_VALID_PAIRS,
                                run.cfg.seed + 1)
    student = train_dereverb(teacher, dry, wet, run.cfg.dereverb_steps, seed=run.cfg.seed, log=run.log)
    # measured on validation pairs (None when the validation split has no dry utterance)
    measured = {"steps": run.cfg.dereverb_steps, "requested_pairs": run.cfg.dereverb_pairs, "pairs": len(dry),
                "valid_pairs": len(v_dry),
                "wet_to_dry_before": token_agreement(teacher, teacher, v_wet, v_dry),
                "wet_to_dry": token_agreement(student, teacher, v_wet, v_dry),
                "dry_kept": token_agreement(student, teacher, v_dry, v_dry)}
    run.log(f"dereverb: {json.dumps(measured)}")
    save_torch(run.path("tokenizer_vq.pt"), state)
    save_torch(path, {**state, "encoder": student.encoder.state_dict(), "vq_logits": student.vq_logits.state_dict(),
                      "dereverb": measured})


def load_tokenizer(path: Path):
    from .model import SpeechTokenizer

    d = load_torch(path)
    cfg = SLUConfig.from_dict(d["config"])
    tok = SpeechTokenizer(cfg)
    tok.encoder.load_state_dict(d["encoder"])
    tok.vq_logits.load_state_dict(d["vq_logits"])
    return tok.eval()


def stage_tokens(run: Run) -> None:
    from .pretrain import tokenize_split

    out = run.path("tokens.npz")
    if out.exists():
        return
    tok = load_tokenizer(run.path("tokenizer.pt"))
    seqs = {}
    for split in ("train", "valid", "test"):
        seqs[split] = tokenize_split(tok.tokenize, run.split(split), run.model_cfg)
        lens = [len(s) for s in seqs[split]]
        counts = np.bincount(np.concatenate(seqs[split]).astype(np.int64) if lens else np.zeros(0, np.int64),
                             minlength=run.model_cfg.num_tokens)
        run.log(f"tokens {split}: {len(lens)} utterances, {sum(lens)} frames, "
                f"{int((counts > 0).sum())} distinct tokens of {run.model_cfg.num_tokens}")
    write_tokens(out, seqs)


def write_tokens(path: Path, seqs: dict[str, list[np.ndarray]], extra: dict[str, np.ndarray] | None = None) -> None:
    """``{name: token sequences}`` as one .npz (``{name}_tokens`` concatenated, ``{name}_offsets``),
    plus the ``extra`` arrays as they are."""
    arrays = {}
    for name, s in seqs.items():
        lens = np.array([len(x) for x in s], dtype=np.int64)
        arrays[f"{name}_tokens"] = np.concatenate(s).astype(np.int16) if s else np.zeros(0, np.int16)
        arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(lens)])
    arrays.update(extra or {})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_tokens(path: Path, split: str) -> list[np.ndarray]:
    with np.load(path) as z:
        t, o = z[f"{split}_tokens"], z[f"{split}_offsets"]
    return [t[o[i]:o[i + 1]].astype(np.int64) for i in range(len(o) - 1)]


def check_speed_copies(rates: Any) -> list[int]:
    """``speed_copies``: distinct integer rates in the speed ensemble's range, 16 kHz excluded (that
    version is the utterance itself); ConfigError otherwise."""
    from ..understander import ENSEMBLE_MAX_RATE, ENSEMBLE_MIN_RATE
    from .model import SAMPLE_RATE

    if not isinstance(rates, (list, tuple)) or any(isinstance(r, bool) or not isinstance(r, int) for r in rates):
        raise ConfigError(f"speed_copies: a list of integer sample rates, got {rates!r}")
    if (any(not ENSEMBLE_MIN_RATE <= r <= ENSEMBLE_MAX_RATE or r == SAMPLE_RATE for r in rates)
            or len(set(rates)) != len(rates)):
        raise ConfigError(f"speed_copies: distinct rates in {ENSEMBLE_MIN_RATE}..{ENSEMBLE_MAX_RATE} other than "
                          f"{SAMPLE_RATE}, got {list(rates)}")
    return [int(r) for r in rates]


def speed_copies(run: Run, tokenize, cache: str | None) -> list[list[np.ndarray]]:
    """The training split's tokens at each of ``speed_copies``' rates (:func:`tokenize_split`'s
    ``rate``), by ``tokenize``.  With ``cache`` (the fp32 tokenizer's copies), they are kept in the
    run directory under that name, stamped with the tokenizer file's sha256 and the split's size:
    a copy from another tokenizer (a re-run ``vq`` stage, a file copied between runs) would train
    on another codebook's ids without any error, so a stamp that differs means tokenizing again."""
    rates = check_speed_copies(run.cfg.speed_copies)
    return _tokenized_copies(run, cache, {f"train@{r}": dict(rate=r) for r in rates}, tokenize)


def reverb_copies(run: Run, tokenize, cache: str | None) -> list[list[np.ndarray]]:
    """The training split's tokens in ``reverb_copies`` random rooms each (reverb.reverb_transform,
    seeded by the run's seed), by ``tokenize``; cached and stamped as :func:`speed_copies`' are."""
    from .model import SAMPLE_RATE
    from .reverb import reverb_transform

    n = run.cfg.reverb_copies
    variants = {f"train@reverb{k}": dict(label=f"in room {k + 1}/{n}",
                                        transform=reverb_transform(run.cfg.seed, k, SAMPLE_RATE))
                for k in range(n)}
    return _tokenized_copies(run, cache, variants, tokenize, source=f"reverb/1 seed {run.cfg.seed}")


def _tokenized_copies(run: Run, cache: str | None, variants: dict[str, dict], tokenize,
                      source: str = "") -> list[list[np.ndarray]]:
    """The training split tokenized once per variant (``tokenize_split`` keyword arguments by cache
    key), through the run's token cache (:func:`_cached_tokens`); [] without variants."""
    from .pretrain import tokenize_split

    if not variants:
        return []
    train = run.split("train")
    keys = list(variants)
    path, stamp, found = _cached_tokens(run, cache, len(train), keys, source=source)
    if found is not None:
        return [found[k] for k in keys]
    seqs = {k: tokenize_split(tokenize, train, run.model_cfg, **variants[k]) for k in keys}
    if path is not None:
        write_tokens(path, seqs, {"source": np.array(stamp)})
    return [[s.astype(np.int64) for s in seqs[k]] for k in keys]


def _cached_tokens(run: Run, cache: str | None, size: int, keys: list[str],
                   source: str = "") -> tuple[Path | None, str, dict[str, list[np.ndarray]] | None]:
    """(cache path, stamp, the cached ``keys``' tokens or None) of a token cache in the run
    directory, stamped with the tokenizer file's sha256, the tokenized set's size and ``source``
    (what else identifies the set: the transfer set's manifest digest)."""
    if not cache:
        return None, "", None
    path = run.path(cache)
    stamp = " ".join(filter(None, [hashlib.sha256(run.path("tokenizer.pt").read_bytes()).hexdigest(), str(size), source]))
    if path.exists():
        with np.load(path) as z:
            have = set(z.files)
            same = "source" in have and str(z["source"]) == stamp
        if same and all(f"{k}_tokens" in have for k in keys):
            return path, stamp, {k: read_tokens(path, k) for k in keys}
    return path, stamp, None


def transfer_set(run: Run, tokenize, cache: str | None) -> tuple[list[np.ndarray], torch.Tensor] | None:
    """(token sequences by ``tokenize``, targets) of the transfer set named by ``transfer``, or
    None.  Targets (``transfer_target``): the run's teacher's slot logits, or the pre-trained text
    encoder's vectors (:func:`encoder_vectors`).  With ``cache`` the tokens are kept in the run
    directory, stamped as :func:`speed_copies`' are."""
    from .dataset import load_split
    from .distill import TextTeacher, teacher_outputs
    from .pretrain import tokenize_split
    from .transfer import SPLIT

    if not run.cfg.transfer:
        return None
    sp = load_split(run.cfg.transfer, SPLIT, labelled=False)
    if run.cfg.transfer_target == "encoder":
        logits = encoder_vectors(run, sp.transcripts)
    else:
        encoder, tokenizer, pad_id, d_model = _teacher_parts(run)
        teacher = TextTeacher(encoder, d_model)
        teacher.load_state_dict(load_torch(run.path("teacher.pt"))["teacher"])
        teacher.eval()
        _, logits = teacher_outputs(teacher, tokenizer, pad_id, sp.transcripts)
    manifest = hashlib.sha256((Path(run.cfg.transfer) / f"{SPLIT}.jsonl").read_bytes()).hexdigest()
    path, stamp, found = _cached_tokens(run, cache, len(sp), [SPLIT], source=manifest)
    if found is not None:
        return found[SPLIT], logits
    seqs = tokenize_split(tokenize, sp, run.model_cfg)
    if path is not None:
        write_tokens(path, {SPLIT: seqs}, {"source": np.array(stamp)})
    run.log(f"transfer set {run.cfg.transfer}: {len(seqs)} sentences, {sum(len(x) for x in seqs)} frames")
    return [x.astype(np.int64) for x in seqs], logits


def transfer_summary(cfg: SLUTrainConfig, transfer: tuple | None = None) -> dict | None:
    """What a result file records of the transfer setting (None without one)."""
    if not cfg.transfer:
        return None
    return {"set": cfg.transfer, "weight": cfg.transfer_weight, "batch": cfg.transfer_batch,
            "target": cfg.transfer_target, **({"sentences": len(transfer[0])} if transfer else {})}


def encoder_vectors(run: Run, transcripts: list[str]) -> torch.Tensor:
    """Mean-pooled outputs of the pre-trained text encoder (``teacher``, not fine-tuned on the
    commands) per transcript: general-text semantics, the target of the paper's stage-1 KD."""
    from .distill import TextTeacher, teacher_outputs

    encoder, tokenizer, pad_id, d_model = _teacher_parts(run)
    reps, _ = teacher_outputs(TextTeacher(encoder, d_model).eval(), tokenizer, pad_id, transcripts)
    return reps


def command_vectors(run: Run) -> torch.Tensor | None:
    """:func:`encoder_vectors` of the training transcripts when ``transfer_target`` is "encoder"."""
    if not run.cfg.transfer or run.cfg.transfer_target != "encoder":
        return None
    return encoder_vectors(run, run.split("train").transcripts)


def load_bert(path: Path, cfg: SLUConfig):
    from .model import SpeechBert

    bert = SpeechBert(cfg)
    bert.load_state_dict(load_torch(path)["bert"])
    return bert.eval()


def stage_bert(run: Run) -> None:
    from .pretrain import pretrain_bert

    out = run.path("bert_mlm.pt")
    if out.exists():
        return
    bert = pretrain_bert(read_tokens(run.path("tokens.npz"), "train"), run.model_cfg, steps=run.cfg.bert_steps,
                         seed=run.cfg.seed, log=run.log)
    save_torch(out, {"config": run.model_cfg.to_dict(), "bert": bert.state_dict()})


def _teacher_parts(run: Run):
    from .distill import load_text_encoder

    return load_text_encoder(run.cfg.teacher)


def stage_teacher(run: Run) -> None:
    """Fine-tune the text teacher; store its outputs for every training utterance and its accuracy
    on the valid/test transcripts (the text-only reference)."""
    from .distill import evaluate_teacher, teacher_outputs, train_teacher

    out = run.path("teacher.pt")
    if out.exists():
        return
    encoder, tokenizer, pad_id, d_model = _teacher_parts(run)
    train = run.split("train")
    teacher = train_teacher(encoder, tokenizer, pad_id, d_model, train.transcripts, train.labels,
                            epochs=run.cfg.teacher_epochs, seed=run.cfg.seed, log=run.log)
    reps, logits = teacher_outputs(teacher, tokenizer, pad_id, train.transcripts)
    acc = {}
    for split in ("valid", "test"):
        sp = run.split(split)
        acc[split] = evaluate_teacher(teacher, tokenizer, pad_id, sp.transcripts, sp.labels, sp.heldout_phrasing)
        run.log(f"teacher on {split} transcripts: {json.dumps(acc[split])}")
    save_torch(out, {"train_reps": reps, "train_logits": logits, "accuracy": acc,
                     "teacher": teacher.state_dict()})


def stage_kd1(run: Run) -> None:
    from .distill import distill_stage1

    out = run.path("bert_kd1.pt")
    if out.exists():
        return
    bert = load_bert(run.path("bert_mlm.pt"), run.model_cfg)
    reps = load_torch(run.path("teacher.pt"))["train_reps"]
    bert = distill_stage1(bert, read_tokens(run.path("tokens.npz"), "train"), reps, steps=run.cfg.kd1_steps,
                          seed=run.cfg.seed, log=run.log)
    save_torch(out, {"config": run.model_cfg.to_dict(), "bert": bert.state_dict()})


def stage_finetune(run: Run) -> None:
    """The ablation: fine-tune from the MLM or the stage-1 BERT, with or without logit KD.  Each
    variant writes ``ft_{variant}.pt`` and ``ft_{variant}.json`` (so variants may run in separate
    processes); ``ablation.json`` collects those present."""
    from .distill import evaluate, finetune

    start = {"none": "bert_mlm.pt", "stage2": "bert_mlm.pt", "stage1": "bert_kd1.pt", "both": "bert_kd1.pt"}
    for variant in run.cfg.variants:
        if variant not in start:
            raise ConfigError(f"unknown ablation variant {variant!r}; variants: {', '.join(start)}")
    todo = [v for v in run.cfg.variants if not run.path(f"ft_{v}.json").exists()]
    if todo:
        tokens = {s: read_tokens(run.path("tokens.npz"), s) for s in ("train", "valid", "test")}
        teacher_logits = load_torch(run.path("teacher.pt"))["train_logits"]
        train, valid, test = run.split("train"), run.split("valid"), run.split("test")
        tokenize = load_tokenizer(run.path("tokenizer.pt")).tokenize
        copies = speed_copies(run, tokenize, "tokens_speed.npz") + reverb_copies(run, tokenize, "tokens_reverb.npz")
        transfer = transfer_set(run, tokenize, "tokens_transfer.npz")
        rep_targets = command_vectors(run)
    for variant in todo:
        run.log(f"fine-tuning variant {variant}")
        init = Path(run.cfg.finetune_from) if run.cfg.finetune_from else run.path(start[variant])
        history: list[dict] = []
        bert = None
        for cycle in range(1, run.cfg.finetune_cycles + 1):
            # each finished cycle is kept, so that a stopped run resumes at the next one
            done = run.path(f"ft_{variant}.cycle{cycle}.pt")
            if run.cfg.finetune_cycles > 1 and done.exists():
                saved = load_torch(done)
                init, history, bert = done, saved["history"], None
                continue
            run.log(f"fine-tuning from {init}" + (f" (cycle {cycle}/{run.cfg.finetune_cycles})"
                                                  if run.cfg.finetune_cycles > 1 else ""))
            bert = load_bert(init, run.model_cfg)
            bert, h = finetune(bert, tokens["train"], train.labels,
                               teacher_logits if variant in KD_LOGIT_VARIANTS else None,
                               (tokens["valid"], valid.labels), epochs=run.cfg.finetune_epochs,
                               lr=run.cfg.finetune_lr, kd_weight=run.cfg.kd_weight, seed=run.cfg.seed,
                               log=run.log, warp=run.cfg.warp, copies=copies, transfer=transfer,
                               transfer_weight=run.cfg.transfer_weight, transfer_batch=run.cfg.transfer_batch,
                               rep_targets=rep_targets, average_last=run.cfg.finetune_average)
            history += [{**e, "cycle": cycle} for e in h]
            if run.cfg.finetune_cycles > 1:
                save_torch(done, {"config": run.model_cfg.to_dict(), "bert": bert.state_dict(), "history": history})
                init = done
        if bert is None:  # every cycle was done before
            bert = load_bert(init, run.model_cfg)
        result = {"speed_copies": check_speed_copies(run.cfg.speed_copies), "reverb_copies": run.cfg.reverb_copies,
                  "transfer": transfer_summary(run.cfg, transfer),
                  "finetune_average": run.cfg.finetune_average,
                  "from": run.cfg.finetune_from or start[variant], "cycles": run.cfg.finetune_cycles,
                  "valid": evaluate(bert, tokens["valid"], valid.labels),
                  "test": evaluate(bert, tokens["test"], test.labels, test.heldout_phrasing),
                  "history": history}
        run.log(f"variant {variant}: test {json.dumps(result['test'])}")
        save_torch(run.path(f"ft_{variant}.pt"), {"config": run.model_cfg.to_dict(), "bert": bert.state_dict()})
        atomic_write_bytes(run.path(f"ft_{variant}.json"), (json.dumps(result, indent=1) + "\n").encode())
    table = {v: json.loads(run.path(f"ft_{v}.json").read_text()) for v in start if run.path(f"ft_{v}.json").exists()}
    atomic_write_bytes(run.path("ablation.json"), (json.dumps(table, indent=1) + "\n").encode())


def stage_quantize(run: Run) -> None:
    """Quantize the shipped variant, retrain, export; record fp32 vs quantized accuracy."""
    from ..quant.fake_quant import apply_fake_quant, export_bcq, fake_quant_step, remove_fake_quant
    from .distill import evaluate, finetune
    from .export import export_slu
    from .pretrain import tokenize_split
    from .quantize import SLUQuantPlan, assignment, average_bits, build_model, pack_results, retrain_front_end

    out = run.path("quantized.json")
    if out.exists():
        return
    cfg = run.model_cfg
    plan = SLUQuantPlan(**run.cfg.quant_plan)
    model = build_model(cfg, load_torch(run.path("tokenizer.pt")),
                        load_torch(run.path(f"ft_{run.cfg.ship_variant}.pt"))["bert"])
    splits = {s: run.split(s) for s in ("train", "valid", "test")}
    old = {s: read_tokens(run.path("tokens.npz"), s) for s in splits}
    fp32 = evaluate(model.bert, old["test"], splits["test"].labels, splits["test"].heldout_phrasing)
    counts = np.bincount(np.concatenate(old["train"]), minlength=cfg.num_tokens)
    assign = assignment(model, plan, counts)
    bits = average_bits(model, assign)
    run.log(f"quantize: {len(assign)} matrices, {bits:.3f} average bits; fp32 test intent accuracy "
            f"{fp32['intent_accuracy']:.4f}")
    front = {k: v for k, v in assign.items() if not k.startswith("bert.")}
    fp32_model = copy.deepcopy(model)
    apply_fake_quant(model, front, method=plan.method)  # re-quantized every step: stale planes undid the retraining
    ptq_valid = tokenize_split(model.tokens, splits["valid"], cfg)
    ptq_same = float(np.mean(np.concatenate([a == b for a, b in zip(old["valid"], ptq_valid)])))
    run.log(f"front end after PTQ: {ptq_same:.4f} of the validation tokens unchanged")
    front_qat = retrain_front_end(model, fp32_model, splits["train"], run.cfg.front_qat_steps,
                                  lr=run.cfg.front_qat_lr, seed=run.cfg.seed, log=run.log)
    del fp32_model
    new = {s: tokenize_split(model.tokens, splits[s], cfg) for s in splits}
    same = float(np.mean(np.concatenate([a == b for s in splits for a, b in zip(old[s], new[s])])))
    new = {s: [t.astype(np.int64) for t in v] for s, v in new.items()}
    ptq_front = evaluate(model.bert, new["test"], splits["test"].labels, splits["test"].heldout_phrasing)
    run.log(f"quantized front end: {same:.4f} of the tokens unchanged; test accuracy with the fp32 BERT "
            f"{ptq_front['intent_accuracy']:.4f}")
    copies = speed_copies(run, model.tokens, None) + reverb_copies(run, model.tokens, None)
    transfer = transfer_set(run, model.tokens, None)
    bert_assign = {k[len("bert."):]: v for k, v in assign.items() if k.startswith("bert.")}
    apply_fake_quant(model.bert, bert_assign, method=plan.method, refresh_every=run.cfg.qat_refresh_every)
    ptq = evaluate(model.bert, new["test"], splits["test"].labels, splits["test"].heldout_phrasing)
    run.log(f"PTQ (no retraining) test intent accuracy {ptq['intent_accuracy']:.4f}")
    # retrain with the shipped variant's own loss (stage-2 KD only if the variant used it)
    teacher_logits = (load_torch(run.path("teacher.pt"))["train_logits"]
                      if run.cfg.ship_variant in KD_LOGIT_VARIANTS else None)
    _, history = finetune(model.bert, new["train"], splits["train"].labels, teacher_logits,
                          (new["valid"], splits["valid"].labels), epochs=run.cfg.qat_epochs, lr=run.cfg.qat_lr,
                          kd_weight=run.cfg.kd_weight, seed=run.cfg.seed, log=run.log,
                          step_hook=lambda: fake_quant_step(model.bert), warp=run.cfg.warp, copies=copies,
                          transfer=transfer, transfer_weight=run.cfg.transfer_weight,
                          transfer_batch=run.cfg.transfer_batch, rep_targets=command_vectors(run))
    qat = evaluate(model.bert, new["test"], splits["test"].labels, splits["test"].heldout_phrasing)
    run.log(f"QAT test intent accuracy {qat['intent_accuracy']:.4f}")
    results = export_bcq(model)
    remove_fake_quant(model, bake=True)
    retrained = {"steps": run.cfg.front_qat_steps, "lr": run.cfg.front_qat_lr,
                 "valid_tokens_unchanged_before": ptq_same, **front_qat}
    summary = {"variant": run.cfg.ship_variant, "plan": plan.to_dict(), "average_bits": bits,
               "speed_copies": check_speed_copies(run.cfg.speed_copies), "reverb_copies": run.cfg.reverb_copies,
               "transfer": transfer_summary(run.cfg),
               "matrices": len(assign), "front_end_retraining": retrained, "tokens_unchanged": same, "fp32": fp32,
               "quantized_front_end_fp32_bert": ptq_front, "ptq": ptq, "qat": qat, "qat_history": history}
    manifest = export_slu(model, run.path("onnx"), pack_results(results),
                          extra={"training": {"average_bits": round(bits, 4), "variant": run.cfg.ship_variant}},
                          ensemble_rates=list(run.cfg.ensemble_rates) or None)
    summary["export_bytes"] = sum(f["size"] for f in manifest["files"])
    atomic_write_bytes(out, (json.dumps(summary, indent=1) + "\n").encode())


def _is_int(value: Any) -> bool:
    """An integer setting (JSON ``true`` is a bool, which Python also counts as an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def run_stages(cfg: SLUTrainConfig, stages: tuple[str, ...] = STAGES) -> Run:
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
    check_speed_copies(cfg.speed_copies)  # before hours of earlier stages
    if "finetune" in stages and cfg.finetune_from and not Path(cfg.finetune_from).is_file():
        raise ConfigError(f"finetune_from: no checkpoint at {cfg.finetune_from}")
    if not _is_int(cfg.finetune_cycles) or cfg.finetune_cycles < 1:
        raise ConfigError(f"finetune_cycles must be a positive integer, got {cfg.finetune_cycles!r}")
    if not _is_int(cfg.finetune_average) or not 0 <= cfg.finetune_average <= cfg.finetune_epochs:
        raise ConfigError(f"finetune_average must be an integer in 0..finetune_epochs ({cfg.finetune_epochs}), "
                          f"got {cfg.finetune_average!r}")
    if not _is_int(cfg.dereverb_steps) or cfg.dereverb_steps < 0 or not _is_int(cfg.dereverb_pairs) \
            or cfg.dereverb_pairs < 1:
        raise ConfigError(f"dereverb_steps must be an integer >= 0 and dereverb_pairs a positive one, got "
                          f"{cfg.dereverb_steps!r}, {cfg.dereverb_pairs!r}")
    if not _is_int(cfg.reverb_copies) or cfg.reverb_copies < 0:
        raise ConfigError(f"reverb_copies must be an integer >= 0, got {cfg.reverb_copies!r}")
    if cfg.transfer and not (Path(cfg.transfer) / "transfer.jsonl").is_file():
        raise ConfigError(f"transfer: no transfer set at {cfg.transfer} (make one with `ondevice data slu-transfer`)")
    if cfg.transfer_target not in ("logits", "encoder"):
        raise ConfigError(f"transfer_target: 'logits' or 'encoder', got {cfg.transfer_target!r}")
    if not _is_int(cfg.transfer_batch) or cfg.transfer_batch < 1 \
            or isinstance(cfg.transfer_weight, bool) or not isinstance(cfg.transfer_weight, (int, float)) \
            or cfg.transfer_weight < 0:
        raise ConfigError(f"transfer_batch must be >= 1 and transfer_weight >= 0, got {cfg.transfer_batch}, "
                          f"{cfg.transfer_weight}")
    if not _is_int(cfg.threads) or not 0 <= cfg.threads <= MAX_THREADS:  # a huge count crashes torch's pool
        raise ConfigError(f"threads must be an integer in 0..{MAX_THREADS} (0: PyTorch's default), "
                          f"got {cfg.threads!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Run(cfg)
    fns = {"vq": stage_vq, "dereverb": stage_dereverb, "tokens": stage_tokens, "bert": stage_bert,
           "teacher": stage_teacher, "kd1": stage_kd1, "finetune": stage_finetune, "quantize": stage_quantize}
    for name in STAGES:
        if name in stages:
            fns[name](run)
    return run
