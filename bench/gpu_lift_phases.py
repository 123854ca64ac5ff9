"""Diagnostic: where a decode-step lift (`lift_planes`) spends its time, phase by phase, on the GPU.

Needs the CUDA library built with -DLQ_LIFT_TIMING (thread 0 of each block records clock64() after each
phase; the build has more registers per thread than the real one, so co-residency with the previous kernel
may differ). For the lifts of a Llama-2-7B-shaped layer at 24/10 (RMSNorm 4096, plain 4096, SiLU*up 11008),
each as the decode step runs it (static weights, after the GEMV that precedes it there, in one CUDA graph),
prints the median over blocks of each phase's cycles, and writes JSON.

    LIFTEXPORT_CUDA_LIB=/tmp/bv/t/libliftquant_cuda.so python bench/gpu_lift_phases.py [--json F]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time

import torch

from gpu_gemv import graph_of, random_layer, t_us
from liftexport.kernels import cuda_binary as CB
from liftexport.runtime.triton_linear import TritonLiftGroup

MARKS = ["staged", "wait+sync", "prologue", "L X", "W R", "planes (warp 0)"]
BLOCKS, NMARK = 1024, 8


def group(N, Kin, seed):
    tf, lin = random_layer(N, Kin, 24, 10, seed=seed)
    return TritonLiftGroup([lin], tf, device="cuda")


# (name, lifted group (N x in), previous GEMV's group, prologue): the lifts of a 7B-shaped layer
CASES = [("RMSNorm 4096 (after down 4096x11008)", (12288, 4096), (4096, 11008), "rms"),
         ("plain 4096 (after qkv 12288x4096)", (4096, 4096), (12288, 4096), None),
         ("SiLU*up 11008 (after gate/up 22016x4096)", (4096, 11008), (22016, 4096), "glu")]


def lift_step(N, Kin, Np, Kp, pro):
    """(lifted group, step): step launches the GEMV before the lift, then the lift, as a decode step does (fp16,
    one token, static weights)."""
    mod, prev = group(N, Kin, 1), group(Np, Kp, 2)
    zf, zfp = CB.workspace(1, mod.K, "cuda"), CB.workspace(1, prev.K, "cuda")
    xp = torch.randn(1, Kp, device="cuda", dtype=torch.float16)
    CB.lift_planes(xp, Kp, prev.inv_s1, prev.L, prev.R, zfp)
    x = torch.randn(1, 2 * Kin if pro == "glu" else Kin, device="cuda", dtype=torch.float16)
    nw = torch.rand(Kin, device="cuda", dtype=torch.float16) + 0.5
    yp = torch.empty(1, Np, device="cuda", dtype=torch.float16)

    def step():
        CB.gemv(prev.words, zfp, prev.scales, prev.bias, yp)  # the kernel before the lift in a decode step
        CB.lift_planes(x, Kin, mod.inv_s1, mod.L, mod.R, zf, rms=(nw, 1e-5) if pro == "rms" else None,
                       glu=pro == "glu", static_weights=True)
    return mod, step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench/results/gpu_lift_phases.json")
    args = ap.parse_args()
    lib = CB.load()
    lib.lq_lift_timing.argtypes = [ctypes.c_void_p]
    rows = []
    for name, (N, Kin), (Np, Kp), pro in CASES:
        mod, step = lift_step(N, Kin, Np, Kp, pro)
        g = graph_of(step)
        us = t_us(g.replay)
        g.replay()
        torch.cuda.synchronize()
        rec = (ctypes.c_longlong * (BLOCKS * NMARK))()
        assert lib.lq_lift_timing(ctypes.addressof(rec)) == 0
        t = torch.tensor(list(rec), dtype=torch.int64).view(BLOCKS, NMARK)
        nblocks = -(-mod.K // 256)  # one k-step per block (spc 1, the engine's default)
        t = t[:nblocks, :7]
        d = (t[:, 1:] - t[:, :-1]).double()
        med = d.median(dim=0).values.tolist()
        tot = (t[:, 6] - t[:, 0]).double()
        r = dict(case=name, blocks=nblocks, graph_us=us, phase_cycles_median=dict(zip(MARKS, med)),
                 total_cycles_median=float(tot.median()), total_cycles_max=float(tot.max()))
        rows.append(r)
        print(f"{name}: {nblocks} blocks, graph (GEMV + lift) {us:.1f} us; lift block cycles median "
              f"{r['total_cycles_median']:.0f} max {r['total_cycles_max']:.0f}; per phase: "
              + ", ".join(f"{k} {v:.0f}" for k, v in zip(MARKS, med)), flush=True)
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
