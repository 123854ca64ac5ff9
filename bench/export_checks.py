"""Every export of one quantized model against the reference execution of its container.

    .venv/bin/python bench/export_checks.py out/model.lqt --workdir /tmp/exports [--json bench/export_checks.json]

Writes GGUF and the three ONNX lowerings (with --lut also the custom one with the approximate int8
lookup-table kernel, lut_bits=8), then for each: max relative logit error and identical
32-token greedy continuations on the fixed prompts (liftexport.verify), file sizes vs the container.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from liftexport.formats.container import read_container
from liftexport.formats.gguf import read_gguf, write_gguf
from liftexport.formats.onnx import export_onnx
from liftexport.ort import OrtCausalLM
from liftexport.runtime.reference import build_model, build_tokenizer
from liftexport.verify import compare_models


def size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir()) if p.is_dir() else p.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("lqt")
    ap.add_argument("--workdir", default="/tmp/exports")
    ap.add_argument("--json", default="bench/export_checks.json")
    ap.add_argument("--lut", action="store_true",
                    help="also the custom export with --onnx-lut int8 (approximate kernel; tolerance 5e-2)")
    a = ap.parse_args()
    wd = Path(a.workdir)
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    lqt = Path(a.lqt)
    ir = read_container(lqt)
    ref = build_model(ir)
    tok = build_tokenizer(ir)
    rows = []
    base = size(lqt)

    def check(name, path, model, tol):
        t0 = time.time()
        res = compare_models(model, ref, tok, 32)
        row = {"export": name, "bytes": size(path), "size_vs_container": round(size(path) / base, 4),
               "max_rel_logit_err": res["max_rel_logit_err"], "greedy_agree": f"{res['greedy_agree']}/{res['greedy_total']}",
               "ok": bool(res["greedy_identical"] and res["max_rel_logit_err"] <= tol), "tolerance": tol,
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    g = write_gguf(ir, wd / "model.gguf")
    check("gguf", g, build_model(read_gguf(g)), 1e-5)
    for ops in ("custom", "contrib", "standard"):
        d = export_onnx(ir, wd / f"onnx-{ops}", ops=ops)
        check(f"onnx-{ops}", d, OrtCausalLM(d), 1e-4)
    if a.lut:
        d = export_onnx(ir, wd / "onnx-custom-lut8", ops="custom", lut="int8")
        check("onnx-lut8", d, OrtCausalLM(d), 5e-2)
    Path(a.json).write_text(json.dumps({"container": str(lqt), "container_bytes": base, "rows": rows}, indent=1))
    print(f"\n{'export':<14} {'bytes':>12} {'vs lqt':>7} {'max rel err':>12} {'greedy':>7} ok")
    for r in rows:
        print(f"{r['export']:<14} {r['bytes']:>12,} {r['size_vs_container']:>7.3f} {r['max_rel_logit_err']:>12.2e} "
              f"{r['greedy_agree']:>7} {r['ok']}")


if __name__ == "__main__":
    main()
