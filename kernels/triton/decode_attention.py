"""Triton kernel of a decode step's attention block (one new token per sequence; GPU, or CPU via
TRITON_INTERPRET=1).

``decode_attention`` does in one launch what the engine otherwise does in a dozen torch kernels: the
rotary embedding (HF ``rotate_half`` convention, cos/sin rows of the token's position) of q and k, the
write of k and v into the static KV cache at that position, and softmax(q k^T / sqrt(hd)) v over the
cached keys 0 .. pos (online softmax in float32; the keys split over up to MAX_SPLITS programs per head,
flash-decoding style; the last program of a head to finish, found with an atomic counter, combines
their states; each program's keys and values loaded a block ahead, the first block before the rotary
embedding), stored as [batch, heads * hd]. The position is read from a device tensor, so a CUDA graph
captured once serves every step. Grouped-query attention: program (b, h) reads kv head h // (H / KVH);
the first query head of each group writes the cache, and every program takes the new key and value from
registers, not from the cache. On sm_90 the kernel takes part in programmatic dependent launch like the
CUDA kernels (kernels/cuda/binary_gemv.cu): it lets the next kernel launch at once and, before the previous
kernel is complete, reads only what no kernel of the same decode step writes (EARLY: the position, the
cos/sin rows and its first block of cached keys and values below the position). For one sequence it asks for
the largest shared-memory carveout, as the CUDA library's one-token kernels do (LIFTEXPORT_SMEM_CARVEOUT).
"""

from __future__ import annotations

import ctypes
import functools
import os

import torch
import triton
import triton.language as tl

BLOCK_N = 64  # cached keys per iteration
MAX_SPLITS = 16  # programs per (sequence, head) splitting the keys (flash-decoding)
#: keys and values of a block loaded one block ahead, the first block's before the rotary embedding (so a
#: program's memory round trips overlap; 7B decode step at 3.0 bits +2%, 2.4 unchanged, H100,
#: bench/results/attn_pipe/); LIFTEXPORT_ATTN_PIPE=0: each block loaded at the top of its iteration
PIPE = os.environ.get("LIFTEXPORT_ATTN_PIPE", "1") != "0"
#: with programmatic dependent launch, the step's position, the cos/sin tables and (PIPE) the first block of
#: cached keys and values are read before waiting for the previous kernel (the QKV projection): none of them is
#: written by a kernel of the same decode step (the position and the tables before the step; cache rows below
#: pos by earlier steps). LIFTEXPORT_ATTN_EARLY=0: everything after the wait.
EARLY = os.environ.get("LIFTEXPORT_ATTN_EARLY", "1") != "0"


@functools.cache
def _pdl(device_index: int) -> bool:
    """Whether launches on this CUDA device use programmatic dependent launch: sm_90+, a Triton that
    knows the launch option, not the interpreter, and LIFTEXPORT_PDL not 0 (as the CUDA library)."""
    if os.environ.get("TRITON_INTERPRET") == "1" or os.environ.get("LIFTEXPORT_PDL") == "0":
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    return ("launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})
            and torch.cuda.get_device_capability(device_index)[0] >= 9)


def supported(head_dim: int) -> bool:
    """Whether the kernel takes this head size (even, a power of two: tl.arange over each half)."""
    return head_dim >= 2 and head_dim & (head_dim - 1) == 0


