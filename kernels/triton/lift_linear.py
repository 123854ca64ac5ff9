"""Triton kernels of one lifted linear layer at inference (GPU; CPU via TRITON_INTERPRET=1).

The layer computes y = s * (Q u) + bias with u = L X~ R (spec/container.md section 4).

* ``transform``: U[b] = L (x_b / s1 as an n1 x n2 matrix) R in one kernel (fp32 math, IEEE dots),
  any (n1, n2, D, d). With ``R`` replaced by ``R4 = R blockdiag(S)`` the same kernel writes the
  4-bit lookup tables directly (see ``table_factor``).
* ``tables``: T[b, p, c] = sum_i (2 bit_i(c) - 1) u[4p + i] for layers whose groups of four lifted
  values cross rows of U (nb*D not a multiple of 4), where the fused route does not apply.
* ``gemv_lut_split`` (1-4 tokens): a row's result is sum_p T[p, nibble_p(row)], one cached gather
  and one add per four weights. Codes are read as 32-bit words in a K-major layout (word kw of every
  row contiguous: ``kmajor_words``), so a warp's loads are coalesced and its gathers at one word
  position hit one 64-byte table line. Each program takes one K slice (its tables stay in L1) and a
  run of rows; ``_reduce_parts_kernel`` sums the slices with scale, bias and an optional residual.
* ``gemm_planes`` (any token count): each 32-bit word is decoded in registers to 16 pairs of +-1
  values (bits j and j + 16; for fp16/bf16 one shift and one LOP3 per pair, inline PTX on the GPU)
  and fed to ``tl.dot`` against u stored in the matching bit-plane order (IEEE dots for float32);
  ``split_k`` cuts K into runs for few-token calls whose output tiles alone would not fill the GPU
  (float32 partial sums, then ``_reduce_parts_kernel``).

All kernels apply the per-row scale and bias in the epilogue and store in the output's dtype.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

GROUP = 4  # code bits per table lookup


def kmajor_words(codes: torch.Tensor, K: int) -> torch.Tensor:
    """uint8 [N, >= ceil(K/8)] LSB-first rows -> int32 [ceil(K/32), N]: word kw of row r at [kw, r].

    Bit k of a row is bit k % 32 of its word k // 32 (little-endian bytes); bits >= K are zeroed.
    """
    N = codes.shape[0]
    KW = -(-K // 32)
    nb = -(-K // 8)
    if codes.dtype != torch.uint8 or codes.dim() != 2 or codes.shape[1] < nb:
        raise ValueError(f"codes must be uint8 [N, >= {nb}], got {codes.dtype} {list(codes.shape)}")
    buf = torch.zeros(N, KW * 4, dtype=torch.uint8, device=codes.device)
    buf[:, :nb] = codes[:, :nb]
    if K % 8:
        buf[:, nb - 1] &= (1 << (K % 8)) - 1
    return buf.view(torch.int32).t().contiguous()


def kmajor_bits(words: torch.Tensor, K: int) -> torch.Tensor:
    """The inverse of kmajor_words: int32 [KW, N] -> code bits int64 [K, N] (0/1; bit k of row r at [k, r])."""
    k = torch.arange(K, device=words.device)
    return (words[k // 32].long() >> (k % 32)[:, None]) & 1


def sign_table(dtype=torch.float64, device="cpu") -> torch.Tensor:
    """S [16, 4]: S[c, i] = 2 * bit_i(c) - 1."""
    c = torch.arange(16, device=device)[:, None]
    i = torch.arange(GROUP, device=device)[None, :]
    return (((c >> i) & 1) * 2 - 1).to(dtype)


def table_factor(R: torch.Tensor) -> torch.Tensor:
    """R [n2, C] (C % 4 == 0) -> R4 [n2, C/4 * 16] with (X R4)[:, 16 g + c] = sum_i S[c, i] (X R)[:, 4 g + i]."""
    n2, C = R.shape
    if C % GROUP:
        raise ValueError(f"table_factor needs a column count divisible by {GROUP}, got {C}")
    S = sign_table(torch.float64, R.device)
    return torch.einsum("qgi,ci->qgc", R.double().reshape(n2, C // GROUP, GROUP), S).reshape(n2, -1).to(R.dtype)


@triton.jit
def _transform_kernel(
    x_ptr, inv_s1_ptr, l_ptr, r_ptr, out_ptr, nw_ptr,
    in_features, n1, n2, ncols, stride_xb, stride_ob, KW, eps, up_off,
    BI: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BQ: tl.constexpr, PLANES: tl.constexpr,
    PRE: tl.constexpr,
):
    pid_i = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    ii = pid_i * BI + tl.arange(0, BI)
    cc = pid_c * BC + tl.arange(0, BC)
    acc = tl.zeros((BI, BC), dtype=tl.float32)
    xb = x_ptr + b * stride_xb
    rstd = 1.0
    if PRE == 1:  # RMSNorm of the row first (weight nw_ptr)
        ss = tl.zeros((1024,), dtype=tl.float32)
        for f0 in range(0, in_features, 1024):
            f = f0 + tl.arange(0, 1024)
            v = tl.load(xb + f, mask=f < in_features, other=0.0).to(tl.float32)
            ss += v * v
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / in_features + eps)
    for k0 in range(0, n1, BK):
        kk = k0 + tl.arange(0, BK)
        z = tl.zeros((BK, BC), dtype=tl.float32)
        for q0 in range(0, n2, BQ):
            qq = q0 + tl.arange(0, BQ)
            flat = kk[:, None] * n2 + qq[None, :]
            m = (kk[:, None] < n1) & (qq[None, :] < n2) & (flat < in_features)
            xv = tl.load(xb + flat, mask=m, other=0.0).to(tl.float32)
            if PRE == 1:
                xv = xv * rstd * tl.load(nw_ptr + flat, mask=m, other=0.0).to(tl.float32)
            if PRE == 2:  # SiLU(gate) * up, up at column offset up_off of the same row
                up = tl.load(xb + up_off + flat, mask=m, other=0.0).to(tl.float32)
                xv = xv / (1.0 + tl.exp(-xv)) * up
            sv = tl.load(inv_s1_ptr + flat, mask=m, other=0.0)
            rv = tl.load(r_ptr + qq[:, None] * ncols + cc[None, :],
                         mask=(qq[:, None] < n2) & (cc[None, :] < ncols), other=0.0)
            z += tl.dot(xv * sv, rv, input_precision="ieee")
        lv = tl.load(l_ptr + ii[:, None] * n1 + kk[None, :], mask=(ii[:, None] < n1) & (kk[None, :] < n1), other=0.0)
        acc += tl.dot(lv, z, input_precision="ieee")
    k = ii[:, None] * ncols + cc[None, :]
    if PLANES:  # bit-plane order of gemm_planes: value k goes to ((k % 16) * KW + k // 32) * 2 + (k // 16) % 2
        k = ((k % 16) * KW + k // 32) * 2 + (k // 16) % 2
    tl.store(out_ptr + b * stride_ob + k, acc, mask=(ii[:, None] < n1) & (cc[None, :] < ncols))


@triton.jit
def _tables_kernel(u_ptr, t_ptr, K, P, stride_ub, stride_tb, BP: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    p = pid * BP + tl.arange(0, BP)
    c = tl.arange(0, 16)
    acc = tl.zeros((BP, 16), dtype=tl.float32)
    for i in tl.static_range(4):
        k = p * 4 + i
        ui = tl.load(u_ptr + b * stride_ub + k, mask=(p < P) & (k < K), other=0.0).to(tl.float32)
        sg = (((c >> i) & 1) * 2 - 1).to(tl.float32)
        acc += ui[:, None] * sg[None, :]
    tl.store(t_ptr + b * stride_tb + p[:, None] * 16 + c[None, :], acc, mask=p[:, None] < P)


@triton.jit
def _signs_pair(w, J: tl.constexpr, USE_ASM: tl.constexpr, BF16: tl.constexpr, F32: tl.constexpr):
    """+-1 of bits J and J + 16 of each word, in u's dtype (fp16/bf16: two PTX ops per pair on the GPU)."""
    if USE_ASM:
        sh = tl.full(w.shape, 15 - J, tl.int32)
        if BF16:
            lo, hi = tl.inline_asm_elementwise(
                asm="{ .reg .b32 t, r; shl.b32 t, $2, $3; lop3.b32 r, t, 0x80008000, 0xBF80BF80, 0x6A; mov.b32 {$0, $1}, r; }",
                constraints="=h,=h,r,r", args=[w, sh], dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=1)
        else:
            lo, hi = tl.inline_asm_elementwise(
                asm="{ .reg .b32 t, r; shl.b32 t, $2, $3; lop3.b32 r, t, 0x80008000, 0xBC00BC00, 0x6A; mov.b32 {$0, $1}, r; }",
                constraints="=h,=h,r,r", args=[w, sh], dtype=(tl.float16, tl.float16), is_pure=True, pack=1)
    else:
        dt = tl.float32 if F32 else (tl.bfloat16 if BF16 else tl.float16)
        lo = (((w >> J) & 1) * 2 - 1).to(tl.float32).to(dt)
        hi = (((w >> (J + 16)) & 1) * 2 - 1).to(tl.float32).to(dt)
    return lo, hi


