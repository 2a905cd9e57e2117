#!/usr/bin/env bash
# Checks that a shipped ecgfed binary holds no test machinery (issue 23, item 9): built with
# plain `cargo build --release -p ecgfed` (no dev-dependency features), its version line names
# no test kit and its bytes contain neither the gateway's nor the datasets' fault hooks nor the
# bench's unauthenticated in-memory Flight server.
#
#   scripts/check-release.sh                 build the shipped binary, then check it
#   scripts/check-release.sh --after-tests   the same, right after the test build (CI): also
#                                            fail if the build compiled any crate outside the
#                                            workspace again, i.e. a test dependency changed
#                                            its features (Cargo.toml, "Feature pins")
#   scripts/check-release.sh BINARY          check BINARY only
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-}"
if [ -z "$bin" ] || [ "$bin" = "--after-tests" ]; then
  log=$(cargo build --release --locked -p ecgfed 2>&1) || { echo "$log" >&2; exit 1; }
  rebuilt=$(grep -E '^ +Compiling ' <<<"$log" | awk '{print $2}' | grep -v '^ecgfed' || true)
  if [ "$bin" = "--after-tests" ] && [ -n "$rebuilt" ]; then
    echo "check-release: the shipped build compiled again what the test build had built with" \
         "other features:" $rebuilt >&2
    echo "check-release: pin those features (Cargo.toml, \"Feature pins\"): compare" \
         "\`cargo tree --workspace -e features\` with \`cargo tree -p ecgfed -e features -e no-dev\`" >&2
    exit 1
  fi
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
