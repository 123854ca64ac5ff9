"""LiftMatMul on ONNX Runtime's CUDA execution provider (onnxruntime-gpu + libliftquant_ort.so built
with CUDA): kernel timings next to the Triton runtime in one process, and the example model's export
against the reference runtime.

    python bench/ort_cuda.py [--lqt smol-24_10.lqt --onnx-dir DIR] [--json out.json]

1. For N x K in {8192x8192, 28672x8192} at 24/10, batch 1: one LiftMatMul node on the CUDA EP (inputs
   and outputs bound on the GPU, median of 200 runs; the run overhead of a one-Add model is shown
   beside it), checked against the CPU EP's exact kernel; the op's cost per node in a graph of 16
   such nodes (each its own weights, all reading X): (t16 - t1) / 15, which leaves out the
   per-run overhead; a CUPTI profile (torch.profiler) of the single-node runs: GPU time of each
   kernel and CUDA API call per run; the Triton layer (transform + GEMV, fp16, one CUDA graph) on the
   same constants.
2. With --lqt/--onnx-dir: the exported decoder on the CUDA EP vs the float32 reference runtime on
   the same IR: max relative logit error and greedy tokens (liftexport.verify.compare_models).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_cpu import lift_model  # noqa: E402

from liftexport.ir import LiftedLinear, LiftTransform  # noqa: E402
from liftexport.ort import library_path  # noqa: E402

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session(m: onnx.ModelProto, providers, custom=True, strict=True):
    so = ort.SessionOptions()
    if custom:
        so.register_custom_ops_library(str(library_path()))
    if strict and providers[0] == "CUDAExecutionProvider":  # every node on the GPU, or fail
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        providers = ["CUDAExecutionProvider"]
    return ort.InferenceSession(m.SerializeToString(), so, providers=providers)


def bound(sess, x: np.ndarray, out_shape):
    """An io binding with X and every output on the GPU; returns (binding, first output's OrtValue)."""
    xv = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    io = sess.io_binding()
    io.bind_ortvalue_input("X", xv)
    outs = []
    for o in sess.get_outputs():
        outs.append(ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, "cuda", 0))
        io.bind_ortvalue_output(o.name, outs[-1])
    io._keep = (xv, outs)
    return io, outs[0]


def time_cuda(sess, x: np.ndarray, out_shape, reps=200) -> tuple[float, np.ndarray]:
    io, yv = bound(sess, x, out_shape)
    for _ in range(10):
        sess.run_with_iobinding(io)
    io.synchronize_outputs()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run_with_iobinding(io)
        io.synchronize_outputs()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6, yv.numpy()


