"""Whitening + lifted quantization of one group: exact algebra, LDL feedback beats plain search."""

import torch

from liftexport.lattice.config import LatticeConfig
from liftexport.lattice.menu import load_shipped
from liftexport.quantize.lift import dequantize, quantize_group, whitened_hessian
from liftexport.runtime.reference import LiftLinear
from liftexport.ir import LiftedLinear, pack_codes
from liftexport.transform import dct_matrix


def _problem(IC=96, OC=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(OC, IC, generator=g)
    A = torch.randn(IC, IC, generator=g) * torch.logspace(0, -2, IC)  # anisotropic, correlated inputs
    X = torch.randn(4096, IC, generator=g) @ A.T
    return W, X, X.T @ X / X.shape[0]


def test_whitened_hessian_matches_dense_kron():
    n1, n2, IC = 6, 10, 57
    A = torch.randn(IC, IC, dtype=torch.float64)
    H = A @ A.T
    s1 = torch.rand(n1 * n2, dtype=torch.float64) + 0.5
    s2 = torch.rand(n1 * n2, dtype=torch.float64) + 0.5
    Hp = torch.zeros(60, 60, dtype=torch.float64)
    Hp[:IC, :IC] = H
    Hp = Hp / s1[:, None] / s1[None, :]
    C = torch.kron(dct_matrix(n1, torch.float64), dct_matrix(n2, torch.float64))
    ref = (C @ Hp @ C.T) / s2[:, None] / s2[None, :]
    assert torch.allclose(whitened_hessian(H, s1, s2, n1, n2), ref, atol=1e-10)


def test_dequantize_equals_the_decode_path():
    """The dense weight the quantizer reasons about is exactly what LiftLinear computes."""
    W, X, H = _problem()
    gq = quantize_group([W], H, load_shipped(LatticeConfig(24, 10)), seed=1)
    q = torch.where(gq.latent[0] >= 0, 1.0, -1.0)
    Wh = dequantize(gq.transform, q, gq.scales[0])
    lin = LiftedLinear("t", W.shape[0], pack_codes(gq.codes[0]), gq.scales[0])
    y = LiftLinear(lin, gq.transform)(X[:50])
    assert torch.allclose(y, X[:50] @ Wh.T, rtol=1e-4, atol=1e-4 * float(y.abs().max()))


def test_ldlq_reduces_output_error():
    W, X, H = _problem(seed=2)
    lat = load_shipped(LatticeConfig(24, 10))
    errs = {}
    for ld in (False, True):
        gq = quantize_group([W], H, lat, seed=0, ldlq=ld)
        Wh = dequantize(gq.transform, torch.where(gq.latent[0] >= 0, 1.0, -1.0), gq.scales[0])
        errs[ld] = float(((X @ (W - Wh).T) ** 2).mean() / ((X @ W.T) ** 2).mean())
    assert errs[True] < 0.8 * errs[False], errs
