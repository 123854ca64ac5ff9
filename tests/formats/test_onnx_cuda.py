"""LiftMatMul on ONNX Runtime's CUDA execution provider (runtime/ort/cuda): every node on the GPU
against the CPU EP's exact kernel, bad inputs, and the exported example-style decoder.

Runs only where onnxruntime-gpu offers CUDAExecutionProvider, a GPU is present and the library was
built with its CUDA part; skipped in CI (no GPU). On the H100: see bench/RESULTS.md (issue 9)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from liftexport.ort import library_path
from lut_layers import LUT_CASES, lift_layer_model, run_layer


def _cuda_ready() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime missing"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime without CUDAExecutionProvider"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no GPU"
    except ImportError:
        pass
    if b"LiftMatMul (CUDA)" not in library_path().read_bytes():
        return "libliftquant_ort built without its CUDA part"
    return ""


pytestmark = pytest.mark.skipif(bool(_cuda_ready()), reason=_cuda_ready() or "ready")


def cuda_session(model: onnx.ModelProto):
    """A session that fails unless every node runs on the CUDA EP."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(str(library_path()))
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CUDAExecutionProvider"])


@pytest.mark.parametrize("N, K, D, d", LUT_CASES + [(4100, 4096, 24, 8)])
@pytest.mark.parametrize("M", [0, 1, 3, 6])
def test_cuda_matches_cpu_kernel(N, K, D, d, M):
    m = lift_layer_model(N, K, D, d, seed=5)
    x = np.random.default_rng(M + 1).standard_normal((M, K)).astype(np.float32)
    y = cuda_session(m).run(None, {"X": x})[0]
    ref = run_layer(m, x)
    assert y.shape == (M, N)
    if M:
        assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-5


def test_two_layers_in_one_session_keep_their_own_weights():
    """The op caches factors and repacked codes per node: two nodes with different weights must not mix."""
    a, b = lift_layer_model(64, 128, 24, 10, seed=1), lift_layer_model(64, 128, 24, 10, seed=2)
    x = np.random.default_rng(0).standard_normal((2, 128)).astype(np.float32)
    for m in (a, b):
        np.testing.assert_allclose(cuda_session(m).run(None, {"X": x})[0], run_layer(m, x), rtol=1e-4, atol=1e-5)


def test_lut_mode_is_a_clear_error_on_cuda():
    m = lift_layer_model(64, 128, 24, 10, lut_bits=8)
    with pytest.raises(Exception, match="lut_bits=8 is a CPU mode"):
        cuda_session(m).run(None, {"X": np.zeros((1, 128), np.float32)})


def test_wrong_input_width_is_a_clear_error():
    m = lift_layer_model(64, 128, 24, 10)
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "K"  # let a wrong width reach the kernel
    with pytest.raises(Exception, match="in_features"):
        cuda_session(m).run(None, {"X": np.zeros((1, 127), np.float32)})
