// Probe: what a warp's 16-byte shared-memory load costs by how many distinct addresses its lanes read (issue 7: the
// lifts' phases A and B are bound by shared-memory wavefronts, and their 16-byte loads of L or W are read by groups of
// lanes at the same address). One block of 512 threads per SM on every SM; each warp issues ITERS x 8 independent loads
// of the pattern; the kernel's cycles (clock64, median over blocks) per warp-load per SM = the pipe's cost of one load.
//   nvcc -O3 -arch=sm_90 -o /tmp/smem_probe bench/smem_broadcast_probe.cu && /tmp/smem_probe
#include <cuda_runtime.h>
#include <cstdio>
#include <vector>
#include <algorithm>

constexpr int THREADS = 512, ITERS = 256, U = 8;

// distinct: lanes read `distinct` different float4 (lane % distinct), 1 = all lanes one address (broadcast)
template <int WIDTH>
__global__ void probe(int distinct, long long* cycles, float* sink) {
  __shared__ float4 buf[2048];
  for (int i = threadIdx.x; i < 2048; i += THREADS) buf[i] = make_float4(i, i + 1, i + 2, i + 3);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int off = lane % distinct;
  float acc[U] = {};
  const long long t0 = clock64();
  for (int it = 0; it < ITERS; ++it) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int base = ((it * U + u) * 32 + warp * 7) & 2016;
      if (WIDTH == 16) {
        const float4 v = buf[base + off];
        acc[u] += (v.x + v.y) + (v.z + v.w);
      } else {
        const float v = reinterpret_cast<const float*>(buf)[4 * base + off];
        acc[u] += v;
      }
    }
  }
  __syncthreads();
  const long long t1 = clock64();
  float s = 0.f;
  for (int u = 0; u < U; ++u) s += acc[u];
  if (s == 12345.f) sink[0] = s;
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  long long* d;
  float* sink;
  cudaMalloc(&d, sms * sizeof(long long));
  cudaMalloc(&sink, 4);
  std::vector<long long> h(sms);
  const double loads = double(THREADS / 32) * ITERS * U;  // warp-loads per SM
  printf("width  distinct  cycles/warp-load (median over %d SMs)\n", sms);
  for (int width : {16, 4}) {
    for (int distinct : {1, 2, 4, 8, 16, 32}) {
      for (int rep = 0; rep < 2; ++rep) {
        if (width == 16) probe<16><<<sms, THREADS>>>(distinct, d, sink);
        else probe<4><<<sms, THREADS>>>(distinct, d, sink);
      }
      cudaMemcpy(h.data(), d, sms * sizeof(long long), cudaMemcpyDeviceToHost);
      std::sort(h.begin(), h.end());
      printf("%5d  %8d  %.2f\n", width, distinct, h[sms / 2] / loads);
    }
  }
  return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
