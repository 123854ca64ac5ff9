"""Train the shipped lattice menu (or a subset) and print a table of held-out MSE.

    python bench/train_lattices.py --configs 16/8,24/10 [--out DIR] [--device cuda] [--json F]

Training effort scales down with D - d (each search step costs 2^(D-d) candidates per chunk).
Small configurations were trained on the 2-core CPU machine, large ones on the H100
(see bench/RESULTS.md for which, and the commands).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from liftexport.lattice.config import parse_config_list
from liftexport.lattice.menu import DATA_DIR, MENU
from liftexport.lattice.train import TrainOptions, train_lattice


def options_for(m: int, device: str, seed: int) -> TrainOptions:
    if device == "cuda":  # the Triton search makes training ~100x cheaper than on 2 CPU cores
        if m <= 17:
            return TrainOptions(steps=1500, restarts=3, lloyd_iters=12, seed=seed, device=device)
        if m <= 19:
            return TrainOptions(steps=800, restarts=2, lloyd_iters=8, seed=seed, device=device)
        return TrainOptions(steps=500, restarts=1, lloyd_iters=6, seed=seed, device=device)
    if m <= 12:
        return TrainOptions(steps=2000, restarts=3, lloyd_iters=12, seed=seed, device=device)
    if m <= 15:
        return TrainOptions(steps=1500, restarts=2, lloyd_iters=10, seed=seed, device=device)
    if m <= 17:
        return TrainOptions(steps=800, restarts=2, lloyd_iters=8, seed=seed, device=device)
    return TrainOptions(steps=500, restarts=1, lloyd_iters=6, lloyd_samples=1 << 15, seed=seed, device=device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=",".join(c.name for c in MENU))
    ap.add_argument("--out", default=str(DATA_DIR))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--deadline", type=float, default=0, help="seconds; start no new config after it")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    t_start = time.time()
    rows = []
    for c in parse_config_list(a.configs):
        if a.deadline and time.time() - t_start > a.deadline:
            print(f"{c}: skipped (deadline)", flush=True)
            continue
        t0 = time.time()
        lat = train_lattice(c, options_for(c.pad, a.device, a.seed), progress=False)
        lat.meta["train_device"] = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
        path = lat.save(Path(a.out) / f"{c.file_stem}.safetensors")
        rows.append({"config": c.name, "bits": round(c.bits, 4), "mse": lat.mse, "search": lat.meta["search"],
                     "seconds": round(time.time() - t0, 1), "file": str(path)})
        print(f"{c.name:>6} bits {c.bits:.3f} mse {lat.mse:.5f} {lat.meta['search']:<17} "
              f"{time.time() - t0:7.1f}s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
