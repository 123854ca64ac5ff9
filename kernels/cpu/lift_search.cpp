// Null-space nearest-point search for LiftQuant codebooks (CPU, native).
//
// For each chunk w (d floats) the paper's candidates are q = sign(A [w; z]) for every padding
// z in {+-1}^m, m = D - d, with A = [M; N]^-1. This kernel visits the 2^m paddings in Gray-code
// order: one padding bit j toggles per step, so the pre-sign vector changes by +-2 A[:, d+j]
// (D adds), only the entries whose sign changes flip q, and each flip moves the residual
// e = w - M q by +-2 M[:, k] (d adds). The exact state is recomputed every RESYNC steps so
// float32 drift stays bounded. AVX2+FMA with runtime dispatch; a portable fallback otherwise.
//
// C ABI (ctypes): lq_nullspace_search(...) returns 0 on success, a negative code on bad sizes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LQ_X86 1
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int RESYNC = 4096;
constexpr int MAXV = 8;  // up to 64 lifted dims (8 AVX registers)

struct Problem {
    int d, D, m, DP, dP;         // DP, dP: D and d rounded up to multiples of 8
    std::vector<float> Aw;       // [D][d]   row-major, A[:, :d]
    std::vector<float> Az2T;     // [m][DP]  2 * A[:, d + j], padded with 0
    std::vector<float> MT2;      // [D][dP]  2 * M[:, k], padded with 0
    std::vector<float> MT;       // [D][dP]  M[:, k]
    std::vector<float> AzT;      // [m][DP]  A[:, d + j]
    int nbytes;                  // ceil(D / 8)
    std::vector<float> T;        // [nbytes][256][dP]: sum over the byte's bits k of M[:, k] * (+-1)
};

Problem make_problem(const float* A, const float* M, int d, int D) {
    Problem p;
    p.d = d; p.D = D; p.m = D - d;
    p.DP = (D + 7) / 8 * 8;
    p.dP = (d + 7) / 8 * 8;
    p.Aw.assign((size_t)D * d, 0.f);
    p.Az2T.assign((size_t)p.m * p.DP, 0.f);
    p.AzT.assign((size_t)p.m * p.DP, 0.f);
    p.MT2.assign((size_t)D * p.dP, 0.f);
    p.MT.assign((size_t)D * p.dP, 0.f);
    for (int k = 0; k < D; ++k) {
        for (int i = 0; i < d; ++i) p.Aw[(size_t)k * d + i] = A[(size_t)k * D + i];
        for (int j = 0; j < p.m; ++j) {
            p.AzT[(size_t)j * p.DP + k] = A[(size_t)k * D + d + j];
            p.Az2T[(size_t)j * p.DP + k] = 2.f * A[(size_t)k * D + d + j];
        }
        for (int i = 0; i < d; ++i) {
            p.MT[(size_t)k * p.dP + i] = M[(size_t)i * D + k];
            p.MT2[(size_t)k * p.dP + i] = 2.f * M[(size_t)i * D + k];
        }
    }
    p.nbytes = (D + 7) / 8;
    p.T.assign((size_t)p.nbytes * 256 * p.dP, 0.f);
    for (int b = 0; b < p.nbytes; ++b)
        for (int byte = 0; byte < 256; ++byte)
            for (int i = 0; i < d; ++i) {
                double s = 0;
                for (int k = 0; k < 8 && 8 * b + k < D; ++k)
                    s += (double)M[(size_t)i * D + 8 * b + k] * (((byte >> k) & 1) ? 1.0 : -1.0);
                p.T[((size_t)b * 256 + byte) * p.dP + i] = (float)s;
            }
    return p;
}

