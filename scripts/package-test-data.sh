#!/usr/bin/env bash
# Fetches the ECG test recordings that Python packages ship, from the Python package index, into
# datasets/testdata/<package>/ and checks them against the SHA-256 list there:
#
#   pyedflib 0.1.42  pyedflib/tests/data/    EDF+ and BDF+ recordings
#   pydicom 3.0.2    pydicom/data/test_files/ a 12-lead ECG waveform DICOM file
#
# The files are committed (about 3.8 MB); this script refreshes or re-checks them.
#
#   scripts/package-test-data.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)/datasets/testdata"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# fetch PACKAGE==VERSION FOLDER_IN_WHEEL FILE...
fetch() {
  local spec=$1 inner=$2 name=${1%%=*}
  shift 2
  python3 -m pip download -q --no-deps --only-binary :all: -d "$tmp/$name" "$spec"
  local wheel
  wheel=$(ls "$tmp/$name"/*.whl | head -1)
  mkdir -p "$root/$name"
  for f in "$@"; do
    python3 -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))" \
      "$wheel" "$inner/$f" > "$root/$name/$f"
  done
  (cd "$root/$name" && sha256sum -c --quiet SHA256SUMS)
  echo "package-test-data: $(wc -l < "$root/$name/SHA256SUMS") files of $spec verified"
}

fetch 'pyedflib==0.1.42' pyedflib/tests/data test_generator.edf test_generator.bdf \
  test_generator_datarec_generator_2.bdf test_subsecond.edf
fetch 'pydicom==3.0.2' pydicom/data/test_files waveform_ecg.dcm
