#!/usr/bin/env python3
"""Splits a CinC 2017 training-set folder into hospitals for the federated quality runs
(bench/README.md, "Federated training: quality").

    bench/split_cinc2017.py SRC DEST --sites 4 --mode iid|skewed [--share 0.7]

Every record goes to exactly one site, chosen from SHA-256 of its name, so the split is the
same on every machine:
- iid: site = the hash modulo the number of sites;
- skewed: a record of class k (N, A, O, ~ in that order, modulo the sites) goes to site k with
  probability `share` (the hash's first 8 bytes as a fraction), else to one of the others by
  the hash: each site has most of one class.
DEST/site-1 ... DEST/site-N get copies of the records' .hea and .mat files (never links:
ingest refuses links that leave their folder), the records' lines of the labels file under
the same name (REFERENCE-original.csv when SRC has it, else REFERENCE.csv) and SRC's licence
file. Prints the rows per site and class as JSON.
"""
import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

CLASSES = ["N", "A", "O", "~"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("src", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--mode", choices=["iid", "skewed"], required=True)
    p.add_argument("--share", type=float, default=0.7)
    a = p.parse_args()
    labels = next(
        (a.src / n for n in ("REFERENCE-original.csv", "REFERENCE.csv") if (a.src / n).is_file()),
        None,
    )
    if labels is None:
        print(f"{a.src}: no REFERENCE-original.csv or REFERENCE.csv", file=sys.stderr)
        return 2
    rows = []
    for line in labels.read_text().splitlines():
        if not line.strip():
            continue
        rec, cls = line.strip().split(",")[:2]
        if not (a.src / f"{rec}.hea").is_file():
            print(f"{rec}: no header in {a.src}", file=sys.stderr)
            return 2
        rows.append((rec, cls))
    counts = {}
    by_site = {s: [] for s in range(a.sites)}
    for rec, cls in rows:
        h = hashlib.sha256(rec.encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        if a.mode == "iid":
            site = int.from_bytes(h[8:16], "big") % a.sites
        else:
            home = CLASSES.index(cls) % a.sites if cls in CLASSES else 0
            if u < a.share:
                site = home
            else:
                others = [s for s in range(a.sites) if s != home]
                site = others[int.from_bytes(h[8:16], "big") % len(others)]
        by_site[site].append((rec, cls))
        counts.setdefault(f"site-{site + 1}", {}).setdefault(cls, 0)
        counts[f"site-{site + 1}"][cls] += 1
    for s, recs in by_site.items():
        d = a.dest / f"site-{s + 1}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for rec, _ in recs:
            for ext in (".hea", ".mat"):
                shutil.copyfile(a.src / f"{rec}{ext}", d / f"{rec}{ext}")
        (d / labels.name).write_text("".join(f"{r},{c}\n" for r, c in recs))
        lic = a.src / "LICENSE-AND-SOURCE.md"
        if lic.is_file():
            shutil.copyfile(lic, d / lic.name)
    print(json.dumps({"mode": a.mode, "records": len(rows), "sites": counts}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