// Exact state for padding mask zmask: v = Aw w + Az z, q = v >= 0, e = w - M q.
inline void resync(const Problem& p, const float* w, uint64_t zmask, float* v, uint64_t& qmask, float* e) {
    for (int k = 0; k < p.DP; ++k) v[k] = 1.f;  // padded lanes stay positive, never flip
    for (int k = 0; k < p.D; ++k) {
        double s = 0;
        for (int i = 0; i < p.d; ++i) s += (double)p.Aw[(size_t)k * p.d + i] * w[i];
        for (int j = 0; j < p.m; ++j) s += (double)p.AzT[(size_t)j * p.DP + k] * (((zmask >> j) & 1) ? 1.0 : -1.0);
        v[k] = (float)s;
    }
    qmask = 0;
    for (int k = 0; k < p.D; ++k) qmask |= (uint64_t)(v[k] >= 0.f) << k;
    for (int i = 0; i < p.dP; ++i) e[i] = 0.f;
    for (int i = 0; i < p.d; ++i) {
        double s = w[i];
        for (int k = 0; k < p.D; ++k) s -= (double)p.MT[(size_t)k * p.dP + i] * (((qmask >> k) & 1) ? 1.0 : -1.0);
        e[i] = (float)s;
    }
}

// Portable version.
void search_one_generic(const Problem& p, const float* w, int64_t* code, float* dist) {
    alignas(32) float v[64], e[64];
    uint64_t qmask, zmask = 0;
    resync(p, w, zmask, v, qmask, e);
    float best = 0.f;
    for (int i = 0; i < p.d; ++i) best += e[i] * e[i];
    uint64_t bestq = qmask;
    const uint64_t steps = 1ull << p.m;
    for (uint64_t t = 1; t < steps; ++t) {
        int j = __builtin_ctzll(t);
        zmask ^= 1ull << j;
        if ((t & (RESYNC - 1)) == 0) {
            resync(p, w, zmask, v, qmask, e);
        } else {
            const float* a = &p.Az2T[(size_t)j * p.DP];
            if ((zmask >> j) & 1) for (int k = 0; k < p.D; ++k) v[k] += a[k];
            else for (int k = 0; k < p.D; ++k) v[k] -= a[k];
            uint64_t nq = 0;
            for (int k = 0; k < p.D; ++k) nq |= (uint64_t)(v[k] >= 0.f) << k;
            uint64_t fl = nq ^ qmask;
            while (fl) {
                int k = __builtin_ctzll(fl);
                fl &= fl - 1;
                const float* mk = &p.MT2[(size_t)k * p.dP];
                if ((qmask >> k) & 1) for (int i = 0; i < p.d; ++i) e[i] += mk[i];
                else for (int i = 0; i < p.d; ++i) e[i] -= mk[i];
            }
            qmask = nq;
        }
        float s = 0.f;
        for (int i = 0; i < p.d; ++i) s += e[i] * e[i];
        if (s < best) { best = s; bestq = qmask; }
    }
    *code = (int64_t)bestq;
    *dist = best;
}

#ifdef LQ_X86
template <int NE>
__attribute__((target("avx2,fma"), always_inline)) inline float sumsq(const __m256* e) {
    __m256 acc = _mm256_mul_ps(e[0], e[0]);
    for (int r = 1; r < NE; ++r) acc = _mm256_fmadd_ps(e[r], e[r], acc);
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
    return _mm_cvtss_f32(lo);
}

template <int NE>
__attribute__((target("avx2,fma"), always_inline)) inline void residual(const float* T, int nb, int dP, uint64_t q,
                                                                      const __m256* wv, __m256* e) {
    for (int r = 0; r < NE; ++r) e[r] = wv[r];
    for (int b = 0; b < nb; ++b) {
        const float* t = T + ((size_t)b * 256 + ((q >> (8 * b)) & 255)) * dP;
        for (int r = 0; r < NE; ++r) e[r] = _mm256_sub_ps(e[r], _mm256_loadu_ps(t + 8 * r));
    }
}

