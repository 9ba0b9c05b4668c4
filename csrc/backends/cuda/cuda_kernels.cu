// cuda_kernels.cu — the built-in handlers' persistent kernels, compiled by nvcc into the library for
// sm_80 and sm_90 with PTX for later GPUs (see cmake/cuda.cmake), and the clock probe the backend uses
// to put %globaltimer on the host's wall clock. Portable-source handlers get the same kernel from NVRTC
// at run time (cuda_backend.cpp); both expand RK_DEFINE_CUDA_KERNEL from the device dialect.
#include <cstring>

#include "cuda_kernels.hpp"
#include "rk_builtins.h"

#define RK_CUDA_BUILTIN(builtin, fn, records)        \
    RK_DEFINE_BLOCK_STEP(rk_cuda_step_##builtin, fn) \
    RK_DEFINE_CUDA_KERNEL(rk_cuda_persistent_##builtin, rk_cuda_step_##builtin)
RK_BUILTINS(RK_CUDA_BUILTIN)
#undef RK_CUDA_BUILTIN

extern "C" __global__ void rk_cuda_clock_probe(rk_u64 *mailbox) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    rk_u64 answered = 0;
    for (;;) {
        const rk_u64 ping = rk_atomic_load_u64(&mailbox[0], RK_ACQUIRE, RK_SCOPE_SYSTEM);
        if (ping == ~0ull) return;
        if (ping == answered) {
            __nanosleep(32);
            continue;
        }
        rk_atomic_store_u64(&mailbox[1], rk_device_clock(), RK_RELAXED, RK_SCOPE_SYSTEM);
        rk_atomic_store_u64(&mailbox[2], ping, RK_RELEASE, RK_SCOPE_SYSTEM);
        answered = ping;
    }
}

namespace rk {

const void *cuda_builtin_kernel(const char *name) {
#define RK_CUDA_BUILTIN_FIND(n, fn, records) \
    if (std::strcmp(name, #n) == 0) return reinterpret_cast<const void *>(&rk_cuda_persistent_##n);
    RK_BUILTINS(RK_CUDA_BUILTIN_FIND)
#undef RK_CUDA_BUILTIN_FIND
    return nullptr;
}

const void *cuda_clock_probe_kernel() { return reinterpret_cast<const void *>(&rk_cuda_clock_probe); }

}  // namespace rk
