// CUDA kernels of LiftMatMul; see lift_cuda.h for the design.
#include "lift_cuda.h"

#include <algorithm>

namespace liftquant {
namespace cuda {

Shape make_shape(int64_t N, int64_t K) {
  Shape s;
  s.N = N;
  s.K = K;
  s.B = (K + 7) / 8;
  s.S = (K + kSliceBits - 1) / kSliceBits;
  s.G = (N + 31) / 32;
  return s;
}

namespace {

__global__ void repack_kernel(const uint8_t* __restrict__ codes, uint32_t* __restrict__ packed, int64_t N, int64_t K,
                              int64_t B, int64_t G, int64_t total) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= total) return;
  const int wi = idx & 3, lane = (idx >> 2) & 31, q = (idx >> 7) & 7;
  const int64_t g = (idx >> 10) % G, s = (idx >> 10) / G;
  const int64_t r = g * 32 + lane;
  const int64_t w = s * kSliceWords + q * 4 + wi;  // word index within the row
  uint32_t v = 0;
  if (r < N) {
    for (int i = 0; i < 4; ++i) {
      const int64_t b = 4 * w + i;
      if (b < B) v |= static_cast<uint32_t>(codes[r * B + b]) << (8 * i);
    }
    const int64_t valid = K - 32 * w;  // bits of this word inside K
    if (valid <= 0) v = 0;
    else if (valid < 32) v &= (1u << valid) - 1u;
  }
  packed[idx] = v;
}

// The transform is two small GEMMs per token, far too little work for one thread per output: a block
// of 32 x kSplit threads owns 32 consecutive columns c of one row i of one token, each of the kSplit
// thread rows sums every kSplit-th term (coalesced loads of R or Z across the 32 lanes, x~ and L
// broadcast), and shared memory adds the kSplit partial sums. Grid: (ceil(C / 32), rows, tokens).
constexpr int kSplit = 8;

__device__ __forceinline__ float block_column_sum(float acc, float (*red)[33]) {
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  float s = 0.f;
  if (threadIdx.y == 0) {
#pragma unroll
    for (int j = 0; j < kSplit; ++j) s += red[j][threadIdx.x];
  }
  return s;
}

// Z[t][i][c] = sum_q x~[t][i * n2 + q] R[q][c], x~ = x * s1inv (columns past in_features are padding: zero)
__global__ void __launch_bounds__(32 * kSplit) lift_right_kernel(const float* __restrict__ x, int64_t T, int64_t in,
                                                                 const float* __restrict__ s1inv,
                                                                 const float* __restrict__ R, int64_t n1, int64_t n2,
                                                                 int64_t C, float* __restrict__ z) {
  __shared__ float red[kSplit][33];
  const int64_t c = blockIdx.x * 32 + threadIdx.x, i = blockIdx.y;
  const int64_t f0 = i * n2;
  const int64_t qn = min(n2, in - f0);
  for (int64_t t = blockIdx.z; t < T; t += gridDim.z) {
    const float* xr = x + t * in + f0;
    float a0 = 0.f, a1 = 0.f;
    if (c < C) {
      int64_t q = threadIdx.y;
      for (; q + kSplit < qn; q += 2 * kSplit) {
        a0 = fmaf(xr[q] * s1inv[f0 + q], R[q * C + c], a0);
        a1 = fmaf(xr[q + kSplit] * s1inv[f0 + q + kSplit], R[(q + kSplit) * C + c], a1);
      }
      if (q < qn) a0 = fmaf(xr[q] * s1inv[f0 + q], R[q * C + c], a0);
    }
    const float s = block_column_sum(a0 + a1, red);
    if (threadIdx.y == 0 && c < C) z[(t * n1 + i) * C + c] = s;
    __syncthreads();  // red is reused by the next token
  }
}

// u[t][i * C + c] = sum_k L[i][k] Z[t][k][c]; the extra block row i = n1 writes the zeros from n1 * C up to ustride.
__global__ void __launch_bounds__(32 * kSplit) lift_left_kernel(const float* __restrict__ z, int64_t T,
                                                                const float* __restrict__ L, int64_t n1, int64_t C,
                                                                float* __restrict__ u, int64_t ustride) {
  __shared__ float red[kSplit][33];
  const int64_t i = blockIdx.y;
  if (i == n1) {
    const int64_t tail = ustride - n1 * C;
    if (blockIdx.x != 0) return;
    for (int64_t t = blockIdx.z; t < T; t += gridDim.z)
      for (int64_t k = threadIdx.y * 32 + threadIdx.x; k < tail; k += 32 * kSplit) u[t * ustride + n1 * C + k] = 0.f;
    return;
  }
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  const float* Li = L + i * n1;
  for (int64_t t = blockIdx.z; t < T; t += gridDim.z) {
    const float* zt = z + t * n1 * C;
    float a0 = 0.f, a1 = 0.f;
    if (c < C) {
      int64_t k = threadIdx.y;
      for (; k + kSplit < n1; k += 2 * kSplit) {
        a0 = fmaf(Li[k], zt[k * C + c], a0);
        a1 = fmaf(Li[k + kSplit], zt[(k + kSplit) * C + c], a1);
      }
      if (k < n1) a0 = fmaf(Li[k], zt[k * C + c], a0);
    }
    const float s = block_column_sum(a0 + a1, red);
    if (threadIdx.y == 0 && c < C) u[t * ustride + i * C + c] = s;
    __syncthreads();
  }
}

template <int NT>
__global__ void __launch_bounds__(kGroups) gemv_kernel(const float* __restrict__ u, int64_t ustride,
                                                       const uint32_t* __restrict__ packed, int64_t G,
                                                       int64_t groups_per_block, float* __restrict__ part,
                                                       int64_t pstride) {
  extern __shared__ float tab[];  // [NT][kGroups][16]
  const int64_t s = blockIdx.x;
  const int p = threadIdx.x;
  for (int t = 0; t < NT; ++t) {  // tables of this slice: thread p builds group p
    const float4 v = reinterpret_cast<const float4*>(u + t * ustride + s * kSliceBits)[p];
    float* tb = tab + (t * kGroups + p) * 16;
#pragma unroll
    for (int c = 0; c < 16; ++c)
      tb[c] = ((c & 1) ? v.x : -v.x) + ((c & 2) ? v.y : -v.y) + ((c & 4) ? v.z : -v.z) + ((c & 8) ? v.w : -v.w);
  }
  __syncthreads();
  const int lane = p & 31, warp = p >> 5;
  const int64_t g0 = blockIdx.y * groups_per_block;
  const int64_t g1 = min(G, g0 + groups_per_block);
  const uint4* src = reinterpret_cast<const uint4*>(packed) + (s * G) * 8 * 32;
  for (int64_t g = g0 + warp; g < g1; g += kGroups / 32) {
    uint4 w[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) w[q] = __ldg(src + (g * 8 + q) * 32 + lane);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      const uint32_t ws[4] = {w[q].x, w[q].y, w[q].z, w[q].w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float* tb = tab + (q * 4 + e) * 8 * 16;  // group index of nibble j: (q*4 + e) * 8 + j
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const uint32_t nib = (ws[e] >> (4 * j)) & 15u;
#pragma unroll
          for (int t = 0; t < NT; ++t) acc[t] += tb[t * kGroups * 16 + j * 16 + nib];
        }
      }
    }
    const int64_t r = g * 32 + lane;
#pragma unroll
    for (int t = 0; t < NT; ++t) part[(s * NT + t) * pstride + r] = acc[t];
  }
}