template <int NV, int NE>
__attribute__((target("avx2,fma"))) void search_one_avx2(const Problem& p, const float* w, int64_t* code, float* dist) {
    // Residual e = w - sum_b T[b][byte b of q]: byte tables make the distance branch-free.
    alignas(32) float vb[64], eb[64];
    uint64_t qmask, zmask = 0;
    resync(p, w, zmask, vb, qmask, eb);
    __m256 v[NV], wv[NE];
    for (int r = 0; r < NV; ++r) v[r] = _mm256_load_ps(vb + 8 * r);
    for (int r = 0; r < NE; ++r) wv[r] = _mm256_setzero_ps();
    for (int i = 0; i < p.d; ++i) eb[i] = w[i];
    for (int i = p.d; i < 8 * NE; ++i) eb[i] = 0.f;
    for (int r = 0; r < NE; ++r) wv[r] = _mm256_load_ps(eb + 8 * r);
    const float* T = p.T.data();
    const int nb = p.nbytes, dP = p.dP;
    __m256 e[NE];
    residual<NE>(T, nb, dP, qmask, wv, e);
    float best = sumsq<NE>(e);
    uint64_t bestq = qmask;
    const __m256 zero = _mm256_setzero_ps();
    const uint64_t steps = 1ull << p.m;
    const float* Az2T = p.Az2T.data();
    const int DP = p.DP;
    const uint64_t dmask = p.D == 64 ? ~0ull : ((1ull << p.D) - 1);
    for (uint64_t t = 1; t < steps; ++t) {
        int j = __builtin_ctzll(t);
        zmask ^= 1ull << j;
        if ((t & (RESYNC - 1)) == 0) {
            resync(p, w, zmask, vb, qmask, eb);
            for (int r = 0; r < NV; ++r) v[r] = _mm256_load_ps(vb + 8 * r);
        } else {
            const float* a = Az2T + (size_t)j * DP;
            if ((zmask >> j) & 1) {
                for (int r = 0; r < NV; ++r) v[r] = _mm256_add_ps(v[r], _mm256_loadu_ps(a + 8 * r));
            } else {
                for (int r = 0; r < NV; ++r) v[r] = _mm256_sub_ps(v[r], _mm256_loadu_ps(a + 8 * r));
            }
            uint64_t nq = 0;
            for (int r = 0; r < NV; ++r)
                nq |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v[r], zero, _CMP_GE_OQ)) << (8 * r);
            qmask = nq & dmask;
        }
        residual<NE>(T, nb, dP, qmask, wv, e);
        float s = sumsq<NE>(e);
        if (s < best) { best = s; bestq = qmask; }
    }
    *code = (int64_t)bestq;
    *dist = best;
}

using Fn = void (*)(const Problem&, const float*, int64_t*, float*);

template <int NV>
Fn pick_ne(int ne) {
    switch (ne) {
        case 1: return search_one_avx2<NV, 1>;
        case 2: return search_one_avx2<NV, 2>;
        case 3: return search_one_avx2<NV, 3>;
        case 4: return search_one_avx2<NV, 4>;
        default: return nullptr;
    }
}

Fn pick_avx2(int nv, int ne) {
    switch (nv) {
        case 1: return pick_ne<1>(ne);
        case 2: return pick_ne<2>(ne);
        case 3: return pick_ne<3>(ne);
        case 4: return pick_ne<4>(ne);
        case 5: return pick_ne<5>(ne);
        case 6: return pick_ne<6>(ne);
        case 7: return pick_ne<7>(ne);
        case 8: return pick_ne<8>(ne);
        default: return nullptr;
    }
}

bool have_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
}
#endif


// ---------------------------------------------------------------------------------- exact
// All 2^D codewords, split as M q = M1 q1 + M2 q2 (q1: first D1 bits, q2: the other D2):
// ||w - M q||^2 = ||w||^2 - 2 w.c1_i - 2 w.c2_j + G[i][j],  G[i][j] = ||c1_i + c2_j||^2.
// Per chunk the cost is 2^D adds/mins plus (2^D1 + 2^D2) d-dot products.
struct Exact {
    int d, D, D1, D2, n1, n2;
    std::vector<float> C1, C2;  // [n1][d], [n2][d]
    std::vector<float> G;       // [n1][n2]
};

