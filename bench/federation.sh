#!/usr/bin/env bash
# Starts a local federation for quality runs and benchmarks: one ledger and one gateway per
# site, each over a site store ingested from a folder, all on loopback; writes
# WORK/federation.toml for `ecgfed cohort plan` / `ecgfed train` (member `sci`).
#
#   bench/federation.sh WORK K SITE=FOLDER[,INGEST-OPTION...] ...
#
# e.g. bench/federation.sh /tmp/fed 1 cinc=DATA/training2017 ludb=../shared/ecg/ludb
#      bench/federation.sh /tmp/fed 1 mit=../shared/ecg/mitdb,--segmentation,beats
#
# The ledger is unwitnessed (`--no-witnesses`): a bench measures training, not the
# witnesses; docs/ledger.md describes them.
# REUSE=1 restarts the federation WORK already holds (ledger, gateways' key stores: the same
# pseudonyms, so the same splits) instead of making a new one.
# LINK_COHORTS=true gives the gateways `link_cohorts = true` (the same pseudonyms in every
# cohort, so that cohorts of the same sites split alike: docs/cohorts.md).
# AGE_EDGES="40,60" sets the gateways' age edges (AGE_EDGES="" gives one band, "0+"); unset,
# the gateways' default. Stores are kept between runs (delete WORK/store-SITE to re-ingest). Stop everything with
#   kill $(cat WORK/pids)
set -euo pipefail
BIN=${ECGFED_BIN:-target/release/ecgfed}
WORK=$1
K=$2
shift 2
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
: >"$WORK/pids"

for m in ledger sci; do
  [ -f "$WORK/$m.key" ] || "$BIN" keys generate --out "$WORK/$m.key" >/dev/null
done
members=(--member "ledger:ledger=$WORK/ledger.key" --member "sci:scientist=$WORK/sci.key")
for spec in "$@"; do
  site=${spec%%=*}
  [ -f "$WORK/hosp-$site.key" ] || "$BIN" keys generate --out "$WORK/hosp-$site.key" >/dev/null
  members+=(--member "hosp-$site:hospital:$site=$WORK/hosp-$site.key")
done
if [ -n "${REUSE:-}" ] && [ -d "$WORK/ledger" ]; then
  echo "federation: restarting the federation of $WORK (its ledger and gateways as they were)" >&2
else
  # A new ledger: the trust the members kept of the last one goes with it.
  rm -rf "$WORK/ledger" "$WORK"/gw-* "$WORK/genesis.toml" "$WORK"/*.ledger-trust.json "$WORK/evidence"
  "$BIN" ledger genesis --origin ecgfed.local/bench "${members[@]}" --no-witnesses --out "$WORK/genesis.toml" >/dev/null
  "$BIN" ledger init --genesis "$WORK/genesis.toml" --data "$WORK/ledger" --key "$WORK/ledger.key" >/dev/null
fi

# Starts "$@" in the background and waits for its "listening on ADDR" line; sets $addr.
start() {
  local log=$1
  shift
  "$@" >"$log.out" 2>"$log.err" &
  local pid=$!
  echo $pid >>"$WORK/pids"
  for _ in $(seq 1 600); do
    addr=$(sed -n 's/^listening on //p' "$log.out" | head -1)
    [ -n "$addr" ] && return 0
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  tail -3 "$log.err" >&2
  echo "federation: $* did not start; see $log.err" >&2
  exit 1
}

start "$WORK/ledger" "$BIN" ledger serve --data "$WORK/ledger" --listen 127.0.0.1:0 --key "$WORK/ledger.key"
ledger_addr=$addr
cat >"$WORK/federation.toml" <<EOF
ledger = "$ledger_addr"
trust = "ledger/trust.json"
member = "sci"
key_file = "sci.key"
EOF
for spec in "$@"; do
  site=${spec%%=*}
  rest=${spec#*=}
  IFS=, read -r -a parts <<<"$rest"
  folder=${parts[0]}
  if [ ! -f "$WORK/store-$site/manifest.json" ]; then
    echo "federation: ingesting $folder as site $site" >&2
    "$BIN" datasets ingest "$folder" --site "$site" --out "$WORK/store-$site" --force "${parts[@]:1}" >/dev/null
  fi
  cat >"$WORK/gateway-$site.toml" <<EOF
site = "$site"
member = "hosp-$site"
key_file = "hosp-$site.key"
store = "store-$site"
data = "gw-$site"
listen = "127.0.0.1:0"
k = $K
${AGE_EDGES+age_edges = [$AGE_EDGES]}
[ledger]
address = "$ledger_addr"
trust = "ledger/trust.json"
EOF
  if [ -n "${LINK_COHORTS:-}" ]; then
    printf '[policy]\nlink_cohorts = %s\n' "$LINK_COHORTS" >>"$WORK/gateway-$site.toml"
  fi
  start "$WORK/gw-$site" "$BIN" gateway serve --config "$WORK/gateway-$site.toml"
  printf '[[gateways]]\nsite = "%s"\naddress = "%s"\n' "$site" "$addr" >>"$WORK/federation.toml"
done
echo "federation: ledger $ledger_addr, gateways for $# sites; $WORK/federation.toml" >&2
