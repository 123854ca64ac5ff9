"""ctypes bindings for the native CPU kernels (kernels/cpu, built by install.sh with CMake).

The library is looked up in $LIFTEXPORT_NATIVE_DIR, then build/cpu/ of the source tree.
When it is missing the callers fall back to torch code (slower, same results up to ties).
"""

from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import LiftExportError

LIB_NAME = "liblqsearch.so"
_lib = None
_tried = False


def candidate_paths() -> list[Path]:
    out = []
    env = os.environ.get("LIFTEXPORT_NATIVE_DIR")
    if env:
        out.append(Path(env) / LIB_NAME)
    root = Path(__file__).resolve().parent.parent
    out.append(root / "build" / "cpu" / LIB_NAME)
    out.append(Path(__file__).resolve().parent / "cpu" / LIB_NAME)
    return out


def load(required: bool = False):
    """The loaded library, or None (with one warning) if it was not built."""
    global _lib, _tried
    if _lib is not None or (_tried and not required):
        return _lib
    _tried = True
    for p in candidate_paths():
        if p.is_file():
            lib = ctypes.CDLL(str(p))
            lib.lq_nullspace_search.restype = ctypes.c_int
            lib.lq_nullspace_search.argtypes = [
                ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
            ]
            lib.lq_exact_search.restype = ctypes.c_int
            lib.lq_exact_search.argtypes = [
                ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
            ]
            lib.lq_search_isa.restype = ctypes.c_int
            _lib = lib
            return lib
    msg = f"native search library {LIB_NAME} not found (run ./install.sh); using the slower torch search"
    if required:
        raise LiftExportError(msg)
    warnings.warn(msg, stacklevel=3)
    return None


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _finish(rc: int, codes: np.ndarray, dist: np.ndarray, D: int, device):
    if rc != 0:
        raise LiftExportError(f"native search rejected its arguments (code {rc})")
    masks = torch.from_numpy(codes)
    bits = ((masks[:, None] >> torch.arange(D, dtype=torch.int64)) & 1).bool()
    return bits.to(device), torch.from_numpy(dist).to(device)


def nullspace_search(lib, lattice, W: torch.Tensor, threads: int | None = None, force_generic: bool = False):
    """Gray-code null-space search on CPU. Returns (bool codes [n, D], dist [n])."""
    Wn, A, M = _f32(W), _f32(lattice.A), _f32(lattice.M)
    n = Wn.shape[0]
    codes, dist = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32)
    rc = lib.lq_nullspace_search(
        Wn.ctypes.data, n, lattice.d, lattice.D, A.ctypes.data, M.ctypes.data,
        codes.ctypes.data, dist.ctypes.data, int(threads or torch.get_num_threads()), int(force_generic),
    )
    return _finish(rc, codes, dist, lattice.D, W.device)


def exact_search(lib, lattice, W: torch.Tensor, threads: int | None = None, force_generic: bool = False):
    """Exact enumeration of all 2^D codewords on CPU (meet in the middle over two halves of q)."""
    Wn, M = _f32(W), _f32(lattice.M)
    n = Wn.shape[0]
    codes, dist = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32)
    rc = lib.lq_exact_search(
        Wn.ctypes.data, n, lattice.d, lattice.D, M.ctypes.data,
        codes.ctypes.data, dist.ctypes.data, int(threads or torch.get_num_threads()), int(force_generic),
    )
    return _finish(rc, codes, dist, lattice.D, W.device)
