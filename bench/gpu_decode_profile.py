"""Where a decode step's time goes: the CUDA-graph decode step of bench/gpu_e2e.py's Llama-2-7B-shaped
model (batch 1, context 512) under torch.profiler, kernels grouped by name, µs per step and per layer.

    python bench/gpu_decode_profile.py [--layers 8] [--rates 24/10,fp16] [--json F] [--timeline]

With --timeline (run it with programmatic launch on, the engine's default) it also reads each kernel's
start and end off the trace and splits each step's wall time over the kernels on its critical path: a
kernel's share is how far its end lies past the latest end of the kernels before it (its `crit`), beside
its own duration and how long after the previous kernel's end it started (`lag`, negative: it overlapped).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from gpu_e2e import CTX, config, dense, kept, lifted
from liftexport.runtime import triton_linear as TL
from liftexport.runtime.engine import DecoderEngine

STEPS = 20


def profile_engine(eng, timeline: bool = False):
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
    steps = step_timeline(prof) if timeline else None
    kern = collections.defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            k = kern[e.name[:90]]
            k[0] += e.device_time
            k[1] += 1
    return {n: (us / STEPS, c / STEPS) for n, (us, c) in kern.items()}, steps


def kernel_label(name: str, seen: collections.Counter) -> str:
    """A short label for a kernel of a decode step; the binary GEMVs by their place in the layer."""
    m = re.search(r"lift_(?:planes|tiled)_kernel<[^,]+, (\d)", name)
    if m:
        return "lift " + {"0": "plain", "1": "RMSNorm", "2": "SwiGLU"}[m.group(1)]
    if "gemv" in name:
        k = seen["gemv"]
        seen["gemv"] += 1
        return "gemv " + ("qkv", "o", "gate/up", "down")[k % 4]
    return name[:60]


def step_timeline(prof) -> dict:
    """Per label: mean duration, critical-path share and start lag per step (see the module docstring)."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    prof.export_chrome_trace(path)
    with open(path) as f:
        ev = [e for e in json.load(f)["traceEvents"] if e.get("cat") == "kernel" and e.get("ph") == "X"]
    os.unlink(path)
    ev.sort(key=lambda e: e["ts"])
    steps, cur = [], []
    for e in ev:  # a step ends with the argmax of its logits
        cur.append(e)
        if "ArgMax" in e["name"]:
            steps.append(cur)
            cur = []
    agg = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    walls = []
    for st in steps:
        seen = collections.Counter()
        last_end = st[0]["ts"]
        prev_end = None
        for e in st:
            end = e["ts"] + e["dur"]
            a = agg[kernel_label(e["name"], seen)]
            a[0] += e["dur"]
            a[1] += max(0.0, end - last_end)
            a[2] += e["ts"] - prev_end if prev_end is not None else 0.0
            a[3] += 1
            last_end, prev_end = max(last_end, end), end
        walls.append(last_end - st[0]["ts"])
    n = max(1, len(steps))
    rows = {k: dict(us=v[0] / n, crit_us=v[1] / n, mean_lag_us=v[2] / max(1, v[3]), count=v[3] / n)
            for k, v in agg.items()}
    return dict(steps=len(steps), wall_us=sum(walls) / n, kernels=rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rates", default="24/10,fp16")
    ap.add_argument("--json", default="bench/results/gpu_decode_profile.json")
    ap.add_argument("--lift-spc", type=int, default=None, help="k-steps per lift_planes block (runtime default)")
    ap.add_argument("--timeline", action="store_true", help="critical-path share of each kernel (PDL on)")
    args = ap.parse_args()
    if args.lift_spc:
        TL.LIFT_SPC = args.lift_spc
    cfg = config(args.layers)
    k = kept(cfg)
    out = {}
    for rate in args.rates.split(","):
        groups = dense(cfg) if rate == "fp16" else lifted(cfg, *map(int, rate.split("/")))
        eng = DecoderEngine(cfg.to_dict(), k, groups, dtype=torch.float16, device="cuda", max_len=CTX + 8 + STEPS)
        kern, timeline = profile_engine(eng, args.timeline)
        total = sum(us for us, _ in kern.values())
        print(f"\n== {rate}: {total:.1f} us of kernels per step, {total / args.layers:.1f} per layer "
              f"({args.layers} layers + head)")
        print(f"{'us/step':>9} {'us/layer':>9} {'count/step':>10}  kernel")
        for n, (us, c) in sorted(kern.items(), key=lambda kv: -kv[1][0]):
            print(f"{us:9.1f} {us / args.layers:9.2f} {c:10.1f}  {n}")
        out[rate] = dict(total_us=total, kernels={n: dict(us=us, count=c) for n, (us, c) in kern.items()})
        if timeline:
            print(f"-- timeline: {timeline['steps']} steps, wall {timeline['wall_us']:.1f} us per step "
                  f"({timeline['wall_us'] / args.layers:.1f} per layer)")
            print(f"{'crit/step':>9} {'crit/lay':>9} {'dur/step':>9} {'lag':>7} {'count':>6}  kernel")
            for n, r in sorted(timeline["kernels"].items(), key=lambda kv: -kv[1]["crit_us"]):
                print(f"{r['crit_us']:9.1f} {r['crit_us'] / args.layers:9.2f} {r['us']:9.1f} {r['mean_lag_us']:7.2f} "
                      f"{r['count']:6.1f}  {n}")
            out[rate]["timeline"] = timeline
        del eng, groups
        torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), layers=args.layers,
                       context=CTX, torch=torch.__version__, rates=out), f, indent=1)


if __name__ == "__main__":
    main()
