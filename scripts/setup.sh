#!/usr/bin/env bash
# ecgfed set-up: installs every system package the build and the tests need on a fresh
# Debian 12 machine. Idempotent: re-running it only checks what is already there.
#
#   scripts/setup.sh            system packages for building and testing, and .venv-test
#                               (pyarrow and py_ecc, for the independent-client tests)
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
# openssl makes the throw-away certificate of the gateway TLS test.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Python with venv for the plain Arrow Flight client test (pyarrow, .venv-test).
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need_apt+=(python3-venv)

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

# The tests read a granted slice with pyarrow.flight, a Flight client that knows nothing of
# ecgfed (cli/tests/gateway_e2e.rs, docs/flight.md), and check the witnessed-checkpoint vector
# with py_ecc, a BLS implementation that knows nothing of ecgfed (ledger/tests/vectors.rs).
if ! .venv-test/bin/python -c "import pyarrow.flight, py_ecc" >/dev/null 2>&1; then
  echo "setup: creating .venv-test with pyarrow and py_ecc"
  rm -rf .venv-test
  python3 -m venv .venv-test
  .venv-test/bin/pip install -q 'pyarrow==25.0.1' 'py_ecc==8.0.0'
fi

# libtorch for the trainer (tch 0.26 needs libtorch 2.13.0 exactly). The Python package index
# has the CUDA build of the torch wheel only; it runs on CPU-only machines too when installed
# with its dependencies (TOOLCHAIN.md). .cargo/config.toml points torch-sys at
# .venv-torch/libtorch, the wheel's `torch` folder; the build records its lib folder as run path.
if ! .venv-torch/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" >/dev/null 2>&1; then
  echo "setup: creating .venv-torch with torch 2.13.0 (libtorch for tch; about 5 GB)"
  rm -rf .venv-torch
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install -q 'torch==2.13.0' numpy
fi
torch_dir=$(.venv-torch/bin/python -c "import os, torch; print(os.path.dirname(torch.__file__))" 2>/dev/null)
ln -sfn "$torch_dir" .venv-torch/libtorch

if [ "${1:-}" = "--bench" ]; then
  if [ ! -x .venv-bench/bin/python ]; then
    python3 -m venv .venv-bench
  fi
  .venv-bench/bin/pip install -q 'wfdb==4.3.1' scipy pyarrow soundfile 'pyedflib==0.1.42'
fi

echo "setup: protoc $(protoc --version | awk '{print $2}'), $(cargo --version)"
