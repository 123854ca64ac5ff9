"""The lifted transform of one group of linears: math shared by the quantizer and every runtime.

With x (in_features) padded to n = n1*n2 and viewed row-major as an n1 x n2 matrix X:

    X~ = X / s1                          (s1: per input channel; absent = 1)
    Z  = C1 X~ C2^T                      (C_k: the orthonormal DCT-II matrix of size k)
    Z[i, j*d:(j+1)*d] /= a[i] * b[j]     (s2 = a (x) b, constant on each d-chunk)
    u[i, j, :] = M^T Z[i, j*d:(j+1)*d]   (lifted activation, (n/d)*D values, row-major (i, j, k))

A lifted linear then computes y = s * (Q u) + bias with Q in {+-1}^(out x (n/d)*D).
Fused: U = L X~ R with L = diag(1/a) C1 and R = C2^T blockdiag_j(M / b[j]) (u as a row: u_chunk^T = z^T M).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def _dct_cached(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    C = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    C[0] /= math.sqrt(2.0)
    return C


def dct_matrix(n: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Orthonormal DCT-II matrix C (rows are basis vectors): C[k, i] = c_k cos(pi (2i+1) k / 2n)."""
    return _dct_cached(n).to(dtype=dtype, device=device)


def choose_shape(in_features: int, d: int) -> tuple[int, int]:
    """(n1, n2): n = n1*n2 the smallest multiple of d >= in_features, d | n2, n2 nearest sqrt(n)."""
    n = -(-in_features // d) * d
    best = None
    for n2 in range(d, n + 1, d):
        if n % n2:
            continue
        key = (abs(n2 - math.sqrt(n)), -n2)
        if best is None or key < best[0]:
            best = (key, n2)
    n2 = best[1]
    return n // n2, n2


def fused_factors(M, a, b, n1: int, n2: int, dtype=torch.float32):
    """L [n1, n1] and R [n2, (n2/d)*D] with U = L X~ R."""
    d, D = M.shape
    C1 = dct_matrix(n1, torch.float64, M.device)
    C2 = dct_matrix(n2, torch.float64, M.device)
    L = C1 / a.double()[:, None]
    nb = n2 // d
    B = torch.zeros(n2, nb * D, dtype=torch.float64, device=M.device)
    for j in range(nb):
        B[j * d : (j + 1) * d, j * D : (j + 1) * D] = M.double() / b.double()[j]
    R = C2.T @ B
    return L.to(dtype), R.to(dtype)


def lift(x: torch.Tensor, M, a, b, s1, in_features: int, n1: int, n2: int) -> torch.Tensor:
    """Reference lifted activation u [..., (n/d)*D] for x [..., in_features] (float32 math)."""
    L, R = fused_factors(M, a, b, n1, n2, torch.float32)
    return lift_with_factors(x, L.to(x.device), R.to(x.device), s1, in_features, n1, n2)


def lift_with_factors(x, L, R, s1, in_features: int, n1: int, n2: int) -> torch.Tensor:
    n = n1 * n2
    if x.shape[-1] != in_features:
        raise ValueError(f"lift: expected {in_features} input features, got {x.shape[-1]}")
    xt = torch.nn.functional.pad(x, (0, n - in_features)) if n > in_features else x
    if s1 is not None:
        xt = xt / s1
    X = xt.reshape(*x.shape[:-1], n1, n2)
    U = torch.matmul(torch.matmul(L, X), R)
    return U.reshape(*x.shape[:-1], -1)
