"""Whitening and lifted quantization of one group of linears (layers that share an input).

1. s1: per input channel, (activation RMS / weight column RMS)^alpha (alpha = 1/2 is optimal for
   white lattice error on the calibration statistics; the pipeline's default 1/4 trusts them less and
   measured better on held-out text), with seeded random signs (they decorrelate structure before the DCT).
2. W' = DCT2D(rows of W * s1) (P1 (x) P2 = the orthonormal DCT-II of the n1 x n2 grid).
3. s2 = a (x) b (constant on d-chunks): a rank-1 fit in log space that equalises the variance of
   the row-normalised W' per chunk, so the lattice sees ~N(0, 1) chunks (optionally tilted by the
   activation energy per DCT position, ``beta``).
4. Row RMS normalisation, then block LDL feedback (GPTQ with d-column blocks, ``ldlq``): chunk
   columns are searched one at a time with the shipped lattice and each one's error is pushed onto
   the columns not yet quantized, weighted by the whitened inputs' second moments.
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


def init_s1(act_rms: torch.Tensor, col_rms: torch.Tensor, n: int, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """s1_j = (act_rms_j / col_rms_j)^alpha, normalised to geometric mean 1, clamped to [1/64, 64].

    With white lattice error in the whitened domain, the output error is proportional to
    (sum_j c_j^2 s1_j^2)(sum_j r_j^2 / s1_j^2), minimised by s1_j^2 = r_j / c_j (alpha = 1/2).
    """
    IC = act_rms.numel()
    r = act_rms.float().clamp_min(1e-8) / col_rms.float().clamp_min(1e-8)
    s = r ** alpha
    s = (s / torch.exp(torch.log(s).mean())).clamp(1 / 64, 64)
    sign = torch.randint(0, 2, (IC,), generator=gen).float() * 2 - 1
    out = torch.ones(n)
    out[:IC] = s.cpu() * sign
    return out


def fit_s2(E: torch.Tensor, d: int, Hx: torch.Tensor | None = None, beta: float = 0.0):
    """Rank-1 (a_i * b_j) fit, in log space, of E^-1/2 * Hx^beta per chunk.

    E: [n1, n2] mean square of the row-normalised weights per DCT position (E^-1/2 equalises
    the chunks for the N(0, 1) lattice); Hx: [n1, n2] activation energy per DCT position.
    """
    n1, n2 = E.shape
    Ec = E.view(n1, n2 // d, d).mean(-1).clamp_min(1e-12)
    target = -0.5 * torch.log(Ec.double())
    if Hx is not None and beta:
        Hc = Hx.view(n1, n2 // d, d).mean(-1).clamp_min(1e-20)
        target = target + beta * torch.log(Hc.double() / Hc.double().mean())
    la = target.mean(1)
    lb = (target - la[:, None]).mean(0)
    a, b = torch.exp(la), torch.exp(lb)
    return a.float(), b.float()


#: s1 exponent and LDLQ damping (x mean diagonal of H): 1/4 and 0.1 measured best on the example model,
#: text and self-generated calibration alike (bench/RESULTS.md, whitening ablation)
ALPHA = 0.25
DAMP = 0.1


def quantize_group(Ws: list[torch.Tensor], H: torch.Tensor, lattice: Lattice, seed: int,
                   alpha: float = ALPHA, method: str = "auto", beta: float = 0.0, ldlq: bool = True,
                   damp: float = DAMP) -> GroupQuant:
    """Ws: weights [OC_i, IC] sharing one input; H: input second moment E[x x^T] [IC, IC]."""
    dev = Ws[0].device
    IC = Ws[0].shape[1]
    d, D = lattice.d, lattice.D
    n1, n2 = choose_shape(IC, d)
    n = n1 * n2
    gen = torch.Generator().manual_seed(seed)
    W = torch.cat(Ws, 0).float()
    s1 = init_s1(torch.sqrt(torch.diagonal(H).clamp_min(0)), W.pow(2).mean(0).sqrt(), n, alpha, gen).to(dev)
    Wp = dct2_rows(torch.nn.functional.pad(W, (0, n - IC)) * s1, n1, n2)  # [OC, n]
    rms = Wp.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    E = (Wp / rms).pow(2).mean(0).view(n1, n2)
    Hx = None
    if beta:
        # activation energy per DCT position: the diagonal of the whitened inputs' second moment (s2 = 1)
        Hx = torch.diagonal(whitened_hessian(H, s1, torch.ones(n, device=dev), n1, n2)).float().view(n1, n2)
    a, b = fit_s2(E, d, Hx, beta)
    a, b = a.to(dev), b.to(dev)
    s2 = s2_grid(a, b, d).reshape(1, n)
    Wpp = Wp * s2
    rms = Wpp.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    M = lattice.M.to(dev)
    if ldlq:
        codes, chunks, meth = _ldlq(Wpp / rms, H, s1, s2[0], n1, n2, lattice, method, damp)
    else:
        chunks = (Wpp / rms).reshape(-1, d)
        res = nearest(lattice, chunks, method=method)
        codes, meth = res.codes, res.method
    q = signs(codes)  # [OC * n/d, D]
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
    codes = list(codes.reshape(-1, K).split(sizes))
    lat = list(latent.reshape(-1, K).split(sizes))
    scales = list(scale.split(sizes))
    return GroupQuant(tf, codes, scales, lat, meth + ("+ldlq" if ldlq else ""))


def whitened_hessian(H: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """E[x'' x''^T] for x'' = diag(1/s2) C diag(1/s1) [x; 0] (the inputs the whitened weights see)."""
    n = n1 * n2
    IC = H.shape[0]
    dev = s1.device
    Hp = torch.zeros(n, n, device=dev, dtype=torch.float64)
    Hp[:IC, :IC] = H.to(dev).double()
    Hp = Hp / s1.double()[:, None] / s1.double()[None, :]
    # (C1 (x) C2) Hp (C1 (x) C2)^T, one mode at a time: n^2 (n1 + n2) operations instead of n^3
    C1 = dct_matrix(n1, torch.float64, dev)
    C2 = dct_matrix(n2, torch.float64, dev)
    T = Hp.view(n1, n2, n1, n2)
    T = torch.einsum("ai,ijkl->ajkl", C1, T)
    T = torch.einsum("bj,ajkl->abkl", C2, T)
    T = torch.einsum("ck,abkl->abcl", C1, T)
    T = torch.einsum("dl,abcl->abcd", C2, T)
    Hx = T.reshape(n, n)
    return Hx / s2.double()[:, None] / s2.double()[None, :]


def _ldlq(Wn: torch.Tensor, H, s1, s2, n1: int, n2: int, lattice: Lattice, method: str, damp: float):
    """Block LDL feedback quantization (GPTQ with d-column blocks) in the whitened domain.

    Chunk columns are visited by decreasing input energy; after each one the rows' remaining
    columns absorb its error through the Cholesky factor of the inverse Hessian. Returns codes
    [OC * n/d, D] in storage order, the (updated) targets of every chunk, and the search name.
    """
    OC, n = Wn.shape
    d = lattice.d
    nc = n // d
    Hx = whitened_hessian(H, s1, s2, n1, n2)
    energy = torch.diagonal(Hx).view(nc, d).sum(1)
    order = torch.argsort(energy, descending=True)
    perm = (order[:, None] * d + torch.arange(d, device=order.device)).reshape(-1)
    Hp = Hx[perm][:, perm]
    Hp = Hp + damp * torch.diagonal(Hp).mean() * torch.eye(n, dtype=Hp.dtype, device=Hp.device)
    L = torch.linalg.cholesky(Hp)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True)
    Wq = Wn[:, perm].double().clone()
    codes = torch.zeros(OC, nc, lattice.D, dtype=torch.bool, device=Wn.device)
    targets = torch.zeros(OC, nc, d, dtype=torch.float32, device=Wn.device)
    M = lattice.M.to(Wn.device).double()
    meth = method
    for j in range(nc):
        c0, c1 = j * d, (j + 1) * d
        blk = Wq[:, c0:c1]
        res = nearest(lattice, blk.float(), method=method)
        meth = res.method
        err = (blk - signs(res.codes, torch.float64) @ M.T)
        err = torch.linalg.solve_triangular(U[c0:c1, c0:c1], err, upper=True, left=False)
        if c1 < n:
            Wq[:, c1:] -= err @ U[c0:c1, c1:]
        codes[:, order[j]] = res.codes
        targets[:, order[j]] = blk.float()
    return codes.reshape(-1, lattice.D), targets.reshape(-1, d), meth


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
