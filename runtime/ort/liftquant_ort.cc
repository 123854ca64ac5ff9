// Entry point of the liftexport ONNX Runtime custom-op library: registers domain ai.liftquant.
// The only exported symbol is RegisterCustomOps (see exports.lds). Built against the ORT 1.21
// headers and requesting API version 21, so it loads in every newer runtime.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <memory>
#include <mutex>

#include "cpu/lift_matmul.h"
#ifdef LIFTQUANT_WITH_CUDA
#include "cuda/lift_matmul_cuda.h"
#endif

static const char* kDomain = "ai.liftquant";
static constexpr uint32_t kApiVersion = 21;

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kApiVersion);
  if (api == nullptr) {
    // No API table to build a status with: nothing we can report but failure to the caller's runtime.
    return nullptr;
  }
  Ort::InitApi(api);
  // Ops and the domain live in static storage: they must outlive every session using them.
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> cpu_op{
      Ort::Custom::CreateLiteCustomOp<liftquant::LiftMatMul>("LiftMatMul", "CPUExecutionProvider", 1, 1)};
#ifdef LIFTQUANT_WITH_CUDA  // the same op for the CUDA EP; ORT picks the kernel by the node's provider
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> cuda_op{
      Ort::Custom::CreateLiteCustomOp<liftquant::LiftMatMulCuda>("LiftMatMul", "CUDAExecutionProvider", 1, 1)};
#endif
  static Ort::CustomOpDomain domain{nullptr};
  static std::once_flag once;
  try {
    std::call_once(once, [] {
      domain = Ort::CustomOpDomain{kDomain};
      domain.Add(cpu_op.get());
#ifdef LIFTQUANT_WITH_CUDA
      domain.Add(cuda_op.get());
#endif
    });
    Ort::UnownedSessionOptions so(options);
    so.Add(domain);
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
