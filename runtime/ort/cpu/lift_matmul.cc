// LiftMatMul CPU kernel: validation, preparation of the transform factors, and the threaded
// binary GEMV/GEMM. The binary product uses per-token lookup tables: for each code byte j,
// tab[j][c] = sum of the lifted values u[8j + i] over the set bits i of c, so a row costs one
// table lookup and one add per 8 weights, and Q u = 2 * sum(tab) - sum(u).
// With the attribute lut_bits = 8 the approximate int8 lookup-table mode of lift_lut.cc runs instead.
#include "lift_matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace liftquant {

namespace {

constexpr int64_t kMaxDim = 1 << 20;
constexpr int64_t kRowBlock = 256;     // rows per parallel task
constexpr int64_t kTokBlock = 16;      // tokens sharing one pass over the codes
constexpr int64_t kTileBytes = 256;    // code bytes per tile for one token (256 x 1 KiB of tables)

float h2f(const Ort::Float16_t& h) { return h.ToFloat(); }

}  // namespace

LiftMatMul::LiftMatMul(const OrtApi* api, const OrtKernelInfo* info) {
  // Never throw from here: an exception must not cross the C boundary into ORT.
  auto get = [&](const char* name, int64_t& v) {
    OrtStatus* st = api->KernelInfoGetAttribute_int64(info, name, &v);
    if (st != nullptr) {
      api->ReleaseStatus(st);
      if (attr_error_.empty()) attr_error_ = std::string("LiftMatMul: required attribute '") + name + "' missing";
    }
  };
  get("in_features", in_);
  get("out_features", out_);
  get("D", D_);
  get("d", d_);
  get("n1", n1_);
  get("n2", n2_);
  if (!attr_error_.empty()) return;
  {  // optional: absent means 0 (the exact float32 path)
    OrtStatus* st = api->KernelInfoGetAttribute_int64(info, "lut_bits", &lut_bits_);
    if (st != nullptr) {
      api->ReleaseStatus(st);
      lut_bits_ = 0;
    }
  }
  if (lut_bits_ != 0 && lut_bits_ != 8) {
    attr_error_ = "LiftMatMul: attribute 'lut_bits' must be 0 (exact float32) or 8 (int8 lookup tables), got " +
                  std::to_string(lut_bits_);
    return;
  }
  if (d_ < 1 || D_ <= d_ || D_ > 64) {
    attr_error_ = "LiftMatMul: need 1 <= d < D <= 64, got D=" + std::to_string(D_) + ", d=" + std::to_string(d_);
  } else if (in_ < 1 || out_ < 1 || n1_ < 1 || n2_ < 1 || in_ > kMaxDim || out_ > kMaxDim || n1_ > kMaxDim ||
             n2_ > kMaxDim || n1_ * n2_ > kMaxDim) {
    attr_error_ = "LiftMatMul: attribute out of range (in_features, out_features, n1, n2 must be in [1, 2^20])";
  } else if (n2_ % d_ != 0) {
    attr_error_ = "LiftMatMul: n2=" + std::to_string(n2_) + " is not a multiple of d=" + std::to_string(d_);
  } else if (n1_ * n2_ < in_) {
    attr_error_ = "LiftMatMul: n1*n2=" + std::to_string(n1_ * n2_) + " < in_features=" + std::to_string(in_);
  }
  n_ = n1_ * n2_;
  nb_ = d_ > 0 ? n2_ / d_ : 0;
  K_ = n1_ * nb_ * D_;
  B_ = (K_ + 7) / 8;
}

