// LiftMatMul fast mode (attribute lut_bits = 8; spec/onnx-ops.md "Fast mode (lut_bits = 8)").
//
// Per token the lifted activation u (K values) becomes, for every group g of 4 consecutive code bits,
// a table of the 16 signed sums T_g[c] = sum_i (2 bit_i(c) - 1) u[4g + i], quantized to int8 with one
// float scale per block of kLutBlock groups. The GEMV is then one table lookup per code nibble:
// the codes are repacked (once, cached in the kernel) into blocks of kLutRows = 64 rows where one
// 32-byte load holds code byte p of 32 rows; a vpshufb with the broadcast 16-byte table of group 2p
// looks up the low nibbles of those 32 rows and one with the table of group 2p+1 the high nibbles
// (both tables are loaded once for the block's two halves of 32 rows). The two int8 lookups of a row
// are interleaved and summed into int16 (vpmaddubsw with ones); the int16 sums stay below
// 127 * kLutBlock < 2^15 within a scale block, are then widened to int32, converted to float and
// scaled by the block's scale.
//
// This file is compiled with -ffp-contract=off: the portable and the AVX2 versions perform the same
// float32 operations in the same order (no fused multiply-add), so they produce identical tables,
// identical integer sums and identical outputs.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "lift_matmul.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LQ_X86 1
#endif

namespace liftquant {

namespace {

constexpr int64_t kRowsPerTask = 8;     // rows of L per transform task
constexpr int64_t kBlocksPerTask = 16;  // scale blocks per table task

int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

// ---------------------------------------------------------------- portable versions

// C[i][0:nc] = sum_{k < kd} A[i][k] * B[k][0:nc] for rows i0 <= i < i1 (k ascending, from 0, mul then add).
void gemm_rows_ref(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t kd, int64_t nc, float* C,
                   int64_t ldc, int64_t i0, int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    float* c = C + i * ldc;
    for (int64_t j = 0; j < nc; ++j) c[j] = 0.f;
    const float* a = A + i * lda;
    for (int64_t k = 0; k < kd; ++k) {
      const float av = a[k];
      const float* b = B + k * ldb;
      for (int64_t j = 0; j < nc; ++j) c[j] = c[j] + av * b[j];
    }
  }
}

// round half to even for |v| < 2^22 in the default rounding mode (what cvtps2dq does)
inline int32_t round_even(float v) {
  const float magic = 12582912.f;  // 1.5 * 2^23
  return static_cast<int32_t>((v + magic) - magic);
}

// The block's largest possible |T_g[c]|: max over its groups of (|u0| + |u1|) + (|u2| + |u3|).
// Returns false when a value is NaN.
bool block_max_ref(const float* u, int64_t sb, float* m) {
  float mx = 0.f;
  bool nan = false;
  for (int64_t g = 0; g < sb; ++g) {
    const float* v = u + 4 * g;
    const float s = (std::fabs(v[0]) + std::fabs(v[1])) + (std::fabs(v[2]) + std::fabs(v[3]));
    nan |= (s != s);
    mx = s > mx ? s : mx;
  }
  *m = mx;
  return !nan;
}

// tab[g][c] = round_even(T_g[c] * inv) for c < 8 and -tab[g][15 - c] for c >= 8.
void block_tables_ref(const float* u, int64_t sb, float inv, int8_t* tab) {
  for (int64_t g = 0; g < sb; ++g) {
    const float* v = u + 4 * g;
    int8_t* t = tab + 16 * g;
    for (int c = 0; c < 8; ++c) {
      const float a0 = (c & 1) ? v[0] : -v[0];
      const float a1 = (c & 2) ? v[1] : -v[1];
      const float a2 = (c & 4) ? v[2] : -v[2];
      const float T = (a0 + a1) + (a2 + -v[3]);
      const int32_t q = round_even(T * inv);
      t[c] = static_cast<int8_t>(q);
      t[15 - c] = static_cast<int8_t>(-q);
    }
  }
}

// One row block of kLutRows rows: f[t][i] += (sum over the block's groups of tab lookups) * delta[t][b],
// for each scale block b (ascending) and token t.
void gemv_block_ref(const uint8_t* pk, const int8_t* tab, const float* delta, int64_t T, int64_t nblk, int64_t sb,
                    float* f) {
  const int64_t G = nblk * sb;
  for (int64_t b = 0; b < nblk; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int8_t* tb = tab + t * G * 16;
      const float d = delta[t * nblk + b];
      for (int64_t i = 0; i < kLutRows; ++i) {
        int32_t acc = 0;
        for (int64_t g = b * sb; g < (b + 1) * sb; ++g) {
          const int nib = (pk[(g / 2) * kLutRows + i] >> (4 * (g & 1))) & 15;
          acc += tb[g * 16 + nib];
        }
        f[t * kLutRows + i] = f[t * kLutRows + i] + static_cast<float>(acc) * d;
      }
    }
}

// ---------------------------------------------------------------- AVX2 versions
#ifdef LQ_X86
#pragma GCC push_options
#pragma GCC target("avx2")

template <int RT, int CV>
inline void gemm_tile(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t kd, float* C, int64_t ldc,
                      int64_t ncols) {  // ncols: valid columns of this tile (<= 8 * CV); the rest is not stored
  __m256 acc[RT][CV];
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < CV; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kd; ++k) {
    __m256 b[CV];
    for (int v = 0; v < CV; ++v) b[v] = _mm256_loadu_ps(B + k * ldb + 8 * v);
    for (int r = 0; r < RT; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
      for (int v = 0; v < CV; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_mul_ps(a, b[v]));
    }
  }
  for (int r = 0; r < RT; ++r)
    for (int v = 0; v < CV; ++v) {
      const int64_t n = std::min<int64_t>(8, ncols - 8 * v);
      if (n == 8) {
        _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);
      } else if (n > 0) {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, acc[r][v]);
        std::memcpy(C + r * ldc + 8 * v, tmp, sizeof(float) * n);
      }
    }
}

