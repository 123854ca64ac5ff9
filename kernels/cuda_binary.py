"""ctypes bindings for the CUDA decode kernels of kernels/cuda/binary_gemv.cu: the fused transform +
bit planes (``lift_planes``), the planes of a given activation (``planes``) and the binary-tensor-core
GEMV (``gemv``), with their torch specification (``planes_reference``, ``gemv_reference``).

The library (libliftquant_cuda.so, built by install.sh when nvcc is present) is looked up in
$LIFTEXPORT_CUDA_LIB (a file), then build/cuda/ of the source tree. ``available(device)`` says whether
the route can run there (the library loads and the GPU is sm_80 or newer); the runtime falls back to
the Triton kernels otherwise.

Math (exact but for rounding the lifted activation to 16-bit integers with one scale per 256 values):
``planes`` writes, per k-step s of 256 lifted values, zq = round(u / zs_s) as 16 bit planes
(zs_s = max|u over the step| / (2^15 - 1)); ``gemv`` gives
y = scale * sum_s zs_s * (2 * sum_k zq[k] bit[k] - sum_k zq[k]) + bias (+ residual) = scale * (u . q) + bias.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from ..errors import LiftExportError

LIB_NAME = "libliftquant_cuda.so"
PLANES = 16
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_lib = None
_tried = False


def candidate_paths() -> list[Path]:
    out = []
    env = os.environ.get("LIFTEXPORT_CUDA_LIB")
    if env:
        out.append(Path(env))
    out.append(Path(__file__).resolve().parent.parent / "build" / "cuda" / LIB_NAME)
    return out


def load():
    """The loaded library, or None when it was not built."""
    global _lib, _tried
    if _lib is not None or _tried:
        return _lib
    _tried = True
    for p in candidate_paths():
        if p.is_file():
            lib = ctypes.CDLL(str(p))
            P, I, L = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
            lib.lq_binary_planes.restype = I
            lib.lq_binary_planes.argtypes = [P, I, I, I, L, P, I, P]
            lib.lq_lift_planes.restype = I
            lib.lq_lift_planes.argtypes = [P, I, I, L, I, I, P, I, ctypes.c_float, P, P, P, I, I, I, P, I, I, I, P]
            lib.lq_lift_planes_fits.restype = I
            lib.lq_lift_planes_fits.argtypes = [I, I, I, I]
            lib.lq_lift_planes_kernel.restype = I
            lib.lq_lift_planes_kernel.argtypes = [I, I, I, I]
            lib.lq_lift_mappings.restype = I
            lib.lq_lift_mappings.argtypes = [I, I, I]
            lib.lq_smem_carveout.restype = I
            lib.lq_smem_carveout.argtypes = []
            lib.lq_gemv_tma_plan.restype = I
            lib.lq_gemv_tma_plan.argtypes = [I, I, P]
            lib.lq_binary_gemv.restype = I
            lib.lq_binary_gemv.argtypes = [P, I, I, P, I, P, P, P, L, P, L, I, I, I, P]
            _lib = lib
            return lib
    return None


def available(device) -> bool:
    device = torch.device(device)
    if device.type != "cuda" or load() is None:
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def steps(K: int) -> int:
    """k-steps (256 lifted values each) of K lifted values."""
    return -(-K // 256)


def workspace(M: int, K: int, device) -> torch.Tensor:
    """The planes buffer of M tokens of K lifted values: int32 [M, steps, 33, 4] (per k-step 32 lanes' plane
    words, then the step's scale and scaled sum; ``planes_reference``)."""
    return torch.empty(M, steps(K), 33, 4, dtype=torch.int32, device=device)


def _check(rc: int, what: str):
    if rc != 0:
        raise LiftExportError(f"{what}: {'bad arguments' if rc < 0 else 'CUDA error'} (code {rc})")


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def planes(u: torch.Tensor, K: int, zf: torch.Tensor):
    """Bit planes of u [M, >= K] (float32/16 or bf16, unit column stride) into zf = workspace(M, K)."""
    M = u.shape[0]
    if (u.dim() != 2 or u.shape[1] < K or u.stride(1) != 1 or u.dtype not in _DTYPES or not u.is_cuda
            or zf.shape != (M, steps(K), 33, 4) or zf.dtype != torch.int32 or not zf.is_contiguous()
            or zf.device != u.device):
        raise LiftExportError("binary planes: bad shapes, dtypes or devices")
    _check(load().lq_binary_planes(u.data_ptr(), _DTYPES[u.dtype], M, K, u.stride(0), zf.data_ptr(), zf.shape[1],
                                   _stream(u)), "binary planes")


def lift_planes(x: torch.Tensor, in_features: int, inv_s1: torch.Tensor, L: torch.Tensor, R: torch.Tensor,
                zf: torch.Tensor, rms: tuple[torch.Tensor, float] | None = None, glu: bool = False, spc: int = 1,
                static_weights: bool = False):
    """The lifted transform of x and its planes in one launch (the decode route's first kernel).

    u = L @ (prologue(x) * inv_s1 as n1 x n2) @ R, as kernels/triton/lift_linear.transform, quantized into
    zf = workspace(M, n1 * C). rms=(weight [in_features] (float32, float16 or bfloat16), eps): RMSNorm
    first; glu: x is [gate | up] and the input is SiLU(gate) * up. spc: k-steps per block; the input
    must fit (``lift_fits``). static_weights: the caller guarantees that no work queued before on the
    stream writes inv_s1, L or R (true of a model's weights), so the kernel may read them before it
    waits for the previous kernel (programmatic dependent launch)."""
    n1, n2, C = L.shape[0], R.shape[0], R.shape[1]
    M = x.shape[0]
    K = n1 * C
    width = 2 * in_features if glu else in_features
    if (x.dim() != 2 or x.shape[1] != width or x.stride(1) != 1 or x.dtype not in _DTYPES or not x.is_cuda
            or (rms is not None and glu) or L.shape != (n1, n1) or inv_s1.shape != (n1 * n2,)
            or n1 * n2 < in_features
            or any(t.dtype != torch.float32 or not t.is_contiguous() or t.device != x.device for t in (L, R, inv_s1))
            or (rms is not None and (rms[0].shape != (in_features,) or rms[0].dtype not in _DTYPES
                                     or not rms[0].is_contiguous() or rms[0].device != x.device))
            or zf.shape != (M, steps(K), 33, 4) or zf.dtype != torch.int32 or not zf.is_contiguous()
            or zf.device != x.device):
        raise LiftExportError("lift planes: bad shapes, dtypes or devices")
    rc = load().lq_lift_planes(x.data_ptr(), _DTYPES[x.dtype], M, x.stride(0), in_features,
                               1 if rms is not None else (2 if glu else 0),
                               rms[0].data_ptr() if rms is not None else None,
                               _DTYPES[rms[0].dtype] if rms is not None else 0, float(rms[1]) if rms is not None else 0.0,
                               inv_s1.data_ptr(), L.data_ptr(), R.data_ptr(), n1, n2, C, zf.data_ptr(), zf.shape[1],
                               spc, int(bool(static_weights)), _stream(x))
    if rc == -3:
        raise LiftExportError(f"lift planes: an input of {n1 * n2} values does not fit one block's shared memory")
    _check(rc, "lift planes")


def lift_fits(n1: int, n2: int, C: int, spc: int, device) -> bool:
    """Whether lift_planes takes an n1 x n2 input with C lifted columns per row on ``device`` (its input
    and rows must fit one block's shared memory); the library's own rule."""
    with torch.cuda.device(device):
        rc = load().lq_lift_planes_fits(n1, n2, C, spc)
    _check(min(rc, 0), "lift planes fits")
    return rc == 1


def lift_kernel(n1: int, n2: int, C: int, spc: int, device) -> str | None:
    """Which kernel lift_planes runs now for an n1 x n2 input with C lifted columns per row on ``device``:
    "tiled" (registers; unless LIFTEXPORT_LIFT_TILED=0), "general", or None where neither fits."""
    with torch.cuda.device(device):
        rc = load().lq_lift_planes_kernel(n1, n2, C, spc)
    if rc < -3 or rc == -1:
        raise LiftExportError(f"lift planes kernel: {'bad arguments' if rc == -1 else 'CUDA error'} (code {rc})")
    return {1: "tiled", 0: "general"}.get(rc)


def lift_mappings(n1: int, n2: int, C: int) -> tuple[int, int]:
    """How lift_planes splits each output's sum over G lanes for an n1 x n2 input with C lifted columns per
    row: (W = L X, W R) masks, bit log2(G) set where each lane takes a run of ceil(n / G) consecutive
    terms ("blocked") because that needs fewer shared-memory wavefronts per warp than every G-th term (the
    library's host-side rule; no GPU needed)."""
    rc = load().lq_lift_mappings(n1, n2, C)
    _check(min(rc, 0), "lift mappings")
    return (rc >> 2) & 63, (rc >> 8) & 63


def smem_carveout() -> int:
    """The preferred shared-memory carveout (percent of the largest; -1: the driver's choice) that one-token
    launches of the TMA GEMV and the tiled lift ask for: LIFTEXPORT_SMEM_CARVEOUT as the process first read it
    (an integer in [-1, 100]; anything else gives the default), else 100 (host only; no GPU needed)."""
    return load().lq_smem_carveout()


GEMV_KERNELS = {"auto": 0, "plain": 2, "tma": 4}


def tma_plan(N: int, K: int, device) -> dict:
    """How a one-token GEMV of N rows over K lifted values would run on ``device``'s TMA kernel (sm_90+;
    whether it does is the library's choice, LIFTEXPORT_GEMV_TMA): ``span`` tiles of 32 rows per box,
    ``blocks``, ``stages`` of its shared-memory ring (0: it cannot run) and ``prefetch``, the boxes beyond the
    ring it requests into L2 (the long-run rule). The library's own host-side rule."""
    if N < 1 or K < 1:
        raise LiftExportError(f"binary gemv plan: N = {N}, K = {K}: both must be positive")
    out = (ctypes.c_int * 4)()
    with torch.cuda.device(device):
        rc = load().lq_gemv_tma_plan(N, steps(K), ctypes.cast(out, ctypes.c_void_p))
    _check(rc, "binary gemv plan")
    return dict(zip(("span", "blocks", "stages", "prefetch"), out))


def gemv(words: torch.Tensor, zf: torch.Tensor, scales: torch.Tensor, bias, y: torch.Tensor,
         residual: torch.Tensor | None = None, static_weights: bool = False, kernel: str = "auto"):
    """y [M, N] = scales * (u . q) + bias (+ residual) from the K-major code words [KW, N] (N % 4 == 0)
    and the planes of u in zf. static_weights: the caller guarantees that no work queued before on the
    stream writes the code words, scales or bias, so the kernel may start reading them before the previous
    kernel ends.
    kernel (one token): "plain" the register-load GEMV, "tma" the one fed by the tensor memory accelerator
    (sm_90+; elsewhere plain), "auto" the library's choice (on sm_90+ the TMA one unless LIFTEXPORT_GEMV_TMA
    says otherwise)."""
    if kernel not in GEMV_KERNELS:
        raise LiftExportError(f"binary gemv: kernel {kernel!r}: expected one of {', '.join(GEMV_KERNELS)}")
    KW, N = words.shape
    M = y.shape[0]
    if (words.dtype != torch.int32 or not words.is_contiguous() or words.data_ptr() % 16 or N % 4
            or zf.dim() != 4 or zf.shape[0] != M or zf.shape[2:] != (33, 4) or 8 * zf.shape[1] < KW
            or not zf.is_contiguous() or y.dim() != 2 or y.shape[1] != N or y.stride(1) != 1
            or y.dtype not in _DTYPES or scales.shape != (N,) or scales.dtype != torch.float32
            or (bias is not None and (bias.shape != (N,) or bias.dtype != torch.float32))
            or (residual is not None and (residual.shape != (M, N) or residual.dtype != y.dtype
                                          or residual.stride(1) != 1))
            or any(t.device != y.device for t in (words, zf, scales) if t is not None)):
        raise LiftExportError("binary gemv: bad shapes, dtypes or devices")
    _check(load().lq_binary_gemv(words.data_ptr(), KW, N, zf.data_ptr(), zf.shape[1], scales.data_ptr(),
                                 bias.data_ptr() if bias is not None else None,
                                 residual.data_ptr() if residual is not None else None,
                                 residual.stride(0) if residual is not None else 0, y.data_ptr(), y.stride(0), M,
                                 _DTYPES[y.dtype], int(bool(static_weights)) | GEMV_KERNELS[kernel], _stream(y)),
           "binary gemv")


QMAX = 2 ** (PLANES - 1) - 1


def planes_reference(u: torch.Tensor, K: int) -> torch.Tensor:
    """What ``planes`` writes, in torch (any device): the bit-exact specification of the planes buffer.

    Per k-step s (values 256 s .. 256 s + 255, zero past K): zs = max|v| / QMAX, zq = round-half-even(v *
    (QMAX / max|v|)) in float32; word c of plane p holds bit p (two's complement) of zq[32 c + l] at bit l;
    row l = 4 g + t (the MMA lane l's B fragment), slots 2 j -> word t of plane 8 j + g, 2 j + 1 -> word 4 + t
    of plane 8 j + g (j = 0, 1); row 32: zs, zs * sum(zq) (float32 bits), 0, 0 (one 8-byte read for a
    whole warp; the step is 528 bytes, every byte of it used)."""
    M, S = u.shape[0], steps(K)
    v = torch.zeros(M, S * 256, dtype=torch.float32, device=u.device)
    v[:, :K] = u[:, :K].float()
    v = v.view(M, S, 256)
    amax = v.abs().amax(-1)
    # float32 quotients and products, correctly rounded (computed exactly enough in float64, then rounded
    # once: torch's own float32 division on CUDA is not always the IEEE quotient)
    inv = torch.where(amax > 0, (QMAX / torch.where(amax > 0, amax, 1.0).double()).float(), torch.zeros_like(amax))
    q = torch.round((v.double() * inv.double()[..., None]).float()).clamp(-QMAX, QMAX).to(torch.int64)
    bits = (q[..., None] >> torch.arange(PLANES, device=u.device)) & 1  # [M, S, 256, P]
    bits = bits.view(M, S, 8, 32, PLANES)
    words = (bits << torch.arange(32, device=u.device)[:, None]).sum(3)  # [M, S, 8 words, P planes]
    words = ((words + 2 ** 31) % 2 ** 32 - 2 ** 31).to(torch.int32)
    frag = torch.zeros(M, S, 33, 4, dtype=torch.int32, device=u.device)
    lane = torch.arange(32, device=u.device)
    g, t = lane // 4, lane % 4
    for j in range(2):
        frag[:, :, lane, 2 * j] = words[:, :, t, 8 * j + g]
        frag[:, :, lane, 2 * j + 1] = words[:, :, 4 + t, 8 * j + g]
    zs = (amax.double() / QMAX).float()
    frag[:, :, 32, 0] = zs.view(torch.int32)
    frag[:, :, 32, 1] = (zs.double() * q.sum(-1).double()).float().view(torch.int32)
    return frag


def gemv_reference(words: torch.Tensor, zf: torch.Tensor, K: int, scales: torch.Tensor, bias=None) -> torch.Tensor:
    """float64 y [M, N] from the K-major code words [KW, N] and a planes buffer, by decoding the planes
    back to (zs, zq) per k-step: y = scales * sum_k zs zq[k] (2 bit[k] - 1) + bias."""
    M, S = zf.shape[:2]
    lane = torch.arange(32, device=zf.device)
    g, t = lane // 4, lane % 4
    words_sp = torch.zeros(M, S, 8, PLANES, dtype=torch.int64, device=zf.device)
    for j in range(2):
        words_sp[:, :, t, 8 * j + g] = zf[:, :, lane, 2 * j].long() & 0xFFFFFFFF
        words_sp[:, :, 4 + t, 8 * j + g] = zf[:, :, lane, 2 * j + 1].long() & 0xFFFFFFFF
    bits = (words_sp[:, :, :, None, :] >> torch.arange(32, device=zf.device)[:, None]) & 1  # [M, S, 8, 32, P]
    w = 2.0 ** torch.arange(PLANES, dtype=torch.float64, device=zf.device)
    w[-1] = -w[-1]
    zq = (bits.double() * w).sum(-1).reshape(M, S * 256)
    zs = zf[:, :, 32, 0].contiguous().view(torch.float32).double()
    uq = (zq.view(M, S, 256) * zs[..., None]).reshape(M, S * 256)[:, :K]
    from .triton.lift_linear import kmajor_bits  # Triton only for this reference

    q = kmajor_bits(words, K).double() * 2 - 1  # [K, N]
    y = (uq @ q) * scales.double()
    return y if bias is None else y + bias.double()
