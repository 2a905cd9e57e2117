#!/usr/bin/env bash
# What federated mode moves and costs against pull mode, for one cohort (bench/README.md,
# "Federated training: bytes and time"). Runs `ecgfed demo` twice over the same topology and
# inputs — pull mode, then federated mode — with the demo cohort on the default network
# (channels 32, 64, 128, 128), and prints, for each, the bytes that crossed a hospital's
# boundary and the wall times.
#
#   bench/federated_cost.sh WORK [INPUT_ROOT]   # INPUT_ROOT: default datasets/sample
#
# ECGFED: the ecgfed binary (default target/release/ecgfed).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$1
INPUT=${2:-datasets/sample}
ECGFED=${ECGFED:-target/release/ecgfed}
mkdir -p "$WORK/topology"
cp deploy/topology.toml "$WORK/topology/"
# The demo cohort with the default network (its channels and kernel lines dropped).
sed -e 's/^cohort_id = .*/cohort_id = "cost"/' -e '/^channels = /d' -e '/^kernel = /d' \
  deploy/cohort.toml >"$WORK/topology/cohort.toml"
for mode in pull federated; do
  rm -rf "${WORK:?}/$mode"
  start=$(date +%s.%N)
  "$ECGFED" demo --topology "$WORK/topology" --sample "$INPUT" --data "$WORK/$mode" \
    --mode "$mode" --json >"$WORK/$mode.json"
  end=$(date +%s.%N)
  echo "$start $end" >"$WORK/$mode.time"
  model=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["model_id"])' "$WORK/$mode.json")
  "$ECGFED" audit lineage --data "$WORK/$mode/ledger" --model "$model" --json \
    >"$WORK/$mode-lineage.json"
done
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def load(p):
    with open(p) as f:
        return json.load(f)
pull = load(f"{w}/pull-lineage.json")
rounds = load(f"{w}/federated/trainer/model/rounds.json")
served = [s for sl in pull["slices"] for s in sl["served"]]
pulled = sum(s["bytes"] for s in served)
rows = sum(s["rows"] for s in served)
t = {m: [float(x) for x in open(f"{w}/{m}.time").read().split()] for m in ("pull", "federated")}
demo = {m: t[m][1] - t[m][0] for m in t}
down = sum(r["bytes_to_sites"] for r in rounds)
up = sum(r["bytes_from_sites"] for r in rounds)
out = {
    "pull": {"rows_pulled": rows, "ecg_bytes_pulled": pulled, "demo_seconds": round(demo["pull"], 1)},
    "federated": {
        "rounds": len(rounds),
        "sites_per_round": [len(r["sites"]) for r in rounds],
        "bytes_to_sites_per_round": [r["bytes_to_sites"] for r in rounds],
        "bytes_from_sites_per_round": [r["bytes_from_sites"] for r in rounds],
        "bytes_total": down + up,
        "round_seconds": [round(r["secs"], 2) for r in rounds],
        "demo_seconds": round(demo["federated"], 1),
        "rows_trained_per_round": [r["rows"] for r in rounds],
    },
    "ratio_federated_bytes_per_round_to_pull_bytes": round((down + up) / len(rounds) / max(pulled, 1), 3),
}
print(json.dumps(out, indent=2))
PY
