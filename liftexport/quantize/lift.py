"""Whitening and lifted quantization of one group of linears (layers that share an input).

1. s1: per input channel, (activation RMS / mean RMS) clamped to [1, 16], to the power ``alpha``,
   with seeded random signs (they decorrelate structure before the DCT mixing).
2. W' = DCT2D(rows of W * s1) (P1 (x) P2 = the orthonormal DCT-II of the n1 x n2 grid).
3. s2 = a (x) b (constant on d-chunks): a rank-1 fit in log space that equalises the variance of
   the row-normalised W' per chunk, so the lattice sees ~N(0, 1) chunks.
4. Row RMS normalisation, nearest-point search of every d-chunk with the shipped lattice.
5. Per-row scales by least squares on calibration statistics: min_s || (W - s W^) X ||^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ir import LiftTransform
from ..lattice.search import nearest, signs
from ..lattice.store import Lattice
from ..transform import choose_shape, dct_matrix


@dataclass
class GroupQuant:
    transform: LiftTransform
    codes: list[torch.Tensor]  # bool [OC_i, K] per layer
    scales: list[torch.Tensor]  # float32 [OC_i]
    latent: list[torch.Tensor]  # float32 [OC_i, K]: continuous lifted values (sign = code), for correction
    search: str


def dct2_rows(Wn: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Row vectors [R, n] -> rows of C1 X C2^T (X = row viewed n1 x n2)."""
    C1 = dct_matrix(n1, Wn.dtype, Wn.device)
    C2 = dct_matrix(n2, Wn.dtype, Wn.device)
    X = Wn.view(-1, n1, n2)
    return (C1 @ X @ C2.T).reshape(Wn.shape)


def idct2_rows(Z: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    C1 = dct_matrix(n1, Z.dtype, Z.device)
    C2 = dct_matrix(n2, Z.dtype, Z.device)
    return (C1.T @ Z.view(-1, n1, n2) @ C2).reshape(Z.shape)


def s2_grid(a: torch.Tensor, b: torch.Tensor, d: int) -> torch.Tensor:
    """s2 as an n1 x n2 grid from its factors."""
    return a[:, None] * b.repeat_interleave(d)[None, :]


def init_s1(act_rms: torch.Tensor, n: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    IC = act_rms.numel()
    r = act_rms.float().clamp_min(1e-8)
    s = (r / r.mean()).clamp(1.0, 16.0) ** alpha
    sign = torch.randint(0, 2, (IC,), generator=gen).float() * 2 - 1
    out = torch.ones(n)
    out[:IC] = s.cpu() * sign
    return out


def fit_s2(E: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-1 (a_i * b_j) fit of 1/sqrt(chunk energy) in log space. E: [n1, n2] mean squares."""
    n1, n2 = E.shape
    Ec = E.view(n1, n2 // d, d).mean(-1).clamp_min(1e-12)
    target = -0.5 * torch.log(Ec.double())
    la = target.mean(1)
    lb = (target - la[:, None]).mean(0)
    a, b = torch.exp(la), torch.exp(lb)
    return a.float(), b.float()


def quantize_group(Ws: list[torch.Tensor], H: torch.Tensor, lattice: Lattice, seed: int,
                   alpha: float = 0.5, method: str = "auto") -> GroupQuant:
    """Ws: weights [OC_i, IC] sharing one input; H: input second moment E[x x^T] [IC, IC]."""
    dev = Ws[0].device
    IC = Ws[0].shape[1]
    d, D = lattice.d, lattice.D
    n1, n2 = choose_shape(IC, d)
    n = n1 * n2
    gen = torch.Generator().manual_seed(seed)
    s1 = init_s1(torch.sqrt(torch.diagonal(H).clamp_min(0)), n, alpha, gen).to(dev)
    W = torch.cat(Ws, 0).float()
    Wp = dct2_rows(torch.nn.functional.pad(W, (0, n - IC)) * s1, n1, n2)  # [OC, n]
    rms = Wp.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    E = (Wp / rms).pow(2).mean(0).view(n1, n2)
    a, b = fit_s2(E, d)
    a, b = a.to(dev), b.to(dev)
    Wpp = Wp * s2_grid(a, b, d).reshape(1, n)
    rms = Wpp.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    chunks = (Wpp / rms).reshape(-1, d)
    res = nearest(lattice, chunks, method=method)
    M = lattice.M.to(dev)
    q = signs(res.codes)  # [OC * n/d, D]
    # continuous lifted values: q + A_w (w - M q); their sign is kept equal to the code
    e = chunks - q @ M.T
    v = q + e @ lattice.A[:, :d].to(dev).T
    latent = q * v.abs().clamp(0.02, 1.0) * (torch.sign(v) == q).float() + q * 0.02 * (torch.sign(v) != q).float()
    # dequantised unit-scale rows in the original domain
    Qt = (q @ M.T).reshape(-1, n)  # [OC, n] ~ normalised W''
    What = idct2_rows(Qt / s2_grid(a, b, d).reshape(1, n), n1, n2) / s1
    What = What[:, :IC]
    Hd = H.to(dev).float()
    num = ((W @ Hd) * What).sum(1)
    den = ((What @ Hd) * What).sum(1).clamp_min(1e-20)
    scale = num / den
    tf = LiftTransform(D=D, d=d, in_features=IC, n1=n1, n2=n2, M=lattice.M.clone().cpu(), a=a.cpu(),
                       b=b.cpu(), s1=s1.cpu())
    K = tf.lifted
    sizes = [w.shape[0] for w in Ws]
    codes = list(res.codes.reshape(-1, K).split(sizes))
    lat = list(latent.reshape(-1, K).split(sizes))
    scales = list(scale.split(sizes))
    return GroupQuant(tf, codes, scales, lat, res.method)


def dequantize(tf: LiftTransform, q: torch.Tensor, scale: torch.Tensor, M=None, a=None, b=None, s1=None):
    """Dense weight [OC, IC] of a lifted linear (differentiable in every argument)."""
    M = tf.M if M is None else M
    a = tf.a if a is None else a
    b = tf.b if b is None else b
    s1 = tf.s1 if s1 is None else s1
    OC = q.shape[0]
    Qt = (q.view(OC, tf.chunks, tf.D) @ M.T).reshape(OC, tf.n)
    Wh = idct2_rows(Qt / s2_grid(a, b, tf.d).reshape(1, tf.n), tf.n1, tf.n2)
    if s1 is not None:
        Wh = Wh / s1
    return Wh[:, : tf.in_features] * scale[:, None]
