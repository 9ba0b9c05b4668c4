// nvrtc.cpp — NVRTC, opened at run time, so the library loads without it: from $RINGKERNEL_NVRTC_LIBRARY,
// the nvidia-cuda-nvrtc wheel next to this module (the package's [cuda] extra), the CUDA toolkit, or the
// loader's search path. Compiled handlers are cached by content hash, like the CPU backend's.
#include "nvrtc.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "../../core/kernel_core.hpp"
#include "../../core/source_cache.hpp"

namespace rk {
namespace {

// The NVRTC C API (a stable ABI; declared here so the build does not need nvrtc.h).
using nvrtcProgram = struct _nvrtcProgram *;
using nvrtcResult = int;
struct NvrtcApi {
    void *lib = nullptr;
    std::string path, why;
    const char *(*GetErrorString)(nvrtcResult) = nullptr;
    nvrtcResult (*Version)(int *, int *) = nullptr;
    nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *,
                                 const char *const *) = nullptr;
    nvrtcResult (*DestroyProgram)(nvrtcProgram *) = nullptr;
    nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *) = nullptr;
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *) = nullptr;
    nvrtcResult (*GetProgramLog)(nvrtcProgram, char *) = nullptr;
    nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *) = nullptr;
    nvrtcResult (*GetCUBIN)(nvrtcProgram, char *) = nullptr;
    nvrtcResult (*GetPTXSize)(nvrtcProgram, size_t *) = nullptr;
    nvrtcResult (*GetPTX)(nvrtcProgram, char *) = nullptr;
    nvrtcResult (*GetNumSupportedArchs)(int *) = nullptr;
    nvrtcResult (*GetSupportedArchs)(int *) = nullptr;
    int major = 0, minor = 0;
};

