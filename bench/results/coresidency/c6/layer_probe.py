"""untracked: lift + binary GEMV layer time per batch (one CUDA graph), for the carveout question."""
import json, sys, torch
from gpu_gemv import random_layer, graph_of, t_us
from liftexport.runtime import triton_linear
from liftexport.runtime.triton_linear import TritonLiftGroup
triton_linear.DECODE_ROUTE = "binary"
out = {}
for (N, Kin) in [(4096, 4096), (8192, 8192), (28672, 8192)]:
    for (D, d) in [(16, 8), (24, 10)]:
        tf, lin = random_layer(N, Kin, D, d, seed=N + Kin + D * 7 + d)
        mod = TritonLiftGroup([lin], tf, device="cuda")
        for B in (1, 2, 4):
            x = torch.randn(B, Kin, device="cuda", dtype=torch.float16)
            mod._ws.clear()
            t = t_us(graph_of(lambda: mod(x)).replay)
            out[f"{N}x{Kin} {D}/{d} B={B}"] = t
            print(f"{N}x{Kin} {D}/{d} B={B}: layer {t:.1f} us", flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
