"""LiftMatMul on ONNX Runtime's CUDA execution provider (onnxruntime-gpu + libliftquant_ort.so built
with CUDA): kernel timings next to the Triton runtime in one process, and the example model's export
against the reference runtime.

    python bench/ort_cuda.py [--lqt smol-24_10.lqt --onnx-dir DIR] [--json out.json]

1. For N x K in {8192x8192, 28672x8192} at 24/10, batch 1: one LiftMatMul node on the CUDA EP (inputs
   and outputs bound on the GPU, median of 200 runs; the run overhead of a one-Add model is shown
   beside it), checked against the CPU EP's exact kernel; the Triton layer (transform + GEMV, fp16,
   one CUDA graph) on the same constants.
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


def time_cuda(sess, x: np.ndarray, out_shape, reps=200) -> tuple[float, np.ndarray]:
    xv = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    yv = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, "cuda", 0)
    io = sess.io_binding()
    io.bind_ortvalue_input("X", xv)
    io.bind_ortvalue_output("Y", yv)
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
        t_tri, y_tri = triton_layer_us(m, x)
        err_tri = float(np.linalg.norm(y_tri - y_cpu) / np.linalg.norm(y_cpu))
        r = dict(N=N, K=K, config="24/10", batch=1, ort_cuda_us=t_cuda, ort_add_us=t_add, triton_layer_us=t_tri,
                 ratio=t_cuda / t_tri, rel_err_vs_cpu=err, triton_rel_err_vs_cpu=err_tri)
        rows.append(r)
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
    print(f"\n{'N x K':>12} {'ORT CUDA us':>12} {'(Add run)':>10} {'Triton us':>10} {'ratio':>6} {'err':>8}")
    for r in rows:
        print(f"{r['N']:>6}x{r['K']:<5} {r['ort_cuda_us']:12.1f} {r['ort_add_us']:10.1f} {r['triton_layer_us']:10.1f} "
              f"{r['ratio']:6.2f} {r['rel_err_vs_cpu']:8.1e}")
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
