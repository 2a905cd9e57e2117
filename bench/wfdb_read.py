#!/usr/bin/env python3
"""Reference read benchmark: read every WFDB record under the given folders with the
Python `wfdb` package and report throughput.

    python bench/wfdb_read.py [--json] FOLDER...

Every `*.hea` file found (recursively) is one record. Each record's full signal is read
with `wfdb.rdrecord(..., physical=True)` (digital -> physical units, as the Rust reader
does), and its MIT `.atr` annotation file with `wfdb.rdann(..., 'atr')` where one exists.

Known quirk: some CinC 2021 Georgia headers give the record name as `E00271.mat`, which
wfdb 4.3.1's `rdheader` rejects (HeaderSyntaxError). Those records are read instead with
`scipy.io.loadmat` (variable `val`, leads x samples) plus gain/baseline from the header
parsed here, and counted as "fallback" reads. Any other failure is counted, reported on
stderr with its reason, and the run goes on.

The timed span (time.perf_counter) covers the whole read: finding the headers, reading
every header, signal and annotation file, and the digital -> physical conversion.
`bytes` is the total size of the signal data files (.dat/.mat) read.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import scipy.io
import wfdb
from wfdb.io.header import HeaderSyntaxError

READER = "wfdb-python 4.3.1"


def find_headers(folders):
    """Every *.hea file under the folders, recursively, sorted for a stable order."""
    found = []
    for folder in folders:
        if os.path.isfile(folder) and folder.endswith(".hea"):
            found.append(folder)
            continue
        if not os.path.isdir(folder):
            raise SystemExit(f"wfdb_read: not a folder: {folder}")
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".hea"):
                    found.append(os.path.join(root, name))
    return found


def parse_gain(field, adc_zero):
    """WFDB gain field `gain[(baseline)][/units]` -> (gain, baseline)."""
    field = field.split("/", 1)[0]
    baseline = adc_zero
    if "(" in field:
        field, rest = field.split("(", 1)
        baseline = int(rest.rstrip(")"))
    gain = float(field) if field else 0.0
    if gain == 0.0:
        gain = 200.0  # WFDB default (DEFGAIN) when the gain is absent or zero
    return gain, baseline


def read_mat_fallback(base):
    """Read a record whose header wfdb rejects: header parsed here, signal via loadmat.

    Returns (physical signal as samples x leads, list of signal file paths)."""
    folder = os.path.dirname(base)
    with open(base + ".hea", "r", encoding="latin-1") as fh:
        lines = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    record = lines[0].split()
    n_sig = int(record[1])
    n_samp = int(record[3]) if len(record) > 3 else None
    sig_lines = [ln.split() for ln in lines[1 : 1 + n_sig]]
    if len(sig_lines) != n_sig:
        raise ValueError(f"header lists {len(sig_lines)} signal lines, record line says {n_sig}")
    files = sorted({s[0] for s in sig_lines})
    if len(files) != 1 or not files[0].endswith(".mat"):
        raise ValueError(f"fallback handles one .mat signal file only, header names {files}")
    gains, baselines = [], []
    for s in sig_lines:
        adc_zero = int(s[4]) if len(s) > 4 else 0
        g, b = parse_gain(s[2] if len(s) > 2 else "", adc_zero)
        gains.append(g)
        baselines.append(b)
    path = os.path.join(folder, files[0])
    val = scipy.io.loadmat(path)["val"]
    if val.shape[0] != n_sig or (n_samp is not None and val.shape[1] != n_samp):
        raise ValueError(f"`val` is {val.shape}, header says {n_sig} x {n_samp}")
    digital = val.T.astype(np.float64)
    physical = (digital - np.asarray(baselines, dtype=np.float64)) / np.asarray(gains)
    return physical, [path]


def run(folders):
    stats = {"records": 0, "failed": 0, "fallback": 0, "bytes": 0, "annotations": 0}
    failures = []
    start = time.perf_counter()
    headers = find_headers(folders)
    for hea in headers:
        base = hea[: -len(".hea")]
        folder = os.path.dirname(hea)
        try:
            try:
                rec = wfdb.rdrecord(base, physical=True)
                paths = sorted({os.path.join(folder, f) for f in (rec.file_name or [])})
                fallback = False
            except HeaderSyntaxError:
                _signal, paths = read_mat_fallback(base)
                fallback = True
            size = sum(os.path.getsize(p) for p in paths)
            if os.path.exists(base + ".atr"):
                wfdb.rdann(base, "atr")
                stats["annotations"] += 1
        except Exception as exc:  # any other failure: report it and go on
            stats["failed"] += 1
            failures.append((hea, f"{type(exc).__name__}: {exc}"))
            continue
        stats["records"] += 1
        stats["fallback"] += fallback
        stats["bytes"] += size
    seconds = time.perf_counter() - start
    return stats, failures, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    ap.add_argument("folders", nargs="+", metavar="FOLDER")
    args = ap.parse_args()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats, failures, seconds = run(args.folders)

    for hea, reason in failures:
        print(f"wfdb_read: FAILED {hea}: {reason}", file=sys.stderr)
    if caught:
        kinds = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        print(f"wfdb_read: {len(caught)} warnings, {len(kinds)} distinct:", file=sys.stderr)
        for k in kinds[:10]:
            print(f"  {k}", file=sys.stderr)

    mb_per_s = stats["bytes"] / 1e6 / seconds if seconds > 0 else 0.0
    records_per_s = stats["records"] / seconds if seconds > 0 else 0.0
    if args.json:
        print(
            json.dumps(
                {
                    "records": stats["records"],
                    "failed": stats["failed"],
                    "fallback": stats["fallback"],
                    "bytes": stats["bytes"],
                    "seconds": round(seconds, 6),
                    "mb_per_s": round(mb_per_s, 3),
                    "records_per_s": round(records_per_s, 3),
                    "reader": READER,
                }
            )
        )
    else:
        print(f"reader          {READER}")
        print(f"records read    {stats['records']}  (fallback {stats['fallback']})")
        print(f"records failed  {stats['failed']}")
        print(f".atr files      {stats['annotations']}")
        print(f"signal bytes    {stats['bytes']}  ({stats['bytes'] / 1e6:.1f} MB)")
        print(f"seconds         {seconds:.3f}")
        print(f"MB/s            {mb_per_s:.1f}")
        print(f"records/s       {records_per_s:.1f}")
    return 0  # failures are reported in the figures, not the exit status


if __name__ == "__main__":
    sys.exit(main())
