#!/usr/bin/env python3
"""Grouped cross-validation inside MIT-BIH DS1 for the beat task's choices (bench/README.md,
"Beat task: choices by cross-validation inside DS1").

    .venv-torch/bin/python bench/beats_cv.py WINDOWS_DIR [--folds 11] [--json]

WINDOWS_DIR is what `EXPORT=1 bench/quality.sh beats WORK` wrote (WORK/windows-beats:
`rows.jsonl`, `features.f32`, the 62 beat features of docs/training.md "Beat features").
Only DS1's rows are read (part `train`); the rows of DS2 (part `held_out`) are skipped
unread, so nothing here is chosen on DS2.

Folds: DS1's records ordered by SHA-256 of their id, dealt round-robin into `folds` groups
(leave-records-out: a record's beats are all in one fold). Each candidate is trained on the
other folds and predicts the held-out fold; the predictions of all folds are pooled into one
confusion matrix, scored as the trainer scores (macro-F1 over N, S, V, F per beat, and S and
V sensitivity / positive predictivity). Candidates: the feature groups (RR 0-3; RR and the
beat against its template 0-59; all 62, with the other lead's fit 60-61) × class weight power
(0.5, 1) × learning rate (0.02, 0.1); the model is the trainer's `channels = []` network, a
linear layer over the features (multinomial logistic regression) trained as
trainer/src/train.rs trains it: AdamW (weight decay 0.01), cosine learning rate per step with a
1 % floor, 40 epochs of batch 512, class weights (rows / class rows)^power normalised to a
row-weighted mean of 1. Prints one line per candidate and the chosen one (highest pooled
macro-F1; ties to the simpler one).
"""
import argparse
import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

GROUPS = {"rr": list(range(0, 4)), "rr+template": list(range(0, 60)), "all": list(range(0, 62))}
CLASSES = ["N", "S", "V", "F"]


def load(d):
    with open(os.path.join(d, "rows.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    feats = np.fromfile(os.path.join(d, "features.f32"), dtype="<f4").reshape(len(rows), -1)
    keep = [i for i, r in enumerate(rows) if r["part"] != "held_out"]
    return [rows[i] for i in keep], feats[keep]


def class_weights(y, k, power):
    counts = np.bincount(y, minlength=k).astype(float)
    total = counts.sum()
    raw = np.where(counts > 0, (total / np.maximum(counts, 1)) ** power, 0.0)
    mean = (raw * counts).sum() / total
    return torch.tensor(raw / mean, dtype=torch.float32)


def fit_predict(xtr, ytr, xte, k, power, lr, epochs=40, batch=512, seed=2004):
    torch.manual_seed(seed)
    model = torch.nn.Linear(xtr.shape[1], k)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    w = class_weights(ytr, k, power)
    x = torch.from_numpy(xtr)
    y = torch.from_numpy(ytr)
    n = len(ytr)
    per_epoch = math.ceil(n / batch)
    total = per_epoch * epochs
    step = 0
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            for g in opt.param_groups:
                g["lr"] = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / total)))
            loss = F.cross_entropy(model(x[idx]), y[idx], weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        return model(torch.from_numpy(xte)).argmax(1).numpy()


def score(conf):
    out = {}
    f1s = []
    for c, name in enumerate(CLASSES):
        tp = conf[c, c]
        fp = conf[:, c].sum() - tp
        fn = conf[c, :].sum() - tp
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
        out[name] = {"se": tp / conf[c, :].sum() if conf[c, :].sum() else None,
                     "pp": tp / conf[:, c].sum() if conf[:, c].sum() else None}
    out["macro_f1"] = float(np.mean(f1s))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("windows")
    ap.add_argument("--folds", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows, feats = load(a.windows)
    y = np.array([r["class"] for r in rows], dtype=np.int64)
    records = sorted({r["record_id"] for r in rows},
                     key=lambda r: hashlib.sha256(r.encode()).hexdigest())
    fold_of = {r: i % a.folds for i, r in enumerate(records)}
    fold = np.array([fold_of[r["record_id"]] for r in rows])
    k = len(CLASSES)
    results = []
    for group, cols in GROUPS.items():
        x = np.ascontiguousarray(feats[:, cols])
        for power in (0.5, 1.0):
            for lr in (0.02, 0.1):
                conf = np.zeros((k, k), dtype=np.int64)
                for f in range(a.folds):
                    te = fold == f
                    pred = fit_predict(x[~te], y[~te], x[te], k, power, lr)
                    np.add.at(conf, (y[te], pred), 1)
                s = score(conf)
                r = {"features": group, "class_weight_power": power, "lr": lr, **s}
                results.append(r)
                print(json.dumps(r) if a.json else
                      f"{group:12s} power {power:.1f} lr {lr:<5} macro-F1 {s['macro_f1']:.3f}  "
                      f"S Se {s['S']['se'] or 0:.3f} +P {s['S']['pp'] or 0:.3f}  "
                      f"V Se {s['V']['se'] or 0:.3f} +P {s['V']['pp'] or 0:.3f}", flush=True)
    best = max(enumerate(results), key=lambda t: (round(t[1]["macro_f1"], 3), -t[0]))[1]
    print(json.dumps({"chosen": best, "records": len(records), "beats": len(rows),
                      "folds": a.folds}))


if __name__ == "__main__":
    main()
