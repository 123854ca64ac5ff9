// Decode-time GEMV of a lifted layer on the binary tensor cores (sm_80+: mma.sync m16n8k256 .b1 and.popc).
//
// y[m, r] = scale[r] * sum_k u[m, k] * q[r, k] + bias[r] (+ residual[m, r]),  q = 2 * bit - 1.
//
// Kernels:
//   planes  cuts each token's lifted activation u (K values) into k-steps of 256 values; per k-step s
//           it rounds u / zs_s to 16-bit integers zq (zs_s = max|u over the step| / (2^15 - 1)) and
//           stores their 16 bit planes (word w of plane p: bit p of the integers of lifted indices
//           32 w .. 32 w + 31) in MMA-fragment order, with zs_s and zs_s * sum(zq over the step).
//   gemv    reads the codes in the runtime's K-major word layout (word kw of row r at words[kw * N + r],
//           bit i of it is lifted index 32 kw + i) straight into the A operand of the binary MMA and
//           the planes into its B operand (the 8 columns of one MMA are 8 planes): with no decode at
//           all, each MMA gives for 16 rows and 8 planes popc(code bits & plane bits) over one k-step.
//           S_s = sum_p w_p c_p (w_p = 2^p, w_15 = -2^15: two's complement) is sum_k zq[k] bit[k], and
//           y = scale * sum_s zs_s (2 S_s - sum zq) + bias: exact but for rounding u to 16 bits per
//           k-step (relative 2^-16 of the step's largest value) and float32 accumulation. For one token
//           on sm_90 the same MMAs can read codes and planes from a ring in shared memory that the tensor
//           memory accelerator fills (gemv_tma_kernel; use_tma says where).
//   lift_planes  the lifted transform of x (RMSNorm or SwiGLU fused in) and its planes in one launch:
//           lift_tiled_kernel where the shape fits its register tiling (tiled_smem), else lift_planes_kernel.
// C ABI (ctypes: liftexport/kernels/cuda_binary.py); every entry validates its arguments and returns
// 0 or a nonzero code (negative: bad arguments, positive: the CUDA error).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // CUtensorMap, PFN_cuTensorMapEncodeTiled (resolved at run time: no libcuda link)

#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <type_traits>

namespace {

constexpr int P = 16;                    // bit planes of the quantized activation
constexpr int QMAX = (1 << (P - 1)) - 1;
constexpr int STEP_WORDS = 33 * 4;      // words per k-step in the planes buffer: 32 lanes x 4, then zs, zs sum(zq), 0, 0
#ifndef LQ_U1
#define LQ_U1 2  // k-steps per round of the one-token gemv
#endif
// The one-token, 8-warp gemv loads its next round while it computes the current one (two register sets:
// 8192x8192 in a stream of 8 11.3 -> 10.0 us, 8192x28672 32.2 -> 28.5). The 4-warp one for many row blocks
// does not: with 7 blocks per SM to fit the registers it is slower (28672x8192: 28.7 -> 29.9 us), and one
// round of one k-step in flight the same (bench/results/gemv_pipeline/). 0: never (A/B switch).
#ifndef LQ_PIPE
#define LQ_PIPE 1
#endif
#ifndef LQ_PF
#define LQ_PF 1  // rounds of codes a gemv warp prefetches into L2 before its programmatic-launch wait
#endif
// gemv blocks: 8 warps splitting K; with many row blocks (>= WIDE_BLOCKS_PER_SM per SM) and one token,
// 4 warps, so that all blocks fit on the GPU in one wave (28672x8192: 33.3 -> 32.5 us, 22016x4096:
// 19.1 -> 17.5; fewer row blocks are faster with 8: bench/results/binary_variants/)
#ifndef LQ_WIDE_BLOCKS
#define LQ_WIDE_BLOCKS 5
#endif
constexpr int WIDE_BLOCKS_PER_SM = LQ_WIDE_BLOCKS;
constexpr int PLANE_WARPS = 8;           // k-steps per planes block (one per warp)
// threads of a lift_planes_kernel block: 512, or 1024 for inputs wider than WIDE_LIFT values (down_proj of a
// 7B model, 11008: 18.5 us per call in a decode step vs 23.8 with 512 and 32.3 with 256; 4096-wide
// inputs 8.7-9.2 us with 512, 9.3-11 with 1024, 12.7-13.9 with 256: bench/results/lift_threads/)
constexpr int LIFT_THREADS = 512, WIDE_LIFT_THREADS = 1024, WIDE_LIFT = 8192;

enum DType { F32 = 0, F16 = 1, BF16 = 2 };
enum GemvFlags { GEMV_STATIC = 1, GEMV_PLAIN = 2, GEMV_TMA = 4 };  // lq_binary_gemv's flags

// Programmatic dependent launch (sm_90+): every kernel here is launched so that it may start while the
// kernel before it in the stream finishes; it lets its own dependents start as soon as all its blocks
// run (pdl_trigger) and reads or writes no memory before pdl_wait returns (the previous grid complete,
// its memory visible): before the wait it only prefetches weights into L2 (prefetch_l2: no data
// reaches the kernel, and L2 is where writes of the previous kernel land), so a layer's launch latency
// and the first loads of its codes overlap the previous kernel's tail. The one exception is opt-in:
// lq_lift_planes with static_weights = 1 (the caller's promise that nothing queued before writes them)
// stages its weights into shared memory before the wait, and so does the TMA gemv with its codes and its rows'
// scales and biases (lq_binary_gemv's static flag). Elsewhere (sm_80, or
// LIFTEXPORT_PDL=0 in the environment) plain launches, and the two are no-ops.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
// the 128-byte lines of bytes [p, p + bytes), spread over a block's threads
__device__ __forceinline__ void prefetch_l2(const void* p, long long bytes, int tid, int nthreads) {
  const char* c = static_cast<const char*>(p);
  for (long long o = 128LL * tid; o < bytes; o += 128LL * nthreads) prefetch_l2(c + o);
}

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// The step's integers q[c] = round(v[c] / zs) of lane's values (v[c] is value 32 c + lane of the step),
// its scale zs (returned) and the sum of all its integers (sum, the same in every lane). (Split out of
// store_step as measured: the one-function form compiles the plain lift to 55 registers, this to 40.)
__device__ __forceinline__ float quantize_step(const float (&v)[8], int (&q)[8], int& sum) {
  float amax = 0.f;
#pragma unroll
  for (int c = 0; c < 8; ++c) amax = fmaxf(amax, fabsf(v[c]));
  // the warp's max in one redux (sm_80+): each lane's amax is a float >= 0 and not NaN (fmaxf drops NaN), whose
  // bits order as unsigned integers as the floats do, so this is the value the shuffle tree of fmaxf gave
  amax = __uint_as_float(__reduce_max_sync(~0u, __float_as_uint(amax)));
  // IEEE round-to-nearest division and products throughout: the planes are specified bit-exactly
  // (liftexport/kernels/cuda_binary.py planes_reference)
  const float inv = amax > 0.f ? __fdiv_rn((float)QMAX, amax) : 0.f;
  sum = 0;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    q[c] = max(-QMAX, min(QMAX, __float2int_rn(__fmul_rn(v[c], inv))));
    sum += q[c];
  }
  sum = __reduce_add_sync(~0u, sum);
  return __fdiv_rn(amax, (float)QMAX);
}

// Row 32 of a step's fragment: zs and zs * sum(zq) (float bits), 0, 0.
__device__ __forceinline__ void store_step_scale(float zs, int sum, uint32_t* __restrict__ frag_out) {
  reinterpret_cast<uint4*>(frag_out)[32] = make_uint4(__float_as_uint(zs), __float_as_uint(__fmul_rn(zs, (float)sum)), 0u, 0u);
}

// Planes p0 .. p0 + NP - 1 (NP <= 8, within one half) of a step's fragment from its integers (q as
// quantize_step gives them), a ballot each. Fragment order, zf[m][s][33][4]: row l = 4 g + t holds for planes
// 8 j + g (j = 0, 1) the words 8 s + t and 8 s + 4 + t at slots 2 j and 2 j + 1 (lane l's B operands); row 32
// holds zs_s and zs_s * sum(zq) (float bits), 0, 0 (read by a whole warp as one 8-byte broadcast). Warps that
// each quantize the step build its fragment in parts (lift_planes_kernel, LQ_PLANE_HALVES: halves; the tiled
// lift: LQ_TILED_PW parts).
template <int NP>
__device__ __forceinline__ void store_planes(const int (&q)[8], uint32_t* __restrict__ frag_out, int lane, int p0) {
  static_assert(NP >= 1 && NP <= 8, "within one half");
  const int g = lane >> 2, t = lane & 3, g0 = p0 & 7;
  uint32_t f[2] = {0, 0};
#pragma unroll
  for (int c = 0; c < 8; ++c) {
#pragma unroll
    for (int pp = 0; pp < NP; ++pp) {
      const uint32_t b = __ballot_sync(~0u, (q[c] >> (p0 + pp)) & 1);
      if (g0 + pp == g && (c & 3) == t) f[c >> 2] = b;
    }
  }
  if (g >= g0 && g < g0 + NP) reinterpret_cast<uint2*>(frag_out)[2 * lane + (p0 >> 3)] = make_uint2(f[0], f[1]);
}

// One warp turns the 256 values of k-step s (v[c] held by lane l is value 256 s + 32 c + l) into the
// step's fragment: it reduces their max, quantizes, and builds both halves of the planes.
__device__ __forceinline__ void store_step(const float (&v)[8], uint32_t* __restrict__ frag_out, int lane) {
  int q[8], sum;
  const float zs = quantize_step(v, q, sum);
  store_planes<8>(q, frag_out, lane, 0);
  store_planes<8>(q, frag_out, lane, 8);
  if (lane == 0) store_step_scale(zs, sum, frag_out);
}

