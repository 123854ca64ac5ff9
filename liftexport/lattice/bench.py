"""Coding efficiency and search throughput of lattices on N(0, 1) samples (`liftexport lattice bench`)."""

from __future__ import annotations

import math
import time

import torch

from .config import LatticeConfig
from .menu import load_shipped
from .search import nearest


def bench_config(config: LatticeConfig, samples: int = 100_000, seed: int = 0, device: str = "cpu",
                 method: str = "auto", polish: bool = True, lattice=None) -> dict:
    """MSE per dimension and search throughput of one lattice on ``samples`` N(0, I_d) vectors."""
    lat = lattice if lattice is not None else load_shipped(config)
    gen = torch.Generator().manual_seed(seed)
    n_chunks = max(1, samples)
    W = torch.randn(n_chunks, config.d, generator=gen).to(device)
    nearest(lat, W[: min(256, n_chunks)], method=method, do_polish=polish)  # warm-up (JIT, caches)
    if W.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = nearest(lat, W, method=method, do_polish=polish)
    if W.is_cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    mse = float(res.dist.double().sum()) / (n_chunks * config.d)
    return {
        "config": config.name, "D": config.D, "d": config.d, "bits": round(config.bits, 4),
        "samples": n_chunks, "weights": n_chunks * config.d, "mse": round(mse, 6), "info_bits": round(0.5 * math.log2(1 / mse), 4),
        "shannon_mse": round(2 ** (-2 * config.bits), 6), "search": res.method,
        "candidates_per_chunk": (1 << config.D) if res.method.startswith("exact") else (1 << config.pad),
        "seconds": round(dt, 4), "params_per_s": round(n_chunks * config.d / dt, 1),
        "device": torch.cuda.get_device_name(W.device) if W.is_cuda else f"cpu x{torch.get_num_threads()}",
    }