// Same as gemm_rows_ref; B must hold round8(nc) readable (zero-padded) columns. Tiles keep at least
// 6 independent accumulators (the add latency) and share each B load across 4-6 rows.
void gemm_rows_avx2(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t kd, int64_t nc, float* C,
                    int64_t ldc, int64_t i0, int64_t i1) {
  const int64_t nv = (nc + 7) / 8;
  auto tile = [&](auto rt, auto cv, int64_t i, int64_t v) {
    gemm_tile<decltype(rt)::value, decltype(cv)::value>(A + i * lda, lda, B + 8 * v, ldb, kd, C + i * ldc + 8 * v,
                                                        ldc, nc - 8 * v);
  };
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using I3 = std::integral_constant<int, 3>;
  using I4 = std::integral_constant<int, 4>;
  using I6 = std::integral_constant<int, 6>;
  int64_t v = 0;
  while (v < nv) {  // column tiles of 3 or 2 vectors (4 rows each), a last single vector with 6 rows
    const int64_t left = nv - v, w = (left >= 3 && left != 4) ? 3 : (left >= 2 ? 2 : 1);
    int64_t i = i0;
    if (w == 3) {
      for (; i + 4 <= i1; i += 4) tile(I4{}, I3{}, i, v);
      for (; i < i1; ++i) tile(I1{}, I3{}, i, v);
    } else if (w == 2) {
      for (; i + 4 <= i1; i += 4) tile(I4{}, I2{}, i, v);
      for (; i < i1; ++i) tile(I1{}, I2{}, i, v);
    } else {
      for (; i + 6 <= i1; i += 6) tile(I6{}, I1{}, i, v);
      for (; i < i1; ++i) tile(I1{}, I1{}, i, v);
    }
    v += w;
  }
}

bool block_max_avx2(const float* u, int64_t sb, float* m) {
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 mx = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  for (int64_t g = 0; g < sb; g += 2) {  // two groups per vector
    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(u + 4 * g), absm);
    const __m256 s1 = _mm256_add_ps(v, _mm256_permute_ps(v, 0xB1));     // [|u0|+|u1|, ., |u2|+|u3|, .]
    const __m256 s = _mm256_add_ps(s1, _mm256_permute_ps(s1, 0x4E));   // position 0: the group's sum
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
    mx = _mm256_max_ps(mx, s);
  }
  alignas(32) float a[8];
  _mm256_store_ps(a, mx);
  *m = std::max(std::max(a[0], a[4]), 0.f);
  return _mm256_movemask_ps(nan) == 0;
}