// Element i of a float32, float16 or bfloat16 array (dtype as DType), as float.
__device__ __forceinline__ float load_any(const void* p, int dtype, int i) {
  if (dtype == F16) return __half2float(static_cast<const __half*>(p)[i]);
  if (dtype == BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

// dst[0 .. count) = src[0 .. count) by a whole block (shared <- global): 16-byte loads where both
// sides allow, eight in flight per thread.
__device__ __forceinline__ void copy_floats(float* dst, const float* __restrict__ src, int count, int tid, int nthreads) {
  int head = 0;
  if (((reinterpret_cast<uintptr_t>(dst) ^ reinterpret_cast<uintptr_t>(src)) & 15) == 0) {
    head = min(count, (int)(((16 - (reinterpret_cast<uintptr_t>(src) & 15)) & 15) / 4));
    const int nvec = (count - head) / 4;
    const float4* s4 = reinterpret_cast<const float4*>(src + head);
    float4* d4 = reinterpret_cast<float4*>(dst + head);
#pragma unroll 8
    for (int i = tid; i < nvec; i += nthreads) d4[i] = __ldg(s4 + i);
    for (int i = head + 4 * nvec + tid; i < count; i += nthreads) dst[i] = __ldg(src + i);
    count = head;
  }
#pragma unroll 8
  for (int i = tid; i < count; i += nthreads) dst[i] = __ldg(src + i);
}

// The lift's prologue (seventh session, bench/results/lift_prologue/): every block computes the whole
// input, so for the 11008-wide SiLU * up input each block did 11,008 IEEE divisions (a called routine with
// a slow path), ~9,000 cycles of a ~26,000-cycle block; SiLU(v) = v / (1 + e^-v) now divides with
// __fdividef (2 ulp; the prologue's float32 math is checked against float64 with a tolerance, the planes
// stay bit-exact for a given u). With it the decode step is 14% faster at 2.4 bits (307.5 -> 350.5 tok/s on
// one machine, against the plain loop before); the prologue's loads are issued in batches of 8 per thread
// before any arithmetic (fewer registers: 73 -> 51 for the RMSNorm lift; +3% alone).
// W R instantiated once per source of R, so that the staged copy is read with shared-memory loads (a
// pointer that may be either is generic): W R phase ~3,600 -> ~2,300 cycles per block, decode step +1.6% at
// 2.4 bits and +2.8% at 3.0 (one call, bench/results/lift_prologue/call4_*.json)
#ifndef LQ_WR_TYPED
#define LQ_WR_TYPED 1  // 0: one instance reading R through a generic pointer (A/B switch)
#endif
// Each k-step's planes built by two warps, 8 planes each, both quantizing the step (store_planes): planes
// phase ~3,200 -> ~2,500 cycles per 4096-wide lift block, decode step 375.1 -> 382.6 tok/s at 2.4 bits, 3.0
// unchanged (eighth session, bench/results/plane_halves/). Unlike the split of the fifth and seventh
// sessions (one warp quantizing into shared memory, then (step, plane) pairs over the warps; faster
// kernel, slower decode step) it adds no barrier and no shared-memory round trip.
#ifndef LQ_PLANE_HALVES
#define LQ_PLANE_HALVES 1  // 0: one warp builds all 16 planes of a k-step (A/B switch)
#endif
#ifndef LQ_FAST_SILU
#define LQ_FAST_SILU 1  // 0: IEEE division in SiLU (A/B switch)
#endif
// The largest power of two G <= 32 with n * G <= threads, at least 1 ...
__host__ __device__ __forceinline__ int lanes_upto(int n, int threads) {
  int G = 1;
  while (G < 32 && n * 2 * G <= threads) G <<= 1;
  return G;
}
// ... and 0 if n > threads (the tiled lift's lanes per column; where 0, it does not take the shape)
__host__ __device__ __forceinline__ int pow2_lanes(int n, int threads) { return n > threads ? 0 : lanes_upto(n, threads); }
// Lanes per output when `outs` sums are spread over `threads` threads: lanes_upto.
#ifndef LQ_LIFT_SPLIT
#define LQ_LIFT_SPLIT 1  // 0: one lane per output (A/B switch for benchmarks)
#endif
__device__ __forceinline__ int split_lanes(int outs, int threads) {
  return LQ_LIFT_SPLIT ? lanes_upto(outs, threads) : 1;
}
// Which terms part `sub` of an output's sum of n terms takes, as [k0, end) with stride st: every G-th
// (interleaved, k0 = sub) or a run of ceil(n / G) (blocked). The host picks per phase and G whichever
// spreads a warp's shared-memory loads over more banks (lift_mappings; flags bits, lift_planes_kernel).
__device__ __forceinline__ void split_terms(int n, int G, int sub, bool blocked, int& k0, int& st, int& end) {
  if (blocked) {
    const int run = (n + G - 1) / G;
    k0 = sub * run, st = 1, end = min(n, k0 + run);
  } else {
    k0 = sub, st = G, end = n;
  }
}
// whether the split sums of a phase take blocked parts at G lanes per output (mask: bit log2(G))
__device__ __forceinline__ bool blocked_at(int mask, int G) { return (mask >> (31 - __clz(G))) & 1; }
// Sum of v over the aligned group of G lanes (G a power of two <= 32); every lane of the warp calls it.
__device__ __forceinline__ float group_sum(float v, int G) {
  for (int o = G >> 1; o; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
  return v;
}

// RMSNorm's sum of squares of a block: each warp's part into red[warp] ...
__device__ __forceinline__ void warp_sum_to(float ss, float* red, int lane, int warp) {
#pragma unroll
  for (int o = 16; o; o >>= 1) ss += __shfl_xor_sync(~0u, ss, o);
  if (lane == 0) red[warp] = ss;
}
// ... and, after a barrier, 1 / rms from the WARPS parts
template <int WARPS>
__device__ __forceinline__ float rms_rstd(const float* red, int in_features, float eps) {
  float ss = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) ss += red[w];
  return rsqrtf(ss / in_features + eps);
}

// Diagnostic build only (-DLQ_LIFT_TIMING, bench/gpu_lift_phases.py): thread 0 of each lift_planes block of
// token 0 records clock64() at the end of each phase; lq_lift_timing copies the records out.
#ifdef LQ_LIFT_TIMING
constexpr int LQ_T_BLOCKS = 1024, LQ_T_MARKS = 8;
__device__ long long lq_lift_t[LQ_T_BLOCKS][LQ_T_MARKS];
#define LQ_T(i)                                                                        \
  do {                                                                                 \
    if (threadIdx.x == 0 && blockIdx.y == 0 && blockIdx.x < LQ_T_BLOCKS) lq_lift_t[blockIdx.x][i] = clock64(); \
  } while (0)
#else
#define LQ_T(i) \
  do {          \
  } while (0)
#endif

// Diagnostic build only (-DLQ_TRACE, bench/gpu_block_trace.py): thread 0 of every block of the TMA gemv and
// the tiled lift records %globaltimer (ns, one clock for all SMs) at the block's start, after its PDL wait
// and at its end, with a key: kind (bit 63: lift), SM (bits 48-55), block (32-47), shape (0-31: gemv N | steps
// << 20, lift in_features | PRE << 28); lq_trace_read copies the records out.
#ifdef LQ_TRACE
constexpr int LQ_TRACE_MAX = 1 << 16;
__device__ unsigned long long lq_trace_buf[LQ_TRACE_MAX][4];
__device__ unsigned int lq_trace_n;
__device__ __forceinline__ unsigned long long lq_gtime() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define LQ_TR_START unsigned long long lq_t0 = threadIdx.x == 0 ? lq_gtime() : 0, lq_t1 = 0
#define LQ_TR_WAITED \
  if (threadIdx.x == 0) lq_t1 = lq_gtime()
#define LQ_TR_END(kind, shape)                                                                       \
  if (threadIdx.x == 0) {                                                                            \
    unsigned smid;                                                                                   \
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));                                               \
    const unsigned i = atomicAdd(&lq_trace_n, 1u);                                                   \
    if (i < LQ_TRACE_MAX) {                                                                          \
      lq_trace_buf[i][0] = ((unsigned long long)(kind) << 63) | ((unsigned long long)(smid & 255) << 48) | \
                           ((unsigned long long)(blockIdx.x & 0xFFFF) << 32) | (unsigned)(shape);    \
      lq_trace_buf[i][1] = lq_t0, lq_trace_buf[i][2] = lq_t1, lq_trace_buf[i][3] = lq_gtime();      \
    }                                                                                                \
  }
#else
#define LQ_TR_START
#define LQ_TR_WAITED
#define LQ_TR_END(kind, shape)
#endif

// Planes of a given u: one warp per k-step s of a token (grid: ceil(steps / PLANE_WARPS) x M).
template <typename T>
__global__ void __launch_bounds__(PLANE_WARPS * 32) planes_kernel(const T* __restrict__ u, int K, long long ldu,
                                                                  uint32_t* __restrict__ zf, int steps) {
  const int m = blockIdx.y, lane = threadIdx.x & 31, s = blockIdx.x * PLANE_WARPS + (threadIdx.x >> 5);
  pdl_trigger();
  pdl_wait();
  if (s >= steps) return;  // whole warps
  const T* row = u + (long long)m * ldu;
  float v[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    const int i = 256 * s + 32 * c + lane;
    v[c] = i < K ? to_f(row[i]) : 0.f;
  }
  store_step(v, zf + ((long long)m * steps + s) * STEP_WORDS, lane);
}

__device__ __forceinline__ float silu(float v) {
  return LQ_FAST_SILU ? __fdividef(v, 1.f + __expf(-v)) : v / (1.f + __expf(-v));
}

// The lift's phases (lift_planes_kernel below). u = L X R with
// X = (prologue(x) / s1 padded to n1 * n2) as n1 x n2 (row-major) and u flat [n1 * C]; prologue: none
// (PRE 0), RMSNorm with weight nw (1), or SiLU(gate) * up of x = [gate | up] (2), float32 math.
// A block that owns the k-steps [s_a, s_b) of a token, i.e. the flat values f_a .. f_b - 1 and the rows
// i_a .. i_a + rows - 1 of U that hold them, computes only those rows: each row of U is independent,
// U[i, :] = (L[i, :] X) R (boundary rows twice, by two blocks). Shared memory (LiftSmem): X (first
// inv_s1), its rows of L, W = L[i_a.., :] X, its values of u (useg, 256 per k-step) and, when it fits
// (stage_r), R: n + rows * (n1 + n2) + 256 spc (+ n2 * C) floats.
struct LiftSmem {
  float *xs, *Ls, *W, *useg, *Rs;
};
__device__ __forceinline__ LiftSmem lift_smem_layout(float* sm, int n, int rows, int n1, int n2, int spc) {
  LiftSmem s;
  s.xs = sm;                   // [n]
  s.Ls = s.xs + n;             // [rows, n1]
  s.W = s.Ls + rows * n1;      // [rows, n2]
  s.useg = s.W + rows * n2;    // [256 * spc]: values f_a .. f_a + 256 spc - 1 (zero past K)
  s.Rs = s.useg + 256 * spc;   // [n2, C] when staged
  return s;
}

// The weights' lines requested from memory at once (the GEMVs stream past L2 in between).
__device__ __forceinline__ void lift_prefetch(const float* inv_s1, const float* L, const float* R, int n, int n1,
                                              int n2, int C, int i_a, int rows, int tid, int nthreads) {
  prefetch_l2(inv_s1, 4LL * n, tid, nthreads);
  prefetch_l2(L + (long long)i_a * n1, 4LL * rows * n1, tid, nthreads);
  prefetch_l2(R, 4LL * n2 * C, tid, nthreads);
}

// inv_s1, the block's rows of L and (stage_r) R into shared memory.
__device__ __forceinline__ void lift_stage(const LiftSmem& s, const float* inv_s1, const float* L, const float* R,
                                           int n, int n1, int n2, int C, int i_a, int rows, int stage_r, int tid,
                                           int nthreads) {
  copy_floats(s.xs, inv_s1, n, tid, nthreads);
  copy_floats(s.Ls, L + (long long)i_a * n1, rows * n1, tid, nthreads);
  if (stage_r) copy_floats(s.Rs, R, n2 * C, tid, nthreads);
}

// X = prologue(x) / s1 in one pass over x (xs holds inv_s1 on entry, the whole block staged and synced),
// then W = L[i_a.., :] X; returns RMSNorm's 1 / rms (1 without), a scalar of the whole input that
// multiplies the block's outputs at the end (u = rstd L X' R) instead of X (no second pass over x).
// Ends synced.
template <typename T, int PRE, int THREADS>
__device__ __forceinline__ float lift_prologue_lx(const LiftSmem& s, const T* __restrict__ xb, int in_features,
                                                  const void* __restrict__ nw, int nw_dtype, float eps, int n, int n1,
                                                  int n2, int rows, float* red, int lx_mask) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  float* xs = s.xs;
  float ss = 0.f;
  // PRO_U values per thread at a time, all their loads issued before any arithmetic
  constexpr int PRO_U = 8;
  for (int f0 = tid; f0 < n; f0 += PRO_U * THREADS) {
    float a[PRO_U], b[PRO_U];
#pragma unroll
    for (int u = 0; u < PRO_U; ++u) {
      const int f = f0 + u * THREADS;
      const bool in = f < in_features;
      a[u] = in ? to_f(xb[f]) : 0.f;
      b[u] = PRE == 1 ? (in ? load_any(nw, nw_dtype, f) : 0.f) : PRE == 2 ? (in ? to_f(xb[in_features + f]) : 0.f) : 1.f;
    }
#pragma unroll
    for (int u = 0; u < PRO_U; ++u) {
      const int f = f0 + u * THREADS;
      float v = a[u];
      if (PRE == 1) {
        ss = fmaf(v, v, ss);
        v *= b[u];
      }
      if (PRE == 2) v = silu(v) * b[u];
      if (f < n) xs[f] *= v;
    }
  }
  if (PRE == 1) warp_sum_to(ss, red, lane, warp);
  __syncthreads();
  LQ_T(3);  // prologue done
  const float rstd = PRE == 1 ? rms_rstd<THREADS / 32>(red, in_features, eps) : 1.f;
  // W = L[i_a.., :] X, then (lift_wr) the block's values of W R: each output's sum is split over G lanes
  // (a power of two, as many as the block has threads to spare; a shuffle reduction joins the parts),
  // so the dependent chain per thread is n1 / G (W) or n2 / G (u) multiply-adds long.
  {
    const int outs = rows * n2;
    const int G = split_lanes(outs, THREADS), sub = tid & (G - 1), per = THREADS / G;
    for (int base = 0; base < outs; base += per) {  // same trip count in every thread (shuffles)
      const int o = base + tid / G;
      float a0 = 0.f, a1 = 0.f;
      if (o < outs) {
        const int r = o / n2, j = o - r * n2;
        const float* Lr = s.Ls + r * n1;
        int k, st, end;
        split_terms(n1, G, sub, blocked_at(lx_mask, G), k, st, end);
        for (; k + st < end; k += 2 * st) {
          a0 = fmaf(Lr[k], xs[k * n2 + j], a0);
          a1 = fmaf(Lr[k + st], xs[(k + st) * n2 + j], a1);
        }
        if (k < end) a0 = fmaf(Lr[k], xs[k * n2 + j], a0);
      }
      a0 = group_sum(a0 + a1, G);
      if (o < outs && sub == 0) s.W[o] = a0;
    }
  }
  __syncthreads();
  LQ_T(4);  // W = L X done
  return rstd;
}

