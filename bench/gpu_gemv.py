"""Lifted-layer GEMV on the GPU: copy bandwidth first, then each shape x rate x batch, checked and timed.

For N x K in {4096x4096, 8192x8192, 28672x8192, 8192x28672}, rates 16/8, 24/10, 24/8 and batch
1, 4, 16 it draws a random lifted layer, checks the Triton path against a float64 reference on
fresh inputs (poisoned outputs), then times with CUDA events (median of triton.testing.do_bench):

  gemv     the code-reading kernel alone: gemm_planes (codes -> +-1 fp16 in registers, tensor cores),
           split-K as the runtime chooses it (planes_split), one CUDA graph
  layer    the whole layer as the runtime runs it (transform + gemm_planes), one CUDA graph
  fp16     torch fp16 matmul (cuBLAS) of an N x K weight, same batch
  seq      batch 1: per call in one CUDA graph of 8 calls on 8 distinct weights (binary GEMV and fp16)
  table    up to 4 tokens: the fp32 4-bit-table GEMV (the first design, kept for float32 activations)
  binary   up to BINARY_MAX_TOKENS: the binary-tensor-core GEMV (kernels/cuda/binary_gemv.cu; needs
           libliftquant_cuda.so); its layer adds the 24-bit-plane kernel between transform and GEMV
The gemv/layer columns are the fastest route's (the runtime's choice).

GB/s counts the bytes that must move for the GEMV (codes + scales + activations in + out);
%copy is that over the measured copy bandwidth (bytes read + written by a device-to-device copy).

    python bench/gpu_gemv.py [--quick] [--sweep] [--json bench/results/gpu_gemv.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import triton
from triton.testing import do_bench

from liftexport.ir import LiftedLinear, LiftTransform, choose_shape
from liftexport.kernels import cuda_binary as CB
from liftexport.kernels.triton import lift_linear as K
from liftexport.runtime import triton_linear
from liftexport.runtime.triton_linear import PLANES_CFG, TABLE_CFG, TritonLiftGroup, planes_cfg, planes_split
from liftexport.transform import fused_factors, lift_with_factors

SHAPES = [(4096, 4096), (8192, 8192), (28672, 8192), (8192, 28672)]
RATES = [(16, 8), (24, 10), (24, 8)]
BATCHES = [1, 4, 16]


def copy_bandwidth(nbytes=2 << 30):
    a = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").normal_()
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=50, rep=400, return_mode="median")
    return 2 * nbytes / ms / 1e6  # GB/s


def random_layer(N, Kin, D, d, seed, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    n1, n2 = choose_shape(Kin, d)
    tf = LiftTransform(D=D, d=d, in_features=Kin, n1=n1, n2=n2, M=torch.randn(d, D, generator=g) / D ** 0.5,
                       a=torch.rand(n1, generator=g) + 0.5, b=torch.rand(n2 // d, generator=g) + 0.5,
                       s1=torch.rand(n1 * n2, generator=g) + 0.5)
    rb = -(-tf.lifted // 8)
    codes = torch.randint(0, 256, (N, rb), dtype=torch.uint8, device=device)
    lin = LiftedLinear("t", N, codes, torch.rand(N, device=device) + 0.1, torch.randn(N, device=device))
    return tf, lin


def moved_bytes(mod, B):
    """Bytes a GEMV of the lifted group mod must move for B tokens: codes, row scales, activations in and out
    (fp16)."""
    return mod.words.numel() * 4 + 4 * mod.N + 2 * B * (mod.in_features + mod.N)


def reference(x, tf, lin, mod):
    """float64 on the GPU: y = s * (sign(codes) u) + bias with u from the fp64 factors."""
    L, R = fused_factors(tf.M.cuda(), tf.a.cuda(), tf.b.cuda(), tf.n1, tf.n2, torch.float64)
    u = lift_with_factors(x.double(), L, R, tf.s1.cuda().double(), tf.in_features, tf.n1, tf.n2)
    q = K.kmajor_bits(mod.words, mod.K).double() * 2 - 1  # [K, N]
    return (u @ q) * lin.scales.double() + lin.bias.double()


def graph_of(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def t_us(fn):
    return 1000 * do_bench(fn, warmup=25, rep=200, return_mode="median")


def checked_us(fn, out, ref):
    """Run fn once on a NaN-poisoned out and return (max relative error vs ref, median µs of fn as one
    CUDA graph)."""
    out.fill_(float("nan"))
    fn()
    torch.cuda.synchronize()
    err = float((out.double() - ref).abs().max() / ref.abs().max())
    return err, t_us(graph_of(fn).replay)


SEQ = 8


def seq_us(mod, zf, y, kernel="auto"):
    """Median µs per binary GEMV in one CUDA graph of SEQ back-to-back calls, each on its own random codes
    of the layer's shape (what a decode step sees: kernels in a row, weights streamed from HBM; the codes
    are static, as the runtime declares a model's). kernel: as cuda_binary.gemv's."""
    words = [torch.randint_like(mod.words, -2**31, 2**31 - 1) for _ in range(SEQ)]
    g = graph_of(lambda: [CB.gemv(w, zf, mod.scales, mod.bias, y, static_weights=True, kernel=kernel) for w in words])
    return t_us(g.replay) / SEQ


def seq_fp16_us(x, w16):
    """The same for torch FP16 matmul (SEQ distinct weights)."""
    ws = [torch.randn_like(w16) for _ in range(SEQ)]
    g = graph_of(lambda: [torch.matmul(x, w.t()) for w in ws])
    return t_us(g.replay) / SEQ


def sweep_planes(mod, M):
    """Best gemm_planes launch settings for M tokens on this layer (fp16)."""
    x = torch.randn(M, mod.in_features, device="cuda", dtype=torch.float16)
    u = torch.zeros(M, mod.KW * 32, device="cuda", dtype=torch.float16)
    K.transform(x, mod.inv_s1, mod.L, mod.R, mod.in_features, u, planes=True)
    y = torch.empty(M, mod.N, device="cuda", dtype=torch.float16)
    res = []
    for BN in ((32, 64, 128) if M <= 16 else (64, 128)):
        for BKW in (16, 32):
            for nw in (4, 8):
                for st in (2, 4):
                    for asm in ((True, False) if (BKW == 16 and nw == 4 and st == 2) else (True,)):
                        cfg = dict(BN=BN, BM=16 if M <= 16 else 64, BKW=BKW, num_warps=nw, num_stages=st, use_asm=asm)
                        try:
                            t = t_us(lambda: K.gemm_planes(u, mod.words, mod.scales, mod.bias, y, **cfg))
                        except Exception as e:  # noqa: BLE001  (resource limits of a config)
                            print("  skip", cfg, type(e).__name__, str(e)[:80])
                            continue
                        res.append((t, cfg))
    res.sort(key=lambda r: r[0])
    return res


def sweep_table(mod, M):
    """Best gemv_lut_split settings for M tokens on this layer."""
    x = torch.randn(M, mod.in_features, device="cuda")
    tabs = torch.zeros(M, mod.KW * 128, device="cuda")
    K.tables(mod.lifted(x), mod.K, tabs)
    y = torch.empty(M, mod.N, device="cuda", dtype=torch.float16)
    res = []
    for SW in (16, 32, 64):
        for BN in (32, 64, 128):
            for nw in (4, 8):
                cfg = dict(SW=SW, BN=BN, num_warps=nw)
                try:
                    t = t_us(lambda: K.gemv_lut_split(tabs, mod.words, mod.scales, mod.bias, y, **cfg))
                except Exception as e:  # noqa: BLE001
                    print("  skip", cfg, type(e).__name__, str(e)[:80])
                    continue
                res.append((t, cfg))
    res.sort(key=lambda r: r[0])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one shape, one rate")
    ap.add_argument("--sweep", action="store_true", help="also sweep gemm_planes' launch settings (M = 1, 16)")
    ap.add_argument("--cfg16", default=None, help="JSON launch settings for M <= 16, any N (overrides PLANES_CFG)")
    ap.add_argument("--table-cfg", default=None, help="JSON settings of gemv_lut_split (overrides TABLE_CFG)")
    ap.add_argument("--json", default="bench/results/gpu_gemv.json")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    if args.cfg16:
        PLANES_CFG[(16, False)] = PLANES_CFG[(16, True)] = json.loads(args.cfg16)
    if args.table_cfg:
        TABLE_CFG.update(json.loads(args.table_cfg))
    dev = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    print(f"{dev}: copy bandwidth {bw:.0f} GB/s (read + write)")
    shapes = SHAPES[2:3] if args.quick else SHAPES
    rates = RATES[1:2] if args.quick else RATES
    rows, sweeps = [], []
    for (N, Kin) in shapes:
        w16 = torch.randn(N, Kin, dtype=torch.float16, device="cuda") * 0.02
        for (D, d) in rates:
            tf, lin = random_layer(N, Kin, D, d, seed=N + Kin + D * 7 + d)
            mod = TritonLiftGroup([lin], tf, device="cuda")
            if args.sweep and D == 24 and d == 10 and (N, Kin) in ((8192, 8192), (28672, 8192)):
                for M in (1, 4):
                    res = sweep_table(mod, M)
                    sweeps.append({"N": N, "K": Kin, "M": M, "kernel": "table", "results": res[:8]})
                    print(f"  table sweep {N}x{Kin} M={M}: " + "; ".join(f"{t:.1f} us {c}" for t, c in res[:4]))
                for M in (1, 16):
                    res = sweep_planes(mod, M)
                    sweeps.append({"N": N, "K": Kin, "M": M, "results": res[:8], "asm_off": [r for r in res if not r[1]["use_asm"]]})
                    print(f"  sweep {N}x{Kin} M={M}: " + "; ".join(f"{t:.1f} us {c}" for t, c in res[:4]))
                    print(f"     plain decode (no asm): " + "; ".join(f"{t:.1f} us" for t, c in res if not c["use_asm"]))
            for B in BATCHES:
                x = torch.randn(B, Kin, device="cuda", dtype=torch.float16)
                errs = []
                binary = B <= triton_linear.BINARY_MAX_TOKENS and CB.available("cuda") and N % 4 == 0
                routes = (("table", "planes") if B <= 4 else ("planes", "planes")) + (("binary",) if binary else ())
                for rt in routes:
                    xt = torch.randn(B, Kin, device="cuda", dtype=torch.float16)  # fresh inputs, fresh workspaces
                    triton_linear.DECODE_ROUTE = rt
                    mod._ws.clear()
                    (y,) = mod(xt)
                    torch.cuda.synchronize()
                    ref = reference(xt.double(), tf, lin, mod)
                    ok = torch.isfinite(y).all().item()
                    errs.append(((y.double() - ref).norm() / ref.norm()).item() if ok else float("inf"))
                errs_bf16 = []
                for rt in ("table",) + (("binary",) if binary else ()):
                    triton_linear.DECODE_ROUTE = rt
                    xb = torch.randn(B, Kin, device="cuda").bfloat16()
                    mod._ws.clear()
                    (yb,) = mod(xb)
                    refb = reference(xb.double(), tf, lin, mod)
                    errs_bf16.append(((yb.double() - refb).norm() / refb.norm()).item())
                err_bf16 = max(errs_bf16)
                # the GEMV alone, on prepared inputs; every decode route the runtime has for this batch
                y = torch.full((B, N), float("nan"), device="cuda", dtype=torch.float16)
                u = torch.zeros(B, mod.KW * 32, device="cuda", dtype=torch.float16)
                K.transform(x, mod.inv_s1, mod.L, mod.R, Kin, u, planes=True)
                cfg = planes_cfg(B, N)
                ks = planes_split(B, N, mod.KW, torch.cuda.get_device_properties(0).multi_processor_count)
                part = torch.empty(ks * B * N, device="cuda")
                t_planes = t_us(graph_of(lambda: K.gemm_planes(u, mod.words, mod.scales, mod.bias, y, split_k=ks,
                                                               part=part, **cfg)).replay)
                assert not torch.isnan(y).any(), "gemm_planes left outputs unwritten"
                times = {"planes": (t_planes, None)}
                if B <= 4:
                    tabs = torch.zeros(B, mod.KW * 128, device="cuda")
                    K.tables(mod.lifted(x.float()), mod.K, tabs)
                    y.fill_(float("nan"))
                    t_table = t_us(lambda: K.gemv_lut_split(tabs, mod.words, mod.scales, mod.bias, y, **TABLE_CFG))
                    assert not torch.isnan(y).any(), "gemv_lut_split left outputs unwritten"
                    times["table"] = (t_table, None)
                if binary:
                    zf = CB.workspace(B, mod.K, "cuda")
                    CB.planes(mod.lifted(x.float()), mod.K, zf)
                    y.fill_(float("nan"))
                    t_bin = t_us(graph_of(lambda: CB.gemv(mod.words, zf, mod.scales, mod.bias, y)).replay)
                    assert not torch.isnan(y).any(), "binary gemv left outputs unwritten"
                    times["binary"] = (t_bin, None)
                    if B == 1:  # per call inside a stream of SEQ calls, each on its own codes (no L2 reuse)
                        t_seq = seq_us(mod, zf, y)
                for rt in times:
                    triton_linear.DECODE_ROUTE = rt
                    mod._ws.clear()
                    times[rt] = (times[rt][0], t_us(graph_of(lambda: mod(x)).replay))
                triton_linear.DECODE_ROUTE = "binary"
                route = min(times, key=lambda k: times[k][0])
                t_gemv, t_layer = times[route]
                t_table, t_table_layer = times.get("table", (None, None))
                t_planes_layer = times["planes"][1]
                t_fp16 = t_us(lambda: torch.matmul(x, w16.t()))
                t_fp16_seq = seq_fp16_us(x, w16) if B == 1 else None
                moved = moved_bytes(mod, B)
                r = dict(N=N, K=Kin, D=D, d=d, bits=D / d, batch=B, route=route, rel_err=max(errs), rel_err_bf16=err_bf16,
                         gemv_us=t_gemv, layer_us=t_layer, fp16_us=t_fp16, planes_us=t_planes, table_us=t_table,
                         planes_layer_us=t_planes_layer, table_layer_us=t_table_layer,
                         binary_seq_us=t_seq if binary and B == 1 else None, fp16_seq_us=t_fp16_seq,
                         pct_copy_seq=100 * moved / t_seq / 1e3 / bw if binary and B == 1 else None,
                         binary_us=times.get("binary", (None, None))[0], binary_layer_us=times.get("binary", (None, None))[1],
                         gemv_GBps=moved / t_gemv / 1e3, pct_copy=100 * moved / t_gemv / 1e3 / bw,
                         speedup_gemv=t_fp16 / t_gemv, speedup_layer=t_fp16 / t_layer)
                rows.append(r)
                print(f"  {N}x{Kin} {D}/{d} B={B:2d} {route:5s} err {r['rel_err']:.1e}  gemv {t_gemv:7.1f} us "
                      f"({r['gemv_GBps']:5.0f} GB/s, {r['pct_copy']:4.1f}%)  layer {t_layer:7.1f}  fp16 {t_fp16:7.1f}  "
                      f"x{r['speedup_gemv']:.2f} / x{r['speedup_layer']:.2f}"
                      + (f"  seq: binary {r['binary_seq_us']:.1f} fp16 {r['fp16_seq_us']:.1f}" if r['binary_seq_us'] else "")
                      + f"  [planes {t_planes:.1f}/{t_planes_layer:.1f}"
                      + (f", table {t_table:.1f}/{t_table_layer:.1f}" if t_table else "")
                      + (f", binary {times['binary'][0]:.1f}/{times['binary'][1]:.1f}]" if binary else "]"), flush=True)
            del mod
        del w16
        torch.cuda.empty_cache()
    print()
    print(f"{'N x K':>12} {'rate':>6} {'B':>3} {'route':>5} {'gemv us':>8} {'GB/s':>6} {'%copy':>6} {'layer us':>8} "
          f"{'fp16 us':>8} {'x gemv':>6} {'x layer':>7} {'err f16':>8} {'err bf16':>8} {'seq us':>7} {'%copy':>6} {'x fp16':>6}")
    for r in rows:
        seq = (f" {r['binary_seq_us']:7.1f} {r['pct_copy_seq']:6.1f} {r['fp16_seq_us'] / r['binary_seq_us']:6.2f}"
               if r.get("binary_seq_us") else "")
        print(f"{r['N']:>6}x{r['K']:<5} {r['D']:>3}/{r['d']:<2} {r['batch']:>3} {r['route']:>6} {r['gemv_us']:8.1f} "
              f"{r['gemv_GBps']:6.0f} {r['pct_copy']:6.1f} {r['layer_us']:8.1f} {r['fp16_us']:8.1f} "
              f"{r['speedup_gemv']:6.2f} {r['speedup_layer']:7.2f} {r['rel_err']:8.1e} {r['rel_err_bf16']:8.1e}" + seq)
    out = dict(device=dev, date=time.strftime("%Y-%m-%d"), torch=torch.__version__, triton=triton.__version__,
               host=platform.node(), copy_GBps=bw, rows=rows, sweeps=sweeps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    worst = max(r["rel_err"] for r in rows)
    worst_bf16 = max(r["rel_err_bf16"] for r in rows)
    print(f"worst relative error vs float64: fp16 {worst:.2e}, bf16 {worst_bf16:.2e}")
    return 0 if worst < 5e-3 and worst_bf16 < 3e-2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
