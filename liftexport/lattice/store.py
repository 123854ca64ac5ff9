"""Lattice files: a mapping matrix M (and the null-space basis N its search uses) in safetensors.

Layout (documented in spec/lattice.md): tensors ``M`` float32 [d, D] and ``N`` float32 [D-d, D];
string metadata ``format=liftquant-lattice``, ``version``, ``D``, ``d`` and training provenance.
Loaded with safetensors only (no pickle); every field is validated.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import LatticeError
from .config import LatticeConfig

FORMAT_NAME = "liftquant-lattice"
FORMAT_VERSION = 1


def null_space_basis(M: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the null space of M (d x D, full row rank), from its SVD."""
    d, D = M.shape
    _, S, Vh = torch.linalg.svd(M.double(), full_matrices=True)
    if S.min() <= 1e-9 * S.max():
        raise LatticeError(f"mapping matrix {d}x{D} is rank deficient")
    return Vh[d:].to(torch.float32).contiguous()


@dataclass
class Lattice:
    """A trained LiftQuant codebook: codewords M q for q in {+-1}^D."""

    config: LatticeConfig
    M: torch.Tensor  # float32 [d, D]
    N: torch.Tensor  # float32 [D-d, D]
    meta: dict = field(default_factory=dict)

    @property
    def D(self) -> int:
        return self.config.D

    @property
    def d(self) -> int:
        return self.config.d

    @property
    def bits(self) -> float:
        return self.config.bits

    @property
    def mse(self) -> float | None:
        v = self.meta.get("mse")
        return float(v) if v is not None else None

    @cached_property
    def A(self) -> torch.Tensor:
        """[M; N]^-1 (float32 [D, D]), the map from (w, z) to the pre-sign lifted vector."""
        return torch.linalg.inv(torch.cat([self.M, self.N]).double()).to(torch.float32).contiguous()

    @classmethod
    def from_M(cls, M: torch.Tensor, meta: dict | None = None) -> "Lattice":
        M = M.detach().to(torch.float32).cpu().contiguous()
        d, D = M.shape
        return cls(LatticeConfig(D, d), M, null_space_basis(M), dict(meta or {}))

    # ------------------------------------------------------------------ io

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in self.meta.items()}
        meta.update(format=FORMAT_NAME, version=str(FORMAT_VERSION), D=str(self.D), d=str(self.d))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"M": self.M.contiguous(), "N": self.N.contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lattice":
        path = Path(path)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(path))
        except FileNotFoundError:
            raise LatticeError(f"{path}: no such lattice file") from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise LatticeError(f"{path}: not a readable safetensors lattice file ({e})") from None
        if meta.get("format") != FORMAT_NAME:
            raise LatticeError(f"{path}: metadata format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        try:
            version = int(meta.get("version", ""))
            D, d = int(meta["D"]), int(meta["d"])
        except (KeyError, ValueError):
            raise LatticeError(f"{path}: metadata lacks integer version/D/d") from None
        if version != FORMAT_VERSION:
            raise LatticeError(f"{path}: lattice format version {version}, this reader supports {FORMAT_VERSION}")
        try:
            config = LatticeConfig(D, d)
        except Exception as e:
            raise LatticeError(f"{path}: {e}") from None
        M, N = tensors.get("M"), tensors.get("N")
        if M is None or N is None:
            raise LatticeError(f"{path}: tensors M and N are required, found {sorted(tensors)}")
        if tuple(M.shape) != (d, D) or tuple(N.shape) != (D - d, D):
            raise LatticeError(
                f"{path}: M {tuple(M.shape)} / N {tuple(N.shape)} do not match D={D}, d={d}"
            )
        if M.dtype != torch.float32 or N.dtype != torch.float32:
            raise LatticeError(f"{path}: M and N must be float32, got {M.dtype}, {N.dtype}")
        if not (torch.isfinite(M).all() and torch.isfinite(N).all()):
            raise LatticeError(f"{path}: M or N holds non-finite values")
        if (M.double() @ N.double().T).abs().max() > 1e-4 * max(1.0, float(M.abs().max())):
            raise LatticeError(f"{path}: N does not span the null space of M")
        if torch.linalg.matrix_rank(torch.cat([M, N]).double()) < D:
            raise LatticeError(f"{path}: [M; N] is singular")
        extra = {k: v for k, v in meta.items() if k not in ("format", "version", "D", "d")}
        for k, v in list(extra.items()):
            try:
                extra[k] = json.loads(v)
            except ValueError:
                pass
        return cls(config, M.contiguous(), N.contiguous(), extra)