// useg[f - f_a] = rstd * (W R)[f] for the block's flat values f_a <= f < f_b (zero after f_b up to
// 256 (s_b - s_a)). Instantiated once per source of R (shared or global), so that the staged copy is
// read with shared-memory loads. Ends synced.
template <int THREADS, typename RT>
__device__ __forceinline__ void lift_wr(const LiftSmem& s, const RT* __restrict__ Rsrc, float rstd, int n2, int C,
                                        int i_a, int f_a, int f_b, int nsteps, int wr_mask) {
  const int tid = threadIdx.x;
  const int outs = 256 * nsteps;
  const int G = split_lanes(outs, THREADS), sub = tid & (G - 1), per = THREADS / G;
  for (int base = 0; base < outs; base += per) {
    const int f = f_a + base + tid / G;
    float a0 = 0.f, a1 = 0.f;
    if (f < f_b) {
      const int i = f / C, c = f - i * C;
      const float* Wr = s.W + (i - i_a) * n2;
      int j, st, end;
      split_terms(n2, G, sub, blocked_at(wr_mask, G), j, st, end);
      for (; j + st < end; j += 2 * st) {
        a0 = fmaf(Wr[j], Rsrc[(long long)j * C + c], a0);
        a1 = fmaf(Wr[j + st], Rsrc[(long long)(j + st) * C + c], a1);
      }
      if (j < end) a0 = fmaf(Wr[j], Rsrc[(long long)j * C + c], a0);
    }
    a0 = group_sum(a0 + a1, G);
    if (base + tid / G < outs && sub == 0) s.useg[base + tid / G] = a0 * rstd;  // zero past K
  }
  __syncthreads();
  LQ_T(5);  // W R done
}

template <int THREADS>
__device__ __forceinline__ void lift_wr_any(const LiftSmem& s, const float* __restrict__ R, int stage_r, float rstd,
                                            int n2, int C, int i_a, int f_a, int f_b, int nsteps, int wr_mask) {
#if LQ_WR_TYPED
  if (stage_r)
    lift_wr<THREADS>(s, s.Rs, rstd, n2, C, i_a, f_a, f_b, nsteps, wr_mask);
  else
    lift_wr<THREADS>(s, R, rstd, n2, C, i_a, f_a, f_b, nsteps, wr_mask);
#else
  lift_wr<THREADS>(s, stage_r ? s.Rs : R, rstd, n2, C, i_a, f_a, f_b, nsteps, wr_mask);
#endif
}

// The lifted transform and the planes in one kernel (decode: a few tokens). Block (b, m) owns k-steps
// [b * spc, (b + 1) * spc) of token m: it stages its weights, computes its values of u (lift phases
// above; every block redoes the prologue, x is small and L2-resident), then one warp per k-step
// quantizes them (store_step).
template <typename T, int PRE, int THREADS>
__global__ void __launch_bounds__(THREADS) lift_planes_kernel(
    const T* __restrict__ x, long long ldx, int in_features, const void* __restrict__ nw, int nw_dtype, float eps,
    const float* __restrict__ inv_s1, const float* __restrict__ L, const float* __restrict__ R, int n1, int n2,
    int C, uint32_t* __restrict__ zf, int steps, int spc, int flags) {
  extern __shared__ float sm[];
  __shared__ float red[THREADS / 32];
  const int m = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int stage_r = flags & 1, static_w = flags & 2;
  const int n = n1 * n2, K = n1 * C;
  const int s_a = blockIdx.x * spc, s_b = min(steps, s_a + spc);
  const int f_a = 256 * s_a, f_b = min(K, 256 * s_b);
  const int i_a = f_a / C, rows = (f_b - 1) / C - i_a + 1;
  const LiftSmem s = lift_smem_layout(sm, n, rows, n1, n2, spc);
  LQ_T(0);
  pdl_trigger();
  // staged before the wait when the caller guarantees no earlier work in the stream writes inv_s1, L or R
  lift_prefetch(inv_s1, L, R, n, n1, n2, C, i_a, rows, tid, THREADS);
  if (!static_w) pdl_wait();
  lift_stage(s, inv_s1, L, R, n, n1, n2, C, i_a, rows, stage_r, tid, THREADS);
  LQ_T(1);  // weights staged (and, unless static, the previous kernel complete)
  if (static_w) pdl_wait();
  __syncthreads();
  LQ_T(2);  // the previous kernel complete, all staged
  const float rstd = lift_prologue_lx<T, PRE, THREADS>(s, x + (long long)m * ldx, in_features, nw, nw_dtype, eps, n,
                                                      n1, n2, rows, red, (flags >> 2) & 63);
  lift_wr_any<THREADS>(s, R, stage_r, rstd, n2, C, i_a, f_a, f_b, s_b - s_a, (flags >> 8) & 63);
  // LQ_PLANE_HALVES: two warps per k-step, each quantizing it and building half of its planes
  constexpr int HALVES = LQ_PLANE_HALVES ? 1 : 0;  // log2 of the warps per k-step
  for (int st = s_a + (warp >> HALVES); st < s_b; st += THREADS / (32 << HALVES)) {
    float v[8];
#pragma unroll
    for (int c = 0; c < 8; ++c) v[c] = s.useg[256 * (st - s_a) + 32 * c + lane];
    if constexpr (!HALVES) {
      store_step(v, zf + ((long long)m * steps + st) * STEP_WORDS, lane);
    } else {
      int q[8], sum;
      const float zs = quantize_step(v, q, sum);
      uint32_t* fo = zf + ((long long)m * steps + st) * STEP_WORDS;
      if (warp & 1) {
        store_planes<8>(q, fo, lane, 8);
      } else {
        store_planes<8>(q, fo, lane, 0);
        if (lane == 0) store_step_scale(zs, sum, fo);
      }
    }
  }
  LQ_T(6);  // planes stored (warp 0's part)
}

// ---- The lift with its sums tiled over registers (lift_tiled_kernel; lq_lift_planes takes it where it fits) ----
// The same u = rstd L X' R and planes as lift_planes_kernel, with shorter dependent chains after the wait and
// TILED_THREADS threads whatever the width, so that a block fits beside a TMA gemv block on one SM (registers:
// a 1024-thread lift never did, and started only once the gemv's block on its SM had left):
//   staging (before the wait with static weights): the block's rows of L transposed into float4 groups of
//     four rows ([row chunk][k]), R, and X's scales inv_s1 (times RMSNorm's weight; zero past in_features);
//   prologue: x read four values per lane where aligned (every load issued before any use), SiLU(gate) * up
//     or RMSNorm's sum of squares, times the scales in shared memory;
//   phase A: thread (j, sub) of n2 x G (G lanes per column of X, a power of two) sums L[r, k] X[k, j]
//     over k = sub + G i for four rows at a time (one 16-byte shared load of L per k), a shuffle sum over G;
//   phase B: thread (c, sub2) of C x G2 sums W[r, j] R[j, c] for four rows at a time;
//   planes: each k-step by LQ_TILED_PW warps, each quantizing it and building 16 / PW of its planes.
// Where it fits: n2 and C at most TILED_THREADS, ceil(n1 / G) at most TILED_KMAX, all in shared memory.
#ifndef LQ_LIFT_TILED
#define LQ_LIFT_TILED 1  // 0: lq_lift_planes takes lift_planes_kernel by default (LIFTEXPORT_LIFT_TILED overrides)
#endif
#ifndef LQ_TILED_PW
#define LQ_TILED_PW 8  // warps per k-step building its planes (2, 4, 8 or 16)
#endif
static_assert(LQ_TILED_PW == 2 || LQ_TILED_PW == 4 || LQ_TILED_PW == 8 || LQ_TILED_PW == 16, "planes per warp");
// TILED_MAXREG: a lift block (16 warps) fits beside a TMA gemv block (9 warps of 72 registers) on one SM. Registers
// are split over the SM's four quarters (16,384 each) and the gemv puts 3 warps in one of them: with 80 registers
// per lift thread that quarter needs 3 x 2,304 + 4 x 2,560 = 17,152 and no lift block could start beside a gemv
// block; with 72, 16,128 (block traces with the gemv at 64 and at 80 registers agree). Both this and the
// shared-memory carveout (smem_carveout) are needed: neither alone moved the lift's blocks
// (bench/results/lift_tiled/c16_maxreg72/, bench/results/coresidency/).
constexpr int TILED_THREADS = 512, TILED_KMAX = 32;
#ifndef TILED_MAXREG
#define TILED_MAXREG 72
#endif
// Four consecutive values of an array aligned to their size as loaded (raw4: the loads stay in flight until unpack4).
// The tiled lift's prologue takes x four values per lane, so that its lanes' float4 accesses to the scales in shared
// memory are consecutive: with eight per lane (two float4 32 bytes apart, or eight scalars) they met 2- to 8-way bank
// conflicts, which made the prologue the lift's longest phase (bench/results/lift_stalls/: 2,064 shared-memory wavefronts
// per block of the 4096-wide RMSNorm lift against 272 without conflicts).
struct Raw4 {
  uint4 w;  // float: all of it; 16-bit types: w.x, w.y
};
template <typename T>
__device__ __forceinline__ Raw4 raw4(const T* p) {
  Raw4 r;
  if constexpr (sizeof(T) == 4) {
    r.w = __ldg(reinterpret_cast<const uint4*>(p));
  } else {
    const uint2 h = __ldg(reinterpret_cast<const uint2*>(p));
    r.w = make_uint4(h.x, h.y, 0u, 0u);
  }
  return r;
}
template <typename T>
__device__ __forceinline__ float unpack4(const Raw4& r, int i) {
  if constexpr (sizeof(T) == 4) return __uint_as_float(reinterpret_cast<const uint32_t*>(&r.w)[i]);
  else return to_f(reinterpret_cast<const T*>(&r.w)[i]);
}
// Four rows' sums of a[t] * b[t * stride] over t = t0, t0 + G, ... < n (a in float4 groups of four rows, one
// 16-byte shared load per t), each summed over the aligned group of G lanes (every lane of the warp calls it;
// lanes with on false add nothing). Phases A (L X) and B (W R) of lift_tiled_kernel.
template <int UNROLL>
__device__ __forceinline__ float4 rows4_sum(const float4* a, const float* b, int stride, int t0, int n, int G, bool on) {
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (on) {
#pragma unroll UNROLL
    for (int t = t0; t < n; t += G) {
      const float4 l = a[t];
      const float v = b[t * stride];
      acc.x = fmaf(l.x, v, acc.x);
      acc.y = fmaf(l.y, v, acc.y);
      acc.z = fmaf(l.z, v, acc.z);
      acc.w = fmaf(l.w, v, acc.w);
    }
  }
  acc.x = group_sum(acc.x, G);
  acc.y = group_sum(acc.y, G);
  acc.z = group_sum(acc.z, G);
  acc.w = group_sum(acc.w, G);
  return acc;
}
// The prologue's value of x[f] (and x[in_features + f] for SwiGLU): SiLU(gate) * up or x itself.
template <int PRE>
__device__ __forceinline__ float prologue_value(float a, float b) { return PRE == 2 ? silu(a) * b : a; }