__global__ void reduce_kernel(const float* __restrict__ part, int64_t S, int64_t NT, int64_t pstride,
                              const float* __restrict__ scale, const float* __restrict__ bias, float* __restrict__ y,
                              int64_t N) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t t = blockIdx.y;
  if (r >= N) return;
  float acc = 0.f;
  for (int64_t s = 0; s < S; ++s) acc += part[(s * NT + t) * pstride + r];
  y[t * N + r] = fmaf(acc, scale[r], bias[r]);
}

inline unsigned blocks(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

cudaError_t repack_codes(const uint8_t* codes, uint32_t* packed, const Shape& s, cudaStream_t st) {
  const int64_t total = s.packed_words();
  repack_kernel<<<blocks(total, 256), 256, 0, st>>>(codes, packed, s.N, s.K, s.B, s.G, total);
  return cudaGetLastError();
}

cudaError_t lift(const float* x, int64_t T, int64_t in, const float* s1inv, const float* L, const float* R,
                 int64_t n1, int64_t n2, int64_t C, float* z, float* u, const Shape& s, cudaStream_t st) {
  const int64_t ustride = s.S * kSliceBits;
  const dim3 block(32, kSplit);
  const unsigned cx = blocks(C, 32), tz = static_cast<unsigned>(std::min<int64_t>(T, 65535));
  if (n1 + 1 > 65535) return cudaErrorInvalidValue;  // rows of the left factor: a few hundred in practice
  lift_right_kernel<<<dim3(cx, static_cast<unsigned>(n1), tz), block, 0, st>>>(x, T, in, s1inv, R, n1, n2, C, z);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  lift_left_kernel<<<dim3(cx, static_cast<unsigned>(n1 + 1), tz), block, 0, st>>>(z, T, L, n1, C, u, ustride);
  return cudaGetLastError();
}

cudaError_t binary_gemv(const float* u, int64_t T, const uint32_t* packed, const Shape& s, const float* scale,
                        const float* bias, float* part, float* y, cudaStream_t st) {
  static const int sms = [] {  // one device per process is the common case; any count works
    int dev = 0, n = 132;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
    return n;
  }();
  const int64_t ustride = s.S * kSliceBits, pstride = s.G * 32;
  // enough blocks for ~4 per SM; each walks a contiguous run of row groups of its slice
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(s.G, (4 * sms + s.S - 1) / s.S));
  const int64_t per = (s.G + chunks - 1) / chunks;
  const dim3 grid(static_cast<unsigned>(s.S), static_cast<unsigned>((s.G + per - 1) / per));
  static bool attrs = [] {  // tables of 3 and 4 tokens need more than the default 48 KB
    cudaFuncSetAttribute(gemv_kernel<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, 3 * kGroups * 16 * 4);
    cudaFuncSetAttribute(gemv_kernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, 4 * kGroups * 16 * 4);
    return true;
  }();
  (void)attrs;
  for (int64_t t0 = 0; t0 < T; t0 += kMaxTok) {
    const int64_t nt = std::min<int64_t>(kMaxTok, T - t0);
    const float* ut = u + t0 * ustride;
    const size_t smem = static_cast<size_t>(nt) * kGroups * 16 * sizeof(float);
    switch (nt) {
      case 1: gemv_kernel<1><<<grid, kGroups, smem, st>>>(ut, ustride, packed, s.G, per, part, pstride); break;
      case 2: gemv_kernel<2><<<grid, kGroups, smem, st>>>(ut, ustride, packed, s.G, per, part, pstride); break;
      case 3: gemv_kernel<3><<<grid, kGroups, smem, st>>>(ut, ustride, packed, s.G, per, part, pstride); break;
      default: gemv_kernel<4><<<grid, kGroups, smem, st>>>(ut, ustride, packed, s.G, per, part, pstride); break;
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    reduce_kernel<<<dim3(blocks(s.N, 256), static_cast<unsigned>(nt)), 256, 0, st>>>(part, s.S, nt, pstride, scale,
                                                                                      bias, y + t0 * s.N, s.N);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace liftquant
