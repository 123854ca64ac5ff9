"""Nearest-point search in a LiftQuant codebook {M q : q in {+-1}^D}.

Two searches, both vectorised and chunked so memory stays bounded, on CPU and CUDA:

* ``exact``: enumerates all 2^D codewords (the true nearest point; affordable for small D).
* ``nullspace``: the paper's heuristic. With N spanning the null space of M and A = [M; N]^-1,
  every padding z in {+-1}^(D-d) gives a candidate q = sign(A [w; z]); the closest M q wins.
  On CPU a native Gray-code kernel (kernels/cpu/lift_search.cpp) visits the 2^(D-d) paddings
  incrementally; elsewhere a torch version evaluates them in tiles.

Both can be followed by a ``polish``: greedy single-bit flips of q while the distance drops
(never worse than the search's answer; measured gains are in bench/RESULTS.md).

Codes are returned as bool tensors [n, D] (True = +1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .store import Lattice

#: Largest D for which ``auto`` picks exact enumeration.
EXACT_MAX_D = {"cpu": 16, "cuda": 16}
#: Elements of the largest temporary a tile may create (float32): 2^25 = 128 MiB.
TILE_ELEMS = 1 << 25

METHODS = ("auto", "exact", "nullspace")


@dataclass
class SearchResult:
    codes: torch.Tensor  # bool [n, D], True = +1
    dist: torch.Tensor  # float32 [n], squared distance ||w - M q||^2
    method: str  # which search produced it ("exact", "nullspace", + "+polish")


def resolve_method(D: int, method: str, device: torch.device | str) -> str:
    if method not in METHODS:
        raise ConfigError(f"search method {method!r}: expected one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    kind = torch.device(device).type
    return "exact" if D <= EXACT_MAX_D.get(kind, 16) else "nullspace"


def signs(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """bool codes -> +-1 values."""
    return codes.to(dtype) * 2 - 1


def all_sign_vectors(m: int, device, dtype=torch.float32) -> torch.Tensor:
    """All 2^m vectors of {+-1}^m; row i has bit j of i set <=> entry j is +1."""
    idx = torch.arange(1 << m, device=device, dtype=torch.int64)
    bits = (idx[:, None] >> torch.arange(m, device=device, dtype=torch.int64)) & 1
    return bits.to(dtype) * 2 - 1


def codes_to_int(codes: torch.Tensor) -> torch.Tensor:
    """bool [n, D] -> int64 [n] bit masks (bit k = entry k is +1). D <= 62."""
    D = codes.shape[-1]
    w = torch.ones(D, dtype=torch.int64, device=codes.device) << torch.arange(D, device=codes.device)
    return (codes.to(torch.int64) * w).sum(-1)


def int_to_codes(masks: torch.Tensor, D: int) -> torch.Tensor:
    """int64 [n] bit masks -> bool [n, D]."""
    return ((masks[:, None] >> torch.arange(D, device=masks.device, dtype=torch.int64)) & 1).bool()


def distances(M: torch.Tensor, W: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """||w - M q||^2 per row, computed directly (float32)."""
    return ((W - signs(codes, W.dtype) @ M.T) ** 2).sum(-1)


# --------------------------------------------------------------------------- exact


def _exact_torch(M: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d, D = M.shape
    n = W.shape[0]
    best = torch.full((n,), math.inf, device=W.device, dtype=torch.float32)
    best_idx = torch.zeros(n, device=W.device, dtype=torch.int64)
    wn = (W * W).sum(-1)
    # codebook tile: cb rows of 2^D; sample tile: sb rows of n
    cb = min(1 << D, 1 << 16)
    sb = max(1, min(n, TILE_ELEMS // cb))
    for c0 in range(0, 1 << D, cb):
        idx = torch.arange(c0, c0 + cb, device=W.device, dtype=torch.int64)
        Q = ((idx[:, None] >> torch.arange(D, device=W.device)) & 1).to(W.dtype) * 2 - 1
        C = Q @ M.T  # [cb, d]
        cn = (C * C).sum(-1)
        for s0 in range(0, n, sb):
            Ws = W[s0 : s0 + sb]
            score = cn[None, :] - 2 * (Ws @ C.T)  # [sb, cb]
            v, i = score.min(1)
            v = v + wn[s0 : s0 + sb]
            better = v < best[s0 : s0 + sb]
            best[s0 : s0 + sb] = torch.where(better, v, best[s0 : s0 + sb])
            best_idx[s0 : s0 + sb] = torch.where(better, i + c0, best_idx[s0 : s0 + sb])
    codes = int_to_codes(best_idx, D)
    return codes, distances(M, W, codes)


# --------------------------------------------------------------------------- null space


def _nullspace_torch(M: torch.Tensor, A: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d, D = M.shape
    m = D - d
    n = W.shape[0]
    Aw, Az = A[:, :d], A[:, d:]
    base = W @ Aw.T  # [n, D]
    zc = min(1 << m, 4096)
    sb = max(1, min(n, TILE_ELEMS // (zc * D)))
    best = torch.full((n,), math.inf, device=W.device, dtype=torch.float32)
    best_z = torch.zeros(n, device=W.device, dtype=torch.int64)
    for z0 in range(0, 1 << m, zc):
        idx = torch.arange(z0, z0 + zc, device=W.device, dtype=torch.int64)
        Z = ((idx[:, None] >> torch.arange(m, device=W.device)) & 1).to(W.dtype) * 2 - 1
        O = Z @ Az.T  # [zc, D]
        for s0 in range(0, n, sb):
            V = base[s0 : s0 + sb, None, :] + O[None]  # [sb, zc, D]
            Q = torch.where(V >= 0, 1.0, -1.0).to(W.dtype)
            E = W[s0 : s0 + sb, None, :] - Q @ M.T
            dist = (E * E).sum(-1)
            v, i = dist.min(1)
            better = v < best[s0 : s0 + sb]
            best[s0 : s0 + sb] = torch.where(better, v, best[s0 : s0 + sb])
            best_z[s0 : s0 + sb] = torch.where(better, i + z0, best_z[s0 : s0 + sb])
    Z = int_to_codes(best_z, m).to(W.dtype) * 2 - 1
    codes = (base + Z @ Az.T) >= 0
    return codes, distances(M, W, codes)


def nullspace_topk(M: torch.Tensor, A: torch.Tensor, W: torch.Tensor, k: int) -> torch.Tensor:
    """The k closest null-space candidates per row (bool codes [n, k, D]); used by training."""
    d, D = M.shape
    m = D - d
    n = W.shape[0]
    k = min(k, 1 << m)
    Aw, Az = A[:, :d], A[:, d:]
    base = W @ Aw.T
    zc = min(1 << m, 4096)
    sb = max(1, min(n, TILE_ELEMS // (zc * D)))
    best = torch.full((n, k), math.inf, device=W.device)
    best_z = torch.zeros(n, k, device=W.device, dtype=torch.int64)
    for z0 in range(0, 1 << m, zc):
        idx = torch.arange(z0, z0 + zc, device=W.device, dtype=torch.int64)
        Z = ((idx[:, None] >> torch.arange(m, device=W.device)) & 1).to(W.dtype) * 2 - 1
        O = Z @ Az.T
        for s0 in range(0, n, sb):
            V = base[s0 : s0 + sb, None, :] + O[None]
            Q = torch.where(V >= 0, 1.0, -1.0).to(W.dtype)
            dist = ((W[s0 : s0 + sb, None, :] - Q @ M.T) ** 2).sum(-1)
            allv = torch.cat([best[s0 : s0 + sb], dist], 1)
            alli = torch.cat([best_z[s0 : s0 + sb], idx[None].expand(dist.shape[0], -1)], 1)
            v, j = allv.topk(k, dim=1, largest=False)
            best[s0 : s0 + sb], best_z[s0 : s0 + sb] = v, alli.gather(1, j)
    Z = ((best_z[..., None] >> torch.arange(m, device=W.device)) & 1).to(W.dtype) * 2 - 1
    return (base[:, None, :] + Z @ Az.T) >= 0


# --------------------------------------------------------------------------- polish


def polish(M: torch.Tensor, W: torch.Tensor, codes: torch.Tensor, max_rounds: int | None = None):
    """Greedy single-bit flips while ||w - M q||^2 decreases. Returns (codes, dist)."""
    D = M.shape[1]
    q = signs(codes, W.dtype).clone()
    colsq = (M * M).sum(0)  # ||M[:, k]||^2
    E = W - q @ M.T
    active = torch.arange(W.shape[0], device=W.device)
    for _ in range(max_rounds or 2 * D):
        if active.numel() == 0:
            break
        qa, Ea = q[active], E[active]
        # flipping k: e' = e + 2 q_k M_k -> ||e'||^2 - ||e||^2 = 4 q_k <e, M_k> + 4 ||M_k||^2
        delta = 4 * qa * (Ea @ M) + 4 * colsq
        dv, k = delta.min(1)
        improve = dv < -1e-7
        if not bool(improve.any()):
            break
        rows = active[improve]
        kk = k[improve]
        qk = q[rows, kk]
        E[rows] += 2 * qk[:, None] * M.T[kk]
        q[rows, kk] = -qk
        active = rows
    codes = q > 0
    return codes, distances(M, W, codes)


# --------------------------------------------------------------------------- entry point


def nearest(
    lattice: "Lattice",
    W: torch.Tensor,
    method: str = "auto",
    do_polish: bool = True,
    backend: str = "auto",
) -> SearchResult:
    """Nearest codeword of ``lattice`` for each row of W [n, d] (float32, any device)."""
    if W.ndim != 2 or W.shape[1] != lattice.d:
        raise ConfigError(f"search: expected chunks of shape [n, {lattice.d}], got {tuple(W.shape)}")
    W = W.to(torch.float32).contiguous()
    dev = W.device
    meth = resolve_method(lattice.D, method, dev)
    M = lattice.M.to(dev)
    if W.shape[0] == 0:
        return SearchResult(torch.zeros(0, lattice.D, dtype=torch.bool, device=dev), W.new_zeros(0), meth)
    if meth == "exact" and lattice.D > 26:
        raise ConfigError(f"exact search over 2^{lattice.D} codewords is not affordable")
    if backend not in ("auto", "native", "torch", "triton"):
        raise ConfigError(f"search backend {backend!r}: expected auto, native, triton or torch")
    lib = None
    if backend == "native" or (backend == "auto" and dev.type == "cpu"):
        from ..kernels import native

        lib = native.load(required=(backend == "native"))
    if meth == "exact":
        codes, dist = native.exact_search(lib, lattice, W) if lib is not None else _exact_torch(M, W)
    elif lib is not None:
        codes, dist = native.nullspace_search(lib, lattice, W)
    elif backend == "triton" or (backend == "auto" and dev.type == "cuda"):
        from ..kernels.triton.lift_search import nullspace_search_triton

        codes = nullspace_search_triton(lattice, W)
        dist = distances(M, W, codes)
    else:
        codes, dist = _nullspace_torch(M, lattice.A.to(dev), W)
    if do_polish:
        codes, dist = polish(M, W, codes)
        meth += "+polish"
    return SearchResult(codes, dist, meth)
