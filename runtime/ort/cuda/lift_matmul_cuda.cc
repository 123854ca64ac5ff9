// LiftMatMul on the CUDA execution provider (see lift_matmul_cuda.h).
#include "cuda/lift_matmul_cuda.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace liftquant {

namespace {

Ort::Status cuda_status(cudaError_t e, const char* what) {
  return Ort::Status((std::string("LiftMatMul (CUDA): ") + what + ": " + cudaGetErrorString(e)).c_str(), ORT_FAIL);
}

template <typename T>
cudaError_t to_host(const T* dev, size_t n, std::vector<T>& host, cudaStream_t st) {
  host.resize(n);
  cudaError_t e = cudaMemcpyAsync(host.data(), dev, n * sizeof(T), cudaMemcpyDeviceToHost, st);
  return e != cudaSuccess ? e : cudaStreamSynchronize(st);
}

template <typename T>
cudaError_t upload(const std::vector<T>& host, T** dev) {
  cudaError_t e = cudaMalloc(dev, std::max<size_t>(host.size(), 1) * sizeof(T));
  return e != cudaSuccess ? e : cudaMemcpy(*dev, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
}

// Scratch comes from one private stream-ordered pool per device that keeps what it has reserved
// (release threshold: unlimited). The device's default pool gives its memory back at every
// synchronization, so each ORT run (which ends in one) would pay to map it again. The pool grows to
// the largest scratch any node asked for (2-10 MB plus ~80 KB per token at 7B shapes) and lives until exit.
cudaError_t scratch_pool(cudaMemPool_t* pool) {
  static std::mutex mu;
  static std::map<int, cudaMemPool_t> pools;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(mu);
  auto it = pools.find(dev);
  if (it == pools.end()) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    cudaMemPool_t p = nullptr;
    if ((e = cudaMemPoolCreate(&p, &props)) != cudaSuccess) return e;
    uint64_t keep = UINT64_MAX;
    if ((e = cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &keep)) != cudaSuccess) {
      cudaMemPoolDestroy(p);
      return e;
    }
    it = pools.emplace(dev, p).first;
  }
  *pool = it->second;
  return cudaSuccess;
}

}  // namespace

LiftMatMulCuda::~LiftMatMulCuda() { Release(); }

void LiftMatMulCuda::Release() {
  for (float* p : {dL_, dR_, ds1_, dscale_, dbias_}) cudaFree(p);
  cudaFree(dpacked_);
  dL_ = dR_ = ds1_ = dscale_ = dbias_ = nullptr;
  dpacked_ = nullptr;
  std::fill(dkey_, dkey_ + 7, nullptr);
}

Ort::Status LiftMatMulCuda::Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& X,
                                    const Ort::Custom::Tensor<uint8_t>& codes,
                                    const Ort::Custom::Tensor<Ort::Float16_t>& scales,
                                    const Ort::Custom::Tensor<Ort::Float16_t>& M,
                                    const Ort::Custom::Tensor<Ort::Float16_t>& a,
                                    const Ort::Custom::Tensor<Ort::Float16_t>& b,
                                    const Ort::Custom::Tensor<Ort::Float16_t>& s1,
                                    const Ort::Custom::Tensor<Ort::Float16_t>& bias, Ort::Custom::Tensor<float>& Y) {
  try {
    auto bad = [](const std::string& m) { return Ort::Status(("LiftMatMul: " + m).c_str(), ORT_INVALID_ARGUMENT); };
    if (attr_error_.empty() && lut_bits_ != 0)
      return bad("lut_bits=8 is a CPU mode; the CUDA kernel computes the exact float32 path only");
    int64_t T = 0;
    float* y = nullptr;
    const std::string err = Start(X, codes, scales, M, a, b, s1, bias, Y, T, y);
    if (!err.empty()) return Ort::Status(err.c_str(), ORT_INVALID_ARGUMENT);
    if (T == 0) return Ort::Status{nullptr};
    Ort::KernelContext kctx(ctx);
    auto st = static_cast<cudaStream_t>(kctx.GetGPUComputeStream());
    cudaError_t e;
    {  // factors and repacked codes, once per set of constant inputs
      std::lock_guard<std::mutex> lock(mu_);
      const void* key[7] = {M.Data(), a.Data(), b.Data(), s1.Data(), scales.Data(), bias.Data(), codes.Data()};
      if (!std::equal(key, key + 7, dkey_)) {
        Release();
        std::vector<Ort::Float16_t> hM, ha, hb, hs1, hsc, hbias;
        if ((e = to_host(M.Data(), d_ * D_, hM, st)) != cudaSuccess || (e = to_host(a.Data(), n1_, ha, st)) ||
            (e = to_host(b.Data(), nb_, hb, st)) || (e = to_host(s1.Data(), n_, hs1, st)) ||
            (e = to_host(scales.Data(), out_, hsc, st)) || (e = to_host(bias.Data(), out_, hbias, st)))
          return cuda_status(e, "reading the constant inputs");
        Prepared p;
        const std::string perr = BuildPrepared(hM.data(), ha.data(), hb.data(), hs1.data(), hsc.data(), hbias.data(), p);
        if (!perr.empty()) return bad(perr);
        shape_ = cuda::make_shape(out_, K_);
        if ((e = upload(p.L, &dL_)) || (e = upload(p.R, &dR_)) || (e = upload(p.s1inv, &ds1_)) ||
            (e = upload(p.scale, &dscale_)) || (e = upload(p.bias, &dbias_)) ||
            (e = cudaMalloc(&dpacked_, shape_.packed_words() * sizeof(uint32_t))) ||
            (e = cuda::repack_codes(codes.Data(), dpacked_, shape_, st)) || (e = cudaStreamSynchronize(st))) {
          Release();
          return cuda_status(e, "preparing the layer");
        }
        std::copy(key, key + 7, dkey_);
      }
    }
    const int64_t C = nb_ * D_, ustride = shape_.S * cuda::kSliceBits;
    const int64_t nt = std::min<int64_t>(T, cuda::kMaxTok);
    // one stream-ordered scratch block: u (16-byte aligned rows of 1024-bit slices), Z, partial sums
    const size_t nu = static_cast<size_t>(T * ustride), nz = static_cast<size_t>(T * n1_ * C);
    const size_t np = static_cast<size_t>(shape_.S * nt * shape_.G * 32);
    float* scratch = nullptr;
    cudaMemPool_t pool = nullptr;
    if ((e = scratch_pool(&pool)) != cudaSuccess ||
        (e = cudaMallocFromPoolAsync(reinterpret_cast<void**>(&scratch), sizeof(float) * (nu + nz + np), pool, st)) !=
            cudaSuccess)
      return cuda_status(e, "allocating scratch");
    float *u = scratch, *z = scratch + nu, *part = scratch + nu + nz;
    e = cuda::lift(X.Data(), T, in_, ds1_, dL_, dR_, n1_, n2_, C, z, u, shape_, st);
    if (e == cudaSuccess) e = cuda::binary_gemv(u, T, dpacked_, shape_, dscale_, dbias_, part, y, st);
    cudaFreeAsync(scratch, st);
    if (e != cudaSuccess) return cuda_status(e, "launching the kernels");
    return Ort::Status{nullptr};
  } catch (const Ort::Exception& ex) {
    return Ort::Status(ex);
  } catch (const std::exception& ex) {
    return Ort::Status((std::string("LiftMatMul (CUDA): ") + ex.what()).c_str(), ORT_FAIL);
  }
}

}  // namespace liftquant
