"""GPU run for lattices: checks the Triton search against torch, times the search, trains configs.

    python bench/gpu_lattice.py --out DIR [--train 32/16,30/14,...] [--deadline 420]

Prints a table last and writes DIR/gpu_lattice.json (+ trained lattice files in DIR/lat/).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_lattices import options_for  # noqa: E402

from liftexport.lattice.bench import bench_config  # noqa: E402
from liftexport.lattice.config import LatticeConfig, parse_config_list  # noqa: E402
from liftexport.lattice.menu import lattice_path  # noqa: E402
from liftexport.lattice.search import nearest  # noqa: E402
from liftexport.lattice.store import Lattice  # noqa: E402
from liftexport.lattice.train import train_lattice  # noqa: E402


def random_lattice(D, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Lattice.from_M(torch.randn(d, D, generator=g) / math.sqrt(D))


def lattice_or_random(c: LatticeConfig) -> Lattice:
    p = lattice_path(c)
    return Lattice.load(p) if p.is_file() else random_lattice(c.D, c.d)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", default="")
    ap.add_argument("--deadline", type=float, default=420)
    ap.add_argument("--bench", default="16/8,32/16,30/14,24/10,32/20,24/8")
    ap.add_argument("--override", action="append", default=[],
                    help="CONFIG:steps:restarts:tau:lr:lloyd_samples:topk to train CONFIG with other options")
    a = ap.parse_args()
    out = Path(a.out)
    (out / "lat").mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    import triton

    res["triton"] = triton.__version__
    # 1. correctness of the Triton search on the GPU against the torch search (fresh inputs each)
    checks = []
    for D, d in [(12, 6), (24, 10), (16, 5), (32, 16), (30, 20)]:
        lat = random_lattice(D, d, seed=D * 100 + d)
        W = torch.randn(3000, d, device="cuda")
        ref = nearest(lat, W, method="nullspace", do_polish=False, backend="torch")
        got = nearest(lat, W, method="nullspace", do_polish=False, backend="triton")
        gap = float((got.dist - ref.dist).max())
        checks.append({"config": f"{D}/{d}", "max_dist_excess": gap,
                       "code_mismatch": float((got.codes != ref.codes).any(1).float().mean())})
        print("check", checks[-1], flush=True)
    res["checks"] = checks
    # 2. search throughput (params/s) for 24/10
    thr = []
    lat = lattice_or_random(LatticeConfig(24, 10))
    for backend in ["triton", "torch"]:
        for n_params in [1_000_000, 4_000_000]:
            if backend == "torch" and n_params > 1_000_000:
                continue
            W = torch.randn(n_params // 10, 10, device="cuda")
            nearest(lat, W[:1000], method="nullspace", backend=backend)
            for pol in [False, True]:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                r = nearest(lat, W, method="nullspace", do_polish=pol, backend=backend)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                thr.append({"backend": backend, "params": n_params, "polish": pol, "seconds": round(dt, 4),
                            "s_per_1M": round(dt / (n_params / 1e6), 4),
                            "mse": round(float(r.dist.mean()) / 10, 5)})
                print("throughput", thr[-1], flush=True)
    res["throughput_24_10"] = thr
    # 3. training
    trained = []
    for c in parse_config_list(a.train) if a.train else []:
        if time.time() - t_start > a.deadline:
            print(f"{c}: skipped (deadline)", flush=True)
            continue
        t0 = time.time()
        opts = options_for(c.pad, "cuda", 0)
        for o in a.override:
            name, steps, restarts, tau, lr, ls, topk = o.split(":")
            if name == c.name:
                opts.topk = int(topk)
                opts.steps, opts.restarts, opts.tau = int(steps), int(restarts), float(tau)
                opts.lr, opts.lloyd_samples, opts.lloyd_iters = float(lr), int(ls), 20
        lat = train_lattice(c, opts, progress=False)
        lat.meta["train_device"] = torch.cuda.get_device_name()
        lat.save(out / "lat" / f"{c.file_stem}.safetensors")
        trained.append({"config": c.name, "mse": lat.mse, "seconds": round(time.time() - t0, 1)})
        print("trained", trained[-1], flush=True)
    res["trained"] = trained
    # 4. bench (1e5 samples, seed 0) on the lattices we have (shipped or just trained)
    rows = []
    for c in parse_config_list(a.bench):
        p = out / "lat" / f"{c.file_stem}.safetensors"
        lat = Lattice.load(p) if p.is_file() else (Lattice.load(lattice_path(c)) if lattice_path(c).is_file() else None)
        if lat is None:
            continue
        rows.append(bench_config(c, 100_000, 0, "cuda", lattice=lat))
    res["bench"] = rows
    (out / "gpu_lattice.json").write_text(json.dumps(res, indent=1))
    subprocess.run(["tar", "czf", str(out / "lat.tgz"), "-C", str(out), "lat"], check=True)
    print(f"\n{'config':>7} {'bits':>6} {'mse':>8} {'search':>17} {'params/s':>10}")
    for r in rows:
        print(f"{r['config']:>7} {r['bits']:>6.3f} {r['mse']:>8.5f} {r['search']:>17} {r['params_per_s']:>10.3g}")
    print(f"total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
