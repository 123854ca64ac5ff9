"""Write text sampled from a model itself (the default calibration's distribution), as an evaluation text.

Used for the domain check of issue 3: a model calibrated on Austen and one calibrated on its own samples,
each evaluated on Austen (persuasion.txt) and on fresh samples of the full-precision model (a seed the
calibration never used), so that each calibration is also measured out of its own domain.

    python bench/selfgen_text.py --src MODEL.gguf --out selfgen.txt [--seqs 96 --seq-len 512 --seed 4242]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from liftexport.calibrate import self_generated
from liftexport.models.load import ModelSource


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=None, help="model (default: the embedded example model)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seqs", type=int, default=96)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=4242)
    a = ap.parse_args()
    src = ModelSource(a.src)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = src.full_model().to(device)
    ids = self_generated(model, src.tokenizer, a.seqs, a.seq_len, a.seed, device=device)
    texts = [src.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids.tolist()]
    text = "\n\n".join(texts)
    Path(a.out).write_text(text, encoding="utf-8")
    n = len(src.tokenizer(text, add_special_tokens=False)["input_ids"])
    print(f"{a.out}: {a.seqs} samples, {n} tokens")


if __name__ == "__main__":
    main()
