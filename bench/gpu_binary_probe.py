"""Probe: the binary-tensor-core decode GEMV (kernels/cuda/binary_gemv.cu) against gemm_planes and FP16.

For each N x K and batch: a random lifted layer, the lifted activation u of fresh fp16 inputs (float32,
the Triton transform), then planes + gemv checked against a float64 reference (outputs poisoned), then
timed as CUDA graphs: gemv alone, planes alone, Triton transform + planes, the fused lift_planes kernel
(k-steps per block 1, 2, 4), the whole layer (lift_planes + gemv, also checked), Triton's gemm_planes and
torch FP16 matmul in the same run.

    LIFTEXPORT_CUDA_LIB=build/cuda/libliftquant_cuda.so python bench/gpu_binary_probe.py [--json F]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gpu_gemv import SHAPES, copy_bandwidth, graph_of, moved_bytes, random_layer, reference, seq_fp16_us, seq_us, t_us
from liftexport.kernels import cuda_binary as CB
from liftexport.kernels.triton import lift_linear as K
from liftexport.runtime.triton_linear import TritonLiftGroup, planes_cfg, planes_split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench/results/gpu_binary_probe.json")
    ap.add_argument("--rates", default="24/10,16/8,24/8")
    ap.add_argument("--batches", default="1,4,16", help="batches at 24/10 (other rates: batch 1)")
    ap.add_argument("--shapes", default=None, help="N x K list, e.g. 12288x4096,4096x11008 (default: gpu_gemv's)")
    ap.add_argument("--no-layer", action="store_true", help="skip the layer and gemm_planes timings")
    ap.add_argument("--gemv-only", action="store_true",
                    help="time only the GEMV (one graph, and per call in a graph of 8 on distinct codes) and FP16")
    args = ap.parse_args()
    assert CB.available("cuda"), "libliftquant_cuda.so not found or GPU older than sm_80"
    bw = copy_bandwidth()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}: copy {bw:.0f} GB/s, {sms} SMs", flush=True)
    rows = []
    shapes = [tuple(map(int, v.split("x"))) for v in args.shapes.split(",")] if args.shapes else SHAPES
    for (N, Kin) in shapes:
        w16 = torch.randn(N, Kin, dtype=torch.float16, device="cuda") * 0.02
        for rate in args.rates.split(","):
            D, d = map(int, rate.split("/"))
            tf, lin = random_layer(N, Kin, D, d, seed=N + Kin + D * 7 + d)
            mod = TritonLiftGroup([lin], tf, device="cuda")
            for B in (tuple(map(int, args.batches.split(","))) if rate == "24/10" else (1,)):
                zf = CB.workspace(B, mod.K, "cuda")
                y = torch.empty(B, N, device="cuda", dtype=torch.float16)
                u = torch.empty(B, mod.n1 * mod.R.shape[1], device="cuda")
                errs = []
                for _ in range(2):  # fresh inputs each check
                    x = torch.randn(B, Kin, device="cuda", dtype=torch.float16)
                    K.transform(x, mod.inv_s1, mod.L, mod.R, Kin, u)
                    CB.planes(u, mod.K, zf)
                    y.fill_(float("nan"))
                    CB.gemv(mod.words, zf, mod.scales, mod.bias, y)
                    torch.cuda.synchronize()
                    ref = reference(x.double(), tf, lin, mod)
                    errs.append(float((y.double() - ref).abs().max() / ref.abs().max()))
                    if args.gemv_only and B == 1:  # both one-token kernels on the same planes
                        for kern in ("plain", "tma"):
                            y2 = torch.full_like(y, float("nan"))
                            CB.gemv(mod.words, zf, mod.scales, mod.bias, y2, kernel=kern)
                            torch.cuda.synchronize()
                            errs.append(float((y2.double() - ref).abs().max() / ref.abs().max()))
                t_bin = t_us(graph_of(lambda: CB.gemv(mod.words, zf, mod.scales, mod.bias, y)).replay)
                moved = moved_bytes(mod, B)
                if args.gemv_only:
                    t_seq, t_fp16 = seq_us(mod, zf, y), t_us(lambda: torch.matmul(x, w16.t()))
                    t_seq16 = seq_fp16_us(x, w16)
                    r = dict(N=N, K=Kin, D=D, d=d, batch=B, rel_err=max(errs), gemv_us=t_bin, seq_us=t_seq,
                             fp16_us=t_fp16, fp16_seq_us=t_seq16, pct_copy=100 * moved / t_bin / 1e3 / bw,
                             pct_copy_seq=100 * moved / t_seq / 1e3 / bw, x_fp16=t_fp16 / t_bin,
                             x_fp16_seq=t_seq16 / t_seq)
                    per_kernel = ""
                    if B == 1:  # each one-token kernel in the same run (the row above: the library's choice)
                        for kern in ("plain", "tma"):
                            r[f"{kern}_gemv_us"] = t_us(graph_of(
                                lambda: CB.gemv(mod.words, zf, mod.scales, mod.bias, y, kernel=kern)).replay)
                            r[f"{kern}_seq_us"] = seq_us(mod, zf, y, kernel=kern)
                            per_kernel += f" | {kern} {r[f'{kern}_gemv_us']:6.1f} / {r[f'{kern}_seq_us']:6.1f} us"
                    rows.append(r)
                    print(f"{N}x{Kin} {D}/{d} B={B:2d} err {r['rel_err']:.1e} binary {t_bin:6.1f} us "
                          f"({r['pct_copy']:4.1f}% copy, x{r['x_fp16']:.2f} fp16) in stream {t_seq:6.1f} us "
                          f"({r['pct_copy_seq']:4.1f}% copy, x{r['x_fp16_seq']:.2f} fp16 {t_seq16:6.1f}){per_kernel}",
                          flush=True)
                    continue
                t_pl = t_us(graph_of(lambda: CB.planes(u, mod.K, zf)).replay)

                def two_step():
                    K.transform(x, mod.inv_s1, mod.L, mod.R, Kin, u)
                    CB.planes(u, mod.K, zf)
                t_two = t_us(graph_of(two_step).replay)
                t_lift = {spc: t_us(graph_of(lambda: CB.lift_planes(x, Kin, mod.inv_s1, mod.L, mod.R, zf, spc=spc)).replay)
                          for spc in (1, 2, 4)}
                spc = min(t_lift, key=t_lift.get)

                def layer():
                    CB.lift_planes(x, Kin, mod.inv_s1, mod.L, mod.R, zf, spc=spc)
                    CB.gemv(mod.words, zf, mod.scales, mod.bias, y)
                y.fill_(float("nan"))
                t_layer = t_us(graph_of(layer).replay) if not args.no_layer else float("nan")
                if not args.no_layer:  # the fused route's result, same x as the last check
                    errs.append(float((y.double() - ref).abs().max() / ref.abs().max()))
                up = torch.zeros(B, mod.KW * 32, device="cuda", dtype=torch.float16)
                K.transform(x, mod.inv_s1, mod.L, mod.R, Kin, up, planes=True)
                ks = planes_split(B, N, mod.KW, sms)
                part = torch.empty(ks * B * N, device="cuda")
                t_gp = float("nan") if args.no_layer else t_us(graph_of(lambda: K.gemm_planes(up, mod.words, mod.scales, mod.bias, y, split_k=ks,
                                                           part=part, **planes_cfg(B, N))).replay)
                t_fp16 = t_us(lambda: torch.matmul(x, w16.t()))
                r = dict(N=N, K=Kin, D=D, d=d, batch=B, rel_err=max(errs), gemv_us=t_bin,
                         planes_us=t_pl, transform_planes_us=t_two, lift_planes_us=t_lift, layer_us=t_layer, gemm_planes_us=t_gp, fp16_us=t_fp16,
                         pct_copy=100 * moved / t_bin / 1e3 / bw, x_fp16=t_fp16 / t_bin, x_fp16_layer=t_fp16 / t_layer)
                rows.append(r)
                print(f"{N}x{Kin} {D}/{d} B={B:2d} err {r['rel_err']:.1e} binary {t_bin:6.1f} us "
                      f"({r['pct_copy']:4.1f}% copy) "
                      f"planes {t_pl:5.1f} transform+planes {t_two:5.1f} fused {t_lift[spc]:5.1f} (spc {spc}) "
                      f"layer {t_layer:6.1f} | gemm_planes {t_gp:6.1f} fp16 {t_fp16:6.1f} "
                      f"x{r['x_fp16']:.2f} / layer x{r['x_fp16_layer']:.2f}", flush=True)
            del mod
        del w16
        torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), copy_GBps=bw,
                       rows=rows), f, indent=1)
    worst = max(r["rel_err"] for r in rows)
    print(f"worst relative error vs float64 (max abs / max |ref|): {worst:.2e}")
    return 0 if worst < 2e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
