#!/usr/bin/env python3
"""FedAvg with Flower and PyTorch on the rows of an ecgfed cohort, for the comparison of
bench/README.md ("Federated training: quality"), run by bench/federated_quality.sh.

    FLOWER_PYTHON bench/flower_fedavg.py --windows DIR --card MODEL-CARD.json --rounds R --out OUT

DIR is what `ecgfed train --export-windows DIR` wrote for the pooled (pull) run of the same
sites: every row's window and its part (train / validation / test / held_out), the split per
site that ecgfed's federated sites compute for themselves. MODEL-CARD.json is the card of
ecgfed's FedAvg run being compared (classes, scored classes, hyper-parameters: its local batch
size, learning rate, network). What this script runs, as real processes on
loopback: one Flower server (`flwr.compat.server.app.start_server`, FedAvg weighted by rows,
`R` rounds) and one Flower client per training site (`start_client`), each holding only its
site's rows; per round each client trains one local epoch and then scores its validation part.
As ecgfed's federated mode does (docs/training.md "Federated mode"): the same network
(bench/torch_baseline.py, the architecture of trainer/src/model.rs), AdamW at the round's
learning rate (the spec's cosine over rounds, floor 1 %), weight decay and batch size of the
spec, class weights (rows / class rows)^power from all training sites' rows, the same
augmentation, the kept round chosen on the pooled validation macro-F1 per record. The test
parts (and held-out sites) are then scored once, by this driver, with the kept weights.

Writes OUT/flower.json: per-round validation figures, the kept round, test and held-out
scores in the shape of an ecgfed model card's `metrics`, wall seconds. Needs flwr (1.42.0)
and torch in the Python that runs it.
"""
import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_baseline import ResNet1d  # noqa: E402


def load(windows_dir):
    with open(os.path.join(windows_dir, "rows.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    x = np.fromfile(os.path.join(windows_dir, "windows.f32"), dtype="<f4")
    if len(rows) == 0 or x.size % len(rows):
        raise SystemExit(f"{windows_dir}: windows.f32 does not hold {len(rows)} equal windows")
    return rows, x.reshape(len(rows), -1)


def settings(card_path):
    with open(card_path) as f:
        card = json.load(f)
    t = card["train"]
    return {
        "classes": [c["name"] for c in card["classes"]],
        "scored": card["scored"],
        "lr": t["lr"],
        "weight_decay": t["weight_decay"],
        "batch": t["batch_size"],
        "channels": t["channels"],
        "blocks": t["blocks_per_stage"],
        "kernel": t["kernel"],
        "dropout": t["dropout"],
        "power": t["class_weight_power"],
        "augment": t["augment"],
        "seed": card["seed"],
    }


def round_lr(lr, rnd, rounds):
    """The spec's cosine schedule over rounds (round from 1), floor 1 % (trainer round_lr)."""
    f = (rnd - 1) / max(rounds, 1)
    return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * f)))


def class_weights(counts, power):
    total = sum(counts)
    raw = [(total / c) ** power if c > 0 else 0.0 for c in counts]
    mean = sum(w * c for w, c in zip(raw, counts)) / total
    return torch.tensor([w / mean for w in raw], dtype=torch.float32)


def new_model(s):
    return ResNet1d(len(s["classes"]), s["channels"], s["blocks"], s["kernel"], s["dropout"])


def get_params(model):
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_params(model, params):
    keys = list(model.state_dict().keys())
    state = {k: torch.from_numpy(np.asarray(p)) for k, p in zip(keys, params)}
    model.load_state_dict(state, strict=True)


def augmented(xb, gen):
    """Each row × U(0.85, 1.15), shifted by up to a tenth of the window, zero-filled."""
    n, w = xb.shape
    out = torch.zeros_like(xb)
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    m = w // 10
    shift = torch.randint(-m, m + 1, (n,), generator=gen)
    for b in range(n):
        s = int(shift[b])
        if s >= 0:
            out[b, s:] = xb[b, : w - s] * scale[b]
        else:
            out[b, : w + s] = xb[b, -s:] * scale[b]
    return out


def probabilities(model, x, idx, batch=512):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            xb = torch.from_numpy(x[idx[i : i + batch]]).unsqueeze(1)
            out.append(F.softmax(model(xb), dim=1))
    return torch.cat(out).numpy() if out else np.zeros((0, 1))


