"""Triton lifted-linear kernels against a float64 torch reference (TRITON_INTERPRET=1 on CPU)."""

from __future__ import annotations

import pytest
import torch

from liftexport.ir import LiftedLinear, LiftTransform, choose_shape, pack_codes, row_bytes, unpack_codes
from liftexport.kernels.triton import lift_linear as K
from liftexport.runtime.triton_linear import TritonLiftGroup
from liftexport.transform import fused_factors, lift_with_factors


def random_group(D, d, in_features, outs, seed, s1=True, bias=True):
    g = torch.Generator().manual_seed(seed)
    n1, n2 = choose_shape(in_features, d)
    tf = LiftTransform(D=D, d=d, in_features=in_features, n1=n1, n2=n2,
                       M=torch.randn(d, D, generator=g) / D ** 0.5,
                       a=torch.rand(n1, generator=g) + 0.5, b=torch.rand(n2 // d, generator=g) + 0.5,
                       s1=(torch.rand(n1 * n2, generator=g) + 0.5) if s1 else None)
    lins = []
    for i, N in enumerate(outs):
        bits = torch.rand(N, tf.lifted, generator=g) < 0.5
        lins.append(LiftedLinear(transform="t", out_features=N, codes=pack_codes(bits),
                                 scales=torch.rand(N, generator=g) + 0.1,
                                 bias=torch.randn(N, generator=g) if (bias and i == 0) else None))
    return tf, lins


def reference(x, tf, lin):
    L, R = fused_factors(tf.M, tf.a, tf.b, tf.n1, tf.n2, torch.float64)
    u = lift_with_factors(x.double(), L, R, None if tf.s1 is None else tf.s1.double(), tf.in_features, tf.n1, tf.n2)
    q = unpack_codes(lin.codes, tf.lifted).double() * 2 - 1
    y = (u @ q.T) * lin.scales.double()
    return y + lin.bias.double() if lin.bias is not None else y


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


def test_kmajor_words_bit_order():
    bits = torch.rand(5, 77) < 0.5
    w = K.kmajor_words(pack_codes(bits), 77)
    assert w.shape == (3, 5) and w.dtype == torch.int32
    got = K.kmajor_bits(w, 96).T.bool()
    assert torch.equal(got[:, :77], bits) and not got[:, 77:].any()


@pytest.mark.parametrize("D,d,inf", [(24, 10, 70), (24, 8, 64), (23, 10, 45), (30, 14, 50), (16, 5, 33)])
@pytest.mark.parametrize("M", [1, 3, 7])
def test_group_matches_fp64_reference(D, d, inf, M):
    tf, lins = random_group(D, d, inf, [40, 24], seed=D * 100 + d + M)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    assert mod.fused_tables == ((tf.lifted // tf.n1) % 4 == 0)
    x = torch.randn(2, M, inf)
    ys = mod(x)
    for y, lin in zip(ys, lins):
        assert y.shape == (2, M, lin.out_features) and torch.isfinite(y).all()
        assert rel(y.reshape(-1, lin.out_features), reference(x.reshape(-1, inf), tf, lin)) < 2e-5


# bf16 is checked on the GPU (bench/gpu_kernels_check.py): Triton 3.9's interpreter mis-reads bf16
# tensor-core operands (the same inputs give ~1e11 there and the right answer as fp16 or fp32).
@pytest.mark.parametrize("dtype", [torch.float16])
def test_mma_path_low_precision(dtype):
    tf, lins = random_group(24, 10, 70, [48], seed=3, s1=False, bias=False)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    x = torch.randn(9, 70)
    (y,) = mod(x.to(dtype))
    assert y.dtype == dtype
    tol = 5e-3 if dtype == torch.float16 else 3e-2
    assert rel(y.float(), reference(x.to(dtype).float(), tf, lins[0])) < tol


def test_table_and_mma_agree_and_write_every_output():
    tf, lins = random_group(24, 10, 70, [37], seed=5)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    x = torch.randn(2, 70)
    u = mod.lifted(x)
    ref = reference(x, tf, lins[0])
    y2 = torch.full((2, 37), float("nan"))
    y2m = torch.full((2, 37), float("nan"))
    up = torch.zeros(2, mod.KW * 32)
    K.transform(x, mod.inv_s1, mod.L, mod.R, 70, up, planes=True)
    K.gemm_planes(up, mod.words, mod.scales, mod.bias, y2m)
    tabs = torch.zeros(2, mod.KW * 128)
    K.tables(u, mod.K, tabs)
    K.gemv_lut_split(tabs, mod.words, mod.scales, mod.bias, y2)
    for y in (y2, y2m):
        assert torch.isfinite(y).all() and rel(y, ref) < 2e-5


def test_bad_shapes_are_rejected():
    tf, lins = random_group(24, 10, 70, [16], seed=1)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    with pytest.raises(ValueError, match="x must be"):
        K.transform(torch.randn(2, 71), mod.inv_s1, mod.L, mod.R, 70, torch.empty(2, mod.K))
    with pytest.raises(ValueError, match="codes must be K-major"):
        K.gemv_lut_split(torch.zeros(1, mod.KW * 128), mod.words.t(), mod.scales, None, torch.empty(1, 16))
    with pytest.raises(ValueError, match="tables too short"):
        K.gemv_lut_split(torch.zeros(1, 8), mod.words, mod.scales, None, torch.empty(1, 16))
    with pytest.raises(ValueError, match="codes must be uint8"):
        K.kmajor_words(torch.zeros(3, 2, dtype=torch.uint8), 70)


@pytest.mark.parametrize("D,d,inf,M", [(24, 10, 70, 1), (23, 10, 45, 5), (16, 5, 33, 17)])
def test_bitplane_gemm(D, d, inf, M):
    tf, lins = random_group(D, d, inf, [40], seed=11 + M)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    x = torch.randn(M, inf).half()
    u = torch.zeros(M, mod.KW * 32, dtype=torch.float16)
    K.transform(x, mod.inv_s1, mod.L, mod.R, inf, u, planes=True)
    k = torch.arange(mod.K)
    flat = mod.lifted(x.float())
    assert torch.allclose(u[:, ((k % 16) * mod.KW + k // 32) * 2 + (k // 16) % 2].float(), flat, rtol=2e-3, atol=1e-3)
    y = torch.full((M, 40), float("nan"), dtype=torch.float16)
    K.gemm_planes(u, mod.words, mod.scales, mod.bias, y, BN=16, BM=16, BKW=16)
    assert rel(y.float(), reference(x.float(), tf, lins[0])) < 5e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("split_k", [2, 4])
def test_bitplane_gemm_split_k_matches_one_pass(dtype, split_k):
    """Split-K: partial sums over runs of K tiles, then the reduction with scale, bias and residual."""
    tf, lins = random_group(24, 10, 700, [50], seed=5)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    assert mod.KW > 3 * 16  # at least four BKW tiles to split
    M = 3
    x = torch.randn(M, 700).to(dtype)
    u = torch.zeros(M, mod.KW * 32, dtype=dtype)
    K.transform(x, mod.inv_s1, mod.L, mod.R, 700, u, planes=True)
    res = torch.randn(M, 50).to(dtype)
    one = torch.full((M, 50), float("nan"), dtype=dtype)
    K.gemm_planes(u, mod.words, mod.scales, mod.bias, one, residual=res, BN=16, BM=16, BKW=16)
    many = torch.full((M, 50), float("nan"), dtype=dtype)
    K.gemm_planes(u, mod.words, mod.scales, mod.bias, many, residual=res, BN=16, BM=16, BKW=16, split_k=split_k)
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    assert rel(many.float(), one.float()) < tol
    assert rel(many.float() - res.float(), reference(x.float(), tf, lins[0])) < (1e-4 if dtype == torch.float32 else 5e-3)
    with pytest.raises(ValueError, match="split_k"):
        K.gemm_planes(u, mod.words, mod.scales, mod.bias, many, split_k=0)


@pytest.mark.parametrize("M,route", [(3, "table"), (3, "planes"), (6, "planes")])
def test_fused_prologue_and_residual_match_torch(M, route, monkeypatch):
    from liftexport.runtime import triton_linear
    from liftexport.runtime.triton_linear import torch_prologue

    monkeypatch.setattr(triton_linear, "DECODE_ROUTE", route)  # <= 4 tokens: either decode route

    tf, lins = random_group(24, 10, 70, [70], seed=21)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    x = torch.randn(M, 70)
    w = torch.rand(70) + 0.5
    res = torch.randn(M, 70)
    (want,) = mod(torch_prologue(x, (w, 1e-5)))
    (got,) = mod(x.half(), rms=(w, 1e-5), residual=res.half())
    assert rel(got.float() - res, want) < 5e-3
    gu = torch.randn(M, 140)
    (want,) = mod(torch_prologue(gu, glu=True, in_features=70))
    (got,) = mod(gu.half(), glu=True)
    assert rel(got.float(), want) < 5e-3
    (got32,) = mod(gu, glu=True, residual=res)  # the float32 route does the same in torch
    assert rel(got32 - res, want) < 1e-6


@pytest.mark.parametrize("M", [1, 3])
def test_split_table_gemv(M):
    tf, lins = random_group(24, 10, 150, [70], seed=31 + M)
    mod = TritonLiftGroup(lins, tf, device="cpu")
    x = torch.randn(M, 150)
    tabs = torch.zeros(M, mod.KW * 128)
    K.tables(mod.lifted(x), mod.K, tabs)
    res = torch.randn(M, 70)
    y = torch.full((M, 70), float("nan"))
    K.gemv_lut_split(tabs, mod.words, mod.scales, mod.bias, y, residual=res, SW=4, BN=16, chunks=3)
    assert rel(y - res, reference(x, tf, lins[0])) < 2e-5
