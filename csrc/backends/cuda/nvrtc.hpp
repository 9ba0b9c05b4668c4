// nvrtc.hpp — internal: NVRTC, opened at run time, compiling portable-source handlers for CUDA.
#pragma once

#include <string>

#include "ringkernel/runtime.hpp"

namespace rk {

// "NVRTC 13.5 (<path>)", or why none was found and where it looked.
std::string nvrtc_status(bool *found = nullptr);

// A handler compiled for one GPU architecture: a cubin (SASS), or PTX when NVRTC does not know the GPU
// (the driver then compiles it when it loads).
struct CudaImage {
    std::string data;
    bool ptx = false;
    std::string arch;   // "sm_90" or "compute_90"
    std::string path;   // the cache file it came from
};

// The kernel each image defines: the dialect's persistent loop around the handler.
constexpr const char *kCudaSourceKernel = "rk_persistent";

// Compile (or find in the cache) the portable-source handler `entry` in `code` for compute capability
// `cc` (e.g. 90), with the device dialect from cfg's include directories. Runs without a GPU.
// BackendUnavailableError when NVRTC is missing; CompileError (with NVRTC's log) when the source does
// not compile; invalid_argument for a bad entry name or empty source.
CudaImage compile_cuda_source(const std::string &code, const std::string &entry, int cc, const RuntimeConfig &cfg);

}  // namespace rk
