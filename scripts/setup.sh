#!/usr/bin/env bash
# ecgfed set-up: installs every system package the build and the tests need on a fresh
# Debian 12 machine. Idempotent: re-running it only checks what is already there.
#
#   scripts/setup.sh            system packages for building and testing
#   scripts/setup.sh --bench    also the Python `wfdb` reader used by bench/ (own venv)
set -euo pipefail

cd "$(dirname "$0")/.."

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# libclang for bindgen (RocksDB and other -sys crates); a C/C++ toolchain for bundled sources.
# (bindgen loads libclang.so, which only libclang-dev provides; libclang1 alone is not enough.)
[ -n "$(ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/llvm-*/lib/libclang-*.so 2>/dev/null)" ] || need_apt+=(libclang-dev)
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ "${1:-}" = "--bench" ]; then
  if [ ! -x .venv-bench/bin/python ]; then
    python3 -m venv .venv-bench
  fi
  .venv-bench/bin/pip install -q 'wfdb==4.3.1' scipy
fi

echo "setup: protoc $(protoc --version | awk '{print $2}'), $(cargo --version)"
