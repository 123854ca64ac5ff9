"""Profiling target for ncu: one planes + gemv of the binary route on 28672x8192 and 8192x8192, 24/10, batch 1.

    ncu --section SpeedOfLight ... python bench/gpu_binary_ncu.py
"""

import torch

from gpu_gemv import random_layer
from liftexport.kernels import cuda_binary as CB
from liftexport.runtime.triton_linear import TritonLiftGroup

for N, Kin in ((28672, 8192), (8192, 8192)):
    tf, lin = random_layer(N, Kin, 24, 10, seed=1)
    mod = TritonLiftGroup([lin], tf, device="cuda")
    x = torch.randn(1, Kin, device="cuda")
    u = mod.lifted(x)
    zf = CB.workspace(1, mod.K, "cuda")
    y = torch.empty(1, N, device="cuda", dtype=torch.float16)
    for _ in range(3):
        CB.planes(u, mod.K, zf)
        CB.gemv(mod.words, zf, mod.scales, mod.bias, y)
    torch.cuda.synchronize()
