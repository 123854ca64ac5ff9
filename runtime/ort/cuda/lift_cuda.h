// CUDA kernels of LiftMatMul (spec/onnx-ops.md) for ONNX Runtime's CUDA execution provider.
// No ORT types here: the standalone harness (lift_cuda_check.cu) drives the same functions.
//
// Per call: u = lifted activation (two small GEMMs: Z = X~ R, U = L Z; each output's sum is split over 8
// thread rows of a block and added in shared memory, since one thread per output leaves the GPU idle), then
// per 1024-bit K slice a block builds, in shared memory, the 16 signed partial sums of every group of 4
// lifted values (T[p][c] = sum_i (2 bit_i(c) - 1) u[4p + i]) and walks its rows: one table lookup and one
// add per 4 weights, conflict-free because a warp's 32 rows read the same group. Codes are repacked once
// into [slice][row group of 32][8][32 lanes][4 words] so a warp's 16-byte loads are contiguous. Partial
// sums per slice are reduced with the scale and bias by a last kernel.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace liftquant {
namespace cuda {

constexpr int kSliceWords = 32;                // 32-bit code words per K slice per row
constexpr int kSliceBits = 32 * kSliceWords;   // 1024
constexpr int kGroups = kSliceBits / 4;        // 256 groups of 4 bits = threads per GEMV block
constexpr int kMaxTok = 4;                     // tokens sharing one pass over the codes

struct Shape {
  int64_t N = 0;   // rows (out_features)
  int64_t K = 0;   // code bits per row (n1 * nb * D)
  int64_t B = 0;   // code bytes per row, ceil(K / 8)
  int64_t S = 0;   // K slices, ceil(K / 1024)
  int64_t G = 0;   // row groups of 32, ceil(N / 32)
  int64_t packed_words() const { return S * G * 32 * kSliceWords; }
};
Shape make_shape(int64_t N, int64_t K);

// codes uint8 [N][B] (device, LSB first) -> packed uint32 (device, shape.packed_words()); bits >= K zeroed.
cudaError_t repack_codes(const uint8_t* codes, uint32_t* packed, const Shape& s, cudaStream_t st);

// u [T][S * 1024] (zero past K) of x [T][in]; z: scratch [T][n1][C] with C = nb * D.
cudaError_t lift(const float* x, int64_t T, int64_t in, const float* s1inv, const float* L, const float* R,
                 int64_t n1, int64_t n2, int64_t C, float* z, float* u, const Shape& s, cudaStream_t st);

// y [T][N] = scale * (Q u) + bias; part: scratch float [S][min(T, kMaxTok)][G * 32].
cudaError_t binary_gemv(const float* u, int64_t T, const uint32_t* packed, const Shape& s, const float* scale,
                        const float* bias, float* part, float* y, cudaStream_t st);

}  // namespace cuda
}  // namespace liftquant
