"""Triton kernel of a decode step's attention block (one new token per sequence; GPU, or CPU via
TRITON_INTERPRET=1).

``decode_attention`` does in one launch what the engine otherwise does in a dozen torch kernels: the
rotary embedding (HF ``rotate_half`` convention, cos/sin rows of the token's position) of q and k, the
write of k and v into the static KV cache at that position, and softmax(q k^T / sqrt(hd)) v over the
cached keys 0 .. pos (online softmax in float32, keys in blocks), stored as [batch, heads * hd]. The
position is read from a device tensor, so a CUDA graph captured once serves every step. Grouped-query
attention: program (b, h) reads kv head h // (H / KVH); the first query head of each group writes
the cache, and every program takes the new key and value from registers, not from the cache.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_N = 64  # cached keys per iteration


@triton.jit
def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, pos_ptr, out_ptr,
                             q_stride, k_stride, v_stride, H, KVH, max_len, sm_scale,
                             HD: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
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
    if h % (H // KVH) == 0:
        tl.store(kc_ptr + cache + pos * HD + i, k1)
        tl.store(kc_ptr + cache + pos * HD + HALF + i, k2)
        tl.store(vc_ptr + cache + pos * HD + i, v1)
        tl.store(vc_ptr + cache + pos * HD + HALF + i, v2)
    # the new key first: m, l, acc start from its score
    m = tl.sum(q1 * k1.to(tl.float32) + q2 * k2.to(tl.float32), axis=0) * sm_scale
    l = m * 0.0 + 1.0
    acc1 = v1.to(tl.float32)
    acc2 = v2.to(tl.float32)
    j = tl.arange(0, BLOCK)
    for start in range(0, pos, BLOCK):
        keys = start + j
        ok = keys < pos
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
    ob = out_ptr + (b * H + h) * HD
    tl.store(ob + i, (acc1 / l).to(out_ptr.dtype.element_ty))
    tl.store(ob + HALF + i, (acc2 / l).to(out_ptr.dtype.element_ty))


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, pos: torch.Tensor,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one new token per sequence. q [B, H * hd], k and v [B, KVH * hd] (projections, before
    the rotary embedding; rows may be strided, e.g. slices of one fused projection); cos, sin
    [max_len, hd]; k_cache, v_cache [B, KVH, max_len, hd] (written at pos); pos: one-element int64
    device tensor. Returns out [B, H * hd] in the cache dtype."""
    B, KVH, max_len, hd = k_cache.shape
    H = q.shape[1] // hd
    if (hd % 2 or hd & (hd - 1) or q.shape != (B, H * hd) or k.shape != (B, KVH * hd) or v.shape != k.shape
            or H % KVH or v_cache.shape != k_cache.shape or cos.shape != (max_len, hd) or sin.shape != cos.shape
            or pos.numel() != 1 or pos.dtype != torch.long
            or any(t.stride(-1) != 1 for t in (q, k, v))
            or any(not t.is_contiguous() for t in (cos, sin, k_cache, v_cache))):
        raise ValueError("decode_attention: bad shapes, dtypes or layouts")
    if out is None:
        out = torch.empty(B, H * hd, dtype=k_cache.dtype, device=q.device)
    _decode_attention_kernel[(B, H)](q, k, v, cos, sin, k_cache, v_cache, pos, out, q.stride(0), k.stride(0),
                                     v.stride(0), H, KVH, max_len,
                                     1.0 / hd ** 0.5, HD=hd, HALF=hd // 2, BLOCK=BLOCK_N, num_warps=4)
    return out
