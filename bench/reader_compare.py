#!/usr/bin/env python3
"""Ingest records with ecgfed and compare every stored sample with a reference reader's own
decoding: wfdb-python for WFDB records, pyedflib for EDF/BDF files, pydicom for DICOM
waveform ECG, and an independent xml.etree reading for HL7 aECG.

    .venv-bench/bin/python bench/reader_compare.py wfdb SAMPLE_DATA [--ecgfed BIN] [--json]
    .venv-bench/bin/python bench/reader_compare.py edf|dicom|aecg FOLDER... [--ecgfed BIN] [--json]

`wfdb`: SAMPLE_DATA is the `sample-data` folder of a wfdb-python checkout (the set its own
tests use); its top-level records and each folder under `multi-segment/` are ingested. Each
stored record is read with `wfdb.rdrecord(..., physical=True, smooth_frames=False)`
(multi-segment records with `m2s=True`). `edf`: every `.edf`/`.bdf` of the folders, read with
pyedflib's `EdfReader.readSignal`.

One `ecgfed datasets ingest ... --window-secs 0` stores each whole record as one segment, then
lead by lead:

- the stored leads are the record's ECG leads (docs/datasets.md "Mixed-signal records");
- the reference's values, in the file's units, are converted to mV as ecgfed does;
- a lead stored at a higher rate than its own holds each sample: stored sample j of n is the
  reference's sample floor(j * m / n), m the reference's sample count for that lead;
- every stored sample must equal the reference within 1e-4 mV (or within float32 rounding,
  |value| * 2^-24, for values beyond 1,677 mV, which only synthetic test signals reach: these
  are listed), and be NaN exactly where the reference has NaN.

Records ecgfed skipped are listed with ecgfed's reason. Exit status 1 when any stored lead
differs from the reference.
"""


import argparse
import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pyarrow.parquet as pq

TOLERANCE_MV = 1e-4
MV_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}


def wfdb_reference(path):
    """(lead names, per-lead values in mV, reader) of a WFDB record (path without `.hea`)."""
    import wfdb

    rec = wfdb.rdrecord(path, physical=True, smooth_frames=False, m2s=True)
    values = [np.asarray(e, dtype=np.float64) * MV_PER_UNIT.get((u or "mV").lower(), np.nan)
              for e, u in zip(rec.e_p_signal, rec.units)]
    return rec.sig_name, values


def edf_reference(path):
    """(lead names, per-lead values in mV) of an EDF/BDF file, read with pyedflib."""
    import pyedflib

    with pyedflib.EdfReader(path) as r:
        names = r.getSignalLabels()
        values = [r.readSignal(i) * MV_PER_UNIT.get(r.getPhysicalDimension(i).strip().lower(), np.nan)
                  for i in range(r.signals_in_file)]
    return names, values


LEAD_CODES = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
              61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}


def dicom_reference(path):
    """(lead names, per-lead values in mV) of a DICOM ECG: pydicom's waveform_array of the
    first multiplex group that is not a median or representative beat."""
    import pydicom

    ds = pydicom.dcmread(path)
    gi, group = next((i, g) for i, g in enumerate(ds.WaveformSequence)
                     if not any(w in str(g.get("MultiplexGroupLabel", "")).upper()
                                for w in ("MEDIAN", "REPRESENTATIVE")))
    arr = ds.waveform_array(gi)
    names, values = [], []
    for c, ch in enumerate(group.ChannelDefinitionSequence):
        src = ch.ChannelSourceSequence[0]
        code = str(src.CodeValue)
        n = None
        for prefix in ("5.6.3-9-", "2:"):
            if code.startswith(prefix) and code[len(prefix):].isdigit():
                n = LEAD_CODES.get(int(code[len(prefix):]))
        if n is None:
            m = str(src.CodeMeaning)
            n = (m[5:] if m.startswith("Lead ") else m).split(" (")[0].strip()
        unit = str(ch.ChannelSensitivityUnitsSequence[0].CodeValue)
        names.append(n)
        values.append(arr[:, c] * MV_PER_UNIT.get(unit.lower(), np.nan))
    return names, values


