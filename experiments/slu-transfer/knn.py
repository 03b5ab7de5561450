"""Diagnostic (session 13): does the text encoder's space support held-out phrasings by nearest
neighbour, and how close does the transfer-set student (runs/slu-v11) get to it?  Run from the
repository root with runs/slu-v11 and data/slu-v4 present (experiments/slu-transfer/README.md)."""
import numpy as np
import torch

from ondevice.slu.train import SLUTrainConfig, Run, read_tokens, load_bert
from ondevice.slu.distill import TextTeacher, teacher_outputs, load_text_encoder
from ondevice.slu.model import SLOTS
torch.set_num_threads(1)
cfg = SLUTrainConfig(corpus="data/slu-v4", out="runs/slu-v11", teacher="models/nmt-en-de")
run = Run(cfg)
train, test = run.split("train"), run.split("test")
def intents(sp): return np.stack([sp.labels[s] for s in SLOTS], 1)
ytr, yte = intents(train), intents(test)
held = test.heldout_phrasing
# text space: pretrained encoder
enc, tok, pad, d = load_text_encoder(cfg.teacher)
pre = TextTeacher(enc, d).eval()
ft = TextTeacher(load_text_encoder(cfg.teacher)[0], d); ft.load_state_dict(torch.load(run.path("teacher.pt"), weights_only=False)["teacher"]); ft.eval()
def knn(qv, kv, ky, k=1):
    q = torch.nn.functional.normalize(qv, dim=-1); kk = torch.nn.functional.normalize(kv, dim=-1)
    sim = q @ kk.T
    return ky[sim.argmax(-1).numpy()]
# distinct training transcripts
tt = sorted(set(train.transcripts)); first = {t: train.transcripts.index(t) for t in tt}
ky = np.stack([ytr[first[t]] for t in tt])
for name, m in (("pretrained", pre), ("fine-tuned teacher", ft)):
    kv, _ = teacher_outputs(m, tok, pad, tt)
    qv, _ = teacher_outputs(m, tok, pad, test.transcripts)
    pred = knn(qv, kv, ky)
    ok = (pred == yte).all(1)
    print(f"text kNN ({name} encoder): held-out phrasings {ok[held].mean():.4f}, seen {ok[~held].mean():.4f}")
# speech: v11 student's kd_proj(CLS) vs pretrained-encoder vectors of training transcripts
bert = load_bert(run.path("ft_stage1.pt"), run.model_cfg)
toks = read_tokens(run.path("tokens.npz"), "test")
from ondevice.slu.pretrain import pad_batch
outs = []
with torch.no_grad():
    for b in range(0, len(toks), 64):
        h = bert.encode(pad_batch(toks[b:b+64], bert.cfg.pad_id))
        outs.append(bert.kd_proj(h[:, 0]))
sv = torch.cat(outs)
kv, _ = teacher_outputs(pre, tok, pad, tt)
pred = knn(sv, kv, ky); ok = (pred == yte).all(1)
print(f"speech kNN (v11 kd_proj -> pretrained space): held-out {ok[held].mean():.4f}, seen {ok[~held].mean():.4f}")
# and its own target: the pretrained vector of each test transcript
tv, _ = teacher_outputs(pre, tok, pad, test.transcripts)
cos = torch.nn.functional.cosine_similarity(sv, tv).numpy()
print(f"v11 kd_proj cosine to its transcript's vector: held-out {cos[held].mean():.3f}, seen {cos[~held].mean():.3f}")
