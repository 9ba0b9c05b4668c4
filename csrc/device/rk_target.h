/*
 * rk_target.h — the one place where the device dialect learns which compiler it is under.
 *
 * Everything target-specific in csrc/device/ is keyed off the RK_TARGET_* macro defined here, so
 * the ring protocol and the persistent loop read as one program for every target:
 *   RK_TARGET_HOST    the host C or C++ compiler (CPU backend, host-side queues)
 *   RK_TARGET_CUDA    nvcc / NVRTC
 *   RK_TARGET_OPENCL  an OpenCL C compiler (clBuildProgram; PoCL in CI)
 *   RK_TARGET_METAL   the Metal shading language compiler (reserved for the Metal backend)
 * Address spaces: RK_GLOBAL for memory every block and the host see (rings, control block, buffers),
 * RK_LOCAL for memory shared by the threads of one block (reply buffers, rk_shared); both are empty
 * where the target has one generic address space.
 */
#ifndef RK_TARGET_H
#define RK_TARGET_H

#include "ringkernel/layout.h"

#if defined(__OPENCL_VERSION__) || defined(__OPENCL_C_VERSION__)
#define RK_TARGET_OPENCL 1
#define RK_FN static inline
#define RK_GLOBAL __global
#define RK_LOCAL __local
#define RK_NULL 0
typedef uintptr_t rk_uptr;
#elif defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RK_TARGET_CUDA 1
#define RK_FN static __host__ __device__ inline
#define RK_GLOBAL
#define RK_LOCAL
#define RK_NULL nullptr
typedef unsigned long long rk_uptr;
#elif defined(__METAL_VERSION__)
#error "ringkernel: the Metal dialect ships with the Metal backend; this build has none"
#else
#define RK_TARGET_HOST 1
#define RK_FN static inline
#define RK_GLOBAL
#define RK_LOCAL
#if defined(__cplusplus)
#define RK_NULL nullptr
#else
#define RK_NULL ((void *)0)
#endif
typedef uintptr_t rk_uptr;
#endif

#endif /* RK_TARGET_H */