Exact make_exact(const float* M, int d, int D) {
    Exact x;
    x.d = d; x.D = D; x.D2 = D / 2; x.D1 = D - x.D2;
    x.n1 = 1 << x.D1; x.n2 = 1 << x.D2;
    x.C1.assign((size_t)x.n1 * d, 0.f);
    x.C2.assign((size_t)x.n2 * d, 0.f);
    for (int i = 0; i < x.n1; ++i)
        for (int r = 0; r < d; ++r) {
            double s = 0;
            for (int k = 0; k < x.D1; ++k) s += (double)M[(size_t)r * D + k] * (((i >> k) & 1) ? 1.0 : -1.0);
            x.C1[(size_t)i * d + r] = (float)s;
        }
    for (int j = 0; j < x.n2; ++j)
        for (int r = 0; r < d; ++r) {
            double s = 0;
            for (int k = 0; k < x.D2; ++k) s += (double)M[(size_t)r * D + x.D1 + k] * (((j >> k) & 1) ? 1.0 : -1.0);
            x.C2[(size_t)j * d + r] = (float)s;
        }
    x.G.assign((size_t)x.n1 * x.n2, 0.f);
    for (int i = 0; i < x.n1; ++i)
        for (int j = 0; j < x.n2; ++j) {
            double s = 0;
            for (int r = 0; r < d; ++r) {
                double c = (double)x.C1[(size_t)i * d + r] + x.C2[(size_t)j * d + r];
                s += c * c;
            }
            x.G[(size_t)i * x.n2 + j] = (float)s;
        }
    return x;
}

void exact_prep(const Exact& x, const float* w, float* a1, float* a2, float& wn) {
    wn = 0.f;
    for (int r = 0; r < x.d; ++r) wn += w[r] * w[r];
    for (int i = 0; i < x.n1; ++i) {
        float s = 0.f;
        for (int r = 0; r < x.d; ++r) s += w[r] * x.C1[(size_t)i * x.d + r];
        a1[i] = -2.f * s;
    }
    for (int j = 0; j < x.n2; ++j) {
        float s = 0.f;
        for (int r = 0; r < x.d; ++r) s += w[r] * x.C2[(size_t)j * x.d + r];
        a2[j] = -2.f * s;
    }
}

void exact_one_generic(const Exact& x, const float* w, float* a1, float* a2, int64_t* code, float* dist) {
    float wn;
    exact_prep(x, w, a1, a2, wn);
    float best = INFINITY;
    int64_t bi = 0;
    for (int i = 0; i < x.n1; ++i) {
        const float* g = &x.G[(size_t)i * x.n2];
        for (int j = 0; j < x.n2; ++j) {
            float v = a1[i] + a2[j] + g[j];
            if (v < best) { best = v; bi = ((int64_t)j << x.D1) | i; }
        }
    }
    *code = bi;
    *dist = std::max(0.f, best + wn);
}

