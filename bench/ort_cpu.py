"""LiftMatMul (exact, and the lut_bits=8 fast mode) vs MatMulNBits (int4, block 32/128, accuracy_level 4)
vs fp32 MatMul inside ORT (CPU).

    .venv/bin/python bench/ort_cpu.py [--threads 2] [--json bench/ort_cpu.json] [--lqt MODEL.lqt]

Shapes N x K (out x in): 4096x4096, 11008x4096, 4096x11008; M (tokens) = 1 and 16; LiftMatMul at
2.4 bits (24/10). Each variant is a one-node model; weights are random (speed does not depend on
values); the median of repeated runs is reported. Prints a table and writes JSON.

Accuracy of the fast mode (relative error of Y against the exact kernel): on each benchmark layer with
N(0, 1) activations, and with --lqt on the lifted linears of a container with their real inputs
(captured from the reference model on a fixed text).
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


def lift_model(N, K, D=24, d=10, rng=None, lut_bits=0):
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
    extra = {"lut_bits": lut_bits} if lut_bits else {}
    node = helper.make_node("LiftMatMul", ["X", "codes", "scales", "M", "a", "b", "s1", "bias"], ["Y"],
                            domain="ai.liftquant", in_features=K, out_features=N, D=D, d=d, n1=n1, n2=n2, **extra)
    return model(node, inits, K, N, [helper.make_opsetid("", 21), helper.make_opsetid("ai.liftquant", 1)])


def with_lut(m, lut_bits=8):
    """The same LiftMatMul model with lut_bits set (identical initializers)."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    m2.graph.node[0].attribute.append(helper.make_attribute("lut_bits", lut_bits))
    return m2


def session(m, threads, custom=True):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if custom:
        so.register_custom_ops_library(str(library_path()))
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def rel_err(y, ref):
    return {"l2_rel": float(np.linalg.norm(y - ref) / np.linalg.norm(ref)),
            "max_rel": float(np.abs(y - ref).max() / np.abs(ref).max())}


def lut_accuracy_random(m_exact, M, K, threads):
    x = np.random.default_rng(123).standard_normal((M, K)).astype(np.float32)
    ye = session(m_exact, threads).run(None, {"X": x})[0]
    yf = session(with_lut(m_exact), threads).run(None, {"X": x})[0]
    return rel_err(yf, ye)


