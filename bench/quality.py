"""Quality table for issue 3: FP32, RTN g128 2/3/4, LiftQuant at several rates, on the example model.

    python bench/quality.py --eval-text persuasion.txt [--calib-text a.txt b.txt] [--configs 32/16,24/10,24/8]
                            [--rtn 2,3,4] [--steps 100] [--out bench/quality.json]

Every point is quantized and evaluated with the project's code path (liftexport.quantize /
liftexport.evaluate). Prints a table last; writes JSON. Peak RSS is the process's high-water mark
(ru_maxrss) after each point, so it is cumulative.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch


def main() -> None:
    from liftexport.evaluate import eval_windows, perplexity
    from liftexport.inspect import inspect_container
    from liftexport.formats.container import write_container
    from liftexport.models.load import ModelSource
    from liftexport.quantize.pipeline import QuantizeOptions, quantize_model
    from liftexport.runtime.reference import build_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None)
    ap.add_argument("--eval-text", nargs="+", required=True)
    ap.add_argument("--calib-text", nargs="*", default=[])
    ap.add_argument("--configs", default="32/16,24/10,24/8")
    ap.add_argument("--rtn", default="2,3,4")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--tag", default="")
    ap.add_argument("--calib-tokens", type=int, default=None)
    ap.add_argument("--fp", action="store_true", help="also evaluate the unquantized model")
    ap.add_argument("--out", default="bench/quality.json")
    ap.add_argument("--workdir", default="/tmp/lq_quality")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    src = ModelSource(a.src)
    windows = eval_windows(src.tokenizer, a.eval_text)
    rows = []
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)

    def record(label, ir, seconds, model=None):
        model = model if model is not None else build_model(ir, dev)
        res = perplexity(model, windows, device=dev, progress=False)
        row = {"point": label, "ppl": round(res["ppl"], 3), "quantize_seconds": seconds,
               "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
        if ir is not None:
            p = write_container(ir, wd / (label.replace("/", "_").replace(" ", "_") + ".lqt"))
            info = inspect_container(p)
            row.update(effective_bits=info["effective_bits"], file_bytes=info["file_bytes"])
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                                           "rows": rows}, indent=1))

    if a.fp:
        record("fp32", None, 0.0, src.full_model().to(dev))
    for b in [int(x) for x in a.rtn.split(",") if x]:
        t0 = time.time()
        ir, _ = quantize_model(src, QuantizeOptions(method="rtn", bits=b, group=128, device=dev, progress=False))
        record(f"rtn{b} g128", ir, round(time.time() - t0, 1))
    for c in [x for x in a.configs.split(",") if x]:
        t0 = time.time()
        opts = QuantizeOptions(config=c, calib_text=tuple(a.calib_text), correction_steps=a.steps,
                               calib_tokens=a.calib_tokens, device=dev, progress=False, alpha=a.alpha)
        ir, rep = quantize_model(src, opts)
        label = f"lq {c}" + (" text-calib" if a.calib_text else "") + (f" {a.tag}" if a.tag else "")
        record(label, ir, round(time.time() - t0, 1))
        (wd / (label.replace("/", "_").replace(" ", "_") + ".report.json")).write_text(json.dumps(rep))
    print(f"\n{'point':<24} {'eff bits':>9} {'PPL':>10} {'quant s':>9}")
    for r in rows:
        print(f"{r['point']:<24} {r.get('effective_bits', 32):>9.3f} {r['ppl']:>10.2f} {r['quantize_seconds']:>9.1f}")


if __name__ == "__main__":
    main()
