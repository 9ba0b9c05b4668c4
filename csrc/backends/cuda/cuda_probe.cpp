// cuda_probe.cpp — what the CUDA backend would run on, found without linking anything CUDA: the
// driver (libcuda.so.1, or $RINGKERNEL_CUDA_DRIVER) and NVRTC (for portable-source handlers) are opened
// at run time, so the package imports on machines with neither, and rk.backends() says which is
// missing. The CUDA runtime backend itself is not part of this version.
#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "../../core/kernel_core.hpp"

namespace rk {

namespace {

std::string dl_error(const std::string &path) {
    const char *e = dlerror();
    return path + ": " + (e ? e : "not found");
}

// NVRTC from $RINGKERNEL_NVRTC_LIBRARY, else the names the CUDA 13/12 toolkits and the
// nvidia-cuda-nvrtc wheel install.
std::string probe_nvrtc() {
    const char *env = std::getenv("RINGKERNEL_NVRTC_LIBRARY");
    std::string tried;
    for (const std::string &name : {std::string(env && *env ? env : ""), std::string("libnvrtc.so"),
                                    std::string("libnvrtc.so.13"), std::string("libnvrtc.so.12")}) {
        if (name.empty()) continue;
        if (void *lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
            (void)lib;  // kept open: probing twice must not unload and reload it
            return "NVRTC found (" + name + ")";
        }
        tried += (tried.empty() ? "" : ", ") + name;
    }
    return "no NVRTC (tried " + tried + "; the CUDA toolkit or the nvidia-cuda-nvrtc wheel provides it)";
}

}  // namespace

std::string cuda_status_detail() {
    const char *env = std::getenv("RINGKERNEL_CUDA_DRIVER");
    const std::string path = env && *env ? env : "libcuda.so.1";
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    std::string driver;
    if (!lib) {
        driver = "no NVIDIA driver (" + dl_error(path) + ")";
    } else {
        using init_t = int (*)(unsigned);
        using count_t = int (*)(int *);
        using get_t = int (*)(int *, int);
        using name_t = int (*)(char *, int, int);
        auto init = reinterpret_cast<init_t>(dlsym(lib, "cuInit"));
        auto count = reinterpret_cast<count_t>(dlsym(lib, "cuDeviceGetCount"));
        auto get = reinterpret_cast<get_t>(dlsym(lib, "cuDeviceGet"));
        auto name = reinterpret_cast<name_t>(dlsym(lib, "cuDeviceGetName"));
        int n = 0;
        if (!init || !count) {
            driver = "the NVIDIA driver " + path + " lacks cuInit/cuDeviceGetCount";
        } else if (const int rc = init(0); rc != 0) {
            driver = "the NVIDIA driver did not initialise (cuInit error " + std::to_string(rc) + "; no GPU, or no access)";
        } else if (count(&n) != 0 || n == 0) {
            driver = "the NVIDIA driver reports no GPU";
        } else {
            char buf[256] = {};
            int dev = 0;
            if (get && name && get(&dev, 0) == 0) name(buf, sizeof buf - 1, dev);
            driver = std::to_string(n) + " GPU(s) found (" + (buf[0] ? buf : "device 0") + ")";
        }
    }
    return driver + "; " + probe_nvrtc() +
           "; the CUDA runtime backend is not implemented in this version (the device dialect is compiled "
           "by nvcc when the build finds it)";
}

}  // namespace rk
