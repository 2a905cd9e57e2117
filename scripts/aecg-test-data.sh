#!/usr/bin/env bash
# Copies HL7's aECG example from a clone of the public FDA/aecg-python repository (tested at
# commit b043729) into datasets/testdata/hl7-aecg/ and checks it against the SHA-256 list there.
#
#   scripts/aecg-test-data.sh AECG_PYTHON_CHECKOUT
set -euo pipefail
src="${1:?usage: scripts/aecg-test-data.sh AECG_PYTHON_CHECKOUT}/src/aecg/data/hl7/2003-12 Schema/example/Example aECG.xml"
dst="$(cd "$(dirname "$0")/.." && pwd)/datasets/testdata/hl7-aecg"
cp "$src" "$dst/Example aECG.xml"
(cd "$dst" && sha256sum -c --quiet SHA256SUMS) && echo "aecg-test-data: verified in $dst"
