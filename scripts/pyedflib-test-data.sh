#!/usr/bin/env bash
# Fetches the EDF/BDF test recordings that the pyedflib package ships (from the Python package
# index, pyedflib 0.1.42) into datasets/testdata/pyedflib/ and checks them against the SHA-256
# list there. The files are committed (about 3.5 MB); this script refreshes or re-checks them.
#
#   scripts/pyedflib-test-data.sh
set -euo pipefail
dst="$(cd "$(dirname "$0")/.." && pwd)/datasets/testdata/pyedflib"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary :all: -d "$tmp" 'pyedflib==0.1.42'
wheel=$(ls "$tmp"/pyedflib-*.whl | head -1)
mkdir -p "$dst"
for f in test_generator.edf test_generator.bdf test_generator_datarec_generator_2.bdf \
         test_subsecond.edf; do
  python3 -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('pyedflib/tests/data/' + sys.argv[2]))" \
    "$wheel" "$f" > "$dst/$f"
done
(cd "$dst" && sha256sum -c --quiet SHA256SUMS) && echo "pyedflib-test-data: $(wc -l < "$dst/SHA256SUMS") files verified in $dst"
