// Hot loops of LiftMatMul with a portable version and an AVX2+FMA version chosen at run time.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lift_matmul.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LQ_X86 1
#endif

namespace liftquant {

namespace {

// U = L (X~) R for one token; X~ is n1 x n2 row-major, tmp n1 x n2, u n1 x nbD.
template <bool kAvx>
void transform_impl(const Prepared& p, int64_t n1, int64_t n2, int64_t nbD, const float* xt, float* tmp, float* u) {
  for (int64_t i = 0; i < n1; ++i) {
    float* ti = tmp + i * n2;
    for (int64_t q = 0; q < n2; ++q) ti[q] = 0.f;
    const float* Li = p.L.data() + i * n1;
    for (int64_t k = 0; k < n1; ++k) {
      const float l = Li[k];
      const float* xk = xt + k * n2;
      for (int64_t q = 0; q < n2; ++q) ti[q] += l * xk[q];
    }
  }
  for (int64_t i = 0; i < n1; ++i) {
    float* ui = u + i * nbD;
    for (int64_t c = 0; c < nbD; ++c) ui[c] = 0.f;
    const float* ti = tmp + i * n2;
    for (int64_t q = 0; q < n2; ++q) {
      const float v = ti[q];
      const float* Rq = p.R.data() + q * nbD;
      for (int64_t c = 0; c < nbD; ++c) ui[c] += v * Rq[c];
    }
  }
}

template <bool kAvx>
void tables_impl(const float* u, int64_t B, float* tab) {
  for (int64_t j = 0; j < B; ++j) {
    const float* v = u + 8 * j;
    float lo[16], hi[16];
    lo[0] = 0.f;
    hi[0] = 0.f;
    for (int bit = 0; bit < 4; ++bit)
      for (int m = 0; m < (1 << bit); ++m) {
        lo[(1 << bit) + m] = lo[m] + v[bit];
        hi[(1 << bit) + m] = hi[m] + v[4 + bit];
      }
    float* t = tab + j * 256;
    for (int h = 0; h < 16; ++h)
      for (int l = 0; l < 16; ++l) t[h * 16 + l] = hi[h] + lo[l];
  }
}

#ifdef LQ_X86
__attribute__((target("avx2,fma"))) void transform_avx2(const Prepared& p, int64_t n1, int64_t n2, int64_t nbD,
                                                       const float* xt, float* tmp, float* u) {
  transform_impl<true>(p, n1, n2, nbD, xt, tmp, u);
}
__attribute__((target("avx2,fma"))) void tables_avx2(const float* u, int64_t B, float* tab) {
  tables_impl<true>(u, B, tab);
}
#endif

}  // namespace

bool cpu_has_avx2() {
#ifdef LQ_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         std::getenv("LIFTQUANT_NO_AVX2") == nullptr;  // the variable forces the portable code
  return ok;
#else
  return false;
#endif
}

void lift_transform(const Prepared& p, int64_t n1, int64_t n2, int64_t nbD, const float* xt, float* tmp, float* u) {
#ifdef LQ_X86
  if (cpu_has_avx2()) return transform_avx2(p, n1, n2, nbD, xt, tmp, u);
#endif
  transform_impl<false>(p, n1, n2, nbD, xt, tmp, u);
}

void build_tables(const float* u, int64_t B, float* tab) {
#ifdef LQ_X86
  if (cpu_has_avx2()) return tables_avx2(u, B, tab);
#endif
  tables_impl<false>(u, B, tab);
}

}  // namespace liftquant