template <typename T, int PRE, bool ONE>  // ONE: the one-token launches' instance (same code; see smem_carveout)
__global__ void __maxnreg__(TILED_MAXREG) lift_tiled_kernel(
    const T* __restrict__ x, long long ldx, int in_features, const void* __restrict__ nw, int nw_dtype, float eps,
    const float* __restrict__ inv_s1, const float* __restrict__ L, const float* __restrict__ R, int n1, int n2,
    int C, uint32_t* __restrict__ zf, int steps, int spc, int flags) {
  constexpr int THREADS = TILED_THREADS, PW = LQ_TILED_PW, NP = 16 / PW;
  extern __shared__ float4 sm4[];
  __shared__ float red[THREADS / 32];
  const int m = blockIdx.y, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int static_w = flags & 2, K = n1 * C, n = n1 * n2;
  const int s_a = blockIdx.x * spc, s_b = min(steps, s_a + spc);
  const int f_a = 256 * s_a, f_b = min(K, 256 * s_b);
  const int i_a = f_a / C, rows = (f_b - 1) / C - i_a + 1, chunks = (rows + 3) / 4;
  float4* Ls = sm4;                                       // [chunks][n1]: rows 4 rc .. 4 rc + 3 of L[i_a.., k]
  float4* Ws = Ls + chunks * n1;                          // [chunks][n2]: the same rows of W = L X'
  float* Rs = reinterpret_cast<float*>(Ws + chunks * n2);  // [n2][C]
  float* xs = Rs + n2 * C;                                // [n]: prologue(x), zero past in_features
  float* useg = xs + n;                                   // [256 spc]
  const int G = pow2_lanes(n2, THREADS), j = tid / G, sub = tid & (G - 1);
  const int G2 = pow2_lanes(C, THREADS), c = tid / G2, sub2 = tid & (G2 - 1);
  const bool a_on = j < n2, b_on = c < C;
  LQ_TR_START;
  LQ_T(0);
  pdl_trigger();
  if (!static_w) pdl_wait();
  // L transposed, written in the order of Ls (consecutive lanes, consecutive words: no bank conflicts; read along its
  // rows instead, lanes 16 bytes apart met 4-way conflicts: bench/results/lift_stalls/)
  for (int i = tid; i < chunks * 4 * n1; i += THREADS) {
    const int rc = i / (4 * n1), q = i - rc * 4 * n1, r = 4 * rc + (q & 3), k = q >> 2;
    reinterpret_cast<float*>(Ls)[i] = r < rows ? L[(long long)(i_a + r) * n1 + k] : 0.f;
  }
  copy_floats(Rs, R, n2 * C, tid, THREADS);
  // X's scales, each staged by the thread whose prologue multiplies it (no barrier between), zero past in_features
  const T* __restrict__ xb = x + (long long)m * ldx;
  float4* xs4 = reinterpret_cast<float4*>(xs);  // groups of four values (16-byte aligned where vec)
  const bool vec = reinterpret_cast<uintptr_t>(xb) % (4 * sizeof(T)) == 0 && in_features % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(xs) % 16 == 0;
  const int groups = vec ? in_features / 4 : 0;
  auto scale = [&](int f) { return PRE == 1 ? inv_s1[f] * load_any(nw, nw_dtype, f) : inv_s1[f]; };
  for (int g = tid; g < groups; g += THREADS)
    xs4[g] = make_float4(scale(4 * g), scale(4 * g + 1), scale(4 * g + 2), scale(4 * g + 3));
  for (int f = 4 * groups + tid; f < in_features; f += THREADS) xs[f] = scale(f);
  for (int f = in_features + tid; f < n; f += THREADS) xs[f] = 0.f;
  LQ_T(1);  // weights staged
  if (static_w) pdl_wait();
  LQ_T(2);  // the previous kernel complete
  LQ_TR_WAITED;
#ifdef LQ_NULL_LIFT  // diagnostic build: the lift stages its weights and waits, then stores nothing (what the lifts
  return;             // cost a decode step beyond their launch: bench/results/tail_pre/)
#endif
  float ss = 0.f;
  constexpr int U = 4;  // 4-value groups per thread in flight (8 for the 11008-wide SiLU * up: no faster, c6)
  for (int g0 = tid; g0 < groups; g0 += U * THREADS) {
    Raw4 a[U], b[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int g = g0 + u * THREADS;
      if (g < groups) {
        a[u] = raw4(xb + 4 * g);
        if (PRE == 2) b[u] = raw4(xb + in_features + 4 * g);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int g = g0 + u * THREADS;
      if (g < groups) {
        float4 sc = xs4[g];
        float* sv = reinterpret_cast<float*>(&sc);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float av = unpack4<T>(a[u], e);
          if (PRE == 1) ss = fmaf(av, av, ss);
          sv[e] *= prologue_value<PRE>(av, PRE == 2 ? unpack4<T>(b[u], e) : 0.f);
        }
        xs4[g] = sc;
      }
    }
  }
  for (int f = 4 * groups + tid; f < in_features; f += THREADS) {  // unaligned rows: one value at a time
    const float av = to_f(xb[f]);
    if (PRE == 1) ss = fmaf(av, av, ss);
    xs[f] *= prologue_value<PRE>(av, PRE == 2 ? to_f(xb[in_features + f]) : 0.f);
  }
  if (PRE == 1) warp_sum_to(ss, red, lane, warp);
  __syncthreads();
  LQ_T(3);  // prologue
  for (int rc = 0; rc < chunks; ++rc) {
    const float4 acc = rows4_sum<8>(Ls + rc * n1, xs + j, n2, sub, n1, G, a_on);
    if (a_on && sub == 0) Ws[rc * n2 + j] = acc;
  }
  const int nsteps = s_b - s_a;
  for (int e = f_b - f_a + tid; e < 256 * nsteps; e += THREADS) useg[e] = 0.f;  // past K
  __syncthreads();
  LQ_T(4);  // W = L X done
  const float rstd = PRE == 1 ? rms_rstd<THREADS / 32>(red, in_features, eps) : 1.f;
  for (int rc = 0; rc < chunks; ++rc) {
    const float4 acc = rows4_sum<4>(Ws + rc * n2, Rs + c, C, sub2, n2, G2, b_on);
    if (b_on && sub2 == 0) {
      const float a4[4] = {acc.x, acc.y, acc.z, acc.w};
#pragma unroll
      for (int r4 = 0; r4 < 4; ++r4) {
        const int f = (i_a + 4 * rc + r4) * C + c;
        if (f >= f_a && f < f_b) useg[f - f_a] = a4[r4] * rstd;
      }
    }
  }
  __syncthreads();
  LQ_T(5);  // W R done
  for (int st = s_a + warp / PW; st < s_b; st += THREADS / 32 / PW) {
    float vv[8];
#pragma unroll
    for (int cc = 0; cc < 8; ++cc) vv[cc] = useg[256 * (st - s_a) + 32 * cc + lane];
    int q[8], sum;
    const float zs = quantize_step(vv, q, sum);
    uint32_t* fo = zf + ((long long)m * steps + st) * STEP_WORDS;
    const int part = warp % PW;
    store_planes<NP>(q, fo, lane, part * NP);
    if (part == 0 && lane == 0) store_step_scale(zs, sum, fo);
  }
  LQ_T(6);  // planes stored (warp 0's part)
  LQ_TR_END(1, in_features | (PRE << 28));
}

__device__ __forceinline__ void bmma(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                     uint32_t b0, uint32_t b1) {
  const int z = 0;
  asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(z));
}

__device__ __forceinline__ float plane_weight(int p) {
  return p == P - 1 ? -(float)(1 << (P - 1)) : (float)(1 << p);
}

// The weights of the planes in lane t's accumulator columns: pw[j][i] for plane 8 j + 2 t + i.
__device__ __forceinline__ void lane_plane_weights(float (&pw)[2][2], int t) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    pw[j][0] = plane_weight(8 * j + 2 * t);
    pw[j][1] = plane_weight(8 * j + 2 * t + 1);
  }
}

// One k-step of a lane's four rows (both gemv kernels): wa, wb its code words 8 s + t and 8 s + 4 + t of the
// rows, za its plane words and zb the step's zs, zs sum(zq); four binary MMAs, counts scaled into acc (one
// float32 per row) and zs sum(zq) into zacc.
__device__ __forceinline__ void mma_step(float (&acc)[4], float& zacc, const uint4& wa, const uint4& wb,
                                         const uint4& za, const uint2& zb, const float (&pw)[2][2]) {
  const float zs = __uint_as_float(zb.x);
  zacc += __uint_as_float(zb.y);
  const uint32_t b[4] = {za.x, za.y, za.z, za.w};
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    int c0[4], c1[4];
    bmma(c0, wa.x, wa.y, wb.x, wb.y, b[2 * j], b[2 * j + 1]);
    bmma(c1, wa.z, wa.w, wb.z, wb.w, b[2 * j], b[2 * j + 1]);
    const float w0 = pw[j][0] * zs, w1 = pw[j][1] * zs;
    acc[0] = fmaf((float)c0[0], w0, fmaf((float)c0[1], w1, acc[0]));  // row 4 g (of the lane's four)
    acc[1] = fmaf((float)c0[2], w0, fmaf((float)c0[3], w1, acc[1]));  // row 4 g + 1
    acc[2] = fmaf((float)c1[0], w0, fmaf((float)c1[1], w1, acc[2]));  // row 4 g + 2
    acc[3] = fmaf((float)c1[2], w0, fmaf((float)c1[3], w1, acc[3]));  // row 4 g + 3
  }
}

// Output row of token m from its summed counts S and zs sum(zq) Z: scale (2 S - Z) + bias (+ residual).
// The value itself from the row's scale and, where the layer has them (has_bias, has_res), its bias and residual as
// bias() and res() read them: store_row reads memory, the TMA gemv's stores the values it read early.
template <typename B, typename R>
__device__ __forceinline__ float row_value(float scale, float S, float Z, bool has_bias, B&& bias, bool has_res,
                                           R&& res) {
  float v = scale * (2.f * S - Z);
  if (has_bias) v += bias();
  if (has_res) v += res();
  return v;
}
template <typename T>
__device__ __forceinline__ void store_row(T* __restrict__ y, long long ldy, const T* __restrict__ res, long long ldr,
                                          const float* __restrict__ rscale, const float* __restrict__ bias, int m,
                                          int row, float S, float Z) {
  const float v = row_value(rscale[row], S, Z, bias, [&] { return bias[row]; }, res,
                            [&] { return to_f(res[(long long)m * ldr + row]); });
  y[(long long)m * ldy + row] = from_f<T>(v);
}

// One block per (32 rows, MB tokens). Lane 4 g + t loads, per k-step s, the 16-byte runs of words
// 8 s + t and 8 s + 4 + t of rows r0 + 4 g .. r0 + 4 g + 3 (a warp's load: four fully used 128-byte
// lines); rows 4 g, 4 g + 1 are MMA rows g, g + 8 of tile 0, rows 4 g + 2, 4 g + 3 those of tile 1.
// The block's warps take every WARPS-th k-step, U at a time with all loads issued first; each k-step's
// counts are scaled by its zs_s into float32 accumulators.
template <int MB, int WARPS, typename T>
__global__ void __launch_bounds__(WARPS * 32, MB > 1 ? 1 : (WARPS == 4 ? 8 : 2)) gemv_kernel(
    const uint32_t* __restrict__ words, int KW, int N, const uint32_t* __restrict__ zf, int steps,
    const float* __restrict__ rscale, const float* __restrict__ bias, const T* __restrict__ res, long long ldr,
    T* __restrict__ y, long long ldy, int M) {
  constexpr int U = MB == 1 ? LQ_U1 : 2;  // k-steps per round
  __shared__ float red[WARPS][MB][32];
  __shared__ float zred[WARPS][MB];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * 32, m0 = blockIdx.y * MB;
  const int r = row0 + 4 * g;
  const bool rok = r < N;  // N % 4 == 0: a lane's four rows are all in or all out
  float acc[MB][4], zacc[MB];  // rows 4 g .. 4 g + 3
#pragma unroll
  for (int mb = 0; mb < MB; ++mb) {
    zacc[mb] = 0.f;
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mb][e] = 0.f;
  }
  float pw[2][2];
  lane_plane_weights(pw, t);
  pdl_trigger();
#pragma unroll
  for (int q = 0; q < U * LQ_PF; ++q) {  // the first rounds' codes into L2 while the previous kernel finishes
    const int s = warp + q * WARPS, k0 = 8 * s + t, k1 = k0 + 4;
    if (s < steps && k0 < KW && rok && g == 0) prefetch_l2(words + (long long)k0 * N + r);
    if (s < steps && k1 < KW && rok && g == 0) prefetch_l2(words + (long long)k1 * N + r);
  }
  pdl_wait();
  // one round: U k-steps of this warp (codes from HBM, planes from L1/L2), loads all issued before any use
  auto load = [&](int s0, uint4(&wa)[U], uint4(&wb)[U], uint4(&za)[U][MB], uint2(&zb)[U][MB]) {
#pragma unroll
    for (int q = 0; q < U; ++q) {
      const int s = s0 + q * WARPS, k0 = 8 * s + t, k1 = k0 + 4;
      const bool in = s < steps;
      wa[q] = in && k0 < KW && rok ? __ldcs(reinterpret_cast<const uint4*>(words + (long long)k0 * N + r))
                                   : make_uint4(0, 0, 0, 0);
      wb[q] = in && k1 < KW && rok ? __ldcs(reinterpret_cast<const uint4*>(words + (long long)k1 * N + r))
                                   : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int mb = 0; mb < MB; ++mb) {
        const uint32_t* zp = zf + ((long long)(m0 + mb) * steps + s) * STEP_WORDS;
        const bool zin = in && m0 + mb < M;
        za[q][mb] = zin ? __ldg(reinterpret_cast<const uint4*>(zp) + lane) : make_uint4(0, 0, 0, 0);
        zb[q][mb] = zin ? __ldg(reinterpret_cast<const uint2*>(zp + 32 * 4)) : make_uint2(0, 0);
      }
    }
  };
  auto compute = [&](int s0, const uint4(&wa)[U], const uint4(&wb)[U], const uint4(&za)[U][MB],
                     const uint2(&zb)[U][MB]) {
#pragma unroll
    for (int q = 0; q < U; ++q) {
      if (s0 + q * WARPS >= steps) break;
#pragma unroll
      for (int mb = 0; mb < MB; ++mb) {
        if (m0 + mb >= M) break;
        mma_step(acc[mb], zacc[mb], wa[q], wb[q], za[q][mb], zb[q][mb], pw);
      }
    }
  };
  constexpr int STRIDE = WARPS * U;
  uint4 wa0[U], wb0[U], za0[U][MB];
  uint2 zb0[U][MB];
  if constexpr (LQ_PIPE && MB == 1 && WARPS == 8) {
    // software pipeline over two register sets: the next round's loads in flight while this one computes
    uint4 wa1[U], wb1[U], za1[U][MB];
    uint2 zb1[U][MB];
    if (warp < steps) load(warp, wa0, wb0, za0, zb0);
    for (int s0 = warp; s0 < steps; s0 += 2 * STRIDE) {
      if (s0 + STRIDE < steps) load(s0 + STRIDE, wa1, wb1, za1, zb1);
      compute(s0, wa0, wb0, za0, zb0);
      if (s0 + STRIDE >= steps) break;
      if (s0 + 2 * STRIDE < steps) load(s0 + 2 * STRIDE, wa0, wb0, za0, zb0);
      compute(s0 + STRIDE, wa1, wb1, za1, zb1);
    }
  } else {
    for (int s0 = warp; s0 < steps; s0 += STRIDE) {
      load(s0, wa0, wb0, za0, zb0);
      compute(s0, wa0, wb0, za0, zb0);
    }
  }