void block_tables_avx2(const float* u, int64_t sb, float inv, int8_t* tab) {
  const __m256 s0 = _mm256_castsi256_ps(_mm256_setr_epi32(INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0, INT32_MIN, 0));
  const __m256 s1 = _mm256_castsi256_ps(_mm256_setr_epi32(INT32_MIN, INT32_MIN, 0, 0, INT32_MIN, INT32_MIN, 0, 0));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_setr_epi32(INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, 0, 0, 0, 0));
  const __m256 s3 = _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN));
  const __m256i rev = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
  const __m256i gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (int64_t g = 0; g < sb; ++g) {
    const float* v = u + 4 * g;
    const __m256 a0 = _mm256_xor_ps(_mm256_broadcast_ss(v + 0), s0);
    const __m256 a1 = _mm256_xor_ps(_mm256_broadcast_ss(v + 1), s1);
    const __m256 a2 = _mm256_xor_ps(_mm256_broadcast_ss(v + 2), s2);
    const __m256 a3 = _mm256_xor_ps(_mm256_broadcast_ss(v + 3), s3);
    const __m256 T = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(T, vinv));                  // c = 0..7
    const __m256i qn = _mm256_permutevar8x32_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), q), rev);  // c = 8..15
    const __m256i w = _mm256_packs_epi32(q, qn);  // int16: [q0-3, q8-11 | q4-7, q12-15]
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w, w), gather);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(tab + 16 * g), _mm256_castsi256_si128(bytes));
  }
}

// Rows 0-31 and 32-63 of the block share each table load. Lanes of the int16 sums: acc0 rows 0-7 | 16-23,
// acc1 rows 8-15 | 24-31 (and acc2, acc3 the same for rows 32-63).
void gemv_block_avx2(const uint8_t* pk, const int8_t* tab, const float* delta, int64_t T, int64_t nblk, int64_t sb,
                     float* f) {
  const int64_t G = nblk * sb, ppb = sb / 2;
  const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi8(1);
  for (int64_t b = 0; b < nblk; ++b) {
    const uint8_t* cb = pk + b * ppb * kLutRows;
    for (int64_t t = 0; t < T; ++t) {
      const int8_t* tb = tab + t * G * 16 + b * sb * 16;
      __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
      for (int64_t p = 0; p < ppb; ++p) {
        const __m256i t0 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + 32 * p)));
        const __m256i t1 =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + 32 * p + 16)));
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cb + p * kLutRows));
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cb + p * kLutRows + 32));
        const __m256i r0 = _mm256_shuffle_epi8(t0, _mm256_and_si256(v, m4));  // group 2p, rows 0-31
        const __m256i r1 = _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));  // group 2p+1
        const __m256i r2 = _mm256_shuffle_epi8(t0, _mm256_and_si256(w, m4));  // rows 32-63
        const __m256i r3 = _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(w, 4), m4));
        // each row's two lookups side by side, summed into int16
        acc0 = _mm256_add_epi16(acc0, _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(r0, r1)));
        acc1 = _mm256_add_epi16(acc1, _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(r0, r1)));
        acc2 = _mm256_add_epi16(acc2, _mm256_maddubs_epi16(ones, _mm256_unpacklo_epi8(r2, r3)));
        acc3 = _mm256_add_epi16(acc3, _mm256_maddubs_epi16(ones, _mm256_unpackhi_epi8(r2, r3)));
      }
      const __m256 d = _mm256_set1_ps(delta[t * nblk + b]);
      float* ft = f + t * kLutRows;
      const __m256i acc[4] = {acc0, acc1, acc2, acc3};
      for (int h = 0; h < 2; ++h) {
        const __m256i lo = acc[2 * h], hi = acc[2 * h + 1];
        float* fh = ft + 32 * h;
        const __m256i wv0 = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(lo));       // rows 0-7
        const __m256i wv1 = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(hi));       // rows 8-15
        const __m256i wv2 = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(lo, 1));  // rows 16-23
        const __m256i wv3 = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(hi, 1));  // rows 24-31
        _mm256_storeu_ps(fh, _mm256_add_ps(_mm256_loadu_ps(fh), _mm256_mul_ps(_mm256_cvtepi32_ps(wv0), d)));
        _mm256_storeu_ps(fh + 8, _mm256_add_ps(_mm256_loadu_ps(fh + 8), _mm256_mul_ps(_mm256_cvtepi32_ps(wv1), d)));
        _mm256_storeu_ps(fh + 16, _mm256_add_ps(_mm256_loadu_ps(fh + 16), _mm256_mul_ps(_mm256_cvtepi32_ps(wv2), d)));
        _mm256_storeu_ps(fh + 24, _mm256_add_ps(_mm256_loadu_ps(fh + 24), _mm256_mul_ps(_mm256_cvtepi32_ps(wv3), d)));
      }
    }
  }
}

#pragma GCC pop_options
#endif