def confusions(rows, idx, probs, k):
    """(windows, records) confusion matrices; a record's class is argmax of its windows'
    mean probability, its truth the class of its windows."""
    win = np.zeros((k, k), dtype=np.int64)
    rec = {}
    for j, i in enumerate(idx):
        c = rows[i]["class"]
        win[c, int(np.argmax(probs[j]))] += 1
        key = (rows[i]["site"], rows[i]["record_id"])
        acc = rec.setdefault(key, [c, np.zeros(k), 0])
        acc[1] += probs[j]
        acc[2] += 1
    recm = np.zeros((k, k), dtype=np.int64)
    for c, p, _ in rec.values():
        recm[c, int(np.argmax(p))] += 1
    return win, recm


def report(conf, classes, scored):
    """Per-class F1 and macro-F1 over `scored`, as trainer/src/metrics.rs computes them."""
    out, f1s = [], []
    for c, name in enumerate(classes):
        tp = int(conf[c, c])
        fp = int(conf[:, c].sum()) - tp
        fn = int(conf[c, :].sum()) - tp
        f1 = None if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        out.append({"class": name, "support": int(conf[c, :].sum()), "f1": f1})
        if name in scored and f1 is not None:
            f1s.append(f1)
    return {"n": int(conf.sum()), "macro_f1": sum(f1s) / len(f1s) if f1s else None, "classes": out}


