// cuda_kernels.cu — the built-in handlers' persistent kernels, compiled by nvcc into the library for
// sm_80 and sm_90 with PTX for later GPUs (see cmake/cuda.cmake), and the clock probe the backend uses
// to put %globaltimer on the host's wall clock. Portable-source handlers get the same kernel from NVRTC
// at run time (cuda_backend.cpp); both expand RK_DEFINE_CUDA_KERNEL from the device dialect.
#include <cstring>

#include "cuda_kernels.hpp"
#include "rk_builtins.h"

RK_DEFINE_BLOCK_STEP(rk_cuda_step_echo, rk_builtin_echo)
RK_DEFINE_BLOCK_STEP(rk_cuda_step_vector_add, rk_builtin_vector_add)
RK_DEFINE_BLOCK_STEP(rk_cuda_step_count, rk_builtin_count)
RK_DEFINE_CUDA_KERNEL(rk_cuda_persistent_echo, rk_cuda_step_echo)
RK_DEFINE_CUDA_KERNEL(rk_cuda_persistent_vector_add, rk_cuda_step_vector_add)
RK_DEFINE_CUDA_KERNEL(rk_cuda_persistent_count, rk_cuda_step_count)

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
    if (std::strcmp(name, "echo") == 0) return reinterpret_cast<const void *>(&rk_cuda_persistent_echo);
    if (std::strcmp(name, "vector_add") == 0) return reinterpret_cast<const void *>(&rk_cuda_persistent_vector_add);
    if (std::strcmp(name, "count") == 0) return reinterpret_cast<const void *>(&rk_cuda_persistent_count);
    return nullptr;
}

const void *cuda_clock_probe_kernel() { return reinterpret_cast<const void *>(&rk_cuda_clock_probe); }

}  // namespace rk
