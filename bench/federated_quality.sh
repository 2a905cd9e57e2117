#!/usr/bin/env bash
# Federated training quality (bench/README.md, "Federated training: quality"): the CinC 2017
# rhythm task over four "hospitals" made by bench/split_cinc2017.py, LUDB and the CinC 2021
# sources Georgia, Ningbo and PTB-XL held out, on one federation and with one test yardstick:
# every run is scored on the same four test parts (the split is per site, docs/training.md
# "Evaluation protocol"), once, at the end.
#
#   bench/federated_quality.sh SPLIT_DIR WORK [RUN...]
#
# SPLIT_DIR holds site-1 ... site-4 (bench/split_cinc2017.py SRC SPLIT_DIR --mode iid|skewed).
# RUN: any of pooled fedavg fedprox alone-1 alone-2 alone-3 alone-4 dp flower (default all, in
# that order). pooled is pull mode over the four sites; fedavg / fedprox federated mode;
# alone-K pull mode training on site K only (`train_sites`); dp FedAvg with DP-SGD at every
# site; flower the same FedAvg with Flower and PyTorch (bench/flower_fedavg.py; needs
# FLOWER_PYTHON, a Python with flwr and torch). Epochs of the pooled and single-site runs =
# ROUNDS (default 10) = rounds of the federated ones, one local epoch per round. Batch: 64 in
# pull mode; 16 at each of the four federated sites, so that a round's average of four sites'
# steps sees as many rows as one pooled step (FedAvg over K sites of batch B/K tracks pooled
# training of batch B step for step on IID data). DP: at most 40 steps a round at a site.
#
# REUSE=1: restart the federation WORK already holds (bench/federation.sh), the same splits.
# COHORT_SUFFIX: appended to the cohort ids (e.g. -r20 for another ROUNDS on a federation
# restarted with REUSE=1, whose ledger already holds the first runs' cohorts).
# Writes WORK/specs/RUN.toml, WORK/model-RUN/ and one JSON line per run to WORK/results.jsonl
# (test macro-F1 per record and per window, held-out sites, wall seconds, ε for dp).
# ECGFED_BIN: the ecgfed binary (default target/release/ecgfed); ECGFED_SHARED_ECG: the shared
# data (default ../shared/ecg).
set -euo pipefail
cd "$(dirname "$0")/.."
SPLIT=$(cd "$1" && pwd)
WORK=$2
shift 2
RUNS=${*:-pooled fedavg fedprox alone-1 alone-2 alone-3 alone-4 dp flower}
ROUNDS=${ROUNDS:-10}
BIN=${ECGFED_BIN:-target/release/ecgfed}
SHARED=${ECGFED_SHARED_ECG:-../shared/ecg}
mkdir -p "$WORK/specs"
WORK=$(cd "$WORK" && pwd)
[ -f "$WORK/pids" ] && kill $(cat "$WORK/pids") 2>/dev/null || true
trap '[ -f "$WORK/pids" ] && kill $(cat "$WORK/pids") 2>/dev/null || true' EXIT
name=$(basename "$SPLIT")

# The same pseudonyms in every cohort of a gateway: every run draws the same parts.
LINK_COHORTS=true bench/federation.sh "$WORK" 2 "site1=$SPLIT/site-1" "site2=$SPLIT/site-2" \
  "site3=$SPLIT/site-3" "site4=$SPLIT/site-4" "ludb=$SHARED/ludb" \
  "georgia=$SHARED/cinc2021/georgia" "ningbo=$SHARED/cinc2021/ningbo" \
  "ptbxl=$SHARED/cinc2021/ptb-xl"

# The spec of run $1: mode $2, extra [train] lines $3, [federated] tables $4.
spec() {
  cat >"$WORK/specs/$1.toml" <<EOF
purpose = "federated quality run $1 on $name: N / AF / other / noisy over four CinC 2017 sites"
cohort_id = "fq-$name-$1${COHORT_SUFFIX:-}"
seed = 2017
mode = "$2"
sites = ["site1", "site2", "site3", "site4"]
held_out = ["ludb", "georgia", "ningbo", "ptbxl"]
held_out_targets = "all"
targets = "all"

[balance]
by = []

[signal]
lead = "II"
sample_rate = 125
window_secs = 10

[train]
epochs = $ROUNDS
patience = $ROUNDS
lr = 0.002
channels = [32, 64, 128, 128]
kernel = 9
val_fraction = 0.2
test_fraction = 0.2
$3
$4
EOF
}