def aecg_reference(path):
    """(lead names, per-lead values in mV) of an HL7 aECG, read here with xml.etree: the first
    sequence set of the first series, origin + scale x digits."""
    import xml.etree.ElementTree as ET

    ns = {"h": "urn:hl7-org:v3"}
    root = ET.parse(path).getroot()
    seqset = root.find("h:component/h:series/h:component/h:sequenceSet", ns)
    names, values = [], []
    for seq in seqset.findall("h:component/h:sequence", ns):
        code = seq.find("h:code", ns).get("code")
        if code.startswith("TIME_"):
            continue
        v = seq.find("h:value", ns)
        o, sc = v.find("h:origin", ns), v.find("h:scale", ns)
        digits = np.array([float(d) for d in v.find("h:digits", ns).text.split()])
        lead = code.removeprefix("MDC_ECG_LEAD_")
        names.append({"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}.get(lead, lead))
        values.append(float(o.get("value")) * MV_PER_UNIT[o.get("unit").lower()]
                      + float(sc.get("value")) * digits * MV_PER_UNIT[sc.get("unit").lower()])
    return names, values


REFERENCES = {
    "edf": ((".edf", ".bdf"), edf_reference),
    "dicom": ((".dcm",), dicom_reference),
    "aecg": ((".xml",), aecg_reference),
}


def reader_version(kind):
    if kind == "wfdb":
        import wfdb
        return f"wfdb-python {wfdb.__version__}"
    if kind == "edf":
        import pyedflib
        return f"pyedflib {pyedflib.__version__}"
    if kind == "dicom":
        import pydicom
        return f"pydicom {pydicom.__version__}"
    return "Python xml.etree (aECG origin + scale x digits)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["wfdb", "edf", "dicom", "aecg"])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--ecgfed", default="target/release/ecgfed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = os.path.abspath(args.folders[0])
    folders = [os.path.abspath(f) for f in args.folders]
    if args.kind == "wfdb":
        folders += sorted(
            d for d in glob.glob(os.path.join(root, "multi-segment", "*")) if os.path.isdir(d)
        )
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        cmd = [args.ecgfed, "datasets", "ingest", *folders, "--site", "reader-compare",
               "--out", store, "--window-secs", "0", "--json"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"reader_compare: ingest failed ({run.returncode}):\n{run.stderr}")
        manifest = json.loads(run.stdout[run.stdout.index("{"):])
        folder_of = {s["id"]: s["folder"] for s in manifest["sources"]}
        rows = []
        for f in manifest["files"]:
            t = pq.read_table(os.path.join(store, f["name"]),
                              columns=["source", "record_id", "fs", "leads", "n_samples", "signal"])
            rows.extend(t.to_pylist())
    files = {}
    if args.kind != "wfdb":
        suffixes = REFERENCES[args.kind][0]
        for folder in folders:
            for p in sorted(glob.glob(os.path.join(folder, "*"))):
                if p.lower().endswith(suffixes):
                    files.setdefault((os.path.basename(folder), os.path.splitext(os.path.basename(p))[0]), p)

    compared, bad, wide = [], [], []
    for r in rows:
        folder = folder_of[r["source"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if args.kind == "wfdb":
                    names, values = wfdb_reference(os.path.join(folder, r["record_id"]))
                else:
                    path = files.get((os.path.basename(folder), r["record_id"]))
                    if path is None:
                        continue  # a record of another format
                    names, values = REFERENCES[args.kind][1](path)
            except Exception as e:  # noqa: BLE001 - any reader failure is reported
                bad.append({"record": r["record_id"], "reason": f"the reference cannot read it: {e}"})
                continue
        n_leads = len(r["leads"])
        sig = np.asarray(r["signal"], dtype=np.float64).reshape(n_leads, -1)
        worst = 0.0
        problems = []
        for li, lead in enumerate(r["leads"]):
            e = values[names.index(lead)]
            j = np.arange(sig.shape[1], dtype=np.int64)
            want = e[(j * len(e)) // sig.shape[1]]
            got = sig[li]
            nan_w, nan_g = np.isnan(want), np.isnan(got)
            if not np.array_equal(nan_w, nan_g):
                problems.append(f"{lead}: NaN at {int(nan_g.sum())} samples, wfdb {int(nan_w.sum())}")
                continue
            diff = np.abs(got[~nan_g] - want[~nan_w])
            d = float(diff.max()) if diff.size else 0.0
            worst = max(worst, d)
            # The store holds float32: a value v is kept to within |v| * 2^-24 (for |v|
            # above 1,677 mV that is more than 1e-4 mV; ECG never comes near).
            allowed = np.maximum(TOLERANCE_MV, np.abs(want[~nan_w]) * 2.0**-24)
            if (diff > allowed).any():
                problems.append(f"{lead}: max |difference| {d:.3g} mV")
            elif d > TOLERANCE_MV:
                wide.append(f"{r['record_id']}/{lead}: max |difference| {d:.3g} mV at "
                            f"|value| up to {np.nanmax(np.abs(want)):.4g} mV (float32)")
        entry = {"record": f"{r['source']}/{r['record_id']}", "leads": r["leads"],
                 "samples": int(sig.size), "nan": int(np.isnan(sig).sum()),
                 "fs": r["fs"], "max_abs_diff_mv": worst}
        if problems:
            entry["problems"] = problems
            bad.append(entry)
        compared.append(entry)

    skipped = [{"record": os.path.relpath(e["file"], root), "reason": e["reason"]}
               for s in manifest["sources"] for e in s["errors"]]
    report = {
        "reader": reader_version(args.kind),
        "records_ingested": len(rows),
        "records_compared": len(compared),
        "records_equal": len(compared) - len([b for b in bad if "problems" in b]),
        "records_differing": bad,
        "samples_compared": sum(c["samples"] for c in compared),
        "beyond_1e-4_by_float32": wide,
        "skipped_by_ecgfed": skipped,
        "warnings": {k: v["count"] for s in manifest["sources"] for k, v in s["warnings"].items()},
        "compared": compared,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for c in compared:
            flag = "DIFFERS" if "problems" in c else "equal"
            print(f"{c['record']:<42} {flag:<8} leads {','.join(c['leads'])[:40]:<40} "
                  f"{c['samples']:>9} samples, {c['nan']} NaN, max |d| {c['max_abs_diff_mv']:.2e} mV")
            for p in c.get("problems", []):
                print(f"    {p}")
        for s in skipped:
            print(f"{s['record']:<42} skipped  {s['reason']}")
        for w in wide:
            print(f"float32 range: {w}")
        print(f"\n{report['records_equal']} of {len(compared)} compared records ({len(rows)} ingested) equal {report['reader']} "
              f"({report['samples_compared']} samples), {len(skipped)} skipped by ecgfed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
