"""Split-K for gemm_planes at few tokens: times every split of the runtime's launch settings on the
issue-7 shapes at 24/10 (GEMV kernels only, fp16, one CUDA graph each, median of do_bench), checked
against float64. Prints a table; writes JSON.

    python bench/gpu_splitk_probe.py [--json bench/results/gpu_splitk_probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_gemv import checked_us, copy_bandwidth, random_layer  # noqa: E402

from liftexport.kernels.triton import lift_linear as K  # noqa: E402
from liftexport.runtime.triton_linear import TritonLiftGroup, planes_cfg  # noqa: E402

SHAPES = [(4096, 4096), (8192, 8192), (28672, 8192), (8192, 28672)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench/results/gpu_splitk_probe.json")
    a = ap.parse_args()
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    rows = []
    for N, Kin in SHAPES:
        tf, lin = random_layer(N, Kin, 24, 10, seed=N + Kin)
        mod = TritonLiftGroup([lin], tf, device="cuda")
        nbytes = mod.words.numel() * 4
        k = torch.arange(mod.K, device="cuda")
        q = K.kmajor_bits(mod.words, mod.K).half()  # exact 0/1 in fp16
        for M in (1, 4, 16):
            x = torch.randn(M, Kin, device="cuda", dtype=torch.float16)
            u = torch.zeros(M, mod.KW * 32, device="cuda", dtype=torch.float16)
            K.transform(x, mod.inv_s1, mod.L, mod.R, mod.in_features, u, planes=True)
            un = u[:, ((k % 16) * mod.KW + k // 32) * 2 + (k // 16) % 2].double()
            ref = (2 * (un @ q.double()) - un.sum(1, keepdim=True)) * mod.scales.double() + mod.bias.double()
            y = torch.empty(M, N, device="cuda", dtype=torch.float16)
            base = planes_cfg(M, N)
            for split in (1, 2, 3, 4, 6, 8, 12):
                cfg = dict(base, split_k=split)
                part = torch.empty(split * M * N, device="cuda")
                fn = lambda cfg=cfg, part=part: K.gemm_planes(u, mod.words, mod.scales, mod.bias, y,  # noqa: E731
                                                             part=part, **cfg)
                err, us = checked_us(fn, y, ref)
                r = dict(N=N, K=Kin, M=M, split_k=split, cfg=base, us=us,
                         pct_copy=100 * nbytes / (us * 1e-6) / 1e9 / bw, rel_err=err)
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{'N x K':>12} {'M':>3} {'split':>5} {'us':>8} {'% copy':>7} {'err':>8}")
    for r in rows:
        print(f"{r['N']:>6}x{r['K']:<5} {r['M']:>3} {r['split_k']:>5} {r['us']:8.1f} {r['pct_copy']:7.1f} {r['rel_err']:8.1e}")
    Path(a.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), copy_gbs=bw, rows=rows), indent=1))


if __name__ == "__main__":
    main()
