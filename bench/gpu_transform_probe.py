"""Launch settings of the Triton transform (u = L X~ R in bit-plane order, fp16, batch 1) on the H100:
times every block-size combination on the 7B-shaped inputs at 24/10, 24/8 and 16/8 (one CUDA graph
each, median of do_bench), checked against the default settings' output. Prints the best per shape;
writes JSON.

    python bench/gpu_transform_probe.py [--json bench/results/gpu_transform_probe.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_gemv import checked_us, random_layer  # noqa: E402

from liftexport.kernels.triton import lift_linear as K  # noqa: E402
from liftexport.runtime.triton_linear import TritonLiftGroup  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench/results/gpu_transform_probe.json")
    a = ap.parse_args()
    rows, best = [], []
    for Kin, (D, d) in itertools.product((4096, 8192, 11008), ((24, 10), (24, 8), (16, 8))):
        tf, lin = random_layer(64, Kin, D, d, seed=Kin + d)
        mod = TritonLiftGroup([lin], tf, device="cuda")
        x = torch.randn(1, Kin, device="cuda", dtype=torch.float16)
        ref = torch.zeros(1, mod.KW * 32, device="cuda", dtype=torch.float16)
        K.transform(x, mod.inv_s1, mod.L, mod.R, Kin, ref, planes=True)
        u = torch.zeros_like(ref)
        res = []
        for BI, BC, BK, BQ, nw in itertools.product((16, 32), (16, 32, 64), (16, 32), (16, 32), (4,)):
            cfg = dict(BI=BI, BC=BC, BK=BK, BQ=BQ, num_warps=nw)
            fn = lambda cfg=cfg: K.transform(x, mod.inv_s1, mod.L, mod.R, Kin, u, planes=True, **cfg)  # noqa: E731
            try:
                err, us = checked_us(fn, u, ref.double())
            except Exception as e:  # noqa: BLE001  (resource limits of a config)
                print("skip", cfg, type(e).__name__, str(e)[:80], flush=True)
                continue
            r = dict(K=Kin, D=D, d=d, n1=tf.n1, n2=tf.n2, cfg=cfg, us=us, err_vs_default=err)
            rows.append(r)
            res.append(r)
        res.sort(key=lambda r: r["us"])
        default = [r for r in res if r["cfg"] == dict(BI=32, BC=32, BK=32, BQ=32, num_warps=4)]
        b = dict(res[0], default_us=default[0]["us"] if default else None)
        best.append(b)
        print(json.dumps(b), flush=True)
    print(f"\n{'K':>6} {'D/d':>6} {'n1 x n2':>9} {'default us':>10} {'best us':>8}  best settings")
    for b in best:
        print(f"{b['K']:>6} {b['D']:>3}/{b['d']:<2} {b['n1']:>4}x{b['n2']:<4} {b['default_us'] or 0:10.1f} {b['us']:8.1f}  {b['cfg']}")
    Path(a.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), best=best, rows=rows), indent=1))


if __name__ == "__main__":
    main()