#pragma unroll
  for (int mb = 0; mb < MB; ++mb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      float v = acc[mb][e];
      v += __shfl_xor_sync(~0u, v, 1);
      v += __shfl_xor_sync(~0u, v, 2);
      if (t == 0) red[warp][mb][4 * g + e] = v;
    }
    if (lane == 0) zred[warp][mb] = zacc[mb];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < MB * 32; idx += blockDim.x) {
    const int mb = idx / 32, rr = idx % 32, row = row0 + rr, m = m0 + mb;
    if (row >= N || m >= M) continue;
    float S = 0.f, Z = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) {
      S += red[w][mb][rr];
      Z += zred[w][mb];
    }
    store_row(y, ldy, res, ldr, rscale, bias, m, row, S, Z);
  }
}

// ---- The one-token GEMV fed by the tensor memory accelerator (sm_90: cp.async.bulk.tensor) ----
// One producer thread per block streams boxes of codes and the matching planes into a ring of shared-memory
// stages; the consumer warps run the binary MMAs of gemv_kernel from shared memory. A stage is a box of
// TMA_CK k-steps of the K-major words of one 32-row tile (a 2-D tensor map: 8 TMA_CK rows of 128 bytes) or
// of two adjacent tiles (a 3-D map over (row in tile, tile, word): the two tiles' 128 bytes side by side per
// word), swizzled by the TMA's 128-byte pattern (16-byte chunk c of box row j at chunk c ^ (j & 7)), and
// the TMA_CK k-steps of planes (528 bytes each, one bulk copy). The lanes' row groups are chosen per box
// kind so that the eight lanes of each quarter-warp read eight distinct chunks (no bank conflicts).
// Blocks are persistent, min(tiles, SMs) of them: block b takes a run of tiles (the counts of any two
// blocks differ by at most one) in boxes of two tiles where the layer has more tiles than SMs (the last of
// an odd run: one), else one; the producer runs ahead across boxes, and each tile's sums are reduced over
// its warps in shared memory. With static codes the producer requests the first ring's worth before the
// previous kernel ends (its planes after), so the codes stream while the latency-bound lift before the
// gemv runs. In a stream of 8 (us per call, H100; bench/results/gemv_tma2/): 4096x11008 9.7 -> 8.1 against
// the register-load kernel, 12288x4096 10.6 -> 8.8, 28672x8192 28.7 -> 27.9, 8192x8192 10.0 -> 9.5.
// The TMA's cost is per box more than per byte (28672x8192 with boxes of one tile of 4, 8, 16, 32 k-steps:
// 54.3, 33.7, 30.0, 28.5 us): hence two-tile boxes for big layers (28672x8192 29.0 -> 27.8 us); larger
// rings, L2 prefetch of the boxes beyond the ring, holding the planes for the whole run, 16 consumer warps,
// or a reduction where only the storing warps wait do not help (bench/results/gemv_tma/, gemv_tma2/).
#ifndef LQ_TMA
#define LQ_TMA 2  // which one-token gemvs take this kernel by default (use_tma; LIFTEXPORT_GEMV_TMA overrides)
#endif
#ifndef LQ_TMA_CK
#define LQ_TMA_CK 16  // k-steps per stage (16 KB of codes per tile; two-tile boxes of 8 or 12 k-steps with rings of
                      // 100 / 92 KB, which let two blocks share an SM: 28672x8192 29.1 / 29.0 us against 27.9)
#endif
#ifndef LQ_TMA_WARPS
#define LQ_TMA_WARPS 8  // consumer warps per block (plus one producer warp)
#endif
#ifndef LQ_TMA_KB
#define LQ_TMA_KB 80  // the ring's KB per block (LIFTEXPORT_GEMV_TMA_KB overrides; decode step at 2.4 bits
                      // with 8-k-step stages: 64 KB 387 tok/s, 80 404, 96 402, 112 396, 144 388, 192 375)
#endif
#ifndef LQ_TMA_KB_BIG
#define LQ_TMA_KB_BIG 128  // the ring's KB per block where blocks take boxes of two tiles (LIFTEXPORT_GEMV_TMA_KB_BIG;
                           // three stages; with two, 84 KB, an earlier version took 30.8 us on 28672x8192 against 27.8)
#endif
#ifndef LQ_TAIL_PRE
#define LQ_TAIL_PRE 1  // the block's row scales and biases read before the PDL wait and its residuals right after it,
#endif                 // so that no store waits on memory (0: each read at its store). bench/results/tail_pre/: for the
                       // last box alone, 7B decode step at 2.4 bits 474.6 -> 485.5 tok/s, in a stream of 8 8192x8192
                       // 9.6 -> 9.4 us, 28672x8192 27.2 -> 26.9 (c1); for every box, against that, decode 485.3 /
                       // 486.2 -> 486.2 / 486.4, 12288x4096 8.4 -> 8.2 us, the rest equal (c5)
#ifndef LQ_TMA_PAIRS
#define LQ_TMA_PAIRS 1  // layers of more tiles than SMs (and N % 32 == 0) copy two adjacent tiles per box
#endif
constexpr int TMA_CK = LQ_TMA_CK, TMA_WARPS = LQ_TMA_WARPS;
constexpr int TMA_TILE = TMA_CK * 8 * 128;           // a tile's codes per stage (a stage holds one or two)
constexpr int TMA_PSTAGE = TMA_CK * STEP_WORDS * 4;  // a stage's planes (528 bytes per k-step)
static_assert(TMA_CK >= 1 && 8 * TMA_CK <= 256, "a TMA box has at most 256 rows");
static_assert(TMA_WARPS % 2 == 0, "a box of two tiles splits the warps in halves");

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // (unused, so unwarned, in the sm_80 pass)
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
#endif

template <typename T>
#ifdef LQ_TRACE  // the diagnostic build held to the default build's 72 registers (its records take 74 otherwise, and
__global__ void __maxnreg__(72) gemv_tma_kernel(  // a lift block no longer fits beside it: see TILED_MAXREG)
#else
__global__ void __launch_bounds__((TMA_WARPS + 1) * 32, 1) gemv_tma_kernel(
#endif
    const __grid_constant__ CUtensorMap codes1, const __grid_constant__ CUtensorMap codes2, int N,
    const uint32_t* __restrict__ zf, int steps, const float* __restrict__ rscale, const float* __restrict__ bias,
    const T* __restrict__ res, T* __restrict__ y, int stages, int tiles, int pair, int static_codes, int pf) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ uint8_t dyn[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, span = pair ? 2 : 1;
  const int stage_bytes = span * TMA_TILE;
  const uint32_t base0 = smem_addr(dyn), base = (base0 + 1023u) & ~1023u;  // the swizzle needs 1024-byte boxes
  uint8_t* ring = dyn + (base - base0);                                   // [stages][stage_bytes] codes
  uint8_t* pring = ring + stages * stage_bytes;                            // [stages][TMA_PSTAGE] planes
  const uint32_t pbase = base + stages * stage_bytes;
  const uint32_t bars = pbase + stages * TMA_PSTAGE;  // full[s] at bars + 8 s, empty[s] at bars + 8 (stages + s)
  float* red = reinterpret_cast<float*>(pring + stages * TMA_PSTAGE + 16 * stages);  // [2][TMA_WARPS][32]
  float* zred = red + 2 * TMA_WARPS * 32;                                          // [2][TMA_WARPS]
  float* tail = zred + 2 * TMA_WARPS;  // [3][most rows of a block]: row scales, biases, residuals (LQ_TAIL_PRE)
  // the block's tiles [t0, t1) (the counts of any two blocks differ by at most one), in boxes of span tiles
  // (the last of an odd count: one); iteration it = chunk it % nch of box it / nch
  const int nch = (steps + TMA_CK - 1) / TMA_CK, G = gridDim.x;
  const int t0 = (int)((long long)blockIdx.x * tiles / G), t1 = (int)((long long)(blockIdx.x + 1) * tiles / G);
  const int iters = (t1 - t0 + span - 1) / span * nch;
  auto first_tile = [&](int it) { return t0 + it / nch * span; };
  auto box_tiles = [&](int it) { return min(span, t1 - first_tile(it)); };
  auto first_word = [&](int it) { return it % nch * TMA_CK * 8; };  // the box's first code word (its chunk's)
  LQ_TR_START;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(bars + 8 * s, 1);
      mbar_init(bars + 8 * (stages + s), TMA_WARPS);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n fence.proxy.async.shared::cta;" ::: "memory");
  }
  __syncthreads();
  pdl_trigger();
  if (warp == TMA_WARPS) {  // the producer: one thread issues every copy
    if (lane == 0) {
      uint64_t policy;  // the codes are read once: evict first (evict-normal: 28672x8192 34.3 -> 35.6 us)
      asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
      auto plane_bytes = [&](int it) { return min(TMA_CK, steps - it % nch * TMA_CK) * STEP_WORDS * 4; };
      auto load_codes = [&](int it) {
        const int s = it % stages, tile = first_tile(it), kw0 = first_word(it), nt = box_tiles(it);
        const uint32_t full = bars + 8 * s;
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(full),
                     "r"(nt * TMA_TILE + plane_bytes(it))
                     : "memory");
        if (nt == 1) {  // (row, word)
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
              " [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(base + s * stage_bytes),
              "l"(reinterpret_cast<uint64_t>(&codes1)), "r"(tile * 32), "r"(kw0), "r"(full), "l"(policy)
              : "memory");
        } else {  // (row in tile, tile, word): the two tiles side by side per word
          asm volatile(
              "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
              " [%0], [%1, {%2, %3, %4}], [%5], %6;" ::"r"(base + s * stage_bytes),
              "l"(reinterpret_cast<uint64_t>(&codes2)), "r"(0), "r"(tile), "r"(kw0), "r"(full), "l"(policy)
              : "memory");
        }
      };
      auto prefetch_codes = [&](int it) {  // the box of iteration it into L2 only
        const int tile = first_tile(it), kw0 = first_word(it);
        if (box_tiles(it) == 1) {
          asm volatile("cp.async.bulk.prefetch.tensor.2d.L2.global.tile [%0, {%1, %2}];" ::"l"(
                           reinterpret_cast<uint64_t>(&codes1)), "r"(tile * 32), "r"(kw0)
                       : "memory");
        } else {
          asm volatile("cp.async.bulk.prefetch.tensor.3d.L2.global.tile [%0, {%1, %2, %3}];" ::"l"(
                           reinterpret_cast<uint64_t>(&codes2)), "r"(0), "r"(tile), "r"(kw0)
                       : "memory");
        }
      };
      auto load_planes = [&](int it) {
        const int s = it % stages;
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         pbase + s * TMA_PSTAGE),
                     "l"(zf + (long long)(it % nch) * TMA_CK * STEP_WORDS), "r"(plane_bytes(it)), "r"(bars + 8 * s)
                     : "memory");
      };
      // codes are weights: with static_codes the first ring's worth is requested before the previous kernel
      // ends; the planes are that kernel's output, read only after it
      const int first = min(stages, iters);
      if (!static_codes) pdl_wait();
      for (int it = 0; it < first; ++it) load_codes(it);
      pdl_wait();
      for (int it = 0; it < first; ++it) load_planes(it);
      for (int it = first; it < min(iters, first + pf); ++it) prefetch_codes(it);  // (long runs)
      for (int it = first; it < iters; ++it) {
        mbar_wait(bars + 8 * (stages + it % stages), (it / stages - 1) & 1);
        load_codes(it);
        load_planes(it);
      }
    }
    return;
  }
  // LQ_TAIL_PRE: the scales and biases of the block's rows [32 t0, 32 t1) are read into shared memory before the
  // wait (weights: static_codes is the caller's promise for them too) and their residuals right after it, spread
  // over the consumer threads (the first box's reduction barrier comes before any store reads them), so that the
  // stores after a box's last MMA wait on no memory.
  const int brows = (tiles + G - 1) / G * 32, r0 = 32 * t0, nrows = min(32 * t1, N) - r0;
  auto read_rows = [&](bool weights, bool residuals) {
    for (int i = threadIdx.x; i < nrows; i += TMA_WARPS * 32) {
      if (weights) {
        tail[i] = rscale[r0 + i];
        if (bias) tail[brows + i] = bias[r0 + i];
      }
      if (residuals && res) tail[2 * brows + i] = to_f(res[r0 + i]);
    }
  };
  if (LQ_TAIL_PRE && static_codes) read_rows(true, false);
  pdl_wait();  // y may be read by the kernel before this one
  LQ_TR_WAITED;
  if (LQ_TAIL_PRE) read_rows(!static_codes, true);
  const int g = lane >> 2, t = lane & 3;
  float pw[2][2];
  lane_plane_weights(pw, t);
  float acc[4] = {0.f, 0.f, 0.f, 0.f}, zacc = 0.f;
  int nbox = 0;
  // chunk it of a box of NT tiles: warps [h WPT, (h + 1) WPT) take tile h; box row j (128 bytes) holds word j / NT
  // of tile j % NT, its 16-byte chunk c at c ^ (j & 7); the lane's row group pg is chosen so that the 8 lanes of a
  // quarter-warp read 8 distinct chunks. (NT a constant: with a run-time count the k-step loop is not unrolled,
  // and 4096x11008 takes 9.1 us per call in a stream of 8 against 8.2.)
  auto chunk = [&](auto nt_c, int it) {
    constexpr int NT = decltype(nt_c)::value, WPT = TMA_WARPS / NT;
    const int s = it % stages, ch = it % nch, h = warp / WPT, wq = warp % WPT;
    const int pg = NT == 1 ? (g >> 1) + 4 * (g & 1) : g;
    mbar_wait(bars + 8 * s, (it / stages) & 1);
#pragma unroll
    for (int i = 0; i < (TMA_CK + WPT - 1) / WPT; ++i) {
      const int q = wq + i * WPT;
      if (q >= TMA_CK || ch * TMA_CK + q >= steps) break;
#ifdef LQ_NULL_MMA  // diagnostic build: the codes and planes stream and the sums are stored, but no warp reads or
      continue;     // multiplies them (bench/results/tail_pre/: what the MMAs cost a decode step)
#endif
      const uint8_t* zp = pring + s * TMA_PSTAGE + q * STEP_WORDS * 4;
      const uint4 za = reinterpret_cast<const uint4*>(zp)[lane];
      const uint2 zb = *reinterpret_cast<const uint2*>(zp + 32 * 16);
      const uint8_t* box = ring + s * stage_bytes;
      const int ja = (8 * q + t) * NT + h, jb = (8 * q + 4 + t) * NT + h;
      const uint4 wa = *reinterpret_cast<const uint4*>(box + ja * 128 + ((pg ^ (ja & 7)) << 4));
      const uint4 wb = *reinterpret_cast<const uint4*>(box + jb * 128 + ((pg ^ (jb & 7)) << 4));
      mma_step(acc, zacc, wa, wb, za, zb, pw);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(bars + 8 * (stages + s));
    if (ch == nch - 1) {  // the box's sums: over t by shuffles, over a tile's warps in shared memory
      const int par = nbox & 1, row0 = (first_tile(it) + h) * 32;
      float* rd = red + par * TMA_WARPS * 32;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = acc[e];
        v += __shfl_xor_sync(~0u, v, 1);
        v += __shfl_xor_sync(~0u, v, 2);
        if (t == 0) rd[warp * 32 + 4 * pg + e] = v;
        acc[e] = 0.f;
      }
      if (lane == 0) zred[par * TMA_WARPS + warp] = zacc;
      zacc = 0.f;
      asm volatile("bar.sync 1, %0;" ::"n"(TMA_WARPS * 32) : "memory");
      if (wq == 0 && row0 + lane < N) {
        float S = 0.f, Z = 0.f;
#pragma unroll
        for (int w = h * WPT; w < (h + 1) * WPT; ++w) {
          S += rd[w * 32 + lane];
          Z += zred[par * TMA_WARPS + w];
        }
        if (LQ_TAIL_PRE) {  // from the values read early
          const int i = row0 + lane - r0;
          y[row0 + lane] = from_f<T>(row_value(tail[i], S, Z, bias, [&] { return tail[brows + i]; }, res,
                                               [&] { return tail[2 * brows + i]; }));
        } else {
          store_row(y, 0, res, 0, rscale, bias, 0, row0 + lane, S, Z);
        }
      }
      ++nbox;
    }
  };
  for (int it = 0; it < iters; ++it) {
    if (box_tiles(it) == 2) chunk(std::integral_constant<int, 2>(), it);
    else chunk(std::integral_constant<int, 1>(), it);
  }
  LQ_TR_END(0, N | (steps << 20));
