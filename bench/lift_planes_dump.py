"""The lift's planes for a spread of shapes, dtypes, token counts and prologues, saved for a bit-identity check
between two builds of the CUDA library (e.g. a kernel change that should not move a bit).

    LIFTEXPORT_CUDA_LIB=/tmp/bv/old/libliftquant_cuda.so python bench/lift_planes_dump.py /tmp/d_old.pt
    LIFTEXPORT_CUDA_LIB=/tmp/bv/new/libliftquant_cuda.so python bench/lift_planes_dump.py /tmp/d_new.pt
    python bench/lift_planes_dump.py --compare /tmp/d_old.pt /tmp/d_new.pt

216 launches: 12 (in_features, D, d) shapes (the 7B layers' inputs, odd widths), fp16 / bf16 / fp32, 1 and 3 tokens,
RMSNorm / none / SiLU*up, each on a poisoned workspace; prints which lift kernel each shape takes.
"""

from __future__ import annotations

import argparse

import torch

SHAPES = [(4096, 24, 10), (11008, 24, 10), (8192, 24, 10), (4096, 24, 8), (4096, 16, 8), (11008, 24, 8), (1000, 16, 8),
          (3000, 24, 10), (576, 24, 10), (1536, 24, 10), (2048, 20, 8), (777, 12, 4)]


def dump(path: str):
    from gpu_gemv import random_layer
    from liftexport.kernels import cuda_binary as CB
    from liftexport.runtime.triton_linear import TritonLiftGroup
    out = {}
    for kin, D, d in SHAPES:
        tf, lin = random_layer(64, kin, D, d, seed=kin + D)
        mod = TritonLiftGroup([lin], tf, device="cuda")
        print(kin, D, d, CB.lift_kernel(mod.L.shape[0], mod.R.shape[0], mod.R.shape[1], 1, "cuda"), flush=True)
        for dt in (torch.float16, torch.bfloat16, torch.float32):
            for M in (1, 3):
                for pro in ("rms", None, "glu"):
                    g = torch.Generator(device="cuda").manual_seed(kin * 7 + M)
                    x = torch.randn(M, 2 * kin if pro == "glu" else kin, device="cuda", dtype=dt, generator=g)
                    nw = torch.rand(kin, device="cuda", dtype=dt, generator=g) + 0.5
                    zf = CB.workspace(M, mod.K, "cuda")
                    zf.fill_(-7)
                    CB.lift_planes(x, kin, mod.inv_s1, mod.L, mod.R, zf, rms=(nw, 1e-5) if pro == "rms" else None,
                                   glu=pro == "glu", static_weights=True)
                    torch.cuda.synchronize()
                    out[f"{kin}_{D}_{d}_{dt}_{M}_{pro}"] = zf.cpu()
    torch.save(out, path)
    print("dumped", len(out))


def compare(a_path: str, b_path: str) -> int:
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    if a.keys() != b.keys():
        raise SystemExit("the two dumps hold different launches")
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    print("planes compared", len(a), "differ", len(bad), bad[:8])
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path", nargs="?")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        raise SystemExit(compare(*args.compare))
    if not args.path:
        ap.error("give the output path or --compare A B")
    dump(args.path)


if __name__ == "__main__":
    main()
