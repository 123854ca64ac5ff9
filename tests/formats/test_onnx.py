"""ONNX export (custom / standard / contrib) against the reference runtime; the ORT library's errors;
one AddressSanitizer run of the kernel."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from liftexport.errors import FormatError
from liftexport.formats.container import read_container
from liftexport.formats.onnx import export_onnx
from liftexport.ort import OrtCausalLM, library_path, session
from liftexport.runtime.reference import build_model, build_tokenizer
from liftexport.verify import compare_models

ROOT = Path(__file__).resolve().parents[2]
VEC = ROOT / "spec" / "vectors" / "tiny_model.lqt"


@pytest.fixture(scope="module")
def ir():
    return read_container(VEC)


@pytest.fixture(scope="module")
def exports(ir, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    out = {ops: export_onnx(ir, root / ops, ops=ops) for ops in ("custom", "standard", "contrib")}
    out["lut"] = export_onnx(ir, root / "lut", ops="custom", lut="int8")
    return out


@pytest.mark.parametrize("ops", ["custom", "standard", "contrib"])
def test_matches_reference(ir, exports, ops):
    ref = build_model(ir)
    got = OrtCausalLM(exports[ops])
    res = compare_models(got, ref, build_tokenizer(ir), n_tokens=16, prompts=("LiftQuant", "hello there, model"))
    assert res["max_rel_logit_err"] <= 1e-4 and res["greedy_identical"], res


def test_layout_and_checker(exports):
    d = exports["custom"]
    assert {"model.onnx", "model.onnx.data", "liftquant_model.json", "tokenizer.json"} <= {p.name for p in d.iterdir()}
    m = onnx.load(str(d / "model.onnx"))
    assert m.ir_version == 10
    assert {o.domain for o in m.opset_import} >= {"", "ai.liftquant"}
    lift = [n for n in m.graph.node if n.op_type == "LiftMatMul"]
    assert len(lift) == 14 and all(n.domain == "ai.liftquant" for n in lift)
    assert [f.name for f in m.functions] == ["LiftMatMul"]
    onnx.checker.check_model(str(d / "model.onnx"), full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    names = {v.name for v in inferred.graph.value_info}
    assert any(n.output[0] in names for n in lift)  # the function gives LiftMatMul outputs a type
    std = onnx.load(str(exports["standard"] / "model.onnx"))
    assert {n.domain for n in std.graph.node} == {""}
    assert any(n.op_type == "BitShift" for n in std.graph.node)
    con = onnx.load(str(exports["contrib"] / "model.onnx"))
    assert sum(n.op_type == "MatMulNBits" for n in con.graph.node) == 14


def test_no_half_written_output(ir, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep").write_text("1")
    with pytest.raises(FormatError, match="not empty"):
        export_onnx(ir, out)
    bad = read_container(VEC)
    bad.config = dict(bad.config, model_type="gemma2")
    with pytest.raises(Exception):
        export_onnx(bad, tmp_path / "y")
    assert not (tmp_path / "y").exists() and [p.name for p in tmp_path.iterdir()] == ["x"]


def _feed(ids, L=2, nkv=2, hd=10):
    f = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
    for i in range(L):
        for kv in ("key", "value"):
            f[f"past_key_values.{i}.{kv}"] = np.zeros((1, nkv, 0, hd), np.float32)
    return f


@pytest.mark.parametrize("attr, value, msg", [("D", 99, "d < D"), ("n2", 7, "not a multiple"),
                                               ("in_features", 41, "n1\*n2=40 < in_features=41"), ("in_features", 30, "must end in in_features"),
                                               ("out_features", 39, "codes")])
def test_kernel_rejects_bad_attributes(exports, tmp_path, attr, value, msg):
    m = onnx.load(str(exports["custom"] / "model.onnx"), load_external_data=True)
    node = next(n for n in m.graph.node if n.op_type == "LiftMatMul")
    next(a for a in node.attribute if a.name == attr).i = value
    onnx.save(m, str(tmp_path / "bad.onnx"))
    s = session(tmp_path / "bad.onnx")
    with pytest.raises(Exception, match=msg):
        s.run(None, _feed(np.array([[1, 2, 3]], dtype=np.int64)))


def test_kernel_rejects_bad_initializer_shape(exports, tmp_path):
    m = onnx.load(str(exports["custom"] / "model.onnx"), load_external_data=True)
    init = next(i for i in m.graph.initializer if i.name.endswith("q_proj.codes"))
    arr = onnx.numpy_helper.to_array(init)[:, :-1].copy()
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(Exception, match="codes"):
        session(tmp_path / "bad.onnx").run(None, _feed(np.array([[1, 2]], dtype=np.int64)))


def test_library_exports_only_the_entry_point():
    out = subprocess.run(["nm", "-D", "--defined-only", str(library_path())], capture_output=True, text=True).stdout
    syms = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert syms == {"RegisterCustomOps"}, syms


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake needed")
def test_kernel_under_address_sanitizer(exports, tmp_path):
    """Build the library with -fsanitize=address and run the custom export once: no ASan report."""
    inc = _ort_include()
    b = tmp_path / "asan"
    subprocess.run(["cmake", "-S", str(ROOT / "runtime" / "ort"), "-B", str(b), f"-DORT_INCLUDE_DIR={inc}",
                    "-DLIFTQUANT_ASAN=ON", "-DLIFTQUANT_CUDA=OFF"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(b), "-j", "2"], check=True, capture_output=True)
    libasan = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    code = (
        "import numpy as np, onnxruntime as ort\n"
        "so = ort.SessionOptions(); so.register_custom_ops_library(%r)\n"
        "s = ort.InferenceSession(%r, so, providers=['CPUExecutionProvider'])\n"
        "ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype=np.int64)\n"
        "f = {'input_ids': ids, 'attention_mask': np.ones_like(ids), 'position_ids': np.arange(8)[None]}\n"
        "f.update({f'past_key_values.{i}.{k}': np.zeros((1, 2, 0, 10), np.float32) for i in range(2) for k in ('key', 'value')})\n"
        "for batch in (1, 3):\n"
        "    g = {k: (np.repeat(v, batch, 0) if k != 'position_ids' else np.repeat(v, batch, 0)) for k, v in f.items()}\n"
        "    print(s.run(None, g)[0].shape)\n"
        "s = ort.InferenceSession(%r, so, providers=['CPUExecutionProvider'])\n"
        "for batch in (1, 3):\n"
        "    print('lut', s.run(None, {k: np.repeat(v, batch, 0) for k, v in f.items()})[0].shape)\n"
        "import lut_layers\n"
        "lut_layers.run_all(%r)\n"
    ) % (str(b / "libliftquant_ort.so"), str(exports["custom"] / "model.onnx"), str(exports["lut"] / "model.onnx"),
         str(b / "libliftquant_ort.so"))
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "AddressSanitizer" not in r.stderr, r.stderr[-2000:]
    assert "(3, 8, 256)" in r.stdout and "lut (3, 8, 256)" in r.stdout and "lut layers ok" in r.stdout
    # and the portable code of both modes (no AVX2) under ASan
    env["LIFTQUANT_NO_AVX2"] = "1"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "AddressSanitizer" not in r.stderr, r.stderr[-2000:]
    assert "lut layers ok" in r.stdout


def _ort_include() -> str:
    cache = Path(ROOT / "build" / "ort" / "CMakeCache.txt")
    for line in cache.read_text().splitlines():
        if line.startswith("ORT_INCLUDE_DIR:"):
            return line.split("=", 1)[1]
    raise RuntimeError("build/ort not configured: run ./install.sh")


def test_batch_and_padding_match_reference(ir, exports):
    """Batch of 2 prompts (M > 1 path of the kernel) equals two single runs of the reference."""
    ref = build_model(ir)
    got = OrtCausalLM(exports["custom"])
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
                        [30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47]])
    a = got(input_ids=ids).logits
    with torch.no_grad():
        b = ref(input_ids=ids).logits
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()


def test_kernel_matches_spec_layer_vectors(tmp_path):
    """One LiftMatMul node per conformance layer (row counts 8-24, some not a multiple of 8, so both the
    8-row gather path and the row remainder run), 3 tokens, against the float64 expected outputs."""
    import json

    from onnx import TensorProto, helper, numpy_helper
    from safetensors import safe_open
    from safetensors.torch import load_file

    vec = ROOT / "spec" / "vectors" / "layers.safetensors"
    t = load_file(str(vec))
    with safe_open(str(vec), "pt") as f:
        quant = json.loads(f.metadata()["quant"])
    for name, lin in quant["linears"].items():
        tq = quant["transforms"][lin["transform"]]
        K, N = tq["in_features"], lin["out_features"]
        arrs = {"codes": t[f"lin.{name}.codes"].numpy(), "scales": t[f"lin.{name}.scales"].half().numpy(),
                "bias": t[f"lin.{name}.bias"].half().numpy()}
        for k in ("M", "a", "b", "s1"):
            arrs[k] = t[f"tf.{lin['transform']}.{k}"].half().numpy()
        node = helper.make_node("LiftMatMul", ["X", "codes", "scales", "M", "a", "b", "s1", "bias"], ["Y"],
                                domain="ai.liftquant", in_features=K, out_features=N, D=tq["D"], d=tq["d"],
                                n1=tq["n1"], n2=tq["n2"])
        g = helper.make_graph([node], "v", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", K])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", N])],
                              [numpy_helper.from_array(v, k) for k, v in arrs.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.liftquant", 1)],
                              ir_version=10)
        p = tmp_path / f"{name}.onnx"
        onnx.save(m, str(p))
        y = session(p).run(None, {"X": t[f"input.{name}"].numpy()})[0]
        exp = t[f"expected.{name}"].numpy()
        assert np.abs(y - exp).max() <= 1e-4 * np.abs(exp).max(), name


# ----------------------------------------------------------------------------- fast mode (lut_bits = 8)

from lut_layers import LUT_CASES, lift_layer_model, run_layer  # noqa: E402

# Fast mode vs the exact kernel on random layers (uniform random codes, activations N(0, 1)): the
# relative L2 error of Y is ~0.8% (measured 0.7-1.0%); the bounds leave headroom.
LUT_L2_TOL = 0.03
LUT_MAX_TOL = 0.05  # max |y_lut - y_exact| / max |y_exact|


@pytest.mark.parametrize("N, K, D, d", LUT_CASES)
@pytest.mark.parametrize("M", [1, 3])
def test_lut_matches_exact_kernel(N, K, D, d, M):
    x = np.random.default_rng(M).standard_normal((M, K)).astype(np.float32)
    ye = run_layer(lift_layer_model(N, K, D, d, seed=N + K), x)
    yf = run_layer(lift_layer_model(N, K, D, d, seed=N + K, lut_bits=8), x)
    assert yf.shape == ye.shape == (M, N)
    l2 = np.linalg.norm(yf - ye) / np.linalg.norm(ye)
    mx = np.abs(yf - ye).max() / np.abs(ye).max()
    assert l2 <= LUT_L2_TOL and mx <= LUT_MAX_TOL, (l2, mx)
    assert l2 > 0  # it is the approximate path, not the exact one
    # lut_bits = 0 is the exact kernel, bit for bit
    assert np.array_equal(run_layer(lift_layer_model(N, K, D, d, seed=N + K, lut_bits=0), x), ye)


def test_lut_portable_code_is_bit_identical(tmp_path):
    """The portable fallback (LIFTQUANT_NO_AVX2) gives the same bits as the AVX2 code, batch 1 and 3."""
    code = ("import sys, numpy as np, lut_layers\n"
            "out = {}\n"
            "for (N, K, D, d) in lut_layers.LUT_CASES:\n"
            "    x = np.random.default_rng(7).standard_normal((3, K)).astype(np.float32)\n"
            "    m = lut_layers.lift_layer_model(N, K, D, d, seed=1, lut_bits=8)\n"
            "    out[f'{N}_{K}_{D}_{d}_3'] = lut_layers.run_layer(m, x)\n"
            "    out[f'{N}_{K}_{D}_{d}_1'] = lut_layers.run_layer(m, x[:1])\n"
            "np.savez(sys.argv[1], **out)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "avx.npz")], env=env, check=True)
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "ref.npz")], env=dict(env, LIFTQUANT_NO_AVX2="1"),
                   check=True)
    a, b = np.load(tmp_path / "avx.npz"), np.load(tmp_path / "ref.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("value", [1, 4, 16, -8])
def test_lut_rejects_bad_attribute(value):
    with pytest.raises(Exception, match="lut_bits' must be 0 .* or 8 .*got " + str(value)):
        run_layer(lift_layer_model(70, 90, 24, 10, seed=0, lut_bits=value), np.zeros((1, 90), np.float32))


def test_lut_export(ir, exports):
    """--onnx-lut int8: every LiftMatMul carries lut_bits=8, the model checks, and its logits stay close to
    the reference (an approximation: not the exact 1e-4 bound)."""
    m = onnx.load(str(exports["lut"] / "model.onnx"))
    lift = [n for n in m.graph.node if n.op_type == "LiftMatMul"]
    assert len(lift) == 14
    assert all({a.name: a.i for a in n.attribute}.get("lut_bits") == 8 for n in lift)
    onnx.checker.check_model(str(exports["lut"] / "model.onnx"), full_check=True)
    # the tiny random test model amplifies per-layer errors (~0.7%) to ~7% of the logits (relative L2; the
    # 2.4-bit SmolLM2 export: 1.7%, greedy tokens identical); the bounds leave headroom
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]])
    with torch.no_grad():
        ref = build_model(ir)(input_ids=ids).logits
    got = OrtCausalLM(exports["lut"])(input_ids=ids).logits
    l2 = float((got - ref).norm() / ref.norm())
    assert 0 < l2 <= 0.15, l2
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.75
    custom = onnx.load(str(exports["custom"] / "model.onnx"))
    assert all("lut_bits" not in {a.name for a in n.attribute} for n in custom.graph.node if n.op_type == "LiftMatMul")


def test_lut_needs_custom_ops(ir, tmp_path):
    with pytest.raises(FormatError, match="needs --onnx-ops custom"):
        export_onnx(ir, tmp_path / "x", ops="contrib", lut="int8")
    with pytest.raises(FormatError, match="--onnx-lut"):
        export_onnx(ir, tmp_path / "y", lut="int4")
