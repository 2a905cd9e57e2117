#!/usr/bin/env bash
# Checks that a shipped ecgfed binary holds no test machinery (issue 23, item 9): built with
# plain `cargo build --release -p ecgfed` (no dev-dependency features), its version line names
# no test kit and its bytes contain neither the gateway's nor the datasets' fault hooks nor the
# bench's unauthenticated in-memory Flight server. Usage: scripts/check-release.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked -p ecgfed
  bin="${CARGO_TARGET_DIR:-target}/release/ecgfed"
fi
version=$("$bin" --version)
case "$version" in
  *"test build"*) echo "check-release: $bin is a test build: $version" >&2; exit 1 ;;
esac
# String literals of the fault hooks, and the (mangled) names of the test kit's items.
for marker in ECGFED_GATEWAY_FAULT alter-sample "fault injected" die-in-round 12MemoryFlight \
              16append_unchecked 5Store7put_raw 14stop_erasure_at "fault injection: reader panic"; do
  if grep -q -a -F "$marker" "$bin"; then
    echo "check-release: $bin contains test machinery: $marker" >&2
    exit 1
  fi
done
echo "check-release: $bin ($version) holds no test machinery"
