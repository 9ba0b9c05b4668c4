// cuda_kernels.hpp — internal: the device code nvcc compiles into the library (cuda_kernels.cu), seen
// from host code built by the C++ compiler. Each function returns a kernel's host-side handle for
// cudaLaunchKernel and friends.
#pragma once

namespace rk {

// The persistent kernel of a built-in handler ("echo", "vector_add", "count"), or nullptr.
const void *cuda_builtin_kernel(const char *name);

// rk_cuda_clock_probe(rk_u64 *mailbox): answers each ping the host writes into mailbox[0] with its
// %globaltimer in mailbox[1] (and the ping in mailbox[2]) until the host writes ~0.
const void *cuda_clock_probe_kernel();

}  // namespace rk
