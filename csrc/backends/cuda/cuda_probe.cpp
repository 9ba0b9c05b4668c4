// cuda_probe.cpp — whether the CUDA backend can run here, found without linking the driver: the driver
// (libcuda.so.1, or $RINGKERNEL_CUDA_DRIVER) is opened at run time, so the package imports on machines
// without one, and rk.backends() says what is missing. Only when the driver answers is the CUDA runtime
// (linked statically, cuda_backend.cpp) asked; NVRTC is reported by nvrtc.cpp.
#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "cuda_probe.hpp"

#include "../../core/backend_registry.hpp"
#include "../../core/kernel_core.hpp"
#include "../../core/process.hpp"
#include "nvrtc.hpp"

namespace rk {

namespace {

std::string dl_error(const std::string &path) {
    const char *e = dlerror();
    return path + ": " + (e ? e : "not found");
}

// The driver's answer: empty when it initialised and reports at least one GPU, else why not.
std::string probe_driver() {
    const char *env = std::getenv("RINGKERNEL_CUDA_DRIVER");
    const std::string path = env && *env ? env : "libcuda.so.1";
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) return "no NVIDIA driver (" + dl_error(path) + ")";
    using init_t = int (*)(unsigned);
    using count_t = int (*)(int *);
    auto init = reinterpret_cast<init_t>(dlsym(lib, "cuInit"));
    auto count = reinterpret_cast<count_t>(dlsym(lib, "cuDeviceGetCount"));
    int n = 0;
    if (!init || !count) return "the NVIDIA driver " + path + " lacks cuInit/cuDeviceGetCount";
    if (const int rc = init(0); rc != 0)
        return "the NVIDIA driver did not initialise (cuInit error " + std::to_string(rc) + "; no GPU, or no access)";
    if (count(&n) != 0 || n == 0) return "the NVIDIA driver reports no GPU";
    return "";
}

}  // namespace

CudaModuleLoading cuda_module_loading() {
    const char *env = std::getenv("RINGKERNEL_CUDA_DRIVER");
    void *lib = dlopen(env && *env ? env : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (!lib) return CudaModuleLoading::Unknown;  // the driver is not loaded: CUDA has not started here
    using loading_mode_fn = int (*)(int *);
    auto query = reinterpret_cast<loading_mode_fn>(dlsym(lib, "cuModuleGetLoadingMode"));
    int mode = 0;
    const bool ok = query && query(&mode) == 0;
    dlclose(lib);
    if (!ok) return CudaModuleLoading::Unknown;
    return mode == 2 ? CudaModuleLoading::Lazy : mode == 1 ? CudaModuleLoading::Eager : CudaModuleLoading::Unknown;
}

std::string cuda_module_loading_mode() {
    switch (cuda_module_loading()) {
    case CudaModuleLoading::Eager: return "eager";
    case CudaModuleLoading::Lazy: return "lazy";
    case CudaModuleLoading::Unknown: break;
    }
    return "unknown";
}

std::string cuda_status_detail(bool *available) {
    *available = false;
    const std::string nvrtc = nvrtc_status();
#if RINGKERNEL_HAS_CUDA
    // Load every module at once, before anything initialises CUDA in this process: lazy loading may need
    // a context synchronisation, which a resident kernel blocks forever. (The backend also loads its own
    // kernels before any is resident; this covers the user's kernels too. A user's setting is kept.)
    static std::once_flag eager;
    std::call_once(eager, [] { setenv("CUDA_MODULE_LOADING", "EAGER", 0); });
#endif
    if (std::string inherited = driver_inherited_reason("cuda"); !inherited.empty())
        return "CUDA backend unavailable: " + inherited + "; " + nvrtc;
    const std::string driver = probe_driver();
    if (driver.empty()) note_driver_started("cuda");
#if RINGKERNEL_HAS_CUDA
    if (!driver.empty()) return "CUDA backend unavailable: " + driver + "; " + nvrtc;
    return cuda_runtime_detail(available) + "; " +
           (nvrtc.rfind("NVRTC", 0) == 0 ? nvrtc + " for rk.Source handlers"
                                          : "built-in handlers only, rk.Source handlers need NVRTC: " + nvrtc);
#else
    return "CUDA backend unavailable: this build has no CUDA backend (the CUDA toolkit was not found when it was "
           "built); " + (driver.empty() ? std::string("the NVIDIA driver reports a GPU") : driver) + "; " + nvrtc;
#endif
}

void register_cuda_backend(BackendRegistry &r) {
    BackendEntry e;
    e.name = "cuda";
    e.auto_rank = 0;  // "auto" tries it first
    e.status = [] {
        bool available = false;
        std::string detail = cuda_status_detail(&available);
        return BackendStatus{"cuda", available, detail};
    };
#if RINGKERNEL_HAS_CUDA
    e.make = make_cuda_backend;
#endif
    r.add(std::move(e));
}

}  // namespace rk
