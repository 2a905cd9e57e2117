#!/usr/bin/env bash
# The trainer's quality runs (issue figures in bench/README.md). Builds a federation with
# bench/federation.sh in WORK, then runs `ecgfed train` with a spec of bench/quality/.
#
#   bench/quality.sh rhythm WORK CINC2017_DIR   # full CinC 2017 training set folder
#   bench/quality.sh beats  WORK
#
# CINC2017_DIR: the complete training set (8,528 records with REFERENCE-original.csv), e.g.
# training2017/ of the GitHub repository Enei7/ECG2Text-AF at commit b1060827f851, brought
# onto the machine outside this repository (never committed). Shared data: ECGFED_SHARED_ECG
# (default ../shared/ecg). The model and its figures land in WORK/model-TASK; with EXPORT=1 the
# training rows also in WORK/windows-TASK (`--export-windows`, for bench/beats_cv.py).
# SPEC: another spec than bench/quality/ (e.g. the configuration bench/beats_cv.py chose).
set -euo pipefail
cd "$(dirname "$0")/.."
task=$1
WORK=$2
SHARED=${ECGFED_SHARED_ECG:-../shared/ecg}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
[ -f "$WORK/pids" ] && kill $(cat "$WORK/pids") 2>/dev/null || true
trap '[ -f "$WORK/pids" ] && kill $(cat "$WORK/pids") 2>/dev/null || true' EXIT

case "$task" in
rhythm)
  cinc=$3
  bench/federation.sh "$WORK" 2 "cinc=$cinc" "ludb=$SHARED/ludb" \
    "georgia=$SHARED/cinc2021/georgia" "ningbo=$SHARED/cinc2021/ningbo" \
    "ptbxl=$SHARED/cinc2021/ptb-xl"
  spec=bench/quality/rhythm-cinc2017.toml
  ;;
beats)
  # de Chazal et al. 2004: DS1 trains, DS2 tests; paced records 102 104 107 217 excluded.
  ds1="101 106 108 109 112 114 115 116 118 119 122 124 201 203 205 207 208 209 215 220 223 230"
  ds2="100 103 105 111 113 117 121 123 200 202 210 212 213 214 219 221 222 228 231 232 233 234"
  for part in ds1 ds2; do
    dir="$WORK/mitdb-$part"
    rm -rf "$dir"
    mkdir -p "$dir"
    mit=$(cd "$SHARED/mitdb" && pwd)
    # Copies, not symbolic links: ingest refuses a link that leaves its folder
    # (docs/datasets.md, "File names from inputs").
    cp "$mit/LICENSE-AND-SOURCE.md" "$dir/"
    recs=$ds1
    [ "$part" = ds2 ] && recs=$ds2
    for r in $recs; do
      for f in "$mit/$r".*; do cp "$f" "$dir/"; done
    done
  done
  # One age band: with 22 patients a site, finer cells would mostly fall under k.
  AGE_EDGES="" bench/federation.sh "$WORK" 2 \
    "ds1=$WORK/mitdb-ds1,--segmentation,beats,--beat-secs,2" \
    "ds2=$WORK/mitdb-ds2,--segmentation,beats,--beat-secs,2"
  spec=bench/quality/beats-mitdb.toml
  ;;
*)
  echo "usage: bench/quality.sh rhythm WORK CINC2017_DIR | beats WORK" >&2
  exit 2
  ;;
esac

rm -rf "$WORK/model-$task" "$WORK/windows-$task"
export_args=()
[ -n "${EXPORT:-}" ] && export_args=(--export-windows "$WORK/windows-$task")
time "${ECGFED_BIN:-target/release/ecgfed}" train --spec "${SPEC:-$spec}" \
  --federation "$WORK/federation.toml" --out "$WORK/model-$task" "${export_args[@]}" 2>&1 |
  tee "$WORK/train-$task.log"
