"""Where a decode step's time goes: the CUDA-graph decode step of bench/gpu_e2e.py's Llama-2-7B-shaped
model (batch 1, context 512) under torch.profiler, kernels grouped by name, µs per step and per layer.

    python bench/gpu_decode_profile.py [--layers 8] [--rates 24/10,fp16] [--json F]
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from gpu_e2e import CTX, config, dense, kept, lifted
from liftexport.runtime import triton_linear as TL
from liftexport.runtime.engine import DecoderEngine

STEPS = 20


def profile_engine(eng):
    ids = torch.randint(0, 32000, (1, CTX), device="cuda")
    nxt = eng.prefill(ids).argmax(-1, keepdim=True)
    eng.capture()
    for p in range(CTX, CTX + 4):
        nxt = eng.step(nxt, p).argmax(-1, keepdim=True)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for p in range(CTX + 4, CTX + 4 + STEPS):
            nxt = eng.step(nxt, p).argmax(-1, keepdim=True)
        torch.cuda.synchronize()
    kern = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = kern[e.name[:90]]
            k[0] += e.device_time
            k[1] += 1
    return {n: (us / STEPS, c / STEPS) for n, (us, c) in kern.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rates", default="24/10,fp16")
    ap.add_argument("--json", default="bench/results/gpu_decode_profile.json")
    ap.add_argument("--lift-spc", type=int, default=None, help="k-steps per lift_planes block (runtime default)")
    args = ap.parse_args()
    if args.lift_spc:
        TL.LIFT_SPC = args.lift_spc
    cfg = config(args.layers)
    k = kept(cfg)
    out = {}
    for rate in args.rates.split(","):
        groups = dense(cfg) if rate == "fp16" else lifted(cfg, *map(int, rate.split("/")))
        eng = DecoderEngine(cfg.to_dict(), k, groups, dtype=torch.float16, device="cuda", max_len=CTX + 8 + STEPS)
        kern = profile_engine(eng)
        total = sum(us for us, _ in kern.values())
        print(f"\n== {rate}: {total:.1f} us of kernels per step, {total / args.layers:.1f} per layer "
              f"({args.layers} layers + head)")
        print(f"{'us/step':>9} {'us/layer':>9} {'count/step':>10}  kernel")
        for n, (us, c) in sorted(kern.items(), key=lambda kv: -kv[1][0]):
            print(f"{us:9.1f} {us / args.layers:9.2f} {c:10.1f}  {n}")
        out[rate] = dict(total_us=total, kernels={n: dict(us=us, count=c) for n, (us, c) in kern.items()})
        del eng, groups
        torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), layers=args.layers,
                       context=CTX, torch=torch.__version__, rates=out), f, indent=1)


if __name__ == "__main__":
    main()
