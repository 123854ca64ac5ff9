// LiftMatMul for ONNX Runtime's CUDA execution provider: the CPU op's attribute parsing, shape
// checks and factor construction (cpu/lift_matmul.h), with the CUDA kernels of lift_cuda.h on
// ORT's compute stream. Constant inputs are copied to the host once, validated and turned into
// float32 factors; the codes are repacked once on the device; both are cached per node.
#pragma once
#include <cuda_runtime.h>

#include "cpu/lift_matmul.h"
#include "cuda/lift_cuda.h"

namespace liftquant {

struct LiftMatMulCuda : LiftMatMul {
  LiftMatMulCuda(const OrtApi* api, const OrtKernelInfo* info) : LiftMatMul(api, info) {}
  ~LiftMatMulCuda();
  LiftMatMulCuda(const LiftMatMulCuda&) = delete;
  LiftMatMulCuda& operator=(const LiftMatMulCuda&) = delete;

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& X,
                      const Ort::Custom::Tensor<uint8_t>& codes, const Ort::Custom::Tensor<Ort::Float16_t>& scales,
                      const Ort::Custom::Tensor<Ort::Float16_t>& M, const Ort::Custom::Tensor<Ort::Float16_t>& a,
                      const Ort::Custom::Tensor<Ort::Float16_t>& b, const Ort::Custom::Tensor<Ort::Float16_t>& s1,
                      const Ort::Custom::Tensor<Ort::Float16_t>& bias, Ort::Custom::Tensor<float>& Y);

 private:
  void Release();
  const void* dkey_[7] = {};
  cuda::Shape shape_{};
  float *dL_ = nullptr, *dR_ = nullptr, *ds1_ = nullptr, *dscale_ = nullptr, *dbias_ = nullptr;
  uint32_t* dpacked_ = nullptr;
};

}  // namespace liftquant
