"""Null-space nearest-point search as a Triton kernel (GPU; CPU via TRITON_INTERPRET=1).

Program (i, j) takes BS chunks and a tile of BZ paddings z. The tile's offsets O = Z A_z^T
[BZ, DP] stay in registers while the program walks its chunks: for each, V = O + A_w w,
Q = sign(V) (exact in fp16), P = Q M^T on the tensor cores (M split into two fp16 halves so the
product keeps ~16 mantissa bits), distance ||w - P||^2, and the tile's best (distance, z) is
written out. A torch argmin over tiles finishes the search.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _nullspace_tile_kernel(
    W_ptr, BASE_ptr, O_ptr, MHI_ptr, MLO_ptr, OUTD_ptr, OUTI_ptr,
    n, NZB,
    DP: tl.constexpr, dP: tl.constexpr, BS: tl.constexpr, BZ: tl.constexpr,
):
    pid_s = tl.program_id(0)
    pid_z = tl.program_id(1)
    zs = pid_z * BZ + tl.arange(0, BZ)
    kd = tl.arange(0, DP)
    di = tl.arange(0, dP)
    O = tl.load(O_ptr + zs[:, None] * DP + kd[None, :])
    mhi = tl.load(MHI_ptr + kd[:, None] * dP + di[None, :])
    mlo = tl.load(MLO_ptr + kd[:, None] * dP + di[None, :])
    for s in range(BS):
        row = pid_s * BS + s
        ok = row < n
        rc = tl.minimum(row, n - 1)  # rows past n recompute the last one; their stores are masked
        base = tl.load(BASE_ptr + rc * DP + kd)
        w = tl.load(W_ptr + rc * dP + di)
        V = O + base[None, :]
        Q = tl.where(V >= 0, 1.0, -1.0).to(tl.float16)
        P = tl.dot(Q, mhi) + tl.dot(Q, mlo)
        E = w[None, :] - P
        dist = tl.sum(E * E, axis=1)
        best = tl.min(dist, axis=0)
        arg = tl.argmin(dist, axis=0)
        tl.store(OUTD_ptr + row * NZB + pid_z, best, mask=ok)
        tl.store(OUTI_ptr + row * NZB + pid_z, pid_z * BZ + arg, mask=ok)


def _pow2(x: int, lo: int = 16) -> int:
    p = lo
    while p < x:
        p *= 2
    return p


class NullspacePlan:
    """Per-lattice, per-device tables for the Triton search (cached on the lattice)."""

    def __init__(self, lattice, device):
        d, D, m = lattice.d, lattice.D, lattice.D - lattice.d
        self.d, self.D, self.m = d, D, m
        self.DP, self.dP = _pow2(D), _pow2(d)
        self.BZ = min(128, 1 << m) if (1 << m) >= 16 else 16
        A = lattice.A.to(device)
        self.Aw = A[:, :d].contiguous()
        Az = A[:, d:]
        nz = max(1 << m, self.BZ)
        idx = torch.arange(nz, device=device, dtype=torch.int64) % (1 << m)
        Z = ((idx[:, None] >> torch.arange(m, device=device)) & 1).float() * 2 - 1
        O = torch.ones(nz, self.DP, device=device)  # padded lanes: +1 (their Q rows hit zero M rows)
        O[:, :D] = Z @ Az.T
        self.O = O.contiguous()
        MT = torch.zeros(self.DP, self.dP, device=device)
        MT[:D, :d] = lattice.M.to(device).T
        self.mhi = MT.to(torch.float16).contiguous()
        self.mlo = (MT - self.mhi.float()).to(torch.float16).contiguous()
        self.nz = nz


def nullspace_search_triton(lattice, W: torch.Tensor, block_s: int = 32, chunk: int = 1 << 16):
    """Returns (bool codes [n, D], dist [n]) for chunks W [n, d] on W's device."""
    key = ("triton_plan", str(W.device))
    plan = lattice.__dict__.get(key)
    if plan is None:
        plan = NullspacePlan(lattice, W.device)
        lattice.__dict__[key] = plan
    n = W.shape[0]
    codes = torch.empty(n, lattice.D, dtype=torch.bool, device=W.device)
    NZB = plan.nz // plan.BZ
    for s0 in range(0, n, chunk):
        Ws = W[s0 : s0 + chunk]
        ns = Ws.shape[0]
        base = torch.ones(ns, plan.DP, device=W.device)
        base[:, : plan.D] = Ws @ plan.Aw.T
        base = base.contiguous()
        Wp = torch.zeros(ns, plan.dP, device=W.device)
        Wp[:, : plan.d] = Ws
        outd = torch.empty(ns, NZB, device=W.device)
        outi = torch.empty(ns, NZB, device=W.device, dtype=torch.int32)
        grid = (triton.cdiv(ns, block_s), NZB)
        _nullspace_tile_kernel[grid](Wp, base, plan.O, plan.mhi, plan.mlo, outd, outi, ns, NZB,
                                     DP=plan.DP, dP=plan.dP, BS=block_s, BZ=plan.BZ)
        j = outd.argmin(1)
        zi = outi.gather(1, j[:, None])[:, 0].long()
        codes[s0 : s0 + ns] = ((base + plan.O[zi])[:, : plan.D]) >= 0
    return codes