#else
  __trap();  // launched only on sm_90 and newer
#endif
}

// Whether launches on the current device use programmatic dependent launch (see pdl_wait).
bool use_pdl() {
  static const bool off = [] {
    const char* v = std::getenv("LIFTEXPORT_PDL");
    return v && v[0] == '0';
  }();
  int dev = 0, major = 0;
  if (off || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  return major >= 9;
}

// An integer setting from the environment, def where unset, not an integer or out of [lo, hi].
int env_int(const char* name, int lo, int hi, int def) {
  const char* v = std::getenv(name);
  if (!v) return def;
  char* end = nullptr;
  const long k = std::strtol(v, &end, 10);
  return end != v && *end == '\0' && k >= lo && k <= hi ? (int)k : def;
}

#ifndef LQ_CARVEOUT
#define LQ_CARVEOUT 100  // one-token kernels' preferred shared-memory carveout, percent (-1: the driver's choice)
#endif
// The shared-memory carveout that the one-token kernels ask for (the TMA gemv and the tiled lift's one-token
// instance: a decode step of one sequence): LIFTEXPORT_SMEM_CARVEOUT (percent of the largest, -1 for the driver's
// choice; read once) or LQ_CARVEOUT. An SM's split of its on-chip memory between L1 and shared memory is set for
// the blocks it runs; left to the driver it is sized for the kernel at hand (at most 164 KB of shared memory, by
// the block trace), and the next kernel's blocks (a lift's 45-55 KB) find no room beside a two-tile TMA gemv block
// (127 KB) until it has left: the lift then stages its weights only after the gemv ends (bench/RESULTS.md, issue
// 7). With these kernels and the decode attention at 100 (228 KB) and the lift held to 72 registers (TILED_MAXREG),
// the 7B decode step went 454 -> 481 tok/s at 2.4 bits, 397 -> 402 at 3.0, 467 -> 461 at 2.0 against the driver's
// choice in the same call (bench/results/coresidency/c3). Launches of 2-4 tokens keep the driver's choice: with
// 100, a layer of 2-4 tokens (a lift, then the register-load gemv, which reads the planes through L1) took 3-6%
// longer (c6).
int smem_carveout() {
  static const int pct = env_int("LIFTEXPORT_SMEM_CARVEOUT", -1, 100, LQ_CARVEOUT);
  return pct;
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic dependent launch where use_pdl().
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, int threads, size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = use_pdl() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
  return e != cudaSuccess ? e : cudaGetLastError();
}

// What has been set on one kernel (a static at its launch site, one per template instance).
struct KernelSetup {
  size_t opted = 48 << 10;  // dynamic shared memory it may use so far (above 48 KB a kernel must opt in)
  bool carved = false;      // the preferred carveout asked for
};
// Lets kernel launch with smem bytes of dynamic shared memory and, where carve (a one-token kernel), asks for
// smem_carveout() (once; a hint: where it is refused the launch goes on without it).
template <typename... Params>
cudaError_t prepare_kernel(void (*kernel)(Params...), size_t smem, bool carve, KernelSetup& setup) {
  if (carve && !setup.carved) {
    if (smem_carveout() >= 0 &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, smem_carveout()) != cudaSuccess)
      cudaGetLastError();
    setup.carved = true;
  }
  if (smem <= setup.opted) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e == cudaSuccess) setup.opted = smem;
  return e;
}

// cuTensorMapEncodeTiled of the installed driver, or null (then the register-load gemv runs).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

#ifndef LQ_TMA_LONG
#define LQ_TMA_LONG 16  // blocks of at least this many stages' work take the long-run ring (0: none)
#endif
#ifndef LQ_TMA_KB_LONG
#define LQ_TMA_KB_LONG 206  // the long-run ring's KB (five stages of two-tile boxes)
#endif
#ifndef LQ_TMA_PF_LONG
#define LQ_TMA_PF_LONG 1  // boxes beyond the long-run ring prefetched into L2 right after the wait
#endif
// A block's ring: its bytes and the boxes beyond it that the producer prefetches into L2 as its wait returns.
struct TmaRing {
  int bytes, prefetch;
};
// The ring of a block with iters stages' work (its most boxes times the chunks per box). By default
// LIFTEXPORT_GEMV_TMA_KB (16..220) or LQ_TMA_KB KB, where the boxes hold two tiles LIFTEXPORT_GEMV_TMA_KB_BIG or
// LQ_TMA_KB_BIG, and no prefetch. A long run (iters >= LIFTEXPORT_GEMV_TMA_LONG or LQ_TMA_LONG; 0 turns it off)
// takes LIFTEXPORT_GEMV_TMA_KB_LONG or LQ_TMA_KB_LONG KB and prefetches LIFTEXPORT_GEMV_TMA_PF_LONG or
// LQ_TMA_PF_LONG boxes, so that the first box requested when a stage frees comes from L2.
// Per call in a stream of 8 at 24/10 (bench/results/gemv_ring/, two passes): five two-tile stages (204 KB) instead
// of three (127 KB) take 28672x8192 (20 stages' work per block) 27.9 -> 27.5 us, 8192x28672 (17) 26.7 -> 26.4,
// 57344x8192 (35) 53.7 -> 53.4, but 8192x8192 (5) 9.6 -> 10.7, 22016x4096 (9) 12.9 -> 14.0, 12288x4096 (6)
// 8.5 -> 9.3 and 4096x11008 (7, one-tile rings of 80 -> 206 KB) 8.1 -> 8.8. The gain comes with the ring's worth
// requested before the wait: five stages with only three of them requested before it take 27.9 us. Decode steps
// of a 7B model (no layer over 9) keep three stages, and with them the room for a lift block beside the gemv (see
// smem_carveout). The prefetch, 0 / 1 / 2 / 4 boxes (c8): 28672x8192 27.6 / 27.2 / 27.3 / 27.5 us, 8192x28672
// 26.4 / 26.3 / 26.5 / 26.8, 57344x8192 53.4 / 53.1 / 53.5 / 53.6. For every block (c4: three-stage rings too) two
// such boxes took 8192x8192 9.6 -> 10.6 us; prefetching beyond the ring before the wait instead was slower
// everywhere (c3: 28672x8192 28.0 -> 28.5).
TmaRing tma_ring(bool pairs, int iters) {
  static const int kb = env_int("LIFTEXPORT_GEMV_TMA_KB", 16, 220, LQ_TMA_KB);
  static const int kb_big = env_int("LIFTEXPORT_GEMV_TMA_KB_BIG", 16, 220, LQ_TMA_KB_BIG);
  static const int long_from = env_int("LIFTEXPORT_GEMV_TMA_LONG", 0, 1 << 20, LQ_TMA_LONG);
  static const int kb_long = env_int("LIFTEXPORT_GEMV_TMA_KB_LONG", 16, 227, LQ_TMA_KB_LONG);
  static const int pf_long = env_int("LIFTEXPORT_GEMV_TMA_PF_LONG", 0, 64, LQ_TMA_PF_LONG);
  if (long_from > 0 && iters >= long_from) return {kb_long * 1024, pf_long};
  return {(pairs ? kb_big : kb) * 1024, 0};
}

// Whether a one-token gemv of N rows takes the TMA kernel. It can where the GPU is sm_90+ and the
// driver's encoder was found. Asked for (flags GEMV_TMA) it does, GEMV_PLAIN it does not; otherwise by
// LIFTEXPORT_GEMV_TMA (LQ_TMA at build time): 0 never, 1 where the layer has no more tiles of 32 rows than
// the GPU has SMs (a 7B model's o_proj and down_proj), 2 (default) always. Decode step of the 7B-shaped model
// (bench/RESULTS.md, issue 7), same library, 2.4 / 3.0 bits: 1 -> 2 404 / 345 -> 422 / 372 tok/s (two-tile
// boxes, runs of tiles per block); with boxes of one tile, each block every G-th, 2 had lost (396 / 344).
bool use_tma(int dev, int N, int sms, int flags) {
  static const int mode = env_int("LIFTEXPORT_GEMV_TMA", 0, 2, LQ_TMA);
  int major = 0;
  if ((flags & GEMV_PLAIN) || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      major < 9 || tensor_map_encoder() == nullptr)
    return false;
  if (flags & GEMV_TMA) return true;
  return mode == 2 || (mode == 1 && (N + 31) / 32 <= sms);
}

