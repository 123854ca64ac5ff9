"""Perplexity vs bytes for the example model from measured H100 runs, drawn by liftexport.sweep.

`liftexport sweep` quantizes and evaluates every point itself; on the example model that is ~3.5 min
of H100 per point, more than one device session holds, so this script assembles the same rows from
runs already measured with the same protocol (bench/cli_runs.py: the user's `liftexport model`
command, then `liftexport eval` on persuasion.txt) and writes them with sweep's own CSV/JSON/PNG
writer. Baselines without a file (RTN, FP32 from bench/quality.py) are placed at computed sizes:
the container's non-linear bytes plus linear weights x effective bits / 8.

    python bench/pareto_plot.py -o bench/sweep_example
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from liftexport.sweep import plot, write_outputs

RES = Path(__file__).resolve().parent / "results"
LINEAR_WEIGHTS = 106_168_320  # SmolLM2-135M decoder linears (inspect: linear_weights)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--out", default=str(Path(__file__).resolve().parent / "sweep_example"))
    a = ap.parse_args()
    rows = []
    old = {r["run"]: r for r in json.loads((RES / "h100_example_runs.json").read_text())["runs"]}
    s24 = old["s24"]
    kept = s24["file_bytes"] - LINEAR_WEIGHTS * s24["effective_bits"] / 8

    def add(kind, label, bits, nbytes, ppl, note=""):
        rows.append(dict(kind=kind, label=label, config="", mean_bits=bits, bytes=int(nbytes), ppl=ppl, path=note))

    add("uniform", "2.0 (32/16)", old["s20"]["effective_bits"], old["s20"]["file_bytes"], old["s20"]["ppl"],
        "earlier defaults: top_p 0.95, alpha 1/2, damping 0.01")
    new = RES / "issue8_mixed_v2"  # one H100 call, 2026-11-24, current defaults: uniform and mixed
    for name, kind, label in (("uni24", "uniform", "2.4 (24/10)"), ("uni30", "uniform", "3.0 (24/8)"),
                              ("mixed24", "mixed", "mixed @ 2.4 size"), ("mixed30", "mixed", "mixed @ 3.0 size")):
        (r,) = json.loads((new / f"{name}.json").read_text())
        add(kind, label, r["effective_bits"], r["file_bytes"], r["ppl"], r["args"])
    for label, bits, ppl in (("RTN4 g128", 4.271, 52.58), ("RTN3 g128", 3.271, 373.5), ("RTN2 g128", 2.271, 311628.0),
                             ("FP32", 32.0, 34.908)):
        add("baseline", label, bits, kept + LINEAR_WEIGHTS * bits / 8, ppl, "size computed")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(rows, out)
    # the drawn plot leaves out points far off the LiftQuant range (FP32 at 542 MB, RTN2 at PPL 3e5): CSV/JSON keep them
    plot([r for r in rows if r["label"] not in ("FP32", "RTN2 g128")], out / "sweep.png",
         title="SmolLM2-135M: perplexity (persuasion.txt) vs file size\n(FP32: 34.9 at 542 MB; RTN2: 3.1e5 — off the plot)")
    for r in rows:
        print(f"{r['kind']:9s} {r['label']:22s} {r['mean_bits']:7.3f} bits {r['bytes'] / 1e6:9.2f} MB  PPL {r['ppl']:10.2f}")


if __name__ == "__main__":
    main()