void gemm_rows(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t kd, int64_t nc, float* C, int64_t ldc,
               int64_t i0, int64_t i1) {
#ifdef LQ_X86
  if (cpu_has_avx2()) return gemm_rows_avx2(A, lda, B, ldb, kd, nc, C, ldc, i0, i1);
#endif
  gemm_rows_ref(A, lda, B, ldb, kd, nc, C, ldc, i0, i1);
}

// Tables and scales of scale blocks [b0, b1) of one token: u holds nblk * sb * 4 values.
void lut_tables(const float* u, int64_t sb, int64_t b0, int64_t b1, int8_t* tab, float* delta) {
  const bool avx = cpu_has_avx2();
  for (int64_t b = b0; b < b1; ++b) {
    const float* ub = u + b * sb * 4;
    int8_t* tb = tab + b * sb * 16;
    float m = 0.f;
    bool ok;
#ifdef LQ_X86
    ok = avx ? block_max_avx2(ub, sb, &m) : block_max_ref(ub, sb, &m);
#else
    ok = block_max_ref(ub, sb, &m);
#endif
    if (!ok || !(m <= FLT_MAX)) {  // NaN or infinite activations: the output is NaN
      std::memset(tb, 0, static_cast<size_t>(sb) * 16);
      delta[b] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float inv = m > 0.f ? 127.f / m : 0.f;
    delta[b] = m / 127.f;
#ifdef LQ_X86
    if (avx) {
      block_tables_avx2(ub, sb, inv, tb);
      continue;
    }
#endif
    block_tables_ref(ub, sb, inv, tb);
  }
}

void gemv_block(const uint8_t* pk, const int8_t* tab, const float* delta, int64_t T, int64_t nblk, int64_t sb,
                float* f) {
#ifdef LQ_X86
  if (cpu_has_avx2()) return gemv_block_avx2(pk, tab, delta, T, nblk, sb, f);
#endif
  gemv_block_ref(pk, tab, delta, T, nblk, sb, f);
}

// Per-thread scratch reused across calls (Compute may run concurrently on several threads).
struct Scratch {
  std::vector<float> xt, tmp, u, delta;
  std::vector<int8_t> tab;
};

}  // namespace

