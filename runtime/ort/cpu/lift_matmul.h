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

// Fast mode (attribute lut_bits = 8, spec/onnx-ops.md "Fast mode"): int8 lookup tables over groups
// of 4 code bits. Constants of the layout:
constexpr int64_t kLutRows = 64;   // rows per packed row block (one 32-byte load = 32 rows, two share a table)
constexpr int64_t kLutBlock = 32;  // groups of 4 bits per table scale block (128 bits of K)

// Per-node state of the fast mode, built from the prepared factors and the codes on first use.
struct LutState {
  const void* key[7] = {};     // the Prepared key it was built from
  int64_t P = 0;               // code bytes (= pairs of groups) per row, padded: nblk * sb / 2
  int64_t sb = kLutBlock;      // groups per scale block
  int64_t nblk = 0;            // scale blocks per row
  int64_t n2p = 0, nbDp = 0;   // n2 and nb*D rounded up to 8
  std::vector<uint8_t> codes;  // [ceil(N/64)][P][64]: byte i of pair p = codes[64*blk + i][p] (0 past N, B)
  std::vector<float> Rp;       // [n2, nbDp]: R with zero columns up to nbDp
};

struct LiftMatMul {
  LiftMatMul(const OrtApi* api, const OrtKernelInfo* info);

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& X,
                      const Ort::Custom::Tensor<uint8_t>& codes, const Ort::Custom::Tensor<Ort::Float16_t>& scales,
                      const Ort::Custom::Tensor<Ort::Float16_t>& M, const Ort::Custom::Tensor<Ort::Float16_t>& a,
                      const Ort::Custom::Tensor<Ort::Float16_t>& b, const Ort::Custom::Tensor<Ort::Float16_t>& s1,
                      const Ort::Custom::Tensor<Ort::Float16_t>& bias, Ort::Custom::Tensor<float>& Y);
  // "" or the error of inputs whose shapes do not match the attributes (spec/onnx-ops.md "Errors").
  std::string CheckShapes(const std::vector<int64_t>& xs, const std::vector<int64_t>& codes,
                          const std::vector<int64_t>& scales, const std::vector<int64_t>& M,
                          const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                          const std::vector<int64_t>& s1, const std::vector<int64_t>& bias) const;
  // Attribute and shape checks, then Y = X.shape[:-1] + [out_features] allocated and T = rows of X.
  // "" or the whole error message (the attribute error first).
  std::string Start(const Ort::Custom::Tensor<float>& X, const Ort::Custom::Tensor<uint8_t>& codes,
                    const Ort::Custom::Tensor<Ort::Float16_t>& scales, const Ort::Custom::Tensor<Ort::Float16_t>& M,
                    const Ort::Custom::Tensor<Ort::Float16_t>& a, const Ort::Custom::Tensor<Ort::Float16_t>& b,
                    const Ort::Custom::Tensor<Ort::Float16_t>& s1, const Ort::Custom::Tensor<Ort::Float16_t>& bias,
                    Ort::Custom::Tensor<float>& Y, int64_t& T, float*& y) const;
  // Float32 factors (L, R, 1/s1, scales, bias) from host copies of the constant inputs; "" or the error.
  std::string BuildPrepared(const Ort::Float16_t* M, const Ort::Float16_t* a, const Ort::Float16_t* b,
                            const Ort::Float16_t* s1, const Ort::Float16_t* scales, const Ort::Float16_t* bias,
                            Prepared& p) const;
  // The lut_bits = 8 path (lift_lut.cc): prepares lut_ if needed and computes y [T, N].
  Ort::Status ComputeLut(OrtKernelContext* ctx, const float* x, int64_t T, const uint8_t* codes, float* y);

  int64_t in_ = 0, out_ = 0, D_ = 0, d_ = 0, n1_ = 0, n2_ = 0;
  int64_t n_ = 0, nb_ = 0, K_ = 0, B_ = 0;  // derived: n1*n2, n2/d, (n/d)*D, row bytes
  int64_t lut_bits_ = 0;                    // optional attribute: 0 exact (default), 8 int8 tables
  std::string attr_error_;                  // set by the constructor, reported by Compute
  std::mutex mu_;
  Prepared prep_;
  LutState lut_;
};

// Portable and AVX2 implementations of the two hot loops (selected at run time).
void lift_transform(const Prepared& p, int64_t n1, int64_t n2, int64_t nbD, const float* xt, float* tmp, float* u);
void build_tables(const float* u, int64_t B, float* tab);  // tab[B][256]
bool cpu_has_avx2();  // false also when the environment sets LIFTQUANT_NO_AVX2 (tests of the fallback)

}  // namespace liftquant