fed="[federated]
rounds = $ROUNDS
local_epochs = 1
round_timeout_secs = 3600"

# One libtorch thread per site (the four sites share this machine's cores); a quarter of the
# pooled batch.
local="threads = 1
batch_size = 16"

for run in $RUNS; do
  case "$run" in
  pooled) spec "$run" pull "batch_size = 64" "" ;;
  fedavg) spec "$run" federated "$local" "$fed" ;;
  fedprox) spec "$run" federated "$local" "$fed
aggregation = \"fedprox\"
mu = 0.01" ;;
  alone-[1-4]) spec "$run" pull "batch_size = 64
train_sites = [\"site${run#alone-}\"]" "" ;;
  dp) spec "$run" federated "$local" "$fed
local_steps = 40
[federated.dp]
clip_norm = 1.0
noise_multiplier = 1.0
delta = 1e-5" ;;
  flower) ;;
  *)
    echo "unknown run $run" >&2
    exit 2
    ;;
  esac
  out="$WORK/model-$run"
  rm -rf "$out"
  start=$(date +%s.%N)
  if [ "$run" = flower ]; then
    # The pooled run's windows and parts (the same rows, the same split), one process per
    # site and one server, FedAvg with the same network, rounds and local epochs.
    "${FLOWER_PYTHON:?FLOWER_PYTHON: a Python with flwr and torch}" bench/flower_fedavg.py \
      --windows "$WORK/model-pooled/windows" --card "$WORK/model-fedavg/model-card.json" \
      --rounds "$ROUNDS" --out "$out" 2>&1 | tee "$WORK/train-$run.log"
  else
    export=()
    [ "$run" = pooled ] && export=(--export-windows "$out/windows")
    "$BIN" train --spec "$WORK/specs/$run.toml" --federation "$WORK/federation.toml" \
      --out "$out" "${export[@]}" 2>&1 | tee "$WORK/train-$run.log"
  fi
  end=$(date +%s.%N)
  if [ "$run" = dp ]; then
    ledger=$(sed -n 's/^ledger = "\(.*\)"$/\1/p' "$WORK/federation.toml")
    model=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_id"])' "$out/model-card.json")
    "$BIN" audit lineage --remote "$ledger" --checkpoint "$WORK/ledger/trust.json" \
      --model "$model" --json >"$out/lineage.json"
  fi
  python3 - "$run" "$out" "$start" "$end" "$name" >>"$WORK/results.jsonl" <<'PY'
import json, sys
run, out, start, end, split = sys.argv[1:]
import os
path = f"{out}/model-card.json"
card = json.load(open(path if os.path.exists(path) else f"{out}/flower.json"))
m = card["metrics"]
def f1(s, key):
    return None if s is None else round(s[key]["macro_f1"], 4)
row = {
    "split": split, "run": run, "model_id": card["model_id"],
    "test_records_macro_f1": f1(m["test"], "records"),
    "test_windows_macro_f1": f1(m["test"], "windows"),
    "validation_records_macro_f1": f1(m.get("validation"), "records"),
    "kept": card["best_epoch"], "rows": card.get("rows"),
    "held_out_records": {
        k: {c["class"]: round(c["f1"], 3) for c in v["records"]["classes"]
            if c["support"] and c["f1"] is not None}
        for k, v in m.get("held_out", {}).items()
    },
    "wall_s": round(float(end) - float(start), 1),
}
try:
    row["privacy"] = json.load(open(f"{out}/lineage.json")).get("privacy")
except FileNotFoundError:
    pass
print(json.dumps(row))
PY
  tail -1 "$WORK/results.jsonl" >&2
done
