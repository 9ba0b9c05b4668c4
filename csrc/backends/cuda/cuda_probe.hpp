// cuda_probe.hpp — internal to the CUDA backend: whether it can run here (found without linking the
// driver), how the driver loads modules, and the backend's factory (built where nvcc was found).
#pragma once

#include <memory>
#include <string>

namespace rk {

class Backend;
struct RuntimeConfig;

// Whether the CUDA backend can run here, and what it runs on or why not: the driver (opened without
// linking it), the GPUs the CUDA runtime sees, and NVRTC.
std::string cuda_status_detail(bool *available);

// How the CUDA driver loads modules in this process, once it is initialised (cuModuleGetLoadingMode).
// Lazy loading, chosen by whoever initialised CUDA first (CUDA_MODULE_LOADING), can make loading a module
// wait for resident kernels; ringkernel asks for eager loading when it comes first.
enum class CudaModuleLoading { Unknown, Eager, Lazy };
CudaModuleLoading cuda_module_loading();
// The same as "eager", "lazy" or "unknown" (CUDA has not started here).
std::string cuda_module_loading_mode();

#if RINGKERNEL_HAS_CUDA
// The CUDA runtime's view (cuda_backend.cpp), called once the driver is known to be there.
std::string cuda_runtime_detail(bool *available);
// The CUDA backend on the GPU `cfg.device` selects (BackendUnavailableError when it cannot run).
std::unique_ptr<Backend> make_cuda_backend(const RuntimeConfig &cfg);
#endif

}  // namespace rk
