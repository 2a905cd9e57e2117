#!/usr/bin/env bash
# Copies the wfdb-python sample records that the datasets tests use into
# datasets/testdata/wfdb-python/ and checks them against the SHA-256 list there.
#
#   scripts/wfdb-test-data.sh WFDB_PYTHON_CHECKOUT
#
# WFDB_PYTHON_CHECKOUT is a clone of the public MIT-LCP/wfdb-python repository (tested at
# commit 6850ad1aa0c1fcb2282b3625f767de98396cf740); its sample-data/ folder is the set that
# wfdb-python's own tests read, and tests/target-output/ holds what the WFDB software
# package's rdsamp prints for some of them. The files are committed (about 1.8 MB), so this script is
# needed only to refresh or re-check them. The full set, for bench/reader_compare.py, is the
# checkout's sample-data/ folder itself.
set -euo pipefail
src="${1:?usage: scripts/wfdb-test-data.sh WFDB_PYTHON_CHECKOUT}/sample-data"
dst="$(cd "$(dirname "$0")/.." && pwd)/datasets/testdata/wfdb-python"
[ -d "$src" ] || { echo "wfdb-test-data: no sample-data folder in $1" >&2; exit 1; }
mkdir -p "$dst/multi-segment"
files=(
  310derive.hea 310derive.dat 310derive_2.hea 310derive_2.dat 310derive_3.hea 310derive_3.dat
  311derive.hea 311derive.dat 311derive_2.hea 311derive_2.dat 311derive_3.hea 311derive_3.dat
  311derive_4.hea 311derive_4.dat
  binformats.hea binformats.d0 binformats.d1 binformats.d2 binformats.d3 binformats.d4
  binformats.d5 binformats.d6 binformats.d7 binformats.d8 binformats.d9
  flacformats.hea flacformats.d0 flacformats.d1 flacformats.d2
  flac_3_constant.hea flac_3_constant.dat
  3000003_0003.hea 3000003_0003.dat 100_3chan.hea 100_3chan.dat
  test01_00s.hea test01_00s.dat test01_00s_frame.hea test01_00s_skew.hea
  test01_00s_skewframe.hea
  mixedsignals.hea mixedsignals_e.dat mixedsignals_p.dat mixedsignals_r.dat
  a103l.hea a103l-no-len.hea a103l.mat
)
for f in "${files[@]}"; do cp "$src/$f" "$dst/$f"; done
# An EDF+ file of annotations only (no signal), kept apart from the records above.
mkdir -p "$dst/edf"
cp "$src/test_edfann.edf" "$dst/edf/"
# Values printed by the WFDB software package's rdsamp (C), from wfdb-python's tests: the
# independent reference the Rust tests compare with.
mkdir -p "$dst/expected"
tgt="$1/tests/target-output"
for f in record-1f record-flac; do gunzip -c "$tgt/$f.gz" > "$dst/expected/$f"; done
for f in record-2d record-2e record-4d; do cp "$tgt/$f" "$dst/expected/$f"; done
mkdir -p "$dst/multi-segment/p000878"
cp "$src/multi-segment/p000878"/3269321_* "$dst/multi-segment/p000878/"
for d in 041s fixed1; do
  mkdir -p "$dst/multi-segment/$d"
  cp "$src/multi-segment/$d"/* "$dst/multi-segment/$d/"
done
(cd "$dst" && sha256sum -c --quiet SHA256SUMS) && echo "wfdb-test-data: $(wc -l < "$dst/SHA256SUMS") files verified in $dst"
