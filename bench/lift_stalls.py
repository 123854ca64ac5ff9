"""Summarize Nsight Compute source pages (bench/device_lift_ncu.sh: `ncu --page source --csv --print-source sass`) per
phase of a kernel: warp-state samples with their top stall reasons, warp instructions and shared-memory wavefronts per
block (against ncu's ideal). Phases are cut at the SASS markers: each ACQBULK (griddepcontrol.wait), each BAR.SYNC and
the first EXIT; for lift_tiled_kernel that gives: before the first wait (`pre`), the staging (`wait1`: the code after
the wait of launches without static weights), the prologue (`wait2`), L X (`bar1`), W R (`bar2`) and the planes (`exit`).

    python bench/lift_stalls.py bench/results/lift_stalls/c2_ncu/ncu_rms_sass.csv.gz --blocks 39
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip


def phases(path: str) -> dict[str, collections.Counter]:
    with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as f:  # the stored pages are gzipped
        rows = list(csv.reader(f))
    if len(rows) < 3:
        raise SystemExit(f"{path}: no source rows (did ncu fail?)")
    hdr, data = rows[1], rows[2:]
    ix = {h: i for i, h in enumerate(hdr)}
    stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    cur, nbar, nwait = "pre", 0, 0
    agg: dict[str, collections.Counter] = {}
    for r in data:
        src = r[ix["Source"]].strip()
        if "ACQBULK" in src:
            nwait += 1
            cur = f"wait{nwait}"
        a = agg.setdefault(cur, collections.Counter())
        for key, col in (("samples", "# Samples"), ("inst", "Instructions Executed"),
                         ("wavefronts", "L1 Wavefronts Shared"), ("ideal", "L1 Wavefronts Shared Ideal")):
            a[key] += int(r[ix[col]] or 0)
        for h in stalls:
            a[h] += int(r[ix[h]] or 0)
        if "BAR.SYNC" in src:
            nbar += 1
            cur = f"bar{nbar}"
        if "EXIT" in src and "PREEXIT" not in src:
            cur = "exit"
    return agg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--blocks", type=int, default=1, help="the launch's blocks (figures per block)")
    args = ap.parse_args()
    for path in args.csv:
        print(f"== {path}")
        print(f"{'phase':8s} {'samples':>8s} {'inst/block':>11s} {'smem wavefronts/block':>22s}  top stalls")
        for name, a in phases(path).items():
            if not a["samples"] and not a["inst"]:
                continue
            top = sorted(((v, h[6:]) for h, v in a.items() if h.startswith("stall_")), reverse=True)[:4]
            wf = f"{a['wavefronts'] // args.blocks} (ideal {a['ideal'] // args.blocks})"
            print(f"{name:8s} {a['samples']:8d} {a['inst'] // args.blocks:11d} {wf:>22s}  "
                  + ", ".join(f"{h} {v}" for v, h in top if v))


if __name__ == "__main__":
    main()