// How the TMA gemv runs N rows of steps k-steps on a GPU of sms SMs and optin bytes of shared memory per block:
// tiles per box (span), blocks, ring stages (0: it cannot), boxes prefetched into L2 (tma_ring) and shared memory.
struct TmaPlan {
  int tiles, span, blocks, stages, prefetch;
  size_t smem;
};
TmaPlan tma_plan(int N, int steps, int sms, int optin) {
  const int tiles = (N + 31) / 32, span = LQ_TMA_PAIRS && N % 32 == 0 && tiles > sms ? 2 : 1;
  const int G = std::min(tiles, sms);
  const int nch = (steps + TMA_CK - 1) / TMA_CK, boxes = ((tiles + G - 1) / G + span - 1) / span;  // a block's most
  const int brows = LQ_TAIL_PRE ? (tiles + G - 1) / G * 32 : 0;  // a block's most rows
  const size_t fixed = 1024 + (2 * TMA_WARPS * 33 + 3 * brows) * sizeof(float), per_stage = span * TMA_TILE + TMA_PSTAGE + 16;
  const TmaRing ring = tma_ring(span == 2, boxes * nch);
  int stages = std::min(ring.bytes / (int)per_stage, boxes * nch);
  stages = std::max(0, std::min(stages, optin > (int)fixed ? (int)((optin - fixed) / per_stage) : 0));
  return {tiles, span, G, stages, ring.prefetch, fixed + (size_t)stages * per_stage};
}

