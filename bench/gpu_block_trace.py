"""Diagnostic: when each block of a decode step's lifts and GEMVs starts, passes its programmatic-launch wait
and ends, on one clock (%globaltimer) for all SMs.

Needs the CUDA library built with -DLQ_TRACE. Replays, as one CUDA graph with programmatic launch, the kernels
of a Llama-2-7B-shaped layer at 24/10 from o_proj's lift on, as the decode step runs them (static weights):
lift (plain 4096) -> GEMV o 4096x4096 -> lift (RMSNorm 4096) -> GEMV gate/up 22016x4096 -> lift (SiLU*up 11008)
-> GEMV down 4096x11008 -> lift (RMSNorm 4096) -> GEMV qkv 12288x4096. Per launch, µs from the replay's first
block start: the first, median and last block start, the first and last return from the wait, the median and
last block end; how many of its blocks started before the launch before it had ended ("early"), and how many
started on an SM where a block of the launch before was still running ("beside"). The JSON also holds the last
replay's blocks: [launch, SM, start, wait, end]. (The diagnostic build holds the TMA gemv to the default build's
72 registers; with more, a lift block no longer fits beside it and the trace would not show the decode step's
placement: see TILED_MAXREG in kernels/cuda/binary_gemv.cu.)

    LIFTEXPORT_CUDA_LIB=/tmp/bv/trace/libliftquant_cuda.so python bench/gpu_block_trace.py [--json F]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time

import torch

from gpu_gemv import graph_of
from gpu_lift_phases import group  # a random 24/10 lifted group of N rows on Kin inputs
from liftexport.kernels import cuda_binary as CB

MAX = 1 << 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="bench/results/gpu_block_trace.json")
    ap.add_argument("--replays", type=int, default=3, help="traced replays (after 5 untraced)")
    args = ap.parse_args()
    lib = CB.load()
    lib.lq_trace_read.restype = ctypes.c_int
    lib.lq_trace_read.argtypes = [ctypes.c_void_p, ctypes.c_int]
    h = 4096
    o, gu, down, qkv = group(h, h, 1), group(22016, h, 2), group(h, 11008, 3), group(12288, h, 4)
    nw = torch.rand(h, device="cuda", dtype=torch.float16) + 0.5
    a = torch.randn(1, h, device="cuda", dtype=torch.float16)  # attention output
    x = torch.randn(1, h, device="cuda", dtype=torch.float16)  # residual stream
    y_o, y_gu = torch.empty(1, h, device="cuda", dtype=torch.float16), torch.empty(1, 22016, device="cuda", dtype=torch.float16)
    y_d, y_q = torch.empty(1, h, device="cuda", dtype=torch.float16), torch.empty(1, 12288, device="cuda", dtype=torch.float16)
    zf = {m: CB.workspace(1, m.K, "cuda") for m in (o, gu, down, qkv)}

    def lift(m, inp, width, **kw):
        CB.lift_planes(inp, width, m.inv_s1, m.L, m.R, zf[m], static_weights=True, **kw)

    def gemv(m, y, res=None):
        CB.gemv(m.words, zf[m], m.scales, m.bias, y, residual=res, static_weights=True)

    def step():
        lift(o, a, h)
        gemv(o, y_o, x)
        lift(gu, y_o, h, rms=(nw, 1e-5))
        gemv(gu, y_gu)
        lift(down, y_gu, 11008, glu=True)
        gemv(down, y_d, y_o)
        lift(qkv, y_d, h, rms=(nw, 1e-5))
        gemv(qkv, y_q)

    names = ["lift plain 4096", "GEMV o", "lift RMSNorm 4096", "GEMV gate/up", "lift SiLU*up 11008", "GEMV down",
             "lift RMSNorm 4096 (next)", "GEMV qkv"]
    keys = [(1, h), (0, h, o.K), (1, h | 1 << 28), (0, 22016, gu.K), (1, 11008 | 2 << 28), (0, h, down.K),
            (1, h | 1 << 28), (0, 12288, qkv.K)]
    g = graph_of(step)
    for _ in range(5):
        g.replay()
    buf = (ctypes.c_ulonglong * (4 * MAX))()
    lib.lq_trace_read(ctypes.addressof(buf), MAX)  # discard
    per = {n: [] for n in names}
    for _ in range(args.replays):
        g.replay()
        n = lib.lq_trace_read(ctypes.addressof(buf), MAX)
        assert n > 0, n
        raw = list(buf[: 4 * n])
        kind = torch.tensor([raw[4 * i] >> 63 for i in range(n)])
        shape = torch.tensor([raw[4 * i] & 0xFFFFFFFF for i in range(n)])
        smid = torch.tensor([(raw[4 * i] >> 48) & 255 for i in range(n)])
        t0 = min(raw[4 * i + 1] for i in range(n))  # ns; integers (2^63 > the clock), µs relative below
        rec = torch.tensor([[0, raw[4 * i + 1] - t0, raw[4 * i + 2] - t0, raw[4 * i + 3] - t0] for i in range(n)],
                           dtype=torch.float64)
        launches = []
        for name, k in zip(names, keys):
            if k[0] == 1:
                sel = (kind == 1) & (shape == k[1])
            else:
                sel = (kind == 0) & (shape == (k[1] | (-(-k[2] // 256)) << 20))
            launches.append(sel)
        # the two RMSNorm 4096 lifts share a key: split them at the largest gap of their start times
        both = launches[2]
        idx = torch.nonzero(both).flatten()
        st = rec[idx, 1]
        order = torch.argsort(st)
        gap = int(torch.argmax(st[order][1:] - st[order][:-1])) + 1
        first, second = torch.zeros_like(both), torch.zeros_like(both)
        first[idx[order[:gap]]] = True
        second[idx[order[gap:]]] = True
        launches[2], launches[6] = first, second
        prev_end, prev = None, None
        blocks = []  # the last replay's blocks: [launch, SM, start, wait, end] (µs)
        for li, sel in enumerate(launches):
            for b in torch.nonzero(sel).flatten().tolist():
                blocks.append([li, int(smid[b])] + [round(float(v) / 1e3, 3) for v in rec[b, 1:]])
        for name, sel in zip(names, launches):
            r = rec[sel]
            s, w, e = r[:, 1] / 1e3, r[:, 2] / 1e3, r[:, 3] / 1e3
            # blocks that started on an SM where a block of the launch before was still running
            shared = 0
            if prev is not None:
                ps, pe, pm = prev
                for b in range(len(s)):
                    on = pm == smid[sel][b]
                    shared += int(((ps[on] <= s[b]) & (s[b] < pe[on])).any())
            prev = (s, e, smid[sel])
            per[name].append(dict(blocks=int(sel.sum()), start_first=float(s.min()), start_median=float(s.median()),
                                  start_last=float(s.max()), wait_first=float(w.min()), wait_last=float(w.max()),
                                  end_median=float(e.median()), end_last=float(e.max()),
                                  started_before_prev_end=int((s < prev_end).sum()) if prev_end is not None else None,
                                  started_beside_prev=shared if prev_end is not None else None))
            prev_end = float(e.max())
    print(f"{'launch':26s} {'blocks':>6} {'start 1st/med/last':>22} {'wait 1st/last':>15} {'end med/last':>15} "
          f"{'early':>6} {'beside':>6}   (us from the replay's first block start; replay {args.replays} of {args.replays})")
    for name in names:
        d = per[name][-1]
        print(f"{name:26s} {d['blocks']:6d} {d['start_first']:7.2f}{d['start_median']:7.2f}{d['start_last']:8.2f} "
              f"{d['wait_first']:7.2f}{d['wait_last']:8.2f} {d['end_median']:7.2f}{d['end_last']:8.2f} "
              f"{str(d['started_before_prev_end']):>6} {str(d['started_beside_prev']):>6}")
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), launches=per,
                       names=names, blocks=blocks), f)


if __name__ == "__main__":
    main()
