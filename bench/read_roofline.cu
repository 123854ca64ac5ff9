// Benchmark-only kernel (bench/gpu_read_roofline.py): the fastest plain streaming read of n16 16-byte words
// a launch setting gets, as the ceiling a decode GEMV that must read its codes once can approach.
// Each thread reads U words per iteration (all issued before any use, evict-first like the GEMV's codes)
// and folds them into one word that is stored only if it equals a magic value (so the loads stay).
#include <cuda_runtime.h>

#include <cstdint>

template <int U>
__global__ void read_kernel(const uint4* __restrict__ p, long long n16, unsigned* __restrict__ out) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + (U - 1) * stride < n16; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;
}

extern "C" __attribute__((visibility("default"))) int rr_read(const void* p, long long n16, unsigned* out, int blocks,
                                                              int threads, int unroll, cudaStream_t stream) {
  if (!p || !out || n16 < 1 || blocks < 1 || threads < 32 || threads > 1024 || reinterpret_cast<uintptr_t>(p) % 16)
    return -1;
  const auto* q = static_cast<const uint4*>(p);
  switch (unroll) {
    case 1: read_kernel<1><<<blocks, threads, 0, stream>>>(q, n16, out); break;
    case 2: read_kernel<2><<<blocks, threads, 0, stream>>>(q, n16, out); break;
    case 4: read_kernel<4><<<blocks, threads, 0, stream>>>(q, n16, out); break;
    case 8: read_kernel<8><<<blocks, threads, 0, stream>>>(q, n16, out); break;
    default: return -2;
  }
  return (int)cudaGetLastError();
}
