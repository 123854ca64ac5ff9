"""Training of the mapping matrix M on a standard Gaussian source (method doc section 2).

    M* = argmin_M E_w min_q ||w - M q||^2,  w ~ N(0, I_d),  q in {+-1}^D

1. Adam on a soft-min surrogate: for each sample the nearest codeword q* is found with the
   search the lattice will be used with, and the loss is -(1/tau) logsumexp(-tau ||w - M q||^2)
   over q* and its D single-bit-flip neighbours (the codewords that compete with it).
   Learning rate ``lr`` with cosine decay to 0.
2. Lloyd refinement: alternate the search (assignment) with the closed-form least-squares
   update M = (W^T Q)(Q^T Q)^-1 on a larger sample; keep the step only if held-out MSE drops.
3. Several seeded restarts; the best by held-out MSE wins.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from .config import LatticeConfig
from .search import nearest, nullspace_topk, resolve_method, signs
from .store import Lattice


@dataclass
class TrainOptions:
    steps: int = 2000
    batch: int = 512
    lr: float = 0.02
    tau: float = 10.0
    restarts: int = 3
    lloyd_iters: int = 12
    lloyd_samples: int = 1 << 16
    heldout: int = 1 << 15
    seed: int = 0
    search: str = "auto"
    device: str = "cpu"
    topk: int = 0  # >0: soft-min over the k closest null-space candidates instead of q* and its flips


def _orthonormal_rows(d: int, D: int, gen: torch.Generator) -> torch.Tensor:
    G = torch.randn(D, d, generator=gen, dtype=torch.float64)
    Qm, R = torch.linalg.qr(G)
    Qm = Qm * torch.sign(torch.diagonal(R))[None, :]
    return Qm.T.contiguous().to(torch.float32)  # [d, D], rows orthonormal


def heldout_mse(lat: Lattice, W: torch.Tensor, search: str = "auto") -> float:
    r = nearest(lat, W, method=search)
    return float(r.dist.double().mean()) / lat.d


def _softmin_loss(M: torch.Tensor, W: torch.Tensor, codes: torch.Tensor, tau: float) -> torch.Tensor:
    if codes.ndim == 3:  # given candidate set [b, k, D]
        cand = signs(codes, W.dtype)
    else:  # q* and its D one-bit flips -> [b, D+1, D]
        q = signs(codes, W.dtype)
        D = q.shape[1]
        flips = q[:, None, :].repeat(1, D, 1)
        idx = torch.arange(D, device=W.device)
        flips[:, idx, idx] *= -1
        cand = torch.cat([q[:, None, :], flips], 1)
    dist = ((W[:, None, :] - cand @ M.T) ** 2).sum(-1)
    return (-torch.logsumexp(-tau * dist, dim=1) / tau).mean()


def _lloyd(lat: Lattice, W: torch.Tensor, Wh: torch.Tensor, iters: int, search: str, best: float):
    for _ in range(iters):
        codes = nearest(lat, W, method=search).codes
        Q = signs(codes, torch.float64).cpu()
        Wd = W.double().cpu()
        M_new = torch.linalg.solve(Q.T @ Q, Q.T @ Wd).T  # [d, D]
        cand = Lattice.from_M(M_new.float(), lat.meta)
        mse = heldout_mse(cand, Wh, search)
        if mse >= best - 1e-6:
            break
        lat, best = cand, mse
    return lat, best


def train_lattice(config: LatticeConfig, opts: TrainOptions | None = None, progress: bool = True) -> Lattice:
    """Train M for ``config``; returns the best restart (held-out MSE in ``meta['mse']``)."""
    opts = opts or TrainOptions()
    dev = torch.device(opts.device)
    d, D = config.d, config.D
    gen = torch.Generator().manual_seed(opts.seed)
    Wh = torch.randn(opts.heldout, d, generator=gen).to(dev)
    best_lat, best_mse = None, math.inf
    t0 = time.time()
    for r in range(opts.restarts):
        M = _orthonormal_rows(d, D, gen).to(dev).requires_grad_(True)
        opt = torch.optim.Adam([M], lr=opts.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, opts.steps))
        bar = tqdm(range(opts.steps), desc=f"{config} restart {r + 1}/{opts.restarts}", disable=not progress,
                   leave=False)
        for _ in bar:
            W = torch.randn(opts.batch, d, generator=gen).to(dev)
            with torch.no_grad():
                lat = Lattice.from_M(M.detach())
                if opts.topk > 0 and resolve_method(D, opts.search, dev) == "nullspace":
                    codes = nullspace_topk(lat.M.to(dev), lat.A.to(dev), W, opts.topk)
                else:
                    codes = nearest(lat, W, method=opts.search, do_polish=False).codes
            loss = _softmin_loss(M, W, codes, opts.tau)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        lat = Lattice.from_M(M.detach())
        mse = heldout_mse(lat, Wh, opts.search)
        Wl = torch.randn(opts.lloyd_samples, d, generator=gen).to(dev)
        lat, mse = _lloyd(lat, Wl, Wh, opts.lloyd_iters, opts.search, mse)
        if progress:
            tqdm.write(f"{config}: restart {r + 1} held-out MSE {mse:.5f}")
        if mse < best_mse:
            best_lat, best_mse = lat, mse
    assert best_lat is not None
    best_lat.meta = {
        "mse": round(best_mse, 6),
        "mse_samples": opts.heldout,
        "search": nearest(best_lat, Wh[:8], method=opts.search).method,
        "trainer": "softmin-adam+lloyd",
        "train_options": asdict(opts),
        "train_seconds": round(time.time() - t0, 1),
    }
    return best_lat