def run_client(a):
    torch.set_num_threads(1)
    from flwr.client import NumPyClient
    from flwr.compat.client.app import start_client

    s = settings(a.card)
    rows, x = load(a.windows)
    k = len(s["classes"])
    mine = [i for i, r in enumerate(rows) if r["site"] == a.site]
    train = [i for i in mine if rows[i]["part"] == "train"]
    val = [i for i in mine if rows[i]["part"] == "validation"]
    counts = [0] * k
    for r in rows:
        if r["part"] in ("train", "validation", "test"):
            counts[r["class"]] += 1
    weights = class_weights(counts, s["power"])
    model = new_model(s)
    gen = torch.Generator().manual_seed(s["seed"] + sum(map(ord, a.site)))
    y_all = torch.tensor([r["class"] for r in rows])

    class Site(NumPyClient):
        def fit(self, parameters, config):
            set_params(model, parameters)
            model.train()
            opt = torch.optim.AdamW(
                model.parameters(), lr=float(config["lr"]), weight_decay=s["weight_decay"]
            )
            order = torch.randperm(len(train), generator=gen).tolist()
            loss_sum = 0.0
            for b in range(0, len(order), s["batch"]):
                idx = [train[j] for j in order[b : b + s["batch"]]]
                xb = torch.from_numpy(x[idx])
                if s["augment"]:
                    xb = augmented(xb, gen)
                yb = y_all[idx]
                loss = F.cross_entropy(model(xb.unsqueeze(1)), yb, weight=weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_sum += float(loss) * len(idx)
            return get_params(model), len(train), {"loss": loss_sum / max(len(train), 1)}

        def evaluate(self, parameters, config):
            set_params(model, parameters)
            probs = probabilities(model, x, val)
            win, rec = confusions(rows, val, probs, k)
            m = {f"w{i}_{j}": int(win[i, j]) for i in range(k) for j in range(k)}
            m.update({f"r{i}_{j}": int(rec[i, j]) for i in range(k) for j in range(k)})
            return 0.0, len(val), m

    start_client(server_address=a.address, client=Site().to_client(), insecure=True)


def run_server(a):
    torch.set_num_threads(1)
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.server.app import start_server
    from flwr.server import ServerConfig
    from flwr.server.strategy import FedAvg

    s = settings(a.card)
    k = len(s["classes"])
    torch.manual_seed(s["seed"])
    init = get_params(new_model(s))
    n = len(a.sites.split(","))
    history, kept = [], {}

    class Strategy(FedAvg):
        def aggregate_fit(self, rnd, results, failures):
            params, metrics = super().aggregate_fit(rnd, results, failures)
            kept[rnd] = parameters_to_ndarrays(params)
            rows = sum(r.num_examples for _, r in results)
            loss = sum(r.metrics["loss"] * r.num_examples for _, r in results) / max(rows, 1)
            history.append({"round": rnd, "train_loss": loss, "sites": len(results)})
            return params, metrics

        def aggregate_evaluate(self, rnd, results, failures):
            win = np.zeros((k, k), dtype=np.int64)
            rec = np.zeros((k, k), dtype=np.int64)
            for _, r in results:
                for i in range(k):
                    for j in range(k):
                        win[i, j] += r.metrics[f"w{i}_{j}"]
                        rec[i, j] += r.metrics[f"r{i}_{j}"]
            h = next(h for h in history if h["round"] == rnd)
            h["validation_records_macro_f1"] = report(rec, s["classes"], s["scored"])["macro_f1"]
            h["validation_windows_macro_f1"] = report(win, s["classes"], s["scored"])["macro_f1"]
            print(f"flower round {rnd}: {json.dumps(h)}", file=sys.stderr, flush=True)
            return 0.0, {}

    strategy = Strategy(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=n,
        min_evaluate_clients=n,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(init),
        on_fit_config_fn=lambda rnd: {"lr": round_lr(s["lr"], rnd, a.rounds)},
    )
    start_server(
        server_address=a.address, config=ServerConfig(num_rounds=a.rounds), strategy=strategy
    )
    best = max(history, key=lambda h: (h.get("validation_records_macro_f1") or -1, -h["round"]))
    np.savez(os.path.join(a.out, "kept.npz"), *kept[best["round"]])
    with open(os.path.join(a.out, "history.json"), "w") as f:
        json.dump({"history": history, "kept_round": best["round"]}, f, indent=1)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", required=True)
    ap.add_argument("--card", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--role", choices=["driver", "server", "client"], default="driver")
    ap.add_argument("--site")
    ap.add_argument("--sites")
    ap.add_argument("--address")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.role == "client":
        return run_client(a)
    if a.role == "server":
        return run_server(a)

    t0 = time.time()
    s = settings(a.card)
    rows, x = load(a.windows)
    sites = sorted({r["site"] for r in rows if r["part"] == "train"})
    address = f"127.0.0.1:{free_port()}"
    common = [sys.executable, os.path.abspath(__file__), "--windows", a.windows, "--card",
              a.card, "--rounds", str(a.rounds), "--out", a.out, "--address", address]
    server = subprocess.Popen(common + ["--role", "server", "--sites", ",".join(sites)])
    time.sleep(3)
    clients = [subprocess.Popen(common + ["--role", "client", "--site", site]) for site in sites]
    if server.wait() != 0:
        for c in clients:
            c.kill()
        raise SystemExit("flower server failed")
    for c in clients:
        c.wait()

    with open(os.path.join(a.out, "history.json")) as f:
        hist = json.load(f)
    model = new_model(s)
    with np.load(os.path.join(a.out, "kept.npz")) as z:
        set_params(model, [z[f"arr_{i}"] for i in range(len(z.files))])
    k = len(s["classes"])

    def scores(idx):
        probs = probabilities(model, x, idx)
        win, rec = confusions(rows, idx, probs, k)
        return {"windows": report(win, s["classes"], s["scored"]),
                "records": report(rec, s["classes"], s["scored"])}

    test = [i for i, r in enumerate(rows) if r["part"] == "test"]
    held = sorted({r["site"] for r in rows if r["part"] == "held_out"})
    metrics = {
        "test": scores(test),
        "validation": None,
        "held_out": {h: scores([i for i, r in enumerate(rows)
                                if r["part"] == "held_out" and r["site"] == h]) for h in held},
    }
    best = next(h for h in hist["history"] if h["round"] == hist["kept_round"])
    metrics["validation"] = {"records": {"macro_f1": best["validation_records_macro_f1"]},
                             "windows": {"macro_f1": best["validation_windows_macro_f1"]}}
    out = {
        "framework": "flower", "model_id": "flower-fedavg", "best_epoch": hist["kept_round"],
        "rows": {p: sum(1 for r in rows if r["part"] == p)
                 for p in ("train", "validation", "test", "held_out")},
        "metrics": metrics, "history": hist["history"], "wall_s": time.time() - t0,
    }
    with open(os.path.join(a.out, "flower.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"kept_round": hist["kept_round"],
                      "test_records_macro_f1": metrics["test"]["records"]["macro_f1"]}))


if __name__ == "__main__":
    main()