#ifdef LQ_X86
__attribute__((target("avx2,fma"))) void exact_one_avx2(const Exact& x, const float* w, float* a1, float* a2,
                                                       int64_t* code, float* dist) {
    float wn;
    exact_prep(x, w, a1, a2, wn);
    // n2 >= 8 is guaranteed by the caller (D >= 8 when this path is taken)
    __m256 bestv = _mm256_set1_ps(INFINITY);
    __m256i besti = _mm256_setzero_si256();
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int i = 0; i < x.n1; ++i) {
        const float* g = &x.G[(size_t)i * x.n2];
        const __m256 ai = _mm256_set1_ps(a1[i]);
        const int base = i * x.n2;
        for (int j = 0; j < x.n2; j += 8) {
            __m256 v = _mm256_add_ps(_mm256_add_ps(ai, _mm256_loadu_ps(a2 + j)), _mm256_loadu_ps(g + j));
            __m256 lt = _mm256_cmp_ps(v, bestv, _CMP_LT_OQ);
            bestv = _mm256_min_ps(v, bestv);
            __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(base + j), lane);
            besti = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(besti), _mm256_castsi256_ps(idx), lt));
        }
    }
    alignas(32) float bv[8];
    alignas(32) int32_t bix[8];
    _mm256_store_ps(bv, bestv);
    _mm256_store_si256((__m256i*)bix, besti);
    float best = bv[0];
    int32_t flat = bix[0];
    for (int l = 1; l < 8; ++l)
        if (bv[l] < best || (bv[l] == best && bix[l] < flat)) { best = bv[l]; flat = bix[l]; }
    int64_t i = flat / x.n2, j = flat % x.n2;
    *code = (j << x.D1) | i;
    *dist = std::max(0.f, best + wn);
}
#endif

}  // namespace

extern "C" {

// 1 if the AVX2+FMA path is used on this CPU, 0 for the portable one.
int lq_search_isa(void) {
#ifdef LQ_X86
    return have_avx2() ? 1 : 0;
#else
    return 0;
#endif
}

// W: n x d chunks (row-major float32); A: D x D ([M; N]^-1, row-major); M: d x D (row-major).
// codes_out: n int64 bit masks (bit k set <=> q_k = +1); dist_out: n squared distances.
// force_generic != 0 uses the portable path even where AVX2 is present (for tests).
int lq_nullspace_search(const float* W, int64_t n, int d, int D, const float* A, const float* M,
                        int64_t* codes_out, float* dist_out, int nthreads, int force_generic) {
    if (!W || !A || !M || !codes_out || !dist_out) return -1;
    if (n < 0 || d < 1 || D <= d || D > 64 || D - d > 30) return -2;
    if (n == 0) return 0;
    Problem p = make_problem(A, M, d, D);
    void (*fn)(const Problem&, const float*, int64_t*, float*) = search_one_generic;
#ifdef LQ_X86
    if (!force_generic && have_avx2()) {
        Fn f = pick_avx2(p.DP / 8, p.dP / 8);
        if (f) fn = f;
    }
#endif
    (void)force_generic;
#ifdef _OPENMP
    if (nthreads <= 0) nthreads = omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 64) num_threads(nthreads)
#endif
    for (int64_t i = 0; i < n; ++i) fn(p, W + (size_t)i * d, codes_out + i, dist_out + i);
    return 0;
}

// Exact nearest codeword over all 2^D codewords (D <= 26). Same conventions as above.
int lq_exact_search(const float* W, int64_t n, int d, int D, const float* M, int64_t* codes_out,
                    float* dist_out, int nthreads, int force_generic) {
    if (!W || !M || !codes_out || !dist_out) return -1;
    if (n < 0 || d < 1 || D <= d || D > 26) return -2;
    if (n == 0) return 0;
    Exact x = make_exact(M, d, D);
    bool vec = false;
#ifdef LQ_X86
    vec = !force_generic && have_avx2() && x.n2 >= 8;
#endif
    (void)force_generic;
#ifdef _OPENMP
    if (nthreads <= 0) nthreads = omp_get_max_threads();
#pragma omp parallel num_threads(nthreads)
#endif
    {
        std::vector<float> a1(x.n1), a2(x.n2 + 8);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 64)
#endif
        for (int64_t i = 0; i < n; ++i) {
#ifdef LQ_X86
            if (vec) { exact_one_avx2(x, W + (size_t)i * d, a1.data(), a2.data(), codes_out + i, dist_out + i); continue; }
#endif
            exact_one_generic(x, W + (size_t)i * d, a1.data(), a2.data(), codes_out + i, dist_out + i);
        }
    }
    (void)vec;
    return 0;
}

}  // extern "C"
