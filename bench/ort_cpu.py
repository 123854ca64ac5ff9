"""LiftMatMul vs MatMulNBits (int4, block 32/128, accuracy_level 4) vs fp32 MatMul inside ORT (CPU).

    .venv/bin/python bench/ort_cpu.py [--threads 2] [--json bench/ort_cpu.json]

Shapes N x K (out x in): 4096x4096, 11008x4096, 4096x11008; M (tokens) = 1 and 16; LiftMatMul at
2.4 bits (24/10). Each variant is a one-node model; weights are random (speed does not depend on
values); the median of repeated runs is reported. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from liftexport.ort import library_path
from liftexport.transform import choose_shape

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008)]


def model(node, inits, K, N, opsets):
    g = helper.make_graph([node], "b", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", N])], inits)
    return helper.make_model(g, opset_imports=opsets, ir_version=10)


def lift_model(N, K, D=24, d=10, rng=None):
    n1, n2 = choose_shape(K, d)
    Kl = n1 * n2 // d * D
    f16 = lambda a: a.astype(np.float16)  # noqa: E731
    inits = [numpy_helper.from_array(rng.integers(0, 256, (N, -(-Kl // 8)), dtype=np.uint8), "codes"),
             numpy_helper.from_array(f16(rng.random(N) * 0.01 + 0.01), "scales"),
             numpy_helper.from_array(f16(rng.standard_normal((d, D)) * 0.3), "M"),
             numpy_helper.from_array(f16(rng.random(n1) + 0.5), "a"),
             numpy_helper.from_array(f16(rng.random(n2 // d) + 0.5), "b"),
             numpy_helper.from_array(f16(rng.random(n1 * n2) + 0.5), "s1"),
             numpy_helper.from_array(np.zeros(N, np.float16), "bias")]
    node = helper.make_node("LiftMatMul", ["X", "codes", "scales", "M", "a", "b", "s1", "bias"], ["Y"],
                            domain="ai.liftquant", in_features=K, out_features=N, D=D, d=d, n1=n1, n2=n2)
    return model(node, inits, K, N, [helper.make_opsetid("", 21), helper.make_opsetid("ai.liftquant", 1)])


def nbits_model(N, K, block, rng):
    kb = -(-K // block)
    B = rng.integers(0, 256, (N, kb, block // 2), dtype=np.uint8)
    inits = [numpy_helper.from_array(B, "B"), numpy_helper.from_array((rng.random(N * kb) * 0.01).astype(np.float32), "S")]
    node = helper.make_node("MatMulNBits", ["X", "B", "S"], ["Y"], domain="com.microsoft", K=K, N=N, bits=4,
                            block_size=block, accuracy_level=4)
    return model(node, inits, K, N, [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def fp32_model(N, K, rng):
    W = rng.standard_normal((K, N)).astype(np.float32) * 0.02
    node = helper.make_node("MatMul", ["X", "W"], ["Y"])
    return model(node, [numpy_helper.from_array(W, "W")], K, N, [helper.make_opsetid("", 21)])


def time_model(m, M, K, threads, custom, reps, tmp):
    p = tmp / "m.onnx"
    onnx.save(m, str(p))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if custom:
        so.register_custom_ops_library(str(library_path()))
    s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    xs = [np.random.default_rng(i).standard_normal((M, K)).astype(np.float32) for i in range(4)]
    for i in range(3):
        s.run(None, {"X": xs[i % 4]})
    ts = []
    for i in range(reps):
        t0 = time.perf_counter()
        s.run(None, {"X": xs[i % 4]})
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--json", default="bench/ort_cpu.json")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for N, K in SHAPES:
        variants = {"LiftMatMul 24/10": (lift_model(N, K, rng=rng), True),
                    "MatMulNBits int4 b32": (nbits_model(N, K, 32, rng), False),
                    "MatMulNBits int4 b128": (nbits_model(N, K, 128, rng), False),
                    "MatMul fp32": (fp32_model(N, K, rng), False)}
        for M in (1, 16):
            for name, (m, custom) in variants.items():
                us = time_model(m, M, K, a.threads, custom, a.reps, tmp)
                rows.append({"N": N, "K": K, "M": M, "variant": name, "median_us": round(us, 1)})
                print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        best4 = min(x["median_us"] for x in rows if x["N"] == r["N"] and x["K"] == r["K"] and x["M"] == r["M"]
                    and x["variant"].startswith("MatMulNBits"))
        r["speedup_vs_best_int4"] = round(best4 / r["median_us"], 2)
    out = {"threads": a.threads, "onnxruntime": ort.__version__, "cpu": _cpu(), "rows": rows}
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"\n{'N x K':>12} {'M':>3} {'variant':<24} {'median us':>10} {'vs best int4':>12}")
    for r in rows:
        print(f"{r['N']:>5}x{r['K']:<6} {r['M']:>3} {r['variant']:<24} {r['median_us']:>10.1f} {r['speedup_vs_best_int4']:>12.2f}")


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