Ort::Status LiftMatMul::ComputeLut(OrtKernelContext* ctx, const float* x, int64_t T, const uint8_t* cd, float* y) {
  const Prepared& p = prep_;
  {  // repack the codes and pad R once per set of constant inputs
    std::lock_guard<std::mutex> lock(mu_);
    if (!std::equal(p.key, p.key + 7, lut_.key)) {
      LutState s;
      std::copy(p.key, p.key + 7, s.key);
      const int64_t G = (K_ + 3) / 4;
      s.nblk = (G + s.sb - 1) / s.sb;
      s.P = s.nblk * s.sb / 2;
      s.n2p = round8(n2_);
      const int64_t nbD = nb_ * D_;
      s.nbDp = round8(nbD);
      s.Rp.assign(n2_ * s.nbDp, 0.f);
      for (int64_t q = 0; q < n2_; ++q) std::copy(p.R.begin() + q * nbD, p.R.begin() + (q + 1) * nbD, s.Rp.begin() + q * s.nbDp);
      const int64_t nrb = (out_ + kLutRows - 1) / kLutRows;
      s.codes.assign(static_cast<size_t>(nrb) * s.P * kLutRows, 0);
      for (int64_t r = 0; r < out_; ++r) {
        uint8_t* dst = s.codes.data() + (r / kLutRows) * s.P * kLutRows + (r % kLutRows);
        const uint8_t* src = cd + r * B_;
        for (int64_t j = 0; j < B_; ++j) dst[j * kLutRows] = src[j];
      }
      lut_ = std::move(s);
    }
  }
  const LutState& L = lut_;
  const int64_t sb = L.sb, nblk = L.nblk, G = nblk * sb, Kp = G * 4, n2p = L.n2p;
  thread_local Scratch sc;
  sc.xt.resize(static_cast<size_t>(T) * n1_ * n2p);
  sc.tmp.resize(static_cast<size_t>(T) * n1_ * n2p);
  sc.u.resize(static_cast<size_t>(T) * Kp);
  sc.tab.resize(static_cast<size_t>(T) * G * 16);
  sc.delta.resize(static_cast<size_t>(T) * nblk);
  // x~ = [x, 0] / s1 as n1 x n2p (zero columns past n2); u past K is zero
  for (int64_t t = 0; t < T; ++t) {
    const float* xr = x + t * in_;
    float* xt = sc.xt.data() + t * n1_ * n2p;
    for (int64_t i = 0; i < n1_; ++i) {
      const int64_t k0 = i * n2_, nq = std::max<int64_t>(0, std::min(n2_, in_ - k0));
      float* row = xt + i * n2p;
      for (int64_t q = 0; q < nq; ++q) row[q] = xr[k0 + q] * p.s1inv[k0 + q];
      for (int64_t q = nq; q < n2p; ++q) row[q] = 0.f;
    }
    std::fill(sc.u.begin() + t * Kp + K_, sc.u.begin() + (t + 1) * Kp, 0.f);
  }
  Ort::KernelContext kctx(ctx);
  // 1. u = L x~ R, in tasks of kRowsPerTask rows of L per token
  struct TfJob {
    const LiftMatMul* k; const Prepared* p; const LutState* L; Scratch* sc; int64_t nchunk, Kp;
  } tj{this, &p, &L, &sc, (n1_ + kRowsPerTask - 1) / kRowsPerTask, Kp};
  auto tf_fn = [](void* ud, size_t idx) {
    auto* j = static_cast<TfJob*>(ud);
    const LiftMatMul& k = *j->k;
    const int64_t t = static_cast<int64_t>(idx) / j->nchunk, c = static_cast<int64_t>(idx) % j->nchunk;
    const int64_t i0 = c * kRowsPerTask, i1 = std::min(k.n1_, i0 + kRowsPerTask), n2p = j->L->n2p;
    const float* xt = j->sc->xt.data() + t * k.n1_ * n2p;
    float* tmp = j->sc->tmp.data() + t * k.n1_ * n2p;
    float* u = j->sc->u.data() + t * j->Kp;
    gemm_rows(j->p->L.data(), k.n1_, xt, n2p, k.n1_, k.n2_, tmp, n2p, i0, i1);
    gemm_rows(tmp, n2p, j->L->Rp.data(), j->L->nbDp, k.n2_, k.nb_ * k.D_, u, k.nb_ * k.D_, i0, i1);
  };
  kctx.ParallelFor(tf_fn, static_cast<size_t>(T * tj.nchunk), 0, &tj);
  // 2. int8 tables and block scales, in tasks of kBlocksPerTask blocks per token
  struct TabJob { Scratch* sc; int64_t sb, nblk, nchunk, Kp, G; } bj{&sc, sb, nblk, (nblk + kBlocksPerTask - 1) / kBlocksPerTask, Kp, G};
  auto tab_fn = [](void* ud, size_t idx) {
    auto* j = static_cast<TabJob*>(ud);
    const int64_t t = static_cast<int64_t>(idx) / j->nchunk, c = static_cast<int64_t>(idx) % j->nchunk;
    const int64_t b0 = c * kBlocksPerTask, b1 = std::min(j->nblk, b0 + kBlocksPerTask);
    lut_tables(j->sc->u.data() + t * j->Kp, j->sb, b0, b1, j->sc->tab.data() + t * j->G * 16,
               j->sc->delta.data() + t * j->nblk);
  };
  kctx.ParallelFor(tab_fn, static_cast<size_t>(T * bj.nchunk), 0, &bj);
  // 3. row blocks in parallel; a block walks its codes once, all tokens per scale block
  struct RowJob {
    const LutState* L; const Prepared* p; const Scratch* sc; float* y; int64_t T, N;
  } rj{&L, &p, &sc, y, T, out_};
  auto row_fn = [](void* ud, size_t blk) {
    auto* j = static_cast<RowJob*>(ud);
    const int64_t r0 = static_cast<int64_t>(blk) * kLutRows, nr = std::min(kLutRows, j->N - r0);
    float fbuf[16 * kLutRows];
    std::vector<float> fvec;
    float* f = fbuf;
    if (j->T > 16) {
      fvec.resize(static_cast<size_t>(j->T) * kLutRows);
      f = fvec.data();
    }
    std::fill(f, f + j->T * kLutRows, 0.f);
    gemv_block(j->L->codes.data() + blk * j->L->P * kLutRows, j->sc->tab.data(), j->sc->delta.data(), j->T,
               j->L->nblk, j->L->sb, f);
    for (int64_t t = 0; t < j->T; ++t)
      for (int64_t i = 0; i < nr; ++i)
        j->y[t * j->N + r0 + i] = j->p->scale[r0 + i] * f[t * kLutRows + i] + j->p->bias[r0 + i];
  };
  kctx.ParallelFor(row_fn, static_cast<size_t>((out_ + kLutRows - 1) / kLutRows), 0, &rj);
  return Ort::Status{nullptr};
}

}  // namespace liftquant
