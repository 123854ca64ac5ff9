"""Read ceiling: how close a plain streaming read gets to the copy bandwidth, beside the binary GEMV's bytes.

The GEMV bar is stated against the copy bandwidth (bytes read + written by a device-to-device copy). This
measures, in the same run, the best a kernel that only reads can do on exactly the bytes one batch-1
GEMV moves (N x K at a rate: codes, scales, activations): `bench/read_roofline.cu`, built here with nvcc,
over a sweep of launch settings, timed alone (one CUDA graph) and per call in a graph of 8 reads of
distinct buffers (as `bench/gpu_gemv.py`'s stream figure). Prints a table, writes JSON.

    python bench/gpu_read_roofline.py [--shapes 8192x8192,28672x8192] [--rate 24/10] [--json F]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import tempfile
import time

import torch

from gpu_gemv import SEQ, copy_bandwidth, graph_of, moved_bytes, random_layer, t_us
from liftexport.runtime.triton_linear import TritonLiftGroup


def build():
    out = os.path.join(tempfile.mkdtemp(), "rr.so")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "read_roofline.cu")
    subprocess.run(["nvcc", "-arch=sm_90", "-O3", "-shared", "-Xcompiler", "-fPIC", src, "-o", out], check=True)
    lib = ctypes.CDLL(out)
    lib.rr_read.argtypes = [ctypes.c_void_p, ctypes.c_longlong, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                            ctypes.c_int, ctypes.c_void_p]
    return lib


def gemv_bytes(N, Kin, D, d):
    """What one batch-1 GEMV of an N x Kin layer at D/d moves (bench/gpu_gemv.py's count)."""
    tf, lin = random_layer(N, Kin, D, d, seed=1)
    return moved_bytes(TritonLiftGroup([lin], tf, device="cuda"), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8192x8192,28672x8192")
    ap.add_argument("--rate", default="24/10")
    ap.add_argument("--json", default="bench/results/gpu_read_roofline.json")
    args = ap.parse_args()
    lib = build()
    bw = copy_bandwidth()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}: copy {bw:.0f} GB/s (read + write), {sms} SMs", flush=True)
    out = torch.zeros(1, dtype=torch.int32, device="cuda")
    D, d = map(int, args.rate.split("/"))
    rows = []
    for shape in args.shapes.split(","):
        N, Kin = map(int, shape.split("x"))
        nbytes = gemv_bytes(N, Kin, D, d)
        n16 = -(-nbytes // 16)
        bufs = [torch.randint(-2**31, 2**31 - 1, (4 * n16,), dtype=torch.int32, device="cuda") for _ in range(SEQ)]
        best = None
        for threads in (128, 256, 512):
            for per_sm in (2, 4, 8, 16):
                if threads * per_sm > 2048:
                    continue
                for unroll in (2, 4, 8):
                    def call(b):
                        stream = torch.cuda.current_stream().cuda_stream
                        rc = lib.rr_read(b.data_ptr(), n16, out.data_ptr(), per_sm * sms, threads, unroll, stream)
                        assert rc == 0, rc
                    t1 = t_us(graph_of(lambda: call(bufs[0])).replay)
                    ts = t_us(graph_of(lambda: [call(b) for b in bufs]).replay) / SEQ
                    r = dict(N=N, K=Kin, D=D, d=d, bytes=nbytes, threads=threads, blocks_per_sm=per_sm, unroll=unroll,
                             single_us=t1, seq_us=ts, pct_copy=100 * nbytes / t1 / 1e3 / bw,
                             pct_copy_seq=100 * nbytes / ts / 1e3 / bw)
                    rows.append(r)
                    if best is None or ts < best["seq_us"]:
                        best = r
        print(f"{N}x{Kin} {D}/{d} ({nbytes / 1e6:.2f} MB): best read {best['single_us']:.1f} us single "
              f"({best['pct_copy']:.1f}% copy), {best['seq_us']:.1f} us in a stream of {SEQ} "
              f"({best['pct_copy_seq']:.1f}% copy) at {best['threads']} threads x {best['blocks_per_sm']} blocks/SM, "
              f"unroll {best['unroll']}", flush=True)
        del bufs
        torch.cuda.empty_cache()
    print(f"{'N x K':>12} {'thr':>4} {'/SM':>3} {'U':>2} {'single':>7} {'%copy':>6} {'stream':>7} {'%copy':>6}")
    for r in rows:
        print(f"{r['N']:>6}x{r['K']:<5} {r['threads']:>4} {r['blocks_per_sm']:>3} {r['unroll']:>2} {r['single_us']:7.1f} "
              f"{r['pct_copy']:6.1f} {r['seq_us']:7.1f} {r['pct_copy_seq']:6.1f}")
    with open(args.json, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), copy_GBps=bw, sms=sms,
                       rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
