// Standalone GPU harness of the LiftMatMul CUDA kernels (no ONNX Runtime): random layers against a
// float64 CPU reference (fresh inputs per check, outputs poisoned with NaN first), then timings with
// CUDA events (median of 200). Build: cmake -DLIFTQUANT_CUDA=ON (target lift_cuda_check).
//   lift_cuda_check            checks + timings table;  lift_cuda_check --quick  checks only
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "lift_cuda.h"

using namespace liftquant::cuda;

#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

static void choose_shape(int64_t in, int64_t d, int64_t& n1, int64_t& n2) {
  const int64_t n = (in + d - 1) / d * d;
  double best = 1e30;
  for (int64_t c = d; c <= n; c += d) {
    if (n % c) continue;
    const double key = std::fabs(c - std::sqrt(static_cast<double>(n)));
    if (key < best || (key == best && c > n2)) best = key, n2 = c;
  }
  n1 = n / n2;
}

template <typename T>
struct Dev {
  T* p = nullptr;
  explicit Dev(size_t n) { CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~Dev() { cudaFree(p); }
  void put(const std::vector<T>& v) { CK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> get(size_t n) {
    std::vector<T> v(n);
    CK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
};

struct Layer {
  int64_t N, in, D, d, n1, n2, C, K;
  std::vector<float> L, R, s1inv, scale, bias;
  std::vector<uint8_t> codes;
};

static Layer make_layer(int64_t N, int64_t in, int64_t D, int64_t d, std::mt19937& g) {
  Layer l{N, in, D, d};
  choose_shape(in, d, l.n1, l.n2);
  l.C = l.n2 / d * D;
  l.K = l.n1 * l.C;
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<float> ud(0.5f, 1.5f);
  l.L.resize(l.n1 * l.n1);
  for (auto& v : l.L) v = nd(g) / std::sqrt(static_cast<float>(l.n1));
  l.R.resize(l.n2 * l.C);
  for (auto& v : l.R) v = nd(g) / std::sqrt(static_cast<float>(l.n2));
  l.s1inv.resize(l.n1 * l.n2);
  for (auto& v : l.s1inv) v = ud(g);
  l.scale.resize(N);
  for (auto& v : l.scale) v = ud(g) * 0.01f;
  l.bias.resize(N);
  for (auto& v : l.bias) v = nd(g) * 0.1f;
  l.codes.resize(N * ((l.K + 7) / 8));
  for (auto& v : l.codes) v = static_cast<uint8_t>(g());
  return l;
}

static std::vector<double> reference(const Layer& l, const std::vector<float>& x, int64_t T) {
  std::vector<double> y(T * l.N);
  const int64_t B = (l.K + 7) / 8;
  std::vector<double> xt(l.n1 * l.n2), z(l.n1 * l.C), u(l.K);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t f = 0; f < l.n1 * l.n2; ++f) xt[f] = f < l.in ? double(x[t * l.in + f]) * l.s1inv[f] : 0.0;
    for (int64_t i = 0; i < l.n1; ++i)
      for (int64_t c = 0; c < l.C; ++c) {
        double s = 0;
        for (int64_t q = 0; q < l.n2; ++q) s += xt[i * l.n2 + q] * l.R[q * l.C + c];
        z[i * l.C + c] = s;
      }
    for (int64_t i = 0; i < l.n1; ++i)
      for (int64_t c = 0; c < l.C; ++c) {
        double s = 0;
        for (int64_t k = 0; k < l.n1; ++k) s += l.L[i * l.n1 + k] * z[k * l.C + c];
        u[i * l.C + c] = s;
      }
    for (int64_t r = 0; r < l.N; ++r) {
      double s = 0;
      const uint8_t* cr = l.codes.data() + r * B;
      for (int64_t k = 0; k < l.K; ++k) s += ((cr[k >> 3] >> (k & 7)) & 1) ? u[k] : -u[k];
      y[t * l.N + r] = s * l.scale[r] + l.bias[r];
    }
  }
  return y;
}

struct Run {
  Layer& l;
  Shape s;
  Dev<float> L, R, s1, sc, bi;
  Dev<uint8_t> codes;
  Dev<uint32_t> packed;
  explicit Run(Layer& ly)
      : l(ly), s(make_shape(ly.N, ly.K)), L(ly.L.size()), R(ly.R.size()), s1(ly.s1inv.size()), sc(ly.N), bi(ly.N),
        codes(ly.codes.size()), packed(s.packed_words()) {
    L.put(l.L), R.put(l.R), s1.put(l.s1inv), sc.put(l.scale), bi.put(l.bias), codes.put(l.codes);
    CK(repack_codes(codes.p, packed.p, s, 0));
  }
  void layer(const float* x, int64_t T, float* z, float* u, float* part, float* y) {
    CK(lift(x, T, l.in, s1.p, L.p, R.p, l.n1, l.n2, l.C, z, u, s, 0));
    CK(binary_gemv(u, T, packed.p, s, sc.p, bi.p, part, y, 0));
  }
};

static float median_us(const std::function<void()>& f, int reps = 200) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 10; ++i) f();
  std::vector<float> ts;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms * 1000.f);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::mt19937 g(1234);
  int fails = 0;
  struct Cfg { int64_t N, in, D, d; };
  // correctness on odd shapes and every token count path, then the benchmark shapes
  std::vector<Cfg> checks = {{1000, 777, 23, 10}, {96, 64, 16, 5}, {4100, 4096, 24, 8}, {8192, 8192, 24, 10}};
  for (const Cfg& c : checks) {
    Layer l = make_layer(c.N, c.in, c.D, c.d, g);
    Run run(l);
    for (int64_t T : {1, 3, 4, 6}) {
      std::vector<float> x(T * l.in);
      std::normal_distribution<float> nd;
      for (auto& v : x) v = nd(g);
      Dev<float> dx(x.size()), z(T * l.n1 * l.C), u(T * run.s.S * kSliceBits), part(run.s.S * kMaxTok * run.s.G * 32),
          y(T * l.N);
      dx.put(x);
      CK(cudaMemset(y.p, 0xff, sizeof(float) * T * l.N));  // NaN poison
      run.layer(dx.p, T, z.p, u.p, part.p, y.p);
      CK(cudaDeviceSynchronize());
      auto got = y.get(T * l.N);
      auto ref = reference(l, x, T);
      double num = 0, den = 0;
      bool nan = false;
      for (size_t i = 0; i < got.size(); ++i) {
        nan |= !std::isfinite(got[i]);
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
      }
      const double rel = std::sqrt(num / den);
      const bool ok = !nan && rel < 1e-5;
      fails += !ok;
      std::printf("check N=%lld in=%lld %lld/%lld T=%lld: rel err %.2e %s\n", (long long)c.N, (long long)c.in,
                  (long long)c.D, (long long)c.d, (long long)T, rel, ok ? "ok" : "FAIL");
    }
  }
  if (!quick) {
    std::printf("\n%12s %6s %3s %10s %10s %10s %8s\n", "N x K", "rate", "T", "gemv us", "lift us", "layer us", "GB/s");
    std::vector<Cfg> bench = {{4096, 4096, 24, 10}, {8192, 8192, 16, 8}, {8192, 8192, 24, 10}, {8192, 8192, 24, 8},
                              {28672, 8192, 16, 8}, {28672, 8192, 24, 10}, {28672, 8192, 24, 8}, {8192, 28672, 24, 10}};
    for (const Cfg& c : bench) {
      Layer l = make_layer(c.N, c.in, c.D, c.d, g);
      Run run(l);
      for (int64_t T : {1, 4}) {
        std::vector<float> x(T * l.in);
        std::normal_distribution<float> nd;
        for (auto& v : x) v = nd(g);
        Dev<float> dx(x.size()), z(T * l.n1 * l.C), u(T * run.s.S * kSliceBits),
            part(run.s.S * kMaxTok * run.s.G * 32), y(T * l.N);
        dx.put(x);
        run.layer(dx.p, T, z.p, u.p, part.p, y.p);
        const float tg = median_us([&] { CK(binary_gemv(u.p, T, run.packed.p, run.s, run.sc.p, run.bi.p, part.p, y.p, 0)); });
        const float tl = median_us([&] { run.layer(dx.p, T, z.p, u.p, part.p, y.p); });
        const float tt = median_us([&] {
          CK(lift(dx.p, T, l.in, run.s1.p, run.L.p, run.R.p, l.n1, l.n2, l.C, z.p, u.p, run.s, 0));
        });
        const double bytes = double(run.s.packed_words()) * 4 + 8.0 * l.N + 4.0 * T * (l.in + l.N);
        std::printf("%6lldx%-5lld %3lld/%-2lld %3lld %10.1f %10.1f %10.1f %8.0f\n", (long long)c.N, (long long)c.in,
                    (long long)c.D, (long long)c.d, (long long)T, tg, tt, tl, bytes / tg / 1e3);
      }
    }
  }
  std::printf("%s\n", fails ? "FAILED" : "all checks passed");
  return fails ? 1 : 0;
}