// The TMA gemv for one token (see gemv_tma_kernel); cudaErrorNotSupported where a tensor map is refused.
template <typename T>
cudaError_t launch_gemv_tma(const uint32_t* words, int KW, int N, const uint32_t* zf, int steps, const float* rscale,
                            const float* bias, const T* res, T* y, bool static_codes, int dev, int sms,
                            cudaStream_t stream) {
  int optin = 0;
  cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return e;
  const TmaPlan plan = tma_plan(N, steps, sms, optin);
  if (plan.stages < 1) return cudaErrorNotSupported;
  const int span = plan.span;
  // words[kw * N + r], rows innermost: 2-D (row, word), boxes of one tile; 3-D (row in tile, tile, word), two
  CUtensorMap map1, map2;
  const cuuint64_t dims1[2] = {(cuuint64_t)N, (cuuint64_t)KW}, dims2[3] = {32, (cuuint64_t)N / 32, (cuuint64_t)KW};
  const cuuint64_t strides1[1] = {(cuuint64_t)N * 4}, strides2[2] = {128, (cuuint64_t)N * 4};
  const cuuint32_t box1[2] = {32, 8 * TMA_CK}, box2[3] = {32, 2, 8 * TMA_CK}, one[3] = {1, 1, 1};
  auto encode = [&](CUtensorMap* map, int rank, const cuuint64_t* dims, const cuuint64_t* strides,
                    const cuuint32_t* box) {
    return tensor_map_encoder()(map, CU_TENSOR_MAP_DATA_TYPE_UINT32, rank, const_cast<uint32_t*>(words), dims, strides,
                                box, one, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                CU_TENSOR_MAP_L2_PROMOTION_NONE,  // (64/128/256-byte promotion: no change)
                                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  if (!encode(&map1, 2, dims1, strides1, box1)) return cudaErrorNotSupported;
  if (span == 1) map2 = map1;
  else if (!encode(&map2, 3, dims2, strides2, box2)) return cudaErrorNotSupported;
  static KernelSetup setup;
  if ((e = prepare_kernel(gemv_tma_kernel<T>, plan.smem, true, setup)) != cudaSuccess) return e;
  return launch(gemv_tma_kernel<T>, dim3(plan.blocks), (TMA_WARPS + 1) * 32, plan.smem, stream, map1, map2, N, zf,
                steps, rscale, bias, res, y, plan.stages, plan.tiles, span == 2 ? 1 : 0, static_codes ? 1 : 0,
                plan.prefetch);
}

template <int MB, typename T>
cudaError_t launch_gemv(const uint32_t* words, int KW, int N, const uint32_t* zf, int steps, const float* rscale,
                        const float* bias, const void* res, long long ldr, void* y, long long ldy, int M, int flags,
                        cudaStream_t stream) {
  const dim3 grid((N + 31) / 32, (M + MB - 1) / MB);
  int dev = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  if constexpr (MB == 1) {
    if (use_tma(dev, N, sms, flags)) {
      e = launch_gemv_tma<T>(words, KW, N, zf, steps, rscale, bias, static_cast<const T*>(res), static_cast<T*>(y),
                             flags & GEMV_STATIC, dev, sms, stream);
      if (e != cudaErrorNotSupported) return e;
    }
    if ((int)grid.x >= WIDE_BLOCKS_PER_SM * sms) {
      return launch(gemv_kernel<MB, 4, T>, grid, 4 * 32, 0, stream, words, KW, N, zf, steps, rscale, bias,
                    static_cast<const T*>(res), ldr, static_cast<T*>(y), ldy, M);
    }
  }
  return launch(gemv_kernel<MB, 8, T>, grid, 8 * 32, 0, stream, words, KW, N, zf, steps, rscale, bias,
                static_cast<const T*>(res), ldr, static_cast<T*>(y), ldy, M);
}

template <typename T>
cudaError_t dispatch_gemv(const uint32_t* words, int KW, int N, const uint32_t* zf, int steps, const float* rscale,
                          const float* bias, const void* res, long long ldr, void* y, long long ldy, int M, int flags,
                          cudaStream_t stream) {
#define LQ_ARGS words, KW, N, zf, steps, rscale, bias, res, ldr, y, ldy, M, flags, stream
  if (M == 1) return launch_gemv<1, T>(LQ_ARGS);
  if (M == 2) return launch_gemv<2, T>(LQ_ARGS);
  return launch_gemv<4, T>(LQ_ARGS);
#undef LQ_ARGS
}

// The lift kernel of THREADS threads (0: lift_tiled_kernel, TILED_THREADS; ONE: its one-token instance).
template <typename T, int PRE, int THREADS, bool ONE>
auto lift_kernel() {
  if constexpr (THREADS == 0) return lift_tiled_kernel<T, PRE, ONE>;
  else return lift_planes_kernel<T, PRE, THREADS>;
}

template <typename T, int PRE, int THREADS, bool ONE>
cudaError_t launch_lift_instance(const void* x, long long ldx, int in_features, const void* nw, int nw_dtype,
                                 float eps, const float* inv_s1, const float* L, const float* R, int n1, int n2, int C,
                                 uint32_t* zf, int steps, int spc, int M, size_t smem, int flags, cudaStream_t stream) {
  const auto kernel = lift_kernel<T, PRE, THREADS, ONE>();
  static KernelSetup setup;
  if (const cudaError_t e = prepare_kernel(kernel, smem, ONE, setup); e != cudaSuccess) return e;
  const dim3 grid((steps + spc - 1) / spc, M);
  return launch(kernel, grid, THREADS ? THREADS : TILED_THREADS, smem, stream, static_cast<const T*>(x), ldx,
                in_features, nw, nw_dtype, eps, inv_s1, L, R, n1, n2, C, zf, steps, spc, flags);
}

// One token's launches of the tiled lift take its ONE instance, which asks for smem_carveout().
template <typename T, int PRE, int THREADS>
cudaError_t launch_lift_threads(const void* x, long long ldx, int in_features, const void* nw, int nw_dtype, float eps,
                                const float* inv_s1, const float* L, const float* R, int n1, int n2, int C,
                                uint32_t* zf, int steps, int spc, int M, size_t smem, int flags, cudaStream_t stream) {
#define LQ_LARGS x, ldx, in_features, nw, nw_dtype, eps, inv_s1, L, R, n1, n2, C, zf, steps, spc, M, smem, flags, stream
  if constexpr (THREADS == 0) {
    if (M == 1) return launch_lift_instance<T, PRE, THREADS, true>(LQ_LARGS);
  }
  return launch_lift_instance<T, PRE, THREADS, false>(LQ_LARGS);
#undef LQ_LARGS
}

#define LQ_ARGS x, ldx, in_features, nw, nw_dtype, eps, inv_s1, L, R, n1, n2, C, zf, steps, spc, M, smem, flags, stream
// The lift kernel for an input of n1 x n2 values: the register-tiled one (tiled, THREADS 0), else
// lift_planes_kernel with LIFT_THREADS or, wider than WIDE_LIFT, WIDE_LIFT_THREADS threads.
template <typename T, int PRE>
cudaError_t launch_lift(bool tiled, const void* x, long long ldx, int in_features, const void* nw, int nw_dtype,
                        float eps, const float* inv_s1, const float* L, const float* R, int n1, int n2, int C,
                        uint32_t* zf, int steps, int spc, int M, size_t smem, int flags, cudaStream_t stream) {
  if (tiled) return launch_lift_threads<T, PRE, 0>(LQ_ARGS);
  if ((long long)n1 * n2 > WIDE_LIFT) return launch_lift_threads<T, PRE, WIDE_LIFT_THREADS>(LQ_ARGS);
  return launch_lift_threads<T, PRE, LIFT_THREADS>(LQ_ARGS);
}

template <typename T>
cudaError_t dispatch_lift(bool tiled, int pre, const void* x, long long ldx, int in_features, const void* nw,
                          int nw_dtype, float eps, const float* inv_s1, const float* L, const float* R, int n1, int n2,
                          int C, uint32_t* zf, int steps, int spc, int M, size_t smem, int flags, cudaStream_t stream) {
  if (pre == 1) return launch_lift<T, 1>(tiled, LQ_ARGS);
  if (pre == 2) return launch_lift<T, 2>(tiled, LQ_ARGS);
  return launch_lift<T, 0>(tiled, LQ_ARGS);
#undef LQ_ARGS
}

// Shared-memory wavefronts of one warp-wide load of the lift's split sums: 32 / G outputs a word apart, each
// in G parts `shift` words apart (distinct addresses in one bank cost one wavefront each; equal ones share).
int bank_ways(int G, int shift) {
  int uniq[32], nu = 0, per_bank[32] = {0}, ways = 1;
  for (int l = 0; l < 32; ++l) {
    const int a = (l % G) * shift + l / G;
    bool seen = false;
    for (int e = 0; e < nu && !seen; ++e) seen = uniq[e] == a;
    if (!seen) uniq[nu++] = a;
  }
  for (int e = 0; e < nu; ++e) ways = max(ways, ++per_bank[uniq[e] % 32]);
  return ways;
}
// The 11008-wide lift at 24/10 (X 367 x 30, G = 4) read X with 4-way bank conflicts interleaved, none
// blocked: its L X phase 6,364 -> 5,547 cycles, decode step 358.7 -> 374.1 tok/s at 2.4 bits, 3.0 unchanged
// (eighth session, bench/results/lift_banks/). Choosing the run per G (conflict-free at 4096 wide too)
// and passing the runs as a kernel argument was slower, 382.8 -> 337.1 (bench/results/lift_runs/).
#ifndef LQ_LIFT_BLOCKED
#define LQ_LIFT_BLOCKED 1  // 0: every split sum interleaved, as before (A/B switch)
#endif
// The lift's flags bits 2-7 (W = L X) and 8-13 (W R): bit log2(G) set where parts of G consecutive terms
// ("blocked") need fewer wavefronts than every G-th term (split_terms). L X: part p reads rows of X p * n2
// (interleaved) or p * ceil(n1 / G) * n2 (blocked) words apart; W R: rows of R, C or ceil(n2 / G) * C.
// (About 10^4 operations: the last shape's answer is kept per host thread.)
int lift_mappings(int n1, int n2, int C) {
  thread_local int last[4] = {-1, -1, -1, 0};
  if (last[0] == n1 && last[1] == n2 && last[2] == C) return last[3];
  int lx = 0, wr = 0;
  for (int b = 0, G = 1; G <= 32; ++b, G <<= 1) {
    if (!LQ_LIFT_BLOCKED || G == 1) continue;
    if (bank_ways(G, (n1 + G - 1) / G * n2) < bank_ways(G, n2)) lx |= 1 << b;
    if (bank_ways(G, (n2 + G - 1) / G * C) < bank_ways(G, C)) wr |= 1 << b;
  }
  last[0] = n1, last[1] = n2, last[2] = C, last[3] = (lx << 2) | (wr << 8);
  return last[3];
}

// Shared memory per block (opt-in maximum) of the current device.
cudaError_t smem_cap(int* cap) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(cap, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return e;
}

// Dynamic shared memory of a lift_planes_kernel block on a device with cap bytes per block: without R (0 if
// even that does not fit one block: the input is too wide), or with R where it fits beside it (stage_r).
size_t general_smem(int n1, int n2, int C, int spc, int cap, int* stage_r) {
  const size_t rows = (256 * (size_t)spc) / C + 2;
  const size_t base = sizeof(float) * ((size_t)n1 * n2 + rows * (n1 + n2) + 256 * (size_t)spc);
  const size_t with_r = base + sizeof(float) * (size_t)n2 * C;
  *stage_r = with_r + 1024 <= (size_t)cap;
  return *stage_r ? with_r : base + 1024 <= (size_t)cap ? base : 0;
}

// Dynamic shared memory of a lift_tiled_kernel block on a device with cap bytes per block, or 0 where that
// kernel does not take the shape (see lift_tiled_kernel) or LIFTEXPORT_LIFT_TILED is 0 (read at every call;
// 1, or unset with LQ_LIFT_TILED 1: wherever it fits).
size_t tiled_smem(int n1, int n2, int C, int spc, int cap) {
  const char* v = std::getenv("LIFTEXPORT_LIFT_TILED");
  if (v ? v[0] == '0' : !LQ_LIFT_TILED) return 0;
  const int G = pow2_lanes(n2, TILED_THREADS);
  if (G == 0 || pow2_lanes(C, TILED_THREADS) == 0 || (n1 + G - 1) / G > TILED_KMAX) return 0;
  const size_t rows = (256 * (size_t)spc) / C + 2, chunks = (rows + 3) / 4;
  const size_t bytes = 16 * chunks * ((size_t)n1 + n2) +
                       sizeof(float) * ((size_t)n2 * C + (size_t)n1 * n2 + 256 * (size_t)spc);
  return bytes + 1024 <= (size_t)cap ? bytes : 0;
}

// How lq_lift_planes runs an input of n1 x n2 values with C lifted columns per row on the current device:
// the kernel (tiled: lift_tiled_kernel where it fits, else lift_planes_kernel), its dynamic shared memory
// (0: neither fits) and, for the general kernel, whether R is staged.
struct LiftPlan {
  size_t smem = 0;
  int stage_r = 0;
  bool tiled = false;
};
cudaError_t lift_plan(int n1, int n2, int C, int spc, LiftPlan* plan) {
  int cap = 0;
  if (const cudaError_t e = smem_cap(&cap); e != cudaSuccess) return e;
  const size_t tiled = tiled_smem(n1, n2, C, spc, cap);
  plan->tiled = tiled > 0;
  plan->smem = plan->tiled ? tiled : general_smem(n1, n2, C, spc, cap, &plan->stage_r);
  return cudaSuccess;
}

}  // namespace

extern "C" {

// 1 if lq_lift_planes can take an input of n1 x n2 values with C lifted columns per row on the current
// device (the input and the block's rows fit one block's shared memory), 0 if not, < 0 on a CUDA error.
__attribute__((visibility("default"))) int lq_lift_planes_fits(int n1, int n2, int C, int spc) {
  if (n1 < 1 || n2 < 1 || C < 1 || spc < 1 || spc > 16) return 0;
  LiftPlan plan;
  const cudaError_t e = lift_plan(n1, n2, C, spc, &plan);
  return e != cudaSuccess ? -(int)e : plan.smem > 0;
}

// Which kernel lq_lift_planes runs for an input of n1 x n2 values with C lifted columns per row now: 1 the
// register-tiled one, 0 the general one, -3 neither fits, < -3 (minus 3 minus the code) on a CUDA error.
__attribute__((visibility("default"))) int lq_lift_planes_kernel(int n1, int n2, int C, int spc) {
  if (n1 < 1 || n2 < 1 || C < 1 || spc < 1 || spc > 16) return -1;
  LiftPlan plan;
  if (const cudaError_t e = lift_plan(n1, n2, C, spc, &plan); e != cudaSuccess) return -3 - (int)e;
  return plan.smem == 0 ? -3 : plan.tiled ? 1 : 0;
}

// Transform and planes in one launch: zf [M, steps = ceil(n1 * C / 256), 33, 4] from x [M, width] (row
// stride ldx; dtype as below; width = in_features, or 2 * in_features for pre 2), pre 0 none, 1 RMSNorm
// (nw [in_features] of dtype nw_dtype, eps), 2 SiLU(gate) * up; inv_s1 float32 [n1 * n2] (>= in_features),
// L float32 [n1, n1], R float32 [n2, C]. spc: k-steps per block (1..16). static_weights 1: no work queued
// earlier in the stream writes inv_s1, L or R (weights), so with programmatic dependent launch the kernel
// stages them into shared memory before it waits for the previous kernel; 0: it reads them after the wait
// (the general kernel prefetches them into L2 first). The kernel: lift_tiled_kernel where it fits (and
// LIFTEXPORT_LIFT_TILED is not 0), else lift_planes_kernel (-3 where neither fits).
__attribute__((visibility("default"))) int lq_lift_planes(const void* x, int dtype, int M, long long ldx,
                                                          int in_features, int pre, const void* nw, int nw_dtype,
                                                          float eps,
                                                          const float* inv_s1, const float* L, const float* R,
                                                          int n1, int n2, int C, uint32_t* zf, int steps, int spc,
                                                          int static_weights, cudaStream_t stream) {
  const long long K = (long long)n1 * C;
  if (!x || !inv_s1 || !L || !R || !zf || M < 0 || n1 < 1 || n2 < 1 || C < 1 || in_features < 1 ||
      (long long)n1 * n2 < in_features || pre < 0 || pre > 2 || (pre == 1 && (!nw || nw_dtype < F32 || nw_dtype > BF16)) ||
      ldx < (pre == 2 ? 2LL : 1LL) * in_features || K > (1LL << 30) || steps != (K + 255) / 256 || spc < 1 ||
      spc > 16 || reinterpret_cast<uintptr_t>(zf) % 16 || (static_weights != 0 && static_weights != 1))
    return -1;
  if (M == 0) return 0;
  LiftPlan plan;
  if (const cudaError_t e = lift_plan(n1, n2, (int)C, spc, &plan); e != cudaSuccess) return (int)e;
  if (!plan.smem) return -3;  // input too wide for one block's shared memory
  const int flags = (static_weights << 1) | (plan.tiled ? 0 : plan.stage_r | lift_mappings(n1, n2, (int)C));
  cudaError_t e;
#define LQ_ARGS plan.tiled, pre, x, ldx, in_features, nw, nw_dtype, eps, inv_s1, L, R, n1, n2, (int)C, zf, steps, spc, M, \
                plan.smem, flags, stream
  switch (dtype) {
    case F32: e = dispatch_lift<float>(LQ_ARGS); break;
    case F16: e = dispatch_lift<__half>(LQ_ARGS); break;
    case BF16: e = dispatch_lift<__nv_bfloat16>(LQ_ARGS); break;
    default: return -2;
  }
#undef LQ_ARGS
  return (int)e;
}

// Which split sums of lq_lift_planes take blocked parts for an n1 x n2 input with C lifted columns per row:
// bit log2(G) of (result >> 2) & 63 for W = L X, of (result >> 8) & 63 for W R (host only; -1 on bad arguments).
__attribute__((visibility("default"))) int lq_lift_mappings(int n1, int n2, int C) {
  if (n1 < 1 || n2 < 1 || C < 1 || n1 > (1 << 20) || n2 > (1 << 20) || C > (1 << 20)) return -1;
  return lift_mappings(n1, n2, C);
}

// The preferred shared-memory carveout (percent; -1: the driver's choice) that one-token launches of the TMA gemv
// and the tiled lift ask for: LIFTEXPORT_SMEM_CARVEOUT as read at the first call, or the build's LQ_CARVEOUT (host only).
__attribute__((visibility("default"))) int lq_smem_carveout() { return smem_carveout(); }

#ifdef LQ_TRACE
// The diagnostic build's block records: up to max of them into out [max, 4] (host memory); returns how many
// (and starts the next trace), < 0 on an error.
__attribute__((visibility("default"))) int lq_trace_read(unsigned long long* out, int max) {
  unsigned n = 0;
  if (!out || max < 0 || cudaDeviceSynchronize() != cudaSuccess ||
      cudaMemcpyFromSymbol(&n, lq_trace_n, sizeof(n)) != cudaSuccess)
    return -1;
  n = std::min<unsigned>(std::min<unsigned>(n, LQ_TRACE_MAX), (unsigned)max);
  if (n && cudaMemcpyFromSymbol(out, lq_trace_buf, n * 4 * sizeof(unsigned long long)) != cudaSuccess) return -1;
  const unsigned zero = 0;
  return cudaMemcpyToSymbol(lq_trace_n, &zero, sizeof(zero)) == cudaSuccess ? (int)n : -1;
}
#endif

#ifdef LQ_LIFT_TIMING
// The diagnostic build's phase records: out [LQ_T_BLOCKS * LQ_T_MARKS] int64 (host memory).
__attribute__((visibility("default"))) int lq_lift_timing(long long* out) {
  if (!out) return -1;
  return (int)cudaMemcpyFromSymbol(out, lq_lift_t, sizeof(lq_lift_t));
}
#endif

// Bit planes of u [M, K] (row stride ldu elements; dtype 0 float32, 1 float16, 2 bfloat16) into
// zf [M, steps = ceil(K / 256), 33, 4] uint32 (16-byte aligned).
__attribute__((visibility("default"))) int lq_binary_planes(const void* u, int dtype, int M, int K, long long ldu,
                                                            uint32_t* zf, int steps, cudaStream_t stream) {
  if (!u || !zf || M < 0 || K < 1 || ldu < K || steps != (K + 255) / 256 || reinterpret_cast<uintptr_t>(zf) % 16)
    return -1;
  if (M == 0) return 0;
  const dim3 grid((steps + PLANE_WARPS - 1) / PLANE_WARPS, M);
  switch (dtype) {
    case F32: return (int)launch(planes_kernel<float>, grid, PLANE_WARPS * 32, 0, stream, static_cast<const float*>(u), K, ldu, zf, steps);
    case F16: return (int)launch(planes_kernel<__half>, grid, PLANE_WARPS * 32, 0, stream, static_cast<const __half*>(u), K, ldu, zf, steps);
    case BF16: return (int)launch(planes_kernel<__nv_bfloat16>, grid, PLANE_WARPS * 32, 0, stream, static_cast<const __nv_bfloat16*>(u), K, ldu, zf, steps);
    default: return -2;
  }
}

// How a one-token TMA gemv of N rows and steps k-steps would run on the current device (whether it does: use_tma):
// out[0..4) = tiles per box, blocks, ring stages (0: it cannot), boxes prefetched into L2 beyond the ring. 0, -1 for
// bad arguments, else the CUDA error.
__attribute__((visibility("default"))) int lq_gemv_tma_plan(int N, int steps, int* out) {
  if (N < 1 || N > (1 << 30) || steps < 1 || steps > (1 << 23) || out == nullptr) return -1;
  int dev = 0, sms = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e != cudaSuccess) return (int)e;
  const TmaPlan plan = tma_plan(N, steps, sms, optin);
  out[0] = plan.span;
  out[1] = plan.blocks;
  out[2] = plan.stages;
  out[3] = plan.prefetch;
  return 0;
}

// y [M, N] (row stride ldy; dtype as above; residual the same dtype with row stride ldr, or null) from
// the K-major code words [KW, N] (N % 4 == 0, 16-byte aligned), the planes of lq_binary_planes
// (steps k-steps, KW <= 8 * steps), per-row scale [N] and bias [N] (or null). flags: 1 (static weights)
// no work queued earlier in the stream writes the code words, scales or bias, so with programmatic dependent
// launch the kernel may read them before it waits for the previous kernel; for one token, 2 the register-load kernel,
// 4 the TMA kernel where it can run (sm_90+), neither: the library's choice (use_tma).
__attribute__((visibility("default"))) int lq_binary_gemv(const uint32_t* words, int KW, int N, const uint32_t* zf,
                                                          int steps, const float* rscale, const float* bias,
                                                          const void* res, long long ldr, void* y, long long ldy,
                                                          int M, int dtype, int flags, cudaStream_t stream) {
  if (!words || !zf || !rscale || !y || KW < 1 || N < 4 || N % 4 || M < 0 || KW > 8 * steps || ldy < N ||
      (res && ldr < N) || reinterpret_cast<uintptr_t>(words) % 16 || reinterpret_cast<uintptr_t>(zf) % 16 ||
      flags < 0 || flags > (GEMV_STATIC | GEMV_TMA) || N > (1 << 30) || KW > (1 << 26))  // (plain and TMA: 6, 7)
    return -1;
  if (M == 0) return 0;
  cudaError_t e;
  switch (dtype) {
    case F32: e = dispatch_gemv<float>(words, KW, N, zf, steps, rscale, bias, res, ldr, y, ldy, M, flags, stream); break;
    case F16: e = dispatch_gemv<__half>(words, KW, N, zf, steps, rscale, bias, res, ldr, y, ldy, M, flags, stream); break;
    case BF16: e = dispatch_gemv<__nv_bfloat16>(words, KW, N, zf, steps, rscale, bias, res, ldr, y, ldy, M, flags, stream); break;
    default: return -2;
  }
  return (int)e;
}

}  // extern "C"
