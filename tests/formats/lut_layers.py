"""One-node LiftMatMul models on random layers, for the fast-mode (lut_bits) tests; importable by the
ASan subprocess too (it runs every case through a given library path)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (N out, K in, D, d): the 2.4-bit (24/10) and 3-bit (24/8) lattices and others; N not a multiple of
# the 64-row block, K whose lifted length is not a multiple of the 128-bit scale block.
LUT_CASES = [(77, 257, 24, 10), (130, 300, 24, 8), (64, 128, 24, 10), (33, 130, 20, 9), (200, 1000, 16, 8),
             (1, 11, 24, 10), (65, 500, 24, 8)]


def lift_layer_model(N, K, D, d, seed=0, lut_bits=None) -> onnx.ModelProto:
    from liftexport.transform import choose_shape

    rng = np.random.default_rng(seed)
    n1, n2 = choose_shape(K, d)
    Kl = n1 * n2 // d * D
    f16 = lambda a: np.asarray(a, np.float16)  # noqa: E731
    inits = {"codes": rng.integers(0, 256, (N, -(-Kl // 8)), dtype=np.uint8),
             "scales": f16(rng.random(N) * 0.01 + 0.01), "M": f16(rng.standard_normal((d, D)) * 0.3),
             "a": f16(rng.random(n1) + 0.5), "b": f16(rng.random(n2 // d) + 0.5), "s1": f16(rng.random(n1 * n2) + 0.5),
             "bias": f16(rng.standard_normal(N) * 0.01)}
    attrs = dict(in_features=K, out_features=N, D=D, d=d, n1=n1, n2=n2)
    if lut_bits is not None:
        attrs["lut_bits"] = lut_bits
    node = helper.make_node("LiftMatMul", ["X", *inits], ["Y"], domain="ai.liftquant", **attrs)
    g = helper.make_graph([node], "l", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", N])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.liftquant", 1)],
                             ir_version=10)


def run_layer(model: onnx.ModelProto, x: np.ndarray, lib: str | None = None, threads: int = 2) -> np.ndarray:
    import onnxruntime as ort

    if lib is None:
        from liftexport.ort import library_path

        lib = str(library_path())
    so = ort.SessionOptions()
    so.register_custom_ops_library(lib)
    so.intra_op_num_threads = threads
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {"X": x})[0]


def run_all(lib: str) -> None:
    """Every case, both modes, batch 0, 1 and 3 (used under AddressSanitizer)."""
    for N, K, D, d in LUT_CASES:
        for lut in (0, 8):
            m = lift_layer_model(N, K, D, d, seed=3, lut_bits=lut)
            for M in (0, 1, 3):
                x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
                assert run_layer(m, x, lib).shape == (M, N)
    print("lut layers ok")