@triton.jit
def _gemm_planes_kernel(
    u_ptr, w_ptr, s_ptr, bias_ptr, y_ptr, res_ptr,
    M, N, KW, stride_um, stride_ym, stride_rm, kw_per_split,
    HAS_BIAS: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BKW: tl.constexpr,
    USE_ASM: tl.constexpr, BF16: tl.constexpr, F32: tl.constexpr, HAS_RES: tl.constexpr, PARTIAL: tl.constexpr,
):
    """y[m, n] = s[n] * sum_k sign(n, k) u[m, k] + bias[n]; u in bit-plane order [16][KW][2].

    PARTIAL (split-K): program (n, m, k) sums only words [k * kw_per_split, (k + 1) * kw_per_split) and
    stores the raw sums to y_ptr = part [splits, M, N] (float32); _reduce_parts_kernel finishes."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rows = pid_n * BN + tl.arange(0, BN)
    toks = pid_m * BM + tl.arange(0, BM)
    rmask = rows < N
    tmask = toks < M
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    kw_lo = pid_k * kw_per_split
    for kw0 in range(kw_lo, tl.minimum(kw_lo + kw_per_split, KW), BKW):
        kw = kw0 + tl.arange(0, BKW)
        w = tl.load(w_ptr + kw[None, :] * N + rows[:, None], mask=rmask[:, None] & (kw[None, :] < KW), other=0)
        kk = kw0 * 2 + tl.arange(0, 2 * BKW)
        for j in tl.static_range(16):
            lo, hi = _signs_pair(w, j, USE_ASM, BF16, F32)
            a = tl.reshape(tl.join(lo, hi), (BN, 2 * BKW))
            ub = tl.load(u_ptr + toks[None, :] * stride_um + (j * KW * 2 + kk[:, None]),
                         mask=tmask[None, :] & (kk[:, None] < 2 * KW), other=0.0)
            if F32:  # float32 activations: exact float32 products
                acc += tl.dot(a, ub, input_precision="ieee")
            else:
                acc += tl.dot(a, ub)
    om = rmask[:, None] & tmask[None, :]
    if PARTIAL:
        tl.store(y_ptr + (pid_k * M + toks[None, :]) * N + rows[:, None], acc, mask=om)
    else:
        y = acc * tl.load(s_ptr + rows, mask=rmask, other=0.0)[:, None]
        if HAS_BIAS:
            y += tl.load(bias_ptr + rows, mask=rmask, other=0.0)[:, None]
        if HAS_RES:  # y = residual + layer output
            y += tl.load(res_ptr + toks[None, :] * stride_rm + rows[:, None], mask=om, other=0.0).to(tl.float32)
        tl.store(y_ptr + toks[None, :] * stride_ym + rows[:, None], y, mask=om)


@triton.jit
def _gemv_lut_split_kernel(
    t_ptr, w_ptr, part_ptr,
    M, N, KW, rows_per_prog, stride_tb,
    NT: tl.constexpr, SW: tl.constexpr, BN: tl.constexpr,
):
    """Partial sums over one K slice (SW words) for a chunk of rows, up to NT tokens at once.

    The slice's tables (SW * 8 * 16 floats per token) stay in L1 while the program walks its rows,
    so every lookup is a cached gather; part[s, m, row] = sum over the slice."""
    s = tl.program_id(0)
    c = tl.program_id(1)
    kw = s * SW + tl.arange(0, SW)
    km = kw < KW
    tok = tl.arange(0, NT)
    tmask = tok < M
    base = t_ptr + tok[:, None, None] * stride_tb + (kw * 128)[None, :, None]
    r_lo = c * rows_per_prog
    for r0 in range(r_lo, r_lo + rows_per_prog, BN):
        rows = r0 + tl.arange(0, BN)
        rmask = rows < N
        w = tl.load(w_ptr + kw[:, None] * N + rows[None, :], mask=km[:, None] & rmask[None, :], other=0)
        acc = tl.zeros((NT, SW, BN), dtype=tl.float32)
        for j in tl.static_range(8):
            nib = (w >> (4 * j)) & 15
            acc += tl.load(base + (16 * j) + nib[None, :, :], mask=tmask[:, None, None] & km[None, :, None], other=0.0)
        tl.store(part_ptr + (s * M + tok[:, None]) * N + rows[None, :], tl.sum(acc, axis=1),
                 mask=tmask[:, None] & rmask[None, :])


@triton.jit
def _reduce_parts_kernel(part_ptr, s_ptr, bias_ptr, res_ptr, y_ptr, M, N, S, stride_ym, stride_rm,
                         HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, BN: tl.constexpr):
    """y[m, n] = scale[n] * sum_s part[s, m, n] + bias[n] (+ residual[m, n])."""
    pid = tl.program_id(0)
    m = tl.program_id(1)
    rows = pid * BN + tl.arange(0, BN)
    rmask = rows < N
    acc = tl.zeros((BN,), dtype=tl.float32)
    for s in range(0, S):
        acc += tl.load(part_ptr + (s * M + m) * N + rows, mask=rmask, other=0.0)
    y = acc * tl.load(s_ptr + rows, mask=rmask, other=0.0)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows, mask=rmask, other=0.0)
    if HAS_RES:
        y += tl.load(res_ptr + m * stride_rm + rows, mask=rmask, other=0.0).to(tl.float32)
    tl.store(y_ptr + m * stride_ym + rows, y, mask=rmask)


# ----------------------------------------------------------------------------------------------
# Launchers. Shapes are checked here, before any kernel touches memory.


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def transform(x, inv_s1, L, R, in_features: int, out: torch.Tensor, *, planes: bool = False,
              rms: tuple[torch.Tensor, float] | None = None, glu: bool = False, BI=None, BC=None, BK=32, BQ=None,
              num_warps=4):
    """out[b] (flat [n1 * C]) = L @ (x_b * inv_s1 as n1 x n2) @ R for x [B, in_features].

    planes=True stores u in gemm_planes' bit-plane order (out [B, 32 * ceil(n1*C / 32)], whose
    padding the caller keeps zero). rms=(weight, eps) applies RMSNorm to x first; glu=True takes
    x [B, 2 * in_features] = [gate | up] and transforms SiLU(gate) * up."""
    n1, n2, C = L.shape[0], R.shape[0], R.shape[1]
    width = 2 * in_features if glu else in_features
    _check(not (glu and rms), "transform: rms and glu do not combine")
    _check(x.dim() == 2 and x.shape[1] == width, f"transform: x must be [B, {width}], got {list(x.shape)}")
    _check(rms is None or rms[0].shape == (in_features,), f"transform: norm weight must be [{in_features}]")
    _check(L.shape == (n1, n1) and inv_s1.numel() == n1 * n2, "transform: L/inv_s1 shapes do not match n1, n2")
    _check(n1 * n2 >= in_features, f"transform: n1*n2={n1 * n2} < in_features={in_features}")
    KW = -(-(n1 * C) // 32)
    want = KW * 32 if planes else n1 * C
    _check(out.shape == (x.shape[0], want), f"transform: out must be [{x.shape[0]}, {want}], got {list(out.shape)}")
    _check(x.stride(1) == 1 and out.stride(1) == 1, "transform: rows must be contiguous")
    if x.shape[0] == 0:
        return out
    if BI is None and BC is None and BQ is None and x.shape[0] == 1 and n1 * n2 <= 16384:
        # one token, up to 7B widths: smaller tiles (bench/gpu_transform_probe.py on the H100); more
        # tokens or wider inputs measured faster with the 32-wide defaults (bench/gpu_gemv.py)
        BI, BC, BQ = (16, 16, 16) if n2 < 64 else ((16, 16, 32) if n2 % 32 == 0 else (32, 32, 32))
    BI, BC, BQ = BI or (16 if n1 <= 16 else 32), BC or 32, BQ or 32
    grid = (triton.cdiv(n1, BI), triton.cdiv(C, BC), x.shape[0])
    _transform_kernel[grid](x, inv_s1, L, R, out, rms[0] if rms else inv_s1, in_features, n1, n2, C,
                            x.stride(0), out.stride(0), KW, float(rms[1]) if rms else 0.0, in_features,
                            BI=BI, BC=BC, BK=BK, BQ=BQ, PLANES=planes, PRE=1 if rms else (2 if glu else 0),
                            num_warps=num_warps)
    return out


def tables(u, K: int, out: torch.Tensor, BP: int = 64):
    """out [B, >= ceil(K/4) * 16]: signed 4-bit tables of u [B, >= K]."""
    P = -(-K // GROUP)
    _check(u.dim() == 2 and u.shape[1] >= K and out.shape[0] == u.shape[0] and out.shape[1] >= P * 16,
           "tables: bad shapes")
    if u.shape[0]:
        _tables_kernel[(triton.cdiv(P, BP), u.shape[0])](u, out, K, P, u.stride(0), out.stride(0), BP=BP)
    return out


def _check_gemv(words, scales, bias, y, N: int, rows_in: int):
    _check(words.dtype == torch.int32 and words.dim() == 2 and words.shape[1] == N and words.is_contiguous(),
           f"codes must be K-major int32 [KW, {N}], got {words.dtype} {list(words.shape)}")
    _check(scales.shape == (N,) and scales.dtype == torch.float32, f"scales must be float32 [{N}]")
    _check(bias is None or (bias.shape == (N,) and bias.dtype == torch.float32), f"bias must be float32 [{N}]")
    _check(y.dim() == 2 and y.shape == (rows_in, N) and y.stride(1) == 1, f"y must be [{rows_in}, {N}]")


def _reduce_parts(part, S: int, scales, bias, residual, y) -> None:
    """y = scales * (sum of the S partial sums in part [S, M, N]) + bias (+ residual): the split-K epilogue."""
    M, N = y.shape
    _reduce_parts_kernel[(triton.cdiv(N, 256), M)](
        part, scales, bias if bias is not None else scales, residual if residual is not None else y, y, M, N, S,
        y.stride(0), residual.stride(0) if residual is not None else 0,
        HAS_BIAS=bias is not None, HAS_RES=residual is not None, BN=256)


def gemm_planes(u, words, scales, bias, y, *, residual=None, BN=64, BM=16, BKW=16, num_warps=4, num_stages=3,
                use_asm=None, split_k=1, part=None):
    """y [M, N] = scales * (Q u) + bias (+ residual [M, N]); u [M, 32 * KW] in bit-plane order.

    fp16/bf16 u runs on the tensor cores; float32 u uses IEEE float32 dots (exact, slower).
    split_k > 1: K is cut into that many runs of whole BKW tiles (more programs for few-token calls that
    would not fill the GPU); float32 partial sums go to part [split_k * M * N] (allocated if None) and a
    reduction applies scale, bias and residual."""
    KW, N = words.shape
    _check_gemv(words, scales, bias, y, N, u.shape[0])
    _check(residual is None or (residual.shape == y.shape and residual.stride(1) == 1), f"residual must be [M, {N}]")
    _check(u.dim() == 2 and u.shape[1] == 32 * KW and u.stride(1) == 1
           and u.dtype in (torch.float16, torch.bfloat16, torch.float32),
           f"u must be fp16/bf16/fp32 [M, {32 * KW}] in bit-plane order, got {u.dtype} {list(u.shape)}")
    f32 = u.dtype == torch.float32
    if use_asm is None:
        use_asm = u.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1"
    use_asm = use_asm and not f32
    M = u.shape[0]
    _check(isinstance(split_k, int) and split_k >= 1, f"split_k must be a positive int, got {split_k!r}")
    kw_per_split = triton.cdiv(triton.cdiv(KW, split_k), BKW) * BKW
    split_k = triton.cdiv(KW, kw_per_split)  # no empty splits
    if M:
        partial = split_k > 1
        if partial:
            if part is None:
                part = torch.empty(split_k * M * N, dtype=torch.float32, device=u.device)
            _check(part.numel() >= split_k * M * N and part.dtype == torch.float32, "part workspace too small")
        grid = (triton.cdiv(N, BN), triton.cdiv(M, BM), split_k)
        _gemm_planes_kernel[grid](u, words, scales, bias if bias is not None else scales, part if partial else y,
                                  residual if residual is not None else y, M, N, KW, u.stride(0), y.stride(0),
                                  residual.stride(0) if residual is not None else 0, kw_per_split,
                                  HAS_BIAS=bias is not None, BN=BN, BM=BM, BKW=BKW, USE_ASM=use_asm,
                                  BF16=u.dtype == torch.bfloat16, F32=f32, HAS_RES=residual is not None,
                                  PARTIAL=partial, num_warps=num_warps, num_stages=num_stages)
        if partial:
            _reduce_parts(part, split_k, scales, bias, residual, y)
    return y


def gemv_lut_split(tabs, words, scales, bias, y, *, residual=None, part=None, SW=32, BN=64, chunks=None,
                   num_warps=4):
    """y [M, N] = scales * sum_p tabs[m, p, nibble_p] + bias (+ residual) for 1 to 4 tokens sharing one pass
    over the codes; tabs [M, >= KW * 128] float32, zero past the last group. The K dimension is split
    into slices of SW words (a slice's tables stay in L1); a reduction kernel sums the slices.
    part: optional float32 workspace [ceil(KW / SW) * M * N]."""
    KW, N = words.shape
    M = tabs.shape[0]
    _check_gemv(words, scales, bias, y, N, M)
    _check(1 <= M <= 4, "gemv_lut_split takes 1 to 4 tokens")
    _check(tabs.dim() == 2 and tabs.shape[1] >= KW * 128 and tabs.dtype == torch.float32, "tables too short or not fp32")
    _check(residual is None or (residual.shape == y.shape and residual.stride(1) == 1), f"residual must be [M, {N}]")
    S = triton.cdiv(KW, SW)
    if part is None:
        part = torch.empty(S * M * N, dtype=torch.float32, device=words.device)
    _check(part.numel() >= S * M * N and part.dtype == torch.float32, "part workspace too small")
    if chunks is None:  # enough programs to fill the GPU: ~4 per SM
        sms = torch.cuda.get_device_properties(words.device).multi_processor_count if words.is_cuda else 4
        chunks = max(1, min(triton.cdiv(N, BN), triton.cdiv(4 * sms, S)))
    rows_per_prog = triton.cdiv(triton.cdiv(N, chunks), BN) * BN
    chunks = triton.cdiv(N, rows_per_prog)
    NT = 1 if M == 1 else (2 if M == 2 else 4)
    _gemv_lut_split_kernel[(S, chunks)](tabs, words, part, M, N, KW, rows_per_prog, tabs.stride(0),
                                        NT=NT, SW=SW, BN=BN, num_warps=num_warps)
    _reduce_parts(part, S, scales, bias, residual, y)
    return y
