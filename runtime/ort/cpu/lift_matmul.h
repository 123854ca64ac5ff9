// LiftMatMul (domain ai.liftquant, version 1) CPU kernel: y = s * (Q u) + bias, u = lifted(x).
// Semantics: spec/onnx-ops.md. Every shape and attribute is validated before memory is touched.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT
#include <onnxruntime_lite_custom_op.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace liftquant {

// Prepared, float32 copies of the constant inputs of one node (built on first use).
struct Prepared {
  const void* key[7] = {};     // data pointers they were built from
  std::vector<float> L;        // [n1, n1]   diag(1/a) C_n1
  std::vector<float> R;        // [n2, nb*D] C_n2^T blockdiag(M / b_j)
  std::vector<float> s1inv;    // [n]
  std::vector<float> scale;    // [N]
  std::vector<float> bias;     // [N]
};

struct LiftMatMul {
  LiftMatMul(const OrtApi* api, const OrtKernelInfo* info);

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& X,
                      const Ort::Custom::Tensor<uint8_t>& codes, const Ort::Custom::Tensor<Ort::Float16_t>& scales,
                      const Ort::Custom::Tensor<Ort::Float16_t>& M, const Ort::Custom::Tensor<Ort::Float16_t>& a,
                      const Ort::Custom::Tensor<Ort::Float16_t>& b, const Ort::Custom::Tensor<Ort::Float16_t>& s1,
                      const Ort::Custom::Tensor<Ort::Float16_t>& bias, Ort::Custom::Tensor<float>& Y);

  int64_t in_ = 0, out_ = 0, D_ = 0, d_ = 0, n1_ = 0, n2_ = 0;
  int64_t n_ = 0, nb_ = 0, K_ = 0, B_ = 0;  // derived: n1*n2, n2/d, (n/d)*D, row bytes
  std::string attr_error_;                  // set by the constructor, reported by Compute
  std::mutex mu_;
  Prepared prep_;
};

// Portable and AVX2 implementations of the two hot loops (selected at run time).
void lift_transform(const Prepared& p, int64_t n1, int64_t n2, int64_t nbD, const float* xt, float* tmp, float* u);
void build_tables(const float* u, int64_t B, float* tab);  // tab[B][256]
bool cpu_has_avx2();

}  // namespace liftquant