std::string LiftMatMul::CheckShapes(const std::vector<int64_t>& xs, const std::vector<int64_t>& codes,
                                    const std::vector<int64_t>& scales, const std::vector<int64_t>& M,
                                    const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                                    const std::vector<int64_t>& s1, const std::vector<int64_t>& bias) const {
  auto str = [](const std::vector<int64_t>& sh) {
    std::string s = "[";
    for (size_t i = 0; i < sh.size(); ++i) s += (i ? ", " : "") + std::to_string(sh[i]);
    return s + "]";
  };
  auto is = [](const std::vector<int64_t>& sh, std::initializer_list<int64_t> want) {
    return sh.size() == want.size() && std::equal(sh.begin(), sh.end(), want.begin());
  };
  if (xs.empty() || xs.back() != in_) return "input X " + str(xs) + " must end in in_features=" + std::to_string(in_);
  for (size_t i = 0; i + 1 < xs.size(); ++i)
    if (xs[i] < 0) return "negative dimension in X";
  if (!is(codes, {out_, B_}))
    return "codes " + str(codes) + " must be [" + std::to_string(out_) + ", " + std::to_string(B_) + "]";
  if (!is(scales, {out_})) return "scales " + str(scales) + " must be [" + std::to_string(out_) + "]";
  if (!is(M, {d_, D_})) return "M " + str(M) + " must be [" + std::to_string(d_) + ", " + std::to_string(D_) + "]";
  if (!is(a, {n1_})) return "a " + str(a) + " must be [" + std::to_string(n1_) + "]";
  if (!is(b, {nb_})) return "b " + str(b) + " must be [" + std::to_string(nb_) + "]";
  if (!is(s1, {n_})) return "s1 " + str(s1) + " must be [" + std::to_string(n_) + "]";
  if (!is(bias, {out_})) return "bias " + str(bias) + " must be [" + std::to_string(out_) + "]";
  return "";
}

std::string LiftMatMul::Start(const Ort::Custom::Tensor<float>& X, const Ort::Custom::Tensor<uint8_t>& codes,
                              const Ort::Custom::Tensor<Ort::Float16_t>& scales,
                              const Ort::Custom::Tensor<Ort::Float16_t>& M, const Ort::Custom::Tensor<Ort::Float16_t>& a,
                              const Ort::Custom::Tensor<Ort::Float16_t>& b, const Ort::Custom::Tensor<Ort::Float16_t>& s1,
                              const Ort::Custom::Tensor<Ort::Float16_t>& bias, Ort::Custom::Tensor<float>& Y,
                              int64_t& T, float*& y) const {
  if (!attr_error_.empty()) return attr_error_;
  const auto& xs = X.Shape();
  const std::string err =
      CheckShapes(xs, codes.Shape(), scales.Shape(), M.Shape(), a.Shape(), b.Shape(), s1.Shape(), bias.Shape());
  if (!err.empty()) return "LiftMatMul: " + err;
  T = 1;
  for (size_t i = 0; i + 1 < xs.size(); ++i) T *= xs[i];
  std::vector<int64_t> ys(xs.begin(), xs.end());
  ys.back() = out_;
  y = Y.Allocate(ys);
  return "";
}

std::string LiftMatMul::BuildPrepared(const Ort::Float16_t* M, const Ort::Float16_t* a, const Ort::Float16_t* b,
                                      const Ort::Float16_t* s1, const Ort::Float16_t* scales,
                                      const Ort::Float16_t* bias, Prepared& p) const {
  std::vector<double> Mf(d_ * D_), af(n1_), bf(nb_);
  for (int64_t i = 0; i < d_ * D_; ++i) Mf[i] = h2f(M[i]);
  for (int64_t i = 0; i < n1_; ++i) af[i] = h2f(a[i]);
  for (int64_t i = 0; i < nb_; ++i) bf[i] = h2f(b[i]);
  for (double v : af)
    if (v == 0.0 || !std::isfinite(v)) return "a holds a zero or non-finite value";
  for (double v : bf)
    if (v == 0.0 || !std::isfinite(v)) return "b holds a zero or non-finite value";
  auto dct = [](int64_t n) {
    std::vector<double> C(n * n);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t i = 0; i < n; ++i)
        C[k * n + i] = std::cos(M_PI * (2 * i + 1) * k / (2.0 * n)) * std::sqrt((k == 0 ? 1.0 : 2.0) / n);
    return C;
  };
  auto C1 = dct(n1_), C2 = dct(n2_);
  p.L.resize(n1_ * n1_);
  for (int64_t i = 0; i < n1_; ++i)
    for (int64_t k = 0; k < n1_; ++k) p.L[i * n1_ + k] = static_cast<float>(C1[i * n1_ + k] / af[i]);
  const int64_t nbD = nb_ * D_;
  p.R.assign(n2_ * nbD, 0.f);
  for (int64_t q = 0; q < n2_; ++q)      // R[q, j*D + t] = sum_e C2[j*d + e, q] * M[e, t] / b[j]
    for (int64_t j = 0; j < nb_; ++j)
      for (int64_t t = 0; t < D_; ++t) {
        double s = 0;
        for (int64_t e = 0; e < d_; ++e) s += C2[(j * d_ + e) * n2_ + q] * Mf[e * D_ + t];
        p.R[q * nbD + j * D_ + t] = static_cast<float>(s / bf[j]);
      }
  p.s1inv.resize(n_);
  for (int64_t i = 0; i < n_; ++i) {
    float v = h2f(s1[i]);
    if (v == 0.f || !std::isfinite(v)) return "s1 holds a zero or non-finite value";
    p.s1inv[i] = 1.f / v;
  }
  p.scale.resize(out_);
  p.bias.resize(out_);
  for (int64_t r = 0; r < out_; ++r) {
    p.scale[r] = h2f(scales[r]);
    p.bias[r] = h2f(bias[r]);
  }
  return "";
}

