"""Probe (an experiment kept for its result, not a runtime kernel): batch-1 table GEMV with register
tables + tl.gather (``gemv_gather``, defined here) against the runtime's
gemm_planes and gemv_lut_split on the same 24/10 layers (GEMV kernels only, CUDA graphs, median of
do_bench), checked against float64. Prints a table; writes JSON.

    python bench/gpu_gather_probe.py [--json bench/results/gpu_gather_probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_gemv import checked_us, copy_bandwidth, random_layer  # noqa: E402

from liftexport.kernels.triton import lift_linear as K  # noqa: E402
from liftexport.runtime.triton_linear import TABLE_CFG, TritonLiftGroup, planes_cfg  # noqa: E402


@triton.jit
def _gemv_gather_kernel(u_ptr, w_ptr, part_ptr, N, KW, K, rows_per_prog, SW: tl.constexpr, BN: tl.constexpr):
    """One token: partial sums over one K slice (SW words) for a run of rows. The slice's 4-bit tables
    are built once per program into a register tensor [SW, 8, 16] and looked up with ``tl.gather``
    (lowered through shared memory or warp shuffles), not with global-memory gathers."""
    s = tl.program_id(0)
    c = tl.program_id(1)
    kw = s * SW + tl.arange(0, SW)
    km = kw < KW
    j8 = tl.arange(0, 8)
    c16 = tl.arange(0, 16)
    tab = tl.zeros((SW, 8, 16), dtype=tl.float32)
    for i in tl.static_range(4):
        k = kw[:, None] * 32 + j8[None, :] * 4 + i
        ui = tl.load(u_ptr + k, mask=km[:, None] & (k < K), other=0.0).to(tl.float32)
        sg = (((c16 >> i) & 1) * 2 - 1).to(tl.float32)
        tab += ui[:, :, None] * sg[None, None, :]
    r_lo = c * rows_per_prog
    for r0 in range(r_lo, r_lo + rows_per_prog, BN):
        rows = r0 + tl.arange(0, BN)
        rmask = rows < N
        w = tl.load(w_ptr + kw[:, None] * N + rows[None, :], mask=km[:, None] & rmask[None, :], other=0)
        nib = (w[:, None, :] >> (j8 * 4)[None, :, None]) & 15
        v = tl.gather(tab, nib, axis=2)
        tl.store(part_ptr + s * N + rows, tl.sum(tl.sum(v, axis=1), axis=0), mask=rmask)


def gemv_gather(u, words, scales, bias, y, *, residual=None, part=None, SW=32, BN=128, chunks=None, num_warps=4):
    """Experimental one-token table GEMV with register tables and ``tl.gather``: y [1, N] = scales * (Q u)
    + bias (+ residual); u [1, >= KW * 32] float32 in natural order, zero past K."""
    KW, N = words.shape
    K._check_gemv(words, scales, bias, y, N, 1)
    K._check(u.dim() == 2 and u.shape[0] == 1 and u.shape[1] >= 32 * KW and u.dtype == torch.float32
           and u.stride(1) == 1, f"u must be float32 [1, >= {32 * KW}]")
    S = triton.cdiv(KW, SW)
    if part is None:
        part = torch.empty(S * N, dtype=torch.float32, device=words.device)
    K._check(part.numel() >= S * N and part.dtype == torch.float32, "part workspace too small")
    if chunks is None:
        sms = torch.cuda.get_device_properties(words.device).multi_processor_count if words.is_cuda else 4
        chunks = max(1, min(triton.cdiv(N, BN), triton.cdiv(4 * sms, S)))
    rows_per_prog = triton.cdiv(triton.cdiv(N, chunks), BN) * BN
    chunks = triton.cdiv(N, rows_per_prog)
    _gemv_gather_kernel[(S, chunks)](u, words, part, N, KW, 32 * KW, rows_per_prog, SW=SW, BN=BN,
                                     num_warps=num_warps)
    K._reduce_parts(part, S, scales, bias, residual, y)
    return y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench/results/gpu_gather_probe.json")
    a = ap.parse_args()
    bw = copy_bandwidth()
    print(f"copy bandwidth {bw:.0f} GB/s", flush=True)
    rows = []
    for N, Kin in ((8192, 8192), (28672, 8192)):
        tf, lin = random_layer(N, Kin, 24, 10, seed=N)
        mod = TritonLiftGroup([lin], tf, device="cuda")
        nbytes = mod.words.numel() * 4
        x = torch.randn(1, Kin, device="cuda")
        u = torch.zeros(1, mod.KW * 32, device="cuda")
        K.transform(x, mod.inv_s1, mod.L, mod.R, mod.in_features, u)
        q = K.kmajor_bits(mod.words, mod.K).double() * 2 - 1
        ref = (u[:, : mod.K].double() @ q) * mod.scales.double() + mod.bias.double()
        y = torch.empty(1, N, device="cuda")

        def record(name, fn, out=y, **cfg):
            try:
                err, us = checked_us(fn, out, ref)
            except Exception as e:  # a config that does not compile is reported, not fatal
                print(f"{N}x{Kin} {name} {cfg}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                return
            r = dict(N=N, K=Kin, kernel=name, cfg=cfg, us=us, pct_copy=100 * nbytes / (us * 1e-6) / 1e9 / bw,
                     rel_err=err)
            rows.append(r)
            print(json.dumps(r), flush=True)

        uh = torch.zeros(1, mod.KW * 32, device="cuda", dtype=torch.float16)
        K.transform(x.half(), mod.inv_s1, mod.L, mod.R, mod.in_features, uh, planes=True)
        yh = torch.empty(1, N, device="cuda", dtype=torch.float16)
        pc = planes_cfg(1, N)
        record("gemm_planes fp16", lambda: K.gemm_planes(uh, mod.words, mod.scales, mod.bias, yh, **pc), out=yh, **pc)
        tabs = torch.zeros(1, mod.KW * 128, device="cuda")
        K.tables(u, mod.K, tabs)
        record("gemv_lut_split", lambda: K.gemv_lut_split(tabs, mod.words, mod.scales, mod.bias, y, **TABLE_CFG),
               **TABLE_CFG)
        for SW in (8, 16, 32):
            for BN in (64, 128, 256):
                for nw in (4, 8):
                    cfg = dict(SW=SW, BN=BN, num_warps=nw)
                    record("gemv_gather", lambda cfg=cfg: gemv_gather(u, mod.words, mod.scales, mod.bias, y,
                                                                         **cfg), **cfg)
    print(f"\n{'N x K':>12} {'kernel':<18} {'cfg':<40} {'us':>8} {'% copy':>7} {'err':>8}")
    for r in rows:
        print(f"{r['N']:>6}x{r['K']:<5} {r['kernel']:<18} {str(r['cfg']):<40} {r['us']:8.1f} {r['pct_copy']:7.1f} "
              f"{r['rel_err']:8.1e}")
    Path(a.json).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), copy_gbs=bw, rows=rows), indent=1))


if __name__ == "__main__":
    main()
