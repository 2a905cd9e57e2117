#!/usr/bin/env python3
"""Rebuilds datasets/sample/ from the full ECG folders (read-only), deterministically.

    python3 scripts/make-sample.py SHARED_ECG_FOLDER

Selection (about 4.6 MB of real records from four source databases, each with its licence file):
  cinc2017/  the first 25 N, 25 A, 20 O and 4 ~ records of REFERENCE.csv (AF-rich on purpose)
  ludb/      records 1-3; 4, 7, 9, 36, 37 (sinus rhythm, aged 40-59: with record 3, three men and
             three women, so that k = 2 strata cells of both sexes exist); the first 3 with atrial
             fibrillation, 1 flutter, 1 tachycardia
  cinc2021/  georgia/ and ptb-xl/: the first 6 records of each (by name)
"""
import csv, io, re, shutil, sys
from pathlib import Path

src = Path(sys.argv[1])
dst = Path(__file__).resolve().parent.parent / "datasets" / "sample"
if dst.exists():
    shutil.rmtree(dst)

def copy(rel):
    (dst / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / rel, dst / rel)

# CinC 2017
want = {"N": 25, "A": 25, "O": 20, "~": 4}
rows = []
for line in (src / "cinc2017/REFERENCE.csv").read_text().splitlines():
    rec, cls = line.strip().split(",")
    if want.get(cls, 0) > 0:
        want[cls] -= 1
        rows.append(line.strip())
        for ext in ("hea", "mat"):
            copy(f"cinc2017/{rec}.{ext}")
(dst / "cinc2017/REFERENCE.csv").write_text("\n".join(rows) + "\n")
copy("cinc2017/LICENSE-AND-SOURCE.md")

# LUDB
def rhythm(n):
    m = re.search(r"#Rhythm: (.*)", (src / f"ludb/data/{n}.hea").read_text())
    return m.group(1).strip() if m else ""
records = [1, 2, 3, 4, 7, 9, 36, 37]
for pick, count in (("Atrial fibrillation", 3), ("Atrial flutter", 1), ("Sinus tachycardia", 1)):
    records += [n for n in range(1, 201) if rhythm(n).startswith(pick) and n not in records][:count]
for n in records:
    for f in sorted((src / "ludb/data").glob(f"{n}.*")):
        copy(f"ludb/data/{f.name}")
with open(src / "ludb/ludb.csv", newline="") as fh:
    table = list(csv.reader(fh))
out = io.StringIO()
w = csv.writer(out, lineterminator="\n")
w.writerow(table[0])
w.writerows(r for r in table[1:] if r and int(r[0]) in records)
(dst / "ludb/ludb.csv").write_text(out.getvalue())
for f in ("LICENSE-AND-SOURCE.md", "LICENSE.txt"):
    copy(f"ludb/{f}")

# CinC 2021: two sites
copy("cinc2021/LICENSE-AND-SOURCE.md")
for site in ("georgia", "ptb-xl"):
    for hea in sorted((src / f"cinc2021/{site}").glob("*.hea"))[:6]:
        for ext in ("hea", "mat"):
            copy(f"cinc2021/{site}/{hea.stem}.{ext}")

total = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
print(f"sample written: {total / 1e6:.2f} MB, LUDB records {records}")
