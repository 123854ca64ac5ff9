"""Triton kernel of a decode step's attention block (one new token per sequence; GPU, or CPU via
TRITON_INTERPRET=1).

``decode_attention`` does in two launches what the engine otherwise does in a dozen torch kernels: the
rotary embedding (HF ``rotate_half`` convention, cos/sin rows of the token's position) of q and k, the
write of k and v into the static KV cache at that position, and softmax(q k^T / sqrt(hd)) v over the
cached keys 0 .. pos (online softmax in float32; the keys split over up to MAX_SPLITS programs per head,
flash-decoding style, their states combined by a second kernel), stored as [batch, heads * hd]. The
position is read from a device tensor, so a CUDA graph captured once serves every step. Grouped-query
attention: program (b, h) reads kv head h // (H / KVH); the first query head of each group writes
the cache, and every program takes the new key and value from registers, not from the cache.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64  # cached keys per iteration
MAX_SPLITS = 16  # programs per (sequence, head) splitting the keys (flash-decoding)


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
def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, pos_ptr, part_ptr,
                             q_stride, k_stride, v_stride, H, KVH, max_len, sm_scale, S,
                             HD: tl.constexpr, HALF: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """Program (b, h, sp): keys [sp * CHUNK, (sp + 1) * CHUNK) below pos of sequence b, query head h;
    split 0 also the new key (and its cache write). Writes its partial softmax state (running max m,
    sum l, unnormalised output) to part[b, h, sp] = [m, l, acc (HD)]."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    sp = tl.program_id(2)
    kvh = h // (H // KVH)
    pos = tl.load(pos_ptr)
    i = tl.arange(0, HALF)
    # rotary embedding: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
    c1 = tl.load(cos_ptr + pos * HD + i).to(tl.float32)
    c2 = tl.load(cos_ptr + pos * HD + HALF + i).to(tl.float32)
    s1 = tl.load(sin_ptr + pos * HD + i).to(tl.float32)
    s2 = tl.load(sin_ptr + pos * HD + HALF + i).to(tl.float32)
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
    cache = (b * KVH + kvh) * max_len * HD  # [batch, KVH, max_len, HD]
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
    j = tl.arange(0, BLOCK)
    lo = sp * CHUNK
    hi = tl.minimum(lo + CHUNK, pos)
    for start in range(lo, hi, BLOCK):
        keys = start + j
        ok = keys < hi
        row = kc_ptr + cache + keys[:, None] * HD
        kk1 = tl.load(row + i[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        kk2 = tl.load(row + HALF + i[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        s = (tl.sum(kk1 * q1[None, :], axis=1) + tl.sum(kk2 * q2[None, :], axis=1)) * sm_scale
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        l = l * alpha + tl.sum(p, axis=0)
        vrow = vc_ptr + cache + keys[:, None] * HD
        vv1 = tl.load(vrow + i[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        vv2 = tl.load(vrow + HALF + i[None, :], mask=ok[:, None], other=0.0).to(tl.float32)
        acc1 = acc1 * alpha + tl.sum(p[:, None] * vv1, axis=0)
        acc2 = acc2 * alpha + tl.sum(p[:, None] * vv2, axis=0)
        m = m_new
    pb = part_ptr + ((b * H + h) * S + sp) * (HD + 2)
    tl.store(pb, m)
    tl.store(pb + 1, l)
    tl.store(pb + 2 + i, acc1)
    tl.store(pb + 2 + HALF + i, acc2)


@triton.jit
def _combine_kernel(part_ptr, out_ptr, H, S, HD: tl.constexpr, SP: tl.constexpr):
    """out[b, h] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s over the S partial states."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    sp = tl.arange(0, SP)
    d = tl.arange(0, HD)
    pb = part_ptr + (b * H + h) * S * (HD + 2)
    ok = sp < S
    m = tl.load(pb + sp * (HD + 2), mask=ok, other=float("-inf"))
    l = tl.load(pb + sp * (HD + 2) + 1, mask=ok, other=0.0)
    mx = tl.max(m, axis=0)  # finite: split 0 holds the new key
    w = tl.where(ok, tl.exp(m - mx), 0.0)
    acc = tl.load(pb + sp[:, None] * (HD + 2) + 2 + d[None, :], mask=ok[:, None], other=0.0)
    o = tl.sum(w[:, None] * acc, axis=0) / tl.sum(w * l, axis=0)
    tl.store(out_ptr + (b * H + h) * HD + d, o.to(out_ptr.dtype.element_ty))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one new token per sequence. q [B, H * hd], k and v [B, KVH * hd] (projections, before
    the rotary embedding; rows may be strided, e.g. slices of one fused projection); cos, sin
    [max_len, hd]; k_cache, v_cache [B, KVH, max_len, hd] (written at pos); pos: one-element int64
    device tensor. Returns out [B, H * hd] in the cache dtype. Two launches: (batch, heads, splits)
    programs over runs of key_chunk(max_len) keys, then one per (batch, head) combining their states."""
    B, KVH, max_len, hd = k_cache.shape
    H = q.shape[1] // hd
    if (not supported(hd) or q.shape != (B, H * hd) or k.shape != (B, KVH * hd) or v.shape != k.shape
            or H % KVH or v_cache.shape != k_cache.shape or cos.shape != (max_len, hd) or sin.shape != cos.shape
            or pos.numel() != 1 or pos.dtype != torch.long
            or any(t.stride(-1) != 1 for t in (q, k, v))
            or any(not t.is_contiguous() for t in (cos, sin, k_cache, v_cache))):
        raise ValueError("decode_attention: bad shapes, dtypes or layouts")
    if out is None:
        out = torch.empty(B, H * hd, dtype=k_cache.dtype, device=q.device)
    chunk = key_chunk(max_len)
    S = -(-max_len // chunk)
    part = torch.empty(B, H, S, hd + 2, dtype=torch.float32, device=q.device)
    _decode_attention_kernel[(B, H, S)](q, k, v, cos, sin, k_cache, v_cache, pos, part, q.stride(0), k.stride(0),
                                        v.stride(0), H, KVH, max_len, 1.0 / hd ** 0.5, S,
                                        HD=hd, HALF=hd // 2, CHUNK=chunk, BLOCK=min(BLOCK_N, chunk), num_warps=4)
    _combine_kernel[(B, H)](part, out, H, S, HD=hd, SP=triton.next_power_of_2(S), num_warps=4)
    return out
