"""The binary-tensor-core decode GEMV (kernels/cuda/binary_gemv.cu) against float64, on a GPU.

Skipped where no CUDA GPU (sm_80+) is present or libliftquant_cuda.so was not built (CI has no GPU);
on the H100: bench/RESULTS.md (issue 7). Odd shapes, 1-7 tokens, three dtypes, residual, poisoned
outputs, fresh inputs per case, and the argument checks of the ctypes layer.
"""

from __future__ import annotations

import ctypes
import os

import pytest
import torch

from liftexport.errors import LiftExportError
from liftexport.kernels import cuda_binary as CB
from liftexport.kernels.triton import lift_linear as K

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and CB.available("cuda")),
                                reason="needs a CUDA GPU (sm_80+) and build/cuda/libliftquant_cuda.so")

# (N, K lifted): N % 4 == 0; K not a multiple of 32 or 256; a real 24/10 width (4100 * 2.4); enough rows
# for the 4-warp blocks (>= 5 row blocks of 32 per SM on the H100's 132 SMs)
SHAPES = [(4, 1), (36, 300), (100, 1000), (256, 257), (4096, 9840), (21124, 520)]
TOL = {torch.float32: 2e-4, torch.float16: 1.5e-3, torch.bfloat16: 1e-2}


def _layer(N, Kl, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    codes = torch.randint(0, 256, (N, -(-Kl // 8)), dtype=torch.uint8, device="cuda", generator=g)
    words = K.kmajor_words(codes, Kl)
    scales = torch.rand(N, device="cuda", generator=g) + 0.1
    bias = torch.randn(N, device="cuda", generator=g)
    return words, scales, bias


def _reference(u, words, Kl, scales, bias, residual=None):
    q = K.kmajor_bits(words, Kl).double() * 2 - 1  # [K, N]
    y = (u[:, :Kl].double() @ q) * scales.double() + bias.double()
    return y if residual is None else y + residual.double()


@pytest.mark.parametrize("N,Kl", SHAPES)
@pytest.mark.parametrize("M", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gemv_matches_float64(N, Kl, M, dtype):
    words, scales, bias = _layer(N, Kl, seed=N + Kl + M)
    u = (torch.randn(M, Kl + 3, device="cuda") * torch.logspace(-2, 1, Kl + 3, device="cuda")).to(dtype)
    zf = CB.workspace(M, Kl, "cuda")
    zf.fill_(-1)  # planes must write every word it owns
    CB.planes(u, Kl, zf)
    assert torch.equal(zf, CB.planes_reference(u, Kl)), "planes differ from their specification"
    y = torch.full((M, N), float("nan"), dtype=dtype, device="cuda")
    res = torch.randn(M, N, device="cuda").to(dtype)
    CB.gemv(words, zf, scales, bias, y, residual=res)
    ref = _reference(u, words, Kl, scales, bias, res)
    err = float((y.double() - ref).abs().max() / ref.abs().max())
    assert err <= TOL[dtype], err
    spec = CB.gemv_reference(words, zf, Kl, scales, bias) + res.double()  # the same planes, decoded
    assert float((y.double() - spec).abs().max() / spec.abs().max()) <= (2e-5 if dtype == torch.float32 else TOL[dtype])
    y2 = torch.full((M, N), float("nan"), dtype=dtype, device="cuda")
    CB.gemv(words, zf, scales, None, y2)  # no bias, no residual
    ref2 = _reference(u, words, Kl, scales, torch.zeros_like(bias))
    assert float((y2.double() - ref2).abs().max() / ref2.abs().max()) <= TOL[dtype]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                    reason="the TMA GEMV runs on sm_90+")
@pytest.mark.parametrize("N,Kl", SHAPES + [(28672, 19680), (4100, 2561), (11008, 9840), (4256, 600), (8224, 300),
                                            (4096, 65600)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tma_gemv_agrees_with_register_kernel(N, Kl, dtype):
    """One token: the TMA GEMV (sm_90+) against the register-load kernel on the same planes (the same
    partial sums, so within float32 rounding: 1e-5 of the largest output), also with static code words and
    as the library chooses, each against float64. The shapes include boxes of two tiles (more tiles than SMs,
    N % 32 == 0: 28672, 11008, 4256 = 133 tiles, 8224 = 257), odd tile counts per block, and more tiles than
    SMs with N % 32 != 0 (21124: boxes of one tile). Blocks with at least 16 stages' work take the long-run
    ring (five two-tile stages for 28672 x 19680, 6 or 7 tiles per block on 132 SMs; one-tile stages for
    4096 x 65600); on a GPU of 132 SMs with the default settings the library's plan is checked to say so."""
    words, scales, bias = _layer(N, Kl, seed=N + 7 * Kl)
    u = (torch.randn(1, Kl, device="cuda") * torch.logspace(-2, 1, Kl, device="cuda")).to(dtype)
    zf = CB.workspace(1, Kl, "cuda")
    CB.planes(u, Kl, zf)
    res = torch.randn(1, N, device="cuda").to(dtype)
    ys = {}
    for name, kw in (("tma", {"kernel": "tma"}), ("static", {"kernel": "tma", "static_weights": True}),
                     ("plain", {"kernel": "plain"}), ("auto", {})):
        ys[name] = torch.full((1, N), float("nan"), dtype=dtype, device="cuda")
        CB.gemv(words, zf, scales, bias, ys[name], residual=res, **kw)
    torch.cuda.synchronize()
    assert torch.equal(ys["tma"], ys["static"])
    mode = os.environ.get("LIFTEXPORT_GEMV_TMA", "2")  # the library's rule: 2 (default) every one-token GEMV
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tma = mode == "2" or (mode == "1" and -(-N // 32) <= sms)
    assert torch.equal(ys["auto"], ys["tma" if tma else "plain"])
    ref = _reference(u, words, Kl, scales, bias, res)
    if dtype == torch.float32:
        assert float((ys["tma"] - ys["plain"]).abs().max() / ref.abs().max()) <= 1e-5
    for y in ys.values():
        assert float((y.double() - ref).abs().max() / ref.abs().max()) <= TOL[dtype]
    plan = CB.tma_plan(N, Kl, "cuda")
    assert plan["stages"] >= 1 and plan["blocks"] == min(-(-N // 32), sms)
    if sms == 132 and not any(k.startswith("LIFTEXPORT_GEMV_TMA_") for k in os.environ):
        long_run = (N, Kl) in {(28672, 19680), (4096, 65600)}
        assert (plan["prefetch"] == 1 and plan["stages"] >= 5) if long_run else (plan["prefetch"] == 0 and
                                                                                 plan["stages"] <= 3), plan
        assert plan["span"] == (2 if N % 32 == 0 and N // 32 > sms else 1)


def test_repeated_calls_in_a_cuda_graph():
    N, Kl = 4096, 9840
    words, scales, bias = _layer(N, Kl, seed=5)
    u = torch.randn(1, Kl, device="cuda")
    zf = CB.workspace(1, Kl, "cuda")
    y = torch.empty(1, N, device="cuda", dtype=torch.float16)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        CB.planes(u, Kl, zf)
        CB.gemv(words, zf, scales, bias, y)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        CB.planes(u, Kl, zf)
        CB.gemv(words, zf, scales, bias, y)
    for _ in range(3):  # fresh inputs, same addresses
        u.copy_(torch.randn(1, Kl, device="cuda"))
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref = _reference(u, words, Kl, scales, bias)
        assert float((y.double() - ref).abs().max() / ref.abs().max()) <= TOL[torch.float16]


def test_zero_and_constant_activations():
    words, scales, bias = _layer(64, 512, seed=3)
    u = torch.zeros(2, 512, device="cuda")
    u[1, 256:] = 7.0  # one all-zero k-step, one constant one
    zf = CB.workspace(2, 512, "cuda")
    CB.planes(u, 512, zf)
    y = torch.empty(2, 64, device="cuda")
    CB.gemv(words, zf, scales, bias, y)
    ref = _reference(u, words, 512, scales, bias)
    assert torch.allclose(y.double(), ref, rtol=1e-4, atol=1e-3)


def test_bad_arguments_raise():
    words, scales, bias = _layer(36, 300, seed=1)
    u = torch.randn(1, 300, device="cuda")
    zf = CB.workspace(1, 300, "cuda")
    y = torch.empty(1, 36, device="cuda")
    with pytest.raises(LiftExportError, match="planes"):
        CB.planes(u, 300, CB.workspace(2, 300, "cuda"))  # wrong token count
    with pytest.raises(LiftExportError, match="planes"):
        CB.planes(u, 301, zf)  # more values than u has
    CB.planes(u, 300, zf)
    with pytest.raises(LiftExportError, match="gemv"):
        CB.gemv(words[:, :35].contiguous(), zf, scales[:35], bias[:35], torch.empty(1, 35, device="cuda"))  # N % 4
    with pytest.raises(LiftExportError, match="gemv"):
        CB.gemv(words, zf, scales, bias, torch.empty(1, 32, device="cuda"))  # y width
    with pytest.raises(LiftExportError, match="gemv"):
        CB.gemv(torch.cat([words, words]), zf, scales, bias, y)  # more code words than planes
    for flags in (6, 8, -1):  # plain and TMA at once, an unknown bit, negative (at the C ABI)
        assert CB.load().lq_binary_gemv(words.data_ptr(), words.shape[0], words.shape[1], zf.data_ptr(), zf.shape[1],
                                        scales.data_ptr(), None, None, 0, y.data_ptr(), y.shape[1], 1, 0, flags,
                                        None) == -1
    with pytest.raises(LiftExportError, match="kernel 'fast'"):
        CB.gemv(words, zf, scales, bias, y, kernel="fast")
    with pytest.raises(LiftExportError, match="gemv"):
        CB.gemv(words, zf, scales, bias, y, residual=torch.empty(1, 36, device="cuda", dtype=torch.float16))
    with pytest.raises(LiftExportError, match="plan"):
        CB.tma_plan(0, 300, "cuda")
    out = (ctypes.c_int * 4)()
    for n, st, o in ((0, 2, out), (36, 0, out), (36, 2, None)):  # at the C ABI
        assert CB.load().lq_gemv_tma_plan(n, st, None if o is None else ctypes.cast(o, ctypes.c_void_p)) == -1


def _transform(in_features, D, d, seed):
    from liftexport.ir import LiftTransform, choose_shape
    from liftexport.transform import fused_factors

    g = torch.Generator().manual_seed(seed)
    n1, n2 = choose_shape(in_features, d)
    tf = LiftTransform(D=D, d=d, in_features=in_features, n1=n1, n2=n2, M=torch.randn(d, D, generator=g) / D ** 0.5,
                       a=torch.rand(n1, generator=g) + 0.5, b=torch.rand(n2 // d, generator=g) + 0.5,
                       s1=torch.rand(n1 * n2, generator=g) + 0.5)
    L, R = fused_factors(tf.M, tf.a, tf.b, n1, n2, torch.float64)
    return tf, L.cuda(), R.cuda()


# 11008: wider than WIDE_LIFT (the general kernel's blocks of 1024 threads); 8192 at 23/7 (X 1171 x 7): too many
# values of X per thread for the register-tiled kernel, so the general one runs either way
@pytest.mark.parametrize("in_features,D,d", [(64, 24, 10), (300, 16, 8), (1000, 24, 8), (4096, 24, 10), (1100, 23, 10),
                                             (11008, 24, 10), (8192, 23, 7)])
@pytest.mark.parametrize("pre", ["none", "rms", "glu"])
@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("spc", [1, 2, 5])
@pytest.mark.parametrize("kernel", ["tiled", "general"])
def test_lift_planes_matches_float64(in_features, D, d, pre, M, spc, kernel, monkeypatch):
    """Both lift kernels (LIFTEXPORT_LIFT_TILED, read at every call: 1 the register-tiled one where it fits)."""
    monkeypatch.setenv("LIFTEXPORT_LIFT_TILED", "1" if kernel == "tiled" else "0")
    from liftexport.runtime.triton_linear import torch_prologue
    from liftexport.transform import lift_with_factors

    tf, L, R = _transform(in_features, D, d, seed=in_features + D + M)
    n1, n2, C = tf.n1, tf.n2, R.shape[1]
    Kl = n1 * C
    words, scales, bias = _layer(36, Kl, seed=Kl)
    width = 2 * in_features if pre == "glu" else in_features
    x = torch.randn(M, width, device="cuda").half()
    # the norm weight in float32 or in the activations' dtype (as the engine keeps it)
    rms = ((torch.rand(in_features, device="cuda") + 0.5).to(torch.float32 if M == 1 else x.dtype), 1e-5) \
        if pre == "rms" else None
    inv = (1.0 / tf.s1.double()).float().cuda()
    zf = CB.workspace(M, Kl, "cuda")
    zf.fill_(-1)
    Lf, Rf = L.float(), R.float()
    runs = CB.lift_kernel(n1, n2, C, spc, "cuda")
    assert runs == (None if (spc, in_features) == (5, 8192) else "general" if in_features == 8192 else kernel)
    if not CB.lift_fits(n1, n2, C, spc, "cuda"):  # (8192 at 23/7 with 5 k-steps per block: 57 rows of L)
        with pytest.raises(LiftExportError, match="does not fit"):
            CB.lift_planes(x, in_features, inv, Lf, Rf, zf, rms=rms, glu=pre == "glu", spc=spc)
        return
    CB.lift_planes(x, in_features, inv, Lf, Rf, zf, rms=rms, glu=pre == "glu", spc=spc)
    torch.cuda.synchronize()  # the weights are now written: the static-weights path gives the same words
    zs = CB.workspace(M, Kl, "cuda").fill_(-1)
    CB.lift_planes(x, in_features, inv, Lf, Rf, zs, rms=rms, glu=pre == "glu", spc=spc, static_weights=True)
    assert torch.equal(zs, zf)
    y = torch.full((M, 36), float("nan"), device="cuda")
    CB.gemv(words, zf, scales, bias, y)
    xp = torch_prologue(x.double(), (rms[0].double(), rms[1]) if rms else None, pre == "glu", in_features)
    u = lift_with_factors(xp, L, R, tf.s1.cuda().double(), in_features, n1, n2)
    ref = _reference(u, words, Kl, scales, bias)
    err = float((y.double() - ref).abs().max() / ref.abs().max())
    assert err <= 2e-4, err


@pytest.mark.parametrize("static", [False, True])
def test_dependent_chain_of_launches(static):
    """Layers back to back as in a decode step (on sm_90 each kernel is a programmatic dependent launch that
    may start before the previous one ends): every lift_planes reads the previous GEMV's output, every GEMV
    the planes just written and the previous output as residual. static=False: the transform factor L is
    rewritten by a torch kernel right before each lift_planes; static=True: L is written once beforehand
    and lift_planes reads the weights before waiting (static_weights); likewise the GEMV's code words (the
    TMA GEMV on sm_90 reads them before its wait when static). Eager and in a CUDA graph, fresh
    inputs per replay; each layer is checked against float64 from the input the kernels gave it."""
    from liftexport.runtime.triton_linear import torch_prologue
    from liftexport.transform import lift_with_factors

    in_f, layers = 1024, 4
    tf, L, R = _transform(in_f, 24, 10, seed=11)
    n1, n2, C = tf.n1, tf.n2, R.shape[1]
    Kl = n1 * C
    Lf, Rf, Lw = L.float(), R.float(), torch.empty_like(L, dtype=torch.float32)
    inv = (1.0 / tf.s1.double()).float().cuda()
    nw = torch.rand(in_f, device="cuda") + 0.5
    weights = [_layer(in_f, Kl, seed=20 + i) for i in range(layers)]
    weights = [(w, s / Kl ** 0.5, b) for w, s, b in weights]
    xs = [torch.empty(1, in_f, device="cuda", dtype=torch.float16) for _ in range(layers + 1)]
    zf = CB.workspace(1, Kl, "cuda")

    Ls = [Lf * (1.0 + 0.25 * i) for i in range(layers)]
    torch.cuda.synchronize()

    wbuf = torch.empty_like(weights[0][0])

    def chain():
        for i, (w, s, b) in enumerate(weights):
            if static:
                CB.lift_planes(xs[i], in_f, inv, Ls[i], Rf, zf, rms=(nw, 1e-5), static_weights=True)
                CB.gemv(w, zf, s, b, xs[i + 1], residual=xs[i], static_weights=True)
            else:
                torch.mul(Lf, 1.0 + 0.25 * i, out=Lw)
                CB.lift_planes(xs[i], in_f, inv, Lw, Rf, zf, rms=(nw, 1e-5))
                wbuf.copy_(w)  # the code words too are written right before the GEMV that reads them
                CB.gemv(wbuf, zf, s, b, xs[i + 1], residual=xs[i])

    def check():
        torch.cuda.synchronize()
        for i, (w, s, b) in enumerate(weights):
            xp = torch_prologue(xs[i].double(), (nw.double(), 1e-5), False, in_f)
            u = lift_with_factors(xp, L * (1.0 + 0.25 * i), R, tf.s1.cuda().double(), in_f, n1, n2)
            ref = _reference(u, w, Kl, s, b, xs[i])
            err = float((xs[i + 1].double() - ref).abs().max() / ref.abs().max())
            assert err <= TOL[torch.float16], (i, err)

    def fresh():
        xs[0].copy_(torch.randn(1, in_f, device="cuda"))
        for x in xs[1:]:
            x.fill_(float("nan"))

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fresh()
        chain()
    torch.cuda.current_stream().wait_stream(s)
    check()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chain()
    for _ in range(3):
        fresh()
        graph.replay()
        check()


def test_lift_planes_bad_arguments():
    tf, L, R = _transform(300, 16, 8, seed=1)
    x = torch.randn(1, 300, device="cuda")
    inv = torch.ones(tf.n1 * tf.n2, device="cuda")
    zf = CB.workspace(1, tf.n1 * R.shape[1], "cuda")
    with pytest.raises(LiftExportError, match="lift planes"):
        CB.lift_planes(x, 300, inv, L.float(), R.float(), zf, glu=True)  # x is not [gate | up]
    with pytest.raises(LiftExportError, match="lift planes"):
        CB.lift_planes(x, 300, inv, L.double(), R.float(), zf)  # factors must be float32
    with pytest.raises(LiftExportError, match="lift planes"):
        CB.lift_planes(x, 300, inv, L.float(), R.float(), CB.workspace(1, 100, "cuda"))  # wrong plane count
    assert not CB.lift_fits(1000, 1000, 2400, 2, "cuda")  # 4 MB of input: more than a block's shared memory
    assert CB.lift_kernel(1000, 1000, 2400, 2, "cuda") is None
    with pytest.raises(LiftExportError, match="lift planes kernel: bad arguments"):
        CB.lift_kernel(0, 10, 24, 1, "cuda")  # no rows
