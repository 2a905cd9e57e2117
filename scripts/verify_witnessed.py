#!/usr/bin/env python3
"""Verifies a witnessed checkpoint from docs/ledger.md alone, with py_ecc (the Python package
index's `py_ecc`, 8.0): the ledger's signature line, the witnesses' key id, bitmap and
aggregate cosignature. Usage:

    python3 scripts/verify_witnessed.py ledger/tests/vectors/witnessed-checkpoint.json

The JSON file holds `origin`, `ledger_public_key`, `witnesses` ([{id, public_key}], genesis
order), `quorum` and `note` (the witnessed signed note). Prints the cosigners and exits 0 when
everything verifies, 1 otherwise (and with --tamper, checks that a one-bit change is refused).
"""
import base64
import functools
import hashlib
import json
import sys

from py_ecc.bls import G2Basic
from py_ecc.bls.g2_primitives import G1_to_pubkey, pubkey_to_G1
from py_ecc.optimized_bls12_381 import add


def verify(v):
    origin = v["origin"]
    lpk = bytes.fromhex(v["ledger_public_key"])
    body, sigs = v["note"].split("\n\n", 1)
    body += "\n"
    lines = [l for l in sigs.split("\n") if l]
    ledger_ok = False
    agg_ok = False
    signers = []
    for line in lines:
        assert line.startswith("\u2014 "), line
        name, b64 = line[2:].split(" ", 1)
        raw = base64.b64decode(b64, validate=True)
        if name == origin:
            kid = hashlib.sha256(origin.encode() + b"\x0a\xff" + lpk).digest()[:4]
            if raw[:4] == kid and len(raw) == 100:
                ledger_ok = G2Basic.Verify(lpk, b"ecgfed/v1/checkpoint\n" + body.encode(), raw[4:])
        elif name == origin + "/witnesses":
            keys = [bytes.fromhex(w["public_key"]) for w in v["witnesses"]]
            n = len(keys)
            kid = hashlib.sha256(
                name.encode() + b"\x0a\xfe" + v["quorum"].to_bytes(4, "big") + b"".join(keys)
            ).digest()[:4]
            bl = (n + 7) // 8
            if raw[:4] != kid or len(raw) != 4 + bl + 96:
                continue
            bitmap = raw[4 : 4 + bl]
            chosen = []
            for i in range(bl * 8):
                if bitmap[i // 8] & (0x80 >> (i % 8)):
                    if i >= n:
                        return False, []
                    chosen.append(i)
            if len(chosen) < v["quorum"]:
                return False, []
            pk_sum = G1_to_pubkey(functools.reduce(add, [pubkey_to_G1(keys[i]) for i in chosen]))
            message = b"ecgfed/v1/cosign\n" + body.encode()
            agg_ok = G2Basic.Verify(pk_sum, message, raw[4 + bl :])
            signers = [v["witnesses"][i]["id"] for i in chosen]
    return ledger_ok and agg_ok, signers


def main():
    v = json.load(open(sys.argv[1]))
    ok, signers = verify(v)
    print(("OK" if ok else "FAILED") + ": ledger signature and aggregate of " + ", ".join(signers))
    if "--tamper" in sys.argv:
        t = dict(v)
        t["note"] = v["note"].replace("\n1234\n", "\n1235\n", 1)
        bad, _ = verify(t)
        print("tampered size: " + ("ACCEPTED (wrong)" if bad else "refused"))
        ok = ok and not bad
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