def key_chunk(max_len: int) -> int:
    """Keys per program: 64, or more (a power of two) so that max_len needs at most MAX_SPLITS programs."""
    c = BLOCK_N
    while -(-max_len // c) > MAX_SPLITS:
        c *= 2
    return c


@triton.jit
def _load_kv(kc_ptr, vc_ptr, cache, keys, i, hi, HD: tl.constexpr, HALF: tl.constexpr):
    """The cached keys and values of rows `keys` (those below hi; zero elsewhere), each as two halves."""
    ok = (keys < hi)[:, None]
    row = kc_ptr + cache + keys[:, None] * HD + i[None, :]
    vrow = vc_ptr + cache + keys[:, None] * HD + i[None, :]
    return (tl.load(row, mask=ok, other=0.0), tl.load(row + HALF, mask=ok, other=0.0),
            tl.load(vrow, mask=ok, other=0.0), tl.load(vrow + HALF, mask=ok, other=0.0))


@triton.jit
def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, pos_ptr, part_ptr, cnt_ptr,
                             out_ptr, q_stride, k_stride, v_stride, H, KVH, max_len, sm_scale, S,
                             HD: tl.constexpr, HALF: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
                             SP: tl.constexpr, GDC: tl.constexpr, PIPE: tl.constexpr, EARLY: tl.constexpr,
                             ONE: tl.constexpr):
    """Program (b, h, sp): keys [sp * CHUNK, (sp + 1) * CHUNK) below pos of sequence b, query head h;
    split 0 also the new key (and its cache write). Writes its partial softmax state (running max m,
    sum l, unnormalised output) to part[b, h, sp] = [m, l, acc (HD)], then counts itself done in
    cnt[b, h]; the S-th to do so combines the S states into out[b, h] and sets cnt[b, h] back to 0.
    ONE (one sequence) changes no code: it compiles that case apart, so that only it asks for a carveout."""
    if GDC:  # programmatic dependent launch: the next kernel may launch now
        tl.extra.cuda.gdc_launch_dependents()
    if GDC and not EARLY:  # nothing read before the previous kernel is complete
        tl.extra.cuda.gdc_wait()
    b = tl.program_id(0)
    h = tl.program_id(1)
    sp = tl.program_id(2)
    kvh = h // (H // KVH)
    pos = tl.load(pos_ptr)
    i = tl.arange(0, HALF)
    j = tl.arange(0, BLOCK)
    cache = (b * KVH + kvh) * max_len * HD  # [batch, KVH, max_len, HD]
    lo = sp * CHUNK
    hi = tl.minimum(lo + CHUNK, pos)
    if PIPE:  # the first block of cached keys and values in flight before anything else
        kk1, kk2, vv1, vv2 = _load_kv(kc_ptr, vc_ptr, cache, lo + j, i, hi, HD, HALF)
    # rotary embedding: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
    c1 = tl.load(cos_ptr + pos * HD + i).to(tl.float32)
    c2 = tl.load(cos_ptr + pos * HD + HALF + i).to(tl.float32)
    s1 = tl.load(sin_ptr + pos * HD + i).to(tl.float32)
    s2 = tl.load(sin_ptr + pos * HD + HALF + i).to(tl.float32)
    if GDC and EARLY:  # the position, tables and cached keys below pos are written before the step: read early
        tl.extra.cuda.gdc_wait()
    qb = q_ptr + b * q_stride + h * HD
    q1 = tl.load(qb + i).to(tl.float32)
    q2 = tl.load(qb + HALF + i).to(tl.float32)
    q1, q2 = q1 * c1 - q2 * s1, q2 * c2 + q1 * s2
    q1 = q1.to(kc_ptr.dtype.element_ty).to(tl.float32)  # as the torch path: q rounded to the cache dtype
    q2 = q2.to(kc_ptr.dtype.element_ty).to(tl.float32)
    kb = k_ptr + b * k_stride + kvh * HD
    k1 = tl.load(kb + i).to(tl.float32)
    k2 = tl.load(kb + HALF + i).to(tl.float32)
    k1, k2 = k1 * c1 - k2 * s1, k2 * c2 + k1 * s2
    k1 = k1.to(kc_ptr.dtype.element_ty)
    k2 = k2.to(kc_ptr.dtype.element_ty)
    vb = v_ptr + b * v_stride + kvh * HD
    v1 = tl.load(vb + i).to(kc_ptr.dtype.element_ty)
    v2 = tl.load(vb + HALF + i).to(kc_ptr.dtype.element_ty)
    first = sp == 0
    if first:
        if h % (H // KVH) == 0:  # one writer per kv head
            tl.store(kc_ptr + cache + pos * HD + i, k1)
            tl.store(kc_ptr + cache + pos * HD + HALF + i, k2)
            tl.store(vc_ptr + cache + pos * HD + i, v1)
            tl.store(vc_ptr + cache + pos * HD + HALF + i, v2)
    # split 0 starts from the new key's score; the others from an empty state
    s_new = tl.sum(q1 * k1.to(tl.float32) + q2 * k2.to(tl.float32), axis=0) * sm_scale
    m = tl.where(first, s_new, float("-inf"))
    l = tl.where(first, 1.0, 0.0)
    acc1 = tl.where(first, v1.to(tl.float32), 0.0)
    acc2 = tl.where(first, v2.to(tl.float32), 0.0)
    for start in range(lo, hi, BLOCK):
        keys = start + j
        ok = keys < hi
        if PIPE:  # this block's keys and values are loaded; the next block's go in flight now
            ck1, ck2, cv1, cv2 = kk1, kk2, vv1, vv2
            kk1, kk2, vv1, vv2 = _load_kv(kc_ptr, vc_ptr, cache, keys + BLOCK, i, hi, HD, HALF)
        else:
            ck1, ck2, cv1, cv2 = _load_kv(kc_ptr, vc_ptr, cache, keys, i, hi, HD, HALF)
        s = (tl.sum(ck1.to(tl.float32) * q1[None, :], axis=1) + tl.sum(ck2.to(tl.float32) * q2[None, :], axis=1)) * sm_scale
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        l = l * alpha + tl.sum(p, axis=0)
        acc1 = acc1 * alpha + tl.sum(p[:, None] * cv1.to(tl.float32), axis=0)
        acc2 = acc2 * alpha + tl.sum(p[:, None] * cv2.to(tl.float32), axis=0)
        m = m_new
    pb = part_ptr + ((b * H + h) * S + sp) * (HD + 2)
    tl.store(pb, m)
    tl.store(pb + 1, l)
    tl.store(pb + 2 + i, acc1)
    tl.store(pb + 2 + HALF + i, acc2)
    # all of this program's stores before its count (barrier), released by the count at GPU scope; the
    # last program acquires them and reads the states from L2 (.cg: not from a stale L1 line)
    tl.debug_barrier()
    done = tl.atomic_add(cnt_ptr + b * H + h, 1, sem="acq_rel", scope="gpu")
    if done == S - 1:
        # out[b, h] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the S partial states
        s_ = tl.arange(0, SP)
        d = tl.arange(0, HD)
        p0 = part_ptr + (b * H + h) * S * (HD + 2)
        ok = s_ < S
        ms = tl.load(p0 + s_ * (HD + 2), mask=ok, other=float("-inf"), cache_modifier=".cg")
        ls = tl.load(p0 + s_ * (HD + 2) + 1, mask=ok, other=0.0, cache_modifier=".cg")
        mx = tl.max(ms, axis=0)  # finite: split 0 holds the new key
        w = tl.where(ok, tl.exp(ms - mx), 0.0)
        acc = tl.load(p0 + s_[:, None] * (HD + 2) + 2 + d[None, :], mask=ok[:, None], other=0.0,
                      cache_modifier=".cg")
        o = tl.sum(w[:, None] * acc, axis=0) / tl.sum(w * ls, axis=0)
        tl.store(out_ptr + (b * H + h) * HD + d, o.to(out_ptr.dtype.element_ty))
        tl.store(cnt_ptr + b * H + h, 0)  # ready for the next call (no other program of (b, h) is left)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                     out: torch.Tensor | None = None, counters: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one new token per sequence. q [B, H * hd], k and v [B, KVH * hd] (projections, before
    the rotary embedding; rows may be strided, e.g. slices of one fused projection); cos, sin
    [max_len, hd]; k_cache, v_cache [B, KVH, max_len, hd] (written at pos); pos: one-element int64
    device tensor. Returns out [B, H * hd] in the cache dtype. One launch of (batch, heads, splits)
    programs over runs of key_chunk(max_len) keys. counters: int32 [>= B * H], all zero, which the
    kernel leaves zero (a caller that launches many times, e.g. a CUDA graph, keeps one; by default a
    fresh zeroed one per call)."""
    B, KVH, max_len, hd = k_cache.shape
    H = q.shape[1] // hd
    if (not supported(hd) or q.shape != (B, H * hd) or k.shape != (B, KVH * hd) or v.shape != k.shape
            or H % KVH or v_cache.shape != k_cache.shape or cos.shape != (max_len, hd) or sin.shape != cos.shape
            or pos.numel() != 1 or pos.dtype != torch.long
            or any(t.stride(-1) != 1 for t in (q, k, v))
            or any(not t.is_contiguous() for t in (cos, sin, k_cache, v_cache))
            or (counters is not None and (counters.dtype != torch.int32 or counters.numel() < B * H
                                          or not counters.is_contiguous() or counters.device != q.device))):
        raise ValueError("decode_attention: bad shapes, dtypes or layouts")
    if out is None:
        out = torch.empty(B, H * hd, dtype=k_cache.dtype, device=q.device)
    if counters is None:
        counters = torch.zeros(B * H, dtype=torch.int32, device=q.device)
    chunk = key_chunk(max_len)
    S = -(-max_len // chunk)
    part = torch.empty(B, H, S, hd + 2, dtype=torch.float32, device=q.device)
    pdl = q.is_cuda and _pdl(q.device.index if q.device.index is not None else torch.cuda.current_device())
    ck = _decode_attention_kernel[(B, H, S)](
        q, k, v, cos, sin, k_cache, v_cache, pos, part, counters, out, q.stride(0), k.stride(0), v.stride(0), H, KVH,
        max_len, 1.0 / hd ** 0.5, S, HD=hd, HALF=hd // 2, CHUNK=chunk, BLOCK=min(BLOCK_N, chunk),
        SP=triton.next_power_of_2(S), GDC=pdl, PIPE=PIPE, EARLY=EARLY, ONE=B == 1, num_warps=4,
        **({"launch_pdl": True} if pdl else {}))
    if pdl and B == 1:
        _prefer_carveout(ck)
    return out


def _carveout_pct() -> int:
    """The carveout the one-sequence kernel asks for: the CUDA library's (smem_carveout: LIFTEXPORT_SMEM_CARVEOUT, read
    once, else 100; -1 the driver's choice), or -1 where the library is not built (then no kernel asks for one)."""
    from .. import cuda_binary as CB
    return CB.smem_carveout() if CB.load() is not None else -1


@functools.cache
def _carveout_of(fn: int) -> int:
    """Sets the one-sequence kernel fn's preferred shared-memory carveout to _carveout_pct() (once per kernel): the
    value the CUDA library's one-token GEMV and lift kernels ask for, so that an SM's memory split suits the blocks
    of every kernel of a decode step (see smem_carveout in kernels/cuda/binary_gemv.cu; 7B decode step at 2.4 bits:
    478 -> 481 tok/s against the driver's choice here). A hint: a refusal is ignored. Returns the CUDA result."""
    pct = _carveout_pct()
    if pct < 0:
        return 0
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return -1
    # CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT = 9
    return cuda.cuFuncSetAttribute(ctypes.c_void_p(fn), ctypes.c_int(9), ctypes.c_int(pct))


def _prefer_carveout(ck) -> None:
    fn = getattr(ck, "function", None)
    if fn:
        _carveout_of(int(fn))