def replicated(m: onnx.ModelProto, copies: int) -> onnx.ModelProto:
    """The one-node model with `copies` LiftMatMul nodes on the same initializers, each reading X and
    writing its own output (the CUDA op repacks its own copy of the codes, so no node finds another's
    weights in L2)."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    node, out = m2.graph.node[0], m2.graph.output[0]
    del m2.graph.node[:], m2.graph.output[:]
    for i in range(copies):
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.output[0] = f"Y{i}"
        n.name = f"lift{i}"
        m2.graph.node.append(n)
        o = onnx.ValueInfoProto()
        o.CopyFrom(out)
        o.name = f"Y{i}"
        m2.graph.output.append(o)
    return m2


def cupti_profile(sess, x, out_shape, runs=20) -> dict:
    """GPU kernels and CUDA API calls per single-node run, from a CUPTI trace (torch.profiler sees the
    whole process, ORT's and the library's launches included)."""
    from torch.profiler import ProfilerActivity, profile

    io, _ = bound(sess, x, out_shape)
    for _ in range(5):
        sess.run_with_iobinding(io)
    io.synchronize_outputs()
    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                sess.run_with_iobinding(io)
                io.synchronize_outputs()
    except Exception as e:  # a profiler problem must not cost the timings
        return {"error": repr(e)}
    per_run = {}
    for ev in prof.events():
        dev_us = ev.device_time if hasattr(ev, "device_time") else ev.cuda_time
        key = ev.name[:60]
        k = per_run.setdefault(key, {"count": 0, "device_us": 0.0, "host_us": 0.0})
        k["count"] += 1
        k["device_us"] += dev_us
        k["host_us"] += ev.cpu_time_total if not dev_us else 0.0
    out = {k: {"per_run": v["count"] / runs, "device_us_per_run": round(v["device_us"] / runs, 2),
               "host_us_per_run": round(v["host_us"] / runs, 2)} for k, v in per_run.items()}
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["device_us_per_run"] + kv[1]["host_us_per_run"]))[:25])


def add_model(K):
    g = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"])], "a",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, K])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def triton_layer_us(m: onnx.ModelProto, x: np.ndarray):
    from triton.testing import do_bench

    from liftexport.runtime.triton_linear import TritonLiftGroup

    node = m.graph.node[0]
    at = {a.name: a.i for a in node.attribute}
    init = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    tf = LiftTransform(D=at["D"], d=at["d"], in_features=at["in_features"], n1=at["n1"], n2=at["n2"],
                       M=init["M"].float(), a=init["a"].float(), b=init["b"].float(), s1=init["s1"].float())
    lin = LiftedLinear("t", at["out_features"], init["codes"], init["scales"].float(), init["bias"].float())
    mod = TritonLiftGroup([lin], tf, device="cuda")
    xt = torch.from_numpy(x).cuda().half()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            mod(xt)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        (y,) = mod(xt)
    g.replay()
    torch.cuda.synchronize()
    return 1000 * do_bench(g.replay, warmup=25, rep=200, return_mode="median"), y.float().cpu().numpy()


def kernels(rows):
    rng = np.random.default_rng(0)
    for N, K in ((8192, 8192), (28672, 8192)):
        m = lift_model(N, K, 24, 10, rng)
        x = rng.standard_normal((1, K)).astype(np.float32)
        t_cuda, y_cuda = time_cuda(session(m, CUDA), x, [1, N])
        y_cpu = session(m, ["CPUExecutionProvider"]).run(None, {"X": x})[0]
        err = float(np.linalg.norm(y_cuda - y_cpu) / np.linalg.norm(y_cpu))
        t_add, _ = time_cuda(session(add_model(K), CUDA, custom=False), x, [1, K])
        copies = 16
        t_many, y_many = time_cuda(session(replicated(m, copies), CUDA), x, [1, N], reps=100)
        per_node = (t_many - t_cuda) / (copies - 1)
        prof = cupti_profile(session(m, CUDA), x, [1, N])
        t_tri, y_tri = triton_layer_us(m, x)
        err_tri = float(np.linalg.norm(y_tri - y_cpu) / np.linalg.norm(y_cpu))
        r = dict(N=N, K=K, config="24/10", batch=1, ort_cuda_us=t_cuda, ort_add_us=t_add,
                 ort_per_node_us=per_node, ort_16_nodes_us=t_many, triton_layer_us=t_tri,
                 ratio=t_cuda / t_tri, ratio_per_node=per_node / t_tri, rel_err_vs_cpu=err,
                 rel_err_16_nodes=float(np.linalg.norm(y_many - y_cpu) / np.linalg.norm(y_cpu)),
                 triton_rel_err_vs_cpu=err_tri)
        rows.append(r)
        print(json.dumps(prof, indent=0), flush=True)
        r["cupti"] = prof
        print(json.dumps(r), flush=True)


def model_check(lqt, onnx_dir):
    from liftexport.formats import read_artifact
    from liftexport.ort import OrtCausalLM
    from liftexport.runtime.reference import build_model, build_tokenizer
    from liftexport.verify import compare_models

    ir = read_artifact(Path(lqt))
    ref = build_model(ir, device="cpu")
    lm = OrtCausalLM(onnx_dir, providers=CUDA)
    assert lm.sess.get_providers()[0] == "CUDAExecutionProvider", lm.sess.get_providers()
    res = compare_models(lm, ref, build_tokenizer(ir), 32)
    res.update(providers=lm.sess.get_providers())
    print(json.dumps(res), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lqt")
    ap.add_argument("--onnx-dir")
    ap.add_argument("--json", default="bench/results/ort_cuda.json")
    a = ap.parse_args()
    torch.zeros(1).cuda()  # loads the CUDA libraries torch ships (cuBLAS, cuDNN), which onnxruntime-gpu uses too
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    print("onnxruntime", ort.__version__, ort.get_available_providers(), "library", library_path(), flush=True)
    rows = []
    kernels(rows)
    out = dict(device=torch.cuda.get_device_name(), date=time.strftime("%Y-%m-%d"), onnxruntime=ort.__version__,
               kernels=rows)
    if a.lqt and a.onnx_dir:
        out["model"] = model_check(a.lqt, a.onnx_dir)
    print(f"\n{'N x K':>12} {'ORT run us':>11} {'(Add run)':>10} {'per node':>9} {'Triton us':>10} {'ratio':>6} "
          f"{'ratio/node':>10} {'err':>8}")
    for r in rows:
        print(f"{r['N']:>6}x{r['K']:<5} {r['ort_cuda_us']:11.1f} {r['ort_add_us']:10.1f} {r['ort_per_node_us']:9.1f} "
              f"{r['triton_layer_us']:10.1f} {r['ratio']:6.2f} {r['ratio_per_node']:10.2f} {r['rel_err_vs_cpu']:8.1e}")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
