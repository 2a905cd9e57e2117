#!/usr/bin/env python3
"""PyTorch baseline of the trainer's training loop (the same architecture as
trainer/src/model.rs, the same loss, optimiser and schedule), for `ecgfed-bench train`.

Run with the torch of .venv-torch, which carries the same libtorch as the Rust build:

    .venv-torch/bin/python bench/torch_baseline.py --rows 4096 --window 1250 --batch 64 \
        --steps 60 --warmup 5 [--json]

Data: `rows` windows of standard-normal samples (seeded) and random classes in a torch
tensor; each step takes the next `batch` rows of a seeded permutation (index_select), runs
forward + class-weighted cross-entropy + backward + AdamW with the cosine learning rate.
Reports windows per second over the timed steps (after `warmup` untimed steps).
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.c1 = nn.Conv1d(cin, cout, k, stride, k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.c2 = nn.Conv1d(cout, cout, k, 1, k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.sc = None
        if cin != cout or stride != 1:
            self.sc = nn.Sequential(nn.Conv1d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x):
        y = self.bn2(self.c2(F.relu(self.bn1(self.c1(x)))))
        s = x if self.sc is None else self.sc(x)
        return F.relu(y + s)


class ResNet1d(nn.Module):
    def __init__(self, classes, channels, blocks_per_stage, k, dropout):
        super().__init__()
        c0 = channels[0]
        self.stem = nn.Conv1d(1, c0, 15, 2, 7, bias=False)
        self.stem_bn = nn.BatchNorm1d(c0)
        blocks = []
        cin = c0
        for s, cout in enumerate(channels):
            for b in range(blocks_per_stage):
                blocks.append(Block(cin, cout, k, 2 if s > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.dropout = dropout
        self.fc = nn.Linear(2 * cin, classes)

    def forward(self, x):
        x = F.max_pool1d(F.relu(self.stem_bn(self.stem(x))), 3, 2, 1)
        x = self.blocks(x)
        x = torch.cat([x.mean(-1), x.amax(-1)], 1)
        return self.fc(F.dropout(x, self.dropout, self.training))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--window", type=int, default=1250)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--channels", default="32,64,128,128")
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--kernel", type=int, default=9)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(1)
    x = torch.randn(a.rows, 1, a.window)
    y = torch.randint(0, a.classes, (a.rows,))
    w = torch.ones(a.classes)
    model = ResNet1d(a.classes, [int(c) for c in a.channels.split(",")], a.blocks, a.kernel, 0.3)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    total = a.warmup + a.steps
    perm = torch.randperm(a.rows)
    t0 = None
    for step in range(total):
        if step == a.warmup:
            t0 = time.perf_counter()
        lr = a.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        start = (step * a.batch) % a.rows
        idx = perm[start:start + a.batch]
        if len(idx) < a.batch:
            idx = perm[:a.batch]
        xb = x.index_select(0, idx)
        yb = y.index_select(0, idx)
        loss = F.cross_entropy(model(xb), yb, weight=w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    secs = time.perf_counter() - t0
    out = {
        "framework": f"pytorch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "steps": a.steps,
        "batch": a.batch,
        "window": a.window,
        "seconds": secs,
        "windows_per_sec": a.steps * a.batch / secs,
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"pytorch {torch.__version__}: {out['windows_per_sec']:.1f} windows/s "
              f"({a.steps} steps of {a.batch}, window {a.window}, {out['threads']} threads)")


if __name__ == "__main__":
    main()