def lut_accuracy_container(path, threads, text=None):
    """Every lifted linear of the container: inputs captured from the reference model on a fixed text,
    then LiftMatMul exact vs lut_bits=8 on those inputs."""
    import torch

    from liftexport.formats.container import read_container
    from liftexport.ir import LiftedLinear
    from liftexport.runtime.reference import LiftLinear, build_model, build_tokenizer

    ir = read_container(path)
    ref = build_model(ir)
    tok = build_tokenizer(ir)
    text = text or ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
                    "must be in want of a wife. However little known the feelings or views of such a man may be "
                    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
                    "surrounding families, that he is considered the rightful property of some one or other.")
    inputs = {}
    hooks = [mod.register_forward_hook(lambda mod, a, out, name=name: inputs.__setitem__(name, a[0].detach()))
             for name, mod in ref.named_modules() if isinstance(mod, LiftLinear)]
    with torch.no_grad():
        ref(input_ids=tok(text, return_tensors="pt")["input_ids"])
    for h in hooks:
        h.remove()
    f16 = lambda t: t.detach().to(torch.float16).numpy()  # noqa: E731
    per_kind = {}
    for name, lin in ir.linears.items():
        if not isinstance(lin, LiftedLinear) or name not in inputs:
            continue
        tf = ir.transforms[lin.transform]
        N, K = lin.out_features, tf.in_features
        inits = [numpy_helper.from_array(lin.codes.numpy().astype(np.uint8), "codes"),
                 numpy_helper.from_array(f16(lin.scales), "scales"), numpy_helper.from_array(f16(tf.M), "M"),
                 numpy_helper.from_array(f16(tf.a), "a"), numpy_helper.from_array(f16(tf.b), "b"),
                 numpy_helper.from_array(f16(tf.s1 if tf.s1 is not None else torch.ones(tf.n)), "s1"),
                 numpy_helper.from_array(f16(lin.bias if lin.bias is not None else torch.zeros(N)), "bias")]
        node = helper.make_node("LiftMatMul", ["X", "codes", "scales", "M", "a", "b", "s1", "bias"], ["Y"],
                                domain="ai.liftquant", in_features=K, out_features=N, D=tf.D, d=tf.d, n1=tf.n1,
                                n2=tf.n2)
        m = model(node, inits, K, N, [helper.make_opsetid("", 21), helper.make_opsetid("ai.liftquant", 1)])
        x = inputs[name].reshape(-1, K).float().numpy()
        ye = session(m, threads).run(None, {"X": x})[0]
        yf = session(with_lut(m), threads).run(None, {"X": x})[0]
        e = rel_err(yf, ye)
        per_kind.setdefault(name.rsplit(".", 1)[-1], []).append(e)
    out = {}
    for kind, es in per_kind.items():
        out[kind] = {"layers": len(es), "l2_rel_mean": round(float(np.mean([e["l2_rel"] for e in es])), 5),
                     "l2_rel_max": round(max(e["l2_rel"] for e in es), 5),
                     "max_rel_max": round(max(e["max_rel"] for e in es), 5)}
    return {"container": str(path), "tokens": int(next(iter(inputs.values())).shape[1]), "per_kind": out}


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
    ap.add_argument("--lqt", default=None, help="also measure the fast mode's error on this container's layers")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp())
    rows, accuracy = [], []
    for N, K in SHAPES:
        lift = lift_model(N, K, rng=rng)
        variants = {"LiftMatMul 24/10": (lift, True),
                    "LiftMatMul 24/10 lut8": (with_lut(lift), True),
                    "MatMulNBits int4 b32": (nbits_model(N, K, 32, rng), False),
                    "MatMulNBits int4 b128": (nbits_model(N, K, 128, rng), False),
                    "MatMul fp32": (fp32_model(N, K, rng), False)}
        for M in (1, 16):
            for name, (m, custom) in variants.items():
                us = time_model(m, M, K, a.threads, custom, a.reps, tmp)
                rows.append({"N": N, "K": K, "M": M, "variant": name, "median_us": round(us, 1)})
                print(json.dumps(rows[-1]), flush=True)
            accuracy.append({"N": N, "K": K, "M": M, "activations": "N(0,1)",
                             **{k: round(v, 5) for k, v in lut_accuracy_random(lift, M, K, a.threads).items()}})
            print(json.dumps({"lut8_vs_exact": accuracy[-1]}), flush=True)
    for r in rows:
        best4 = min(x["median_us"] for x in rows if x["N"] == r["N"] and x["K"] == r["K"] and x["M"] == r["M"]
                    and x["variant"].startswith("MatMulNBits"))
        r["speedup_vs_best_int4"] = round(best4 / r["median_us"], 2)
    real = lut_accuracy_container(a.lqt, a.threads) if a.lqt else None
    out = {"threads": a.threads, "onnxruntime": ort.__version__, "cpu": _cpu(), "rows": rows,
           "lut8_accuracy": {"random_layers": accuracy, "container_layers": real}}
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"\n{'N x K':>12} {'M':>3} {'variant':<24} {'median us':>10} {'vs best int4':>12}")
    for r in rows:
        print(f"{r['N']:>5}x{r['K']:<6} {r['M']:>3} {r['variant']:<24} {r['median_us']:>10.1f} {r['speedup_vs_best_int4']:>12.2f}")
    print(f"\nlut8 vs exact LiftMatMul (relative error of Y)\n{'N x K':>12} {'M':>3} {'L2 rel':>9} {'max rel':>9}")
    for r in accuracy:
        print(f"{r['N']:>5}x{r['K']:<6} {r['M']:>3} {r['l2_rel']:>9.4f} {r['max_rel']:>9.4f}")
    if real:
        print(f"\n{real['container']} ({real['tokens']} tokens of text)\n{'linear':>10} {'layers':>6} "
              f"{'L2 mean':>9} {'L2 max':>9} {'max rel':>9}")
        for kind, r in real["per_kind"].items():
            print(f"{kind:>10} {r['layers']:>6} {r['l2_rel_mean']:>9.4f} {r['l2_rel_max']:>9.4f} {r['max_rel_max']:>9.4f}")


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