std::string dir_of_this_library() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(&nvrtc_status), &info) == 0 || !info.dli_fname) return "";
    std::string p = info.dli_fname;
    const auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::vector<std::string> candidates() {
    std::vector<std::string> out;
    if (const char *env = std::getenv("RINGKERNEL_NVRTC_LIBRARY"); env && *env) out.push_back(env);
    // The wheel: <site-packages>/nvidia/cu13/lib (CUDA 13) or nvidia/cuda_nvrtc/lib (CUDA 12), next to the
    // package this library is part of (<site-packages>/ringkernel/_core*.so).
    const std::string here = dir_of_this_library();
    if (!here.empty()) {
        out.push_back(here + "/../nvidia/cu13/lib/libnvrtc.so.13");
        out.push_back(here + "/../nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    }
    for (const char *var : {"CUDA_HOME", "CUDA_PATH"})
        if (const char *env = std::getenv(var); env && *env) {
            out.push_back(std::string(env) + "/lib64/libnvrtc.so");
            out.push_back(std::string(env) + "/lib/libnvrtc.so");
        }
    for (const char *name : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so"})
        out.push_back(name);
    return out;
}

template <typename F>
bool bind(void *lib, const char *name, F &fn) {
    fn = reinterpret_cast<F>(dlsym(lib, name));
    return fn != nullptr;
}

const NvrtcApi &api() {
    static NvrtcApi a;
    static std::once_flag once;
    std::call_once(once, [] {
        std::string tried;
        for (const auto &path : candidates()) {
            void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (!lib) {
                tried += (tried.empty() ? "" : ", ") + path;
                continue;
            }
            NvrtcApi x;
            x.lib = lib;
            x.path = path;
            const bool ok = bind(lib, "nvrtcGetErrorString", x.GetErrorString) && bind(lib, "nvrtcVersion", x.Version) &&
                            bind(lib, "nvrtcCreateProgram", x.CreateProgram) &&
                            bind(lib, "nvrtcDestroyProgram", x.DestroyProgram) &&
                            bind(lib, "nvrtcCompileProgram", x.CompileProgram) &&
                            bind(lib, "nvrtcGetProgramLogSize", x.GetProgramLogSize) &&
                            bind(lib, "nvrtcGetProgramLog", x.GetProgramLog) &&
                            bind(lib, "nvrtcGetCUBINSize", x.GetCUBINSize) && bind(lib, "nvrtcGetCUBIN", x.GetCUBIN) &&
                            bind(lib, "nvrtcGetPTXSize", x.GetPTXSize) && bind(lib, "nvrtcGetPTX", x.GetPTX) &&
                            bind(lib, "nvrtcGetNumSupportedArchs", x.GetNumSupportedArchs) &&
                            bind(lib, "nvrtcGetSupportedArchs", x.GetSupportedArchs);
            if (!ok) {
                tried += (tried.empty() ? "" : ", ") + path + " (lacks the NVRTC API)";
                dlclose(lib);
                continue;
            }
            x.Version(&x.major, &x.minor);
            a = x;
            return;
        }
        a.why = "no NVRTC (tried " + tried +
                "; install the CUDA toolkit's NVRTC or the nvidia-cuda-nvrtc wheel -- pip install 'pyringkernel[cuda]' -- "
                "or set RINGKERNEL_NVRTC_LIBRARY)";
    });
    return a;
}

std::string nvrtc_error(const NvrtcApi &a, const char *what, nvrtcResult rc) {
    return std::string(what) + " failed: " + (a.GetErrorString ? a.GetErrorString(rc) : "?") + " (NVRTC error " +
           std::to_string(rc) + ")";
}

// The highest architecture NVRTC can compile for that is not above `cc` (0 when none).
int best_arch(const NvrtcApi &a, int cc, bool *exact) {
    int n = 0;
    a.GetNumSupportedArchs(&n);
    std::vector<int> archs(static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0) a.GetSupportedArchs(archs.data());
    int best = 0;
    for (int x : archs) {
        if (x == cc) {
            *exact = true;
            return cc;
        }
        if (x < cc && x > best) best = x;
    }
    *exact = false;
    return best;
}

}  // namespace

std::string nvrtc_status(bool *found) {
    const NvrtcApi &a = api();
    if (found) *found = a.lib != nullptr;
    if (!a.lib) return a.why;
    return "NVRTC " + std::to_string(a.major) + "." + std::to_string(a.minor) + " (" + a.path + ")";
}

CudaImage compile_cuda_source(const std::string &code, const std::string &entry, int cc, const RuntimeConfig &cfg) {
    if (!valid_identifier(entry))
        throw std::invalid_argument("entry must be a C identifier naming the handler function, got '" + entry + "'");
    if (code.empty()) throw std::invalid_argument("handler source is empty");
    if (cc < 75 || cc > 1000)
        throw std::invalid_argument("compute capability must be in [75, 1000] (7.5 and later), got " + std::to_string(cc));
    const NvrtcApi &a = api();
    if (!a.lib) throw BackendUnavailableError("CUDA portable-source handlers need NVRTC: " + a.why);
    bool exact = false;
    const int arch = best_arch(a, cc, &exact);
    if (arch == 0)
        throw BackendUnavailableError("NVRTC " + std::to_string(a.major) + "." + std::to_string(a.minor) +
                                      " cannot compile for compute capability " + std::to_string(cc / 10) + "." +
                                      std::to_string(cc % 10) + " or any earlier one");
    const std::vector<std::string> incs = dialect_include_dirs(cfg);
    const std::string headers = dialect_identity(incs);

    std::ostringstream src;
    src << "// generated by ringkernel: a portable-source handler for the CUDA backend\n"
        << "#include \"rk_builtins.h\"\n"
        << "#line 1 \"handler\"\n"
        << code << "\n"
        << "#line 1 \"ringkernel-step\"\n"
        << "RK_DEFINE_BLOCK_STEP(rk_cuda_step, " << entry << ")\n"
        << "RK_DEFINE_CUDA_KERNEL(" << kCudaSourceKernel << ", rk_cuda_step)\n";
    const std::string source = src.str();

    CudaImage img;
    img.ptx = !exact;
    img.arch = (exact ? "sm_" : "compute_") + std::to_string(arch);
    std::vector<std::string> options = {"--gpu-architecture=" + img.arch, "--std=c++17", "--device-as-default-execution-space",
                                        "--generate-line-info", "-DRK_NVRTC=1"};
    for (const auto &d : incs) options.push_back("--include-path=" + d);

    std::string identity = source + '\0' + headers + '\0' + std::to_string(a.major) + "." + std::to_string(a.minor);
    for (const auto &o : options) identity += '\0' + o;
    const std::string hex = fnv1a_hex(identity);
    const std::string dir = handler_cache_dir(cfg);
    make_private_dir(dir);
    img.path = dir + "/cuda-" + hex + (img.ptx ? ".ptx" : ".cubin");
    {
        std::ifstream f(img.path, std::ios::binary);
        if (f) {
            std::ostringstream o;
            o << f.rdbuf();
            img.data = o.str();
            if (!img.data.empty()) return img;
        }
    }

    nvrtcProgram prog = nullptr;
    nvrtcResult rc = a.CreateProgram(&prog, source.c_str(), "ringkernel-handler.cu", 0, nullptr, nullptr);
    if (rc != 0) throw Error(nvrtc_error(a, "nvrtcCreateProgram", rc));
    std::vector<const char *> argv;
    for (const auto &o : options) argv.push_back(o.c_str());
    rc = a.CompileProgram(prog, static_cast<int>(argv.size()), argv.data());
    size_t log_size = 0;
    a.GetProgramLogSize(prog, &log_size);
    std::string log(log_size, '\0');
    if (log_size) a.GetProgramLog(prog, log.data());
    while (!log.empty() && log.back() == '\0') log.pop_back();
    if (rc != 0) {
        a.DestroyProgram(&prog);
        throw CompileError("the handler did not compile for CUDA (NVRTC " + std::to_string(a.major) + "." +
                               std::to_string(a.minor) + ", " + img.arch + "):\n" + log,
                           log);
    }
    size_t size = 0;
    rc = img.ptx ? a.GetPTXSize(prog, &size) : a.GetCUBINSize(prog, &size);
    if (rc == 0) {
        img.data.assign(size, '\0');
        rc = img.ptx ? a.GetPTX(prog, img.data.data()) : a.GetCUBIN(prog, img.data.data());
    }
    a.DestroyProgram(&prog);
    if (rc != 0) throw Error(nvrtc_error(a, img.ptx ? "nvrtcGetPTX" : "nvrtcGetCUBIN", rc));
    // A private temporary name (mkstemp), then an atomic rename: concurrent compiles of one source in
    // threads or processes never write one file together.
    std::string tmp = img.path + ".XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) throw Error("cannot create a temporary file next to " + img.path);
    const char *p = img.data.data();
    std::size_t left = img.data.size();
    while (left > 0) {
        const ssize_t w = ::write(fd, p, left);
        if (w <= 0) {
            ::close(fd);
            std::remove(tmp.c_str());
            throw Error("cannot write the compiled handler to " + tmp);
        }
        p += w;
        left -= static_cast<std::size_t>(w);
    }
    ::close(fd);
    if (std::rename(tmp.c_str(), img.path.c_str()) != 0) {
        std::remove(tmp.c_str());
        throw Error("cannot move the compiled handler into the cache at " + img.path);
    }
    return img;
}

}  // namespace rk