Ort::Status LiftMatMul::Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& X,
                                const Ort::Custom::Tensor<uint8_t>& codes,
                                const Ort::Custom::Tensor<Ort::Float16_t>& scales,
                                const Ort::Custom::Tensor<Ort::Float16_t>& M,
                                const Ort::Custom::Tensor<Ort::Float16_t>& a,
                                const Ort::Custom::Tensor<Ort::Float16_t>& b,
                                const Ort::Custom::Tensor<Ort::Float16_t>& s1,
                                const Ort::Custom::Tensor<Ort::Float16_t>& bias, Ort::Custom::Tensor<float>& Y) {
  try {
    auto bad = [](const std::string& m) { return Ort::Status(("LiftMatMul: " + m).c_str(), ORT_INVALID_ARGUMENT); };
    int64_t T = 0;
    float* y = nullptr;
    const std::string start_err = Start(X, codes, scales, M, a, b, s1, bias, Y, T, y);
    if (!start_err.empty()) return Ort::Status(start_err.c_str(), ORT_INVALID_ARGUMENT);
    if (T == 0) return Ort::Status{nullptr};
    const float* x = X.Data();
    const uint8_t* cd = codes.Data();

    {  // prepare the float32 transform factors once per set of constant inputs
      std::lock_guard<std::mutex> lock(mu_);
      const void* key[7] = {M.Data(), a.Data(), b.Data(), s1.Data(), scales.Data(), bias.Data(), cd};
      if (!std::equal(key, key + 7, prep_.key)) {
        Prepared p;
        std::copy(key, key + 7, p.key);
        const std::string err = BuildPrepared(M.Data(), a.Data(), b.Data(), s1.Data(), scales.Data(), bias.Data(), p);
        if (!err.empty()) return bad(err);
        prep_ = std::move(p);
      }
    }
    if (lut_bits_ == 8) return ComputeLut(ctx, x, T, cd, y);
    const Prepared& p = prep_;
    const int64_t nbD = nb_ * D_;

    // 1. lifted activations u[t] (K values, zero-padded to B*8) and their sums
    std::vector<float> U(static_cast<size_t>(T) * B_ * 8, 0.f), usum(T);
    {
      std::vector<float> xt(n_), tmp(n_);
      for (int64_t t = 0; t < T; ++t) {
        const float* xr = x + t * in_;
        for (int64_t i = 0; i < in_; ++i) xt[i] = xr[i] * p.s1inv[i];
        for (int64_t i = in_; i < n_; ++i) xt[i] = 0.f;
        float* u = U.data() + t * B_ * 8;
        lift_transform(p, n1_, n2_, nbD, xt.data(), tmp.data(), u);
        double s = 0;
        for (int64_t k = 0; k < K_; ++k) s += u[k];
        usum[t] = static_cast<float>(s);
      }
    }
    // 2. lookup tables per token, built in parallel over byte ranges
    std::vector<float> tab(static_cast<size_t>(T) * B_ * 256);
    struct TabJob { const float* U; float* tab; int64_t B, T, chunk; } tj{U.data(), tab.data(), B_, T, 64};
    const int64_t nchunks = (B_ + tj.chunk - 1) / tj.chunk;
    auto tab_fn = [](void* ud, size_t i) {
      auto* j = static_cast<TabJob*>(ud);
      const int64_t t = static_cast<int64_t>(i) / ((j->B + j->chunk - 1) / j->chunk);
      const int64_t c = static_cast<int64_t>(i) % ((j->B + j->chunk - 1) / j->chunk);
      const int64_t j0 = c * j->chunk, j1 = std::min(j->B, j0 + j->chunk);
      build_tables(j->U + t * j->B * 8 + j0 * 8, j1 - j0, j->tab + (t * j->B + j0) * 256);
    };
    Ort::KernelContext kctx(ctx);
    kctx.ParallelFor(tab_fn, static_cast<size_t>(T * nchunks), 0, &tj);
    // 3. rows in parallel: acc[t][r] = sum_j tab[t][j][codes[r][j]]. A task owns kRowBlock rows and
    //    walks the code bytes in tiles, so each token's table tile stays in cache for all its rows.
    struct RowJob {
      const uint8_t* cd; const float* tab; const float* usum; const Prepared* p; float* y;
      int64_t B, N, T;
    } rj{cd, tab.data(), usum.data(), &p, y, B_, out_, T};
    auto row_fn = [](void* ud, size_t blk) {
      auto* j = static_cast<RowJob*>(ud);
      const int64_t r0 = static_cast<int64_t>(blk) * kRowBlock, r1 = std::min(j->N, r0 + kRowBlock);
      const int64_t nr = r1 - r0;
      std::vector<float> acc(static_cast<size_t>(nr) * kTokBlock);
      for (int64_t t0 = 0; t0 < j->T; t0 += kTokBlock) {
        const int64_t nt = std::min<int64_t>(kTokBlock, j->T - t0);
        const int64_t tile = std::max<int64_t>(16, kTileBytes / nt);
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t b0 = 0; b0 < j->B; b0 += tile) {
          const int64_t b1 = std::min(j->B, b0 + tile);
          for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* c = j->cd + r * j->B;
            float* ar = acc.data() + (r - r0) * kTokBlock;
            for (int64_t t = 0; t < nt; ++t) {
              const float* tb = j->tab + (t0 + t) * j->B * 256;
              float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
              int64_t q = b0;
              for (; q + 4 <= b1; q += 4) {
                s0 += tb[(q + 0) * 256 + c[q + 0]];
                s1 += tb[(q + 1) * 256 + c[q + 1]];
                s2 += tb[(q + 2) * 256 + c[q + 2]];
                s3 += tb[(q + 3) * 256 + c[q + 3]];
              }
              for (; q < b1; ++q) s0 += tb[q * 256 + c[q]];
              ar[t] += (s0 + s1) + (s2 + s3);
            }
          }
        }
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t t = 0; t < nt; ++t)
            j->y[(t0 + t) * j->N + r] =
                j->p->scale[r] * (2.f * acc[(r - r0) * kTokBlock + t] - j->usum[t0 + t]) + j->p->bias[r];
      }
    };
    kctx.ParallelFor(row_fn, static_cast<size_t>((out_ + kRowBlock - 1) / kRowBlock), 0, &rj);
    return Ort::Status{nullptr};
  } catch (const Ort::Exception& e) {
    return Ort::Status(e);
  } catch (const std::exception& e) {
    return Ort::Status((std::string("LiftMatMul: ") + e.what()).c_str(), ORT_FAIL);
  } catch (...) {
    return Ort::Status("LiftMatMul: unknown error", ORT_FAIL);
  }
}

}  // namespace liftquant
