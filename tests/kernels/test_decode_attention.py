"""The fused decode-attention kernel (rotary embedding, KV-cache write, attention) against torch
(TRITON_INTERPRET=1 on CPU; the same test runs on a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from liftexport.kernels.triton.decode_attention import MAX_SPLITS, decode_attention, key_chunk
from liftexport.runtime.engine import _rotate_half


def _tables(max_len, hd):
    inv = 1.0 / 10000 ** (torch.arange(0, hd, 2).double() / hd)
    f = torch.outer(torch.arange(max_len).double(), inv)
    emb = torch.cat((f, f), dim=-1)
    return emb.cos().float(), emb.sin().float()


def _reference(q, k, v, cos, sin, kc, vc, pos):
    """float64: the engine's torch path (rope, cache write at pos, SDPA over keys <= pos)."""
    B, KVH, max_len, hd = kc.shape
    H = q.shape[1] // hd
    c, s = cos[pos].double(), sin[pos].double()
    q = q.double().view(B, H, hd)
    k = k.double().view(B, KVH, hd)
    q = q * c + _rotate_half(q) * s
    k = k * c + _rotate_half(k) * s
    kc, vc = kc.double().clone(), vc.double().clone()
    kc[:, :, pos] = k
    vc[:, :, pos] = v.double().view(B, KVH, hd)
    mask = (torch.arange(max_len, device=kc.device) <= pos)[None, :]
    a = F.scaled_dot_product_attention(q[:, :, None], kc, vc, attn_mask=mask, enable_gqa=H != KVH)
    return a[:, :, 0].reshape(B, H * hd), kc, vc


DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("B,H,KVH,hd,max_len", [(1, 4, 4, 16, 80), (2, 4, 2, 32, 80), (1, 6, 1, 8, 80),
                                                 (1, 8, 2, 128, 80), (1, 2, 1, 16, 1100)])
@pytest.mark.parametrize("pos", [0, 1, 63, 64, 70, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_decode_attention_matches_torch(B, H, KVH, hd, max_len, pos, dtype):
    """Key splits: 80 keys in two runs of 64; 1100 in nine of 128 (positions in the first, in the last)."""
    if pos >= max_len:
        pytest.skip("position past the cache")
    cos, sin = (t.to(DEV, dtype) for t in _tables(max_len, hd))
    fused = torch.randn(B, (H + 2 * KVH) * hd, device=DEV).to(dtype)  # one projection's output, sliced: strided rows
    q, k, v = fused.split([H * hd, KVH * hd, KVH * hd], dim=1)
    kc = torch.randn(B, KVH, max_len, hd, device=DEV).to(dtype)
    vc = torch.randn(B, KVH, max_len, hd, device=DEV).to(dtype)
    ref, kref, vref = _reference(q, k, v, cos, sin, kc, vc, pos)
    out = decode_attention(q, k, v, cos, sin, kc, vc, torch.tensor([pos], device=DEV))
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert out.dtype == dtype
    assert torch.allclose(out.double(), ref, atol=tol, rtol=tol), (out.double() - ref).abs().max()
    # the new key, rotated, and value at pos (rounded to the cache dtype); nothing else
    assert torch.allclose(kc.double(), kref, atol=tol, rtol=tol)
    assert torch.allclose(vc.double(), vref, atol=0, rtol=0)


def test_decode_attention_counters_left_zero_and_reusable():
    """The last program of each head combines and resets its counter: one buffer serves repeated calls
    (as a CUDA graph replays them) with the same results as fresh buffers."""
    B, H, KVH, hd, max_len = 2, 4, 2, 16, 300  # 5 key splits per head
    cos, sin = (t.to(DEV) for t in _tables(max_len, hd))
    kc = torch.randn(B, KVH, max_len, hd, device=DEV)
    vc = torch.randn(B, KVH, max_len, hd, device=DEV)
    cnt = torch.zeros(B * H + 3, dtype=torch.int32, device=DEV)  # longer than needed is fine
    for pos in (299, 130, 5):
        q, k, v = torch.randn(B, H * hd, device=DEV), torch.randn(B, KVH * hd, device=DEV), torch.randn(B, KVH * hd, device=DEV)
        ref, _, _ = _reference(q, k, v, cos, sin, kc, vc, pos)
        out = decode_attention(q, k, v, cos, sin, kc, vc, torch.tensor([pos], device=DEV), counters=cnt)
        assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5)
        assert int(cnt.abs().sum()) == 0


def test_key_chunks_cover_the_cache_in_few_programs():
    for max_len in (1, 64, 65, 1024, 1100, 4096, 32768, 100000):
        c = key_chunk(max_len)
        assert c >= 64 and c & (c - 1) == 0 and -(-max_len // c) <= MAX_SPLITS
        assert c == 64 or -(-max_len // (c // 2)) > MAX_SPLITS  # the smallest such chunk


def test_decode_attention_rejects_bad_shapes():
    cos, sin = _tables(16, 8)
    kc = torch.zeros(1, 2, 16, 8)
    with pytest.raises(ValueError, match="decode_attention"):  # 3 heads do not share 2 kv heads
        decode_attention(torch.zeros(1, 24), torch.zeros(1, 16), torch.zeros(1, 16), cos, sin, kc, kc.clone(),
                         torch.tensor([3]))
    with pytest.raises(ValueError, match="decode_attention"):  # counters too short for 2 heads
        decode_attention(torch.zeros(1, 16), torch.zeros(1, 16), torch.zeros(1, 16), cos, sin, kc, kc.clone(),
                         torch.tensor([3]), counters=torch.zeros(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="decode_attention"):  # counters of another dtype
        decode_attention(torch.zeros(1, 16), torch.zeros(1, 16), torch.zeros(1, 16), cos, sin, kc, kc.clone(),
                         torch.tensor([3]), counters=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="decode_attention"):  # cos for another head size
        decode_attention(torch.zeros(1, 16), torch.zeros(1, 16), torch.zeros(1, 16), cos[:, :4], sin, kc,
                         kc.clone(), torch.tensor([3]))
