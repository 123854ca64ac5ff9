"""Self-generated calibration variants vs text calibration, on the example model (issue 3's 5% bar).

    python bench/calib_ablation.py --eval-text persuasion.txt --config 24/10 \
        --variant base='{}' --variant rnd='{"first": "random"}' --variant p1='{"top_p": 1.0}' \
        [--variant text='{"calib_text": ["emma.txt"]}'] [--src MODEL] [--out ablation.json]

A variant is a JSON object: keys of QuantizeOptions (calib_text, calib_tokens, correction_steps,
alpha, damp, ...) and the sampling knobs top_p / temperature / first ("bos" | "random" | "prompts"),
which go to QuantizeOptions.extra. Each variant is quantized and evaluated with the project's code
path; JSON is rewritten after every variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

EXTRA = ("top_p", "temperature", "first")  # QuantizeOptions.extra keys


def main() -> None:
    from liftexport.evaluate import eval_windows, perplexity
    from liftexport.models.load import ModelSource
    from liftexport.quantize.pipeline import QuantizeOptions, quantize_model
    from liftexport.runtime.reference import build_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None)
    ap.add_argument("--eval-text", nargs="+", required=True)
    ap.add_argument("--config", default="24/10")
    ap.add_argument("--variant", action="append", required=True, help="NAME=JSON")
    ap.add_argument("--out", default="bench/calib_ablation.json")
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    src = ModelSource(a.src)
    windows = eval_windows(src.tokenizer, a.eval_text)
    rows = []
    for spec in a.variant:
        name, _, js = spec.partition("=")
        v = json.loads(js or "{}")
        extra = {k: v.pop(k) for k in EXTRA if k in v}
        if "calib_text" in v:
            v["calib_text"] = tuple(v["calib_text"])
        t0 = time.time()
        ir, _ = quantize_model(src, QuantizeOptions(config=a.config, device=dev, progress=False, extra=extra, **v))
        secs = time.time() - t0
        ppl = perplexity(build_model(ir, dev), windows, device=dev, progress=False)["ppl"]
        rows.append({"variant": name, "options": {**v, **extra}, "ppl": round(ppl, 3), "seconds": round(secs, 1),
                     "distill": ir.meta.get("distill")})
        print(json.dumps(rows[-1]), flush=True)
        Path(a.out).write_text(json.dumps({"config": a.config, "device": dev, "rows": rows}, indent=1))
    print(f"\n{'variant':<12} {'PPL':>9} {'s':>7}  options")
    for r in rows:
        print(f"{r['variant']:<12} {r['ppl']:>9.3f} {r['seconds']:>7.1f}  {r['options']}")


if __name__ == "__main__":
    main()
