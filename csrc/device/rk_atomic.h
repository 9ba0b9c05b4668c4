/*
 * rk_atomic.h — atomics of the device dialect: one function per operation, one dispatch per target.
 *
 * Every call names its memory order and its scope. Scope matters on devices: a ring in page-locked,
 * device-mapped host memory is shared with the CPU and needs system scope; a kernel-to-kernel ring
 * in device memory only needs device scope, which is cheaper. The host ignores scope (all host
 * threads share one coherent memory). Order and scope arguments are compile-time constants at
 * every call site, so the branches below fold away.
 */
#ifndef RK_ATOMIC_H
#define RK_ATOMIC_H

#include "rk_target.h"

#define RK_RELAXED 0
#define RK_ACQUIRE 2
#define RK_RELEASE 3
#define RK_ACQ_REL 4
#define RK_SEQ_CST 5

#define RK_SCOPE_DEVICE 1
#define RK_SCOPE_SYSTEM 2

#if defined(RK_TARGET_HOST)
/* GCC/Clang __atomic builtins: valid in C and C++, understood by TSan. The RK_* order values are
 * the __ATOMIC_* values, asserted below. */
#if defined(__cplusplus)
static_assert(RK_ACQUIRE == __ATOMIC_ACQUIRE && RK_RELEASE == __ATOMIC_RELEASE &&
                  RK_SEQ_CST == __ATOMIC_SEQ_CST && RK_RELAXED == __ATOMIC_RELAXED,
              "RK_* memory orders must equal the __ATOMIC_* constants");
#endif

RK_FN rk_u64 rk_atomic_load_u64(const rk_u64 *p, int order, int scope) {
    (void)scope;
    return __atomic_load_n(p, order);
}
RK_FN void rk_atomic_store_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    (void)scope;
    __atomic_store_n(p, v, order);
}
/* Strong compare-and-swap; on failure *expected receives the current value. */
RK_FN int rk_atomic_cas_u64(rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success, int failure,
                            int scope) {
    (void)scope;
    return __atomic_compare_exchange_n(p, expected, desired, 0, success, failure);
}
RK_FN rk_u64 rk_atomic_fetch_add_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    (void)scope;
    return __atomic_fetch_add(p, v, order);
}
RK_FN rk_i32 rk_atomic_load_i32(const rk_i32 *p, int order, int scope) {
    (void)scope;
    return __atomic_load_n(p, order);
}
RK_FN void rk_atomic_store_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    (void)scope;
    __atomic_store_n(p, v, order);
}
RK_FN rk_i32 rk_atomic_fetch_add_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    (void)scope;
    return __atomic_fetch_add(p, v, order);
}
RK_FN void rk_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#elif defined(RK_TARGET_CUDA)
#include <cuda/atomic>

__host__ __device__ inline cuda::std::memory_order rk_cuda_order(int order) {
    return order == RK_RELAXED   ? cuda::std::memory_order_relaxed
           : order == RK_ACQUIRE ? cuda::std::memory_order_acquire
           : order == RK_RELEASE ? cuda::std::memory_order_release
           : order == RK_ACQ_REL ? cuda::std::memory_order_acq_rel
                                 : cuda::std::memory_order_seq_cst;
}

template <typename T, cuda::thread_scope S>
__host__ __device__ inline cuda::atomic_ref<T, S> rk_cuda_ref(const T *p) {
    return cuda::atomic_ref<T, S>(*const_cast<T *>(p));
}

RK_FN rk_u64 rk_atomic_load_u64(const rk_u64 *p, int order, int scope) {
    return scope == RK_SCOPE_SYSTEM
               ? rk_cuda_ref<rk_u64, cuda::thread_scope_system>(p).load(rk_cuda_order(order))
               : rk_cuda_ref<rk_u64, cuda::thread_scope_device>(p).load(rk_cuda_order(order));
}
RK_FN void rk_atomic_store_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    if (scope == RK_SCOPE_SYSTEM)
        rk_cuda_ref<rk_u64, cuda::thread_scope_system>(p).store(v, rk_cuda_order(order));
    else
        rk_cuda_ref<rk_u64, cuda::thread_scope_device>(p).store(v, rk_cuda_order(order));
}
RK_FN int rk_atomic_cas_u64(rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success, int failure,
                            int scope) {
    return scope == RK_SCOPE_SYSTEM
               ? rk_cuda_ref<rk_u64, cuda::thread_scope_system>(p).compare_exchange_strong(
                     *expected, desired, rk_cuda_order(success), rk_cuda_order(failure))
               : rk_cuda_ref<rk_u64, cuda::thread_scope_device>(p).compare_exchange_strong(
                     *expected, desired, rk_cuda_order(success), rk_cuda_order(failure));
}
RK_FN rk_u64 rk_atomic_fetch_add_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    return scope == RK_SCOPE_SYSTEM
               ? rk_cuda_ref<rk_u64, cuda::thread_scope_system>(p).fetch_add(v, rk_cuda_order(order))
               : rk_cuda_ref<rk_u64, cuda::thread_scope_device>(p).fetch_add(v, rk_cuda_order(order));
}
RK_FN rk_i32 rk_atomic_load_i32(const rk_i32 *p, int order, int scope) {
    return scope == RK_SCOPE_SYSTEM
               ? rk_cuda_ref<rk_i32, cuda::thread_scope_system>(p).load(rk_cuda_order(order))
               : rk_cuda_ref<rk_i32, cuda::thread_scope_device>(p).load(rk_cuda_order(order));
}
RK_FN void rk_atomic_store_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    if (scope == RK_SCOPE_SYSTEM)
        rk_cuda_ref<rk_i32, cuda::thread_scope_system>(p).store(v, rk_cuda_order(order));
    else
        rk_cuda_ref<rk_i32, cuda::thread_scope_device>(p).store(v, rk_cuda_order(order));
}
RK_FN rk_i32 rk_atomic_fetch_add_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    return scope == RK_SCOPE_SYSTEM
               ? rk_cuda_ref<rk_i32, cuda::thread_scope_system>(p).fetch_add(v, rk_cuda_order(order))
               : rk_cuda_ref<rk_i32, cuda::thread_scope_device>(p).fetch_add(v, rk_cuda_order(order));
}
RK_FN void rk_cpu_relax(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    __nanosleep(32);
#endif
}

#elif defined(RK_TARGET_OPENCL)
#pragma OPENCL EXTENSION cl_khr_int64_base_atomics : enable
#pragma OPENCL EXTENSION cl_khr_int64_extended_atomics : enable

#if defined(__OPENCL_C_VERSION__) && __OPENCL_C_VERSION__ >= 200
/* OpenCL C 2.x/3.0: C11-style atomics with explicit order and scope. */
RK_FN memory_order rk_cl_order(int order) {
    return order == RK_RELAXED   ? memory_order_relaxed
           : order == RK_ACQUIRE ? memory_order_acquire
           : order == RK_RELEASE ? memory_order_release
           : order == RK_ACQ_REL ? memory_order_acq_rel
                                 : memory_order_seq_cst;
}
#if defined(__opencl_c_atomic_scope_all_devices)
#define RK_CL_SCOPE_SYSTEM memory_scope_all_devices
#elif __OPENCL_C_VERSION__ == 200
#define RK_CL_SCOPE_SYSTEM memory_scope_all_svm_devices
#else
/* The compiler offers no all-devices scope (PoCL's CPU device, for one): device scope is the
 * widest there is. Host-visible rings are then correct only on a device that is cache-coherent
 * with the host, which a CPU device is; on any other such device the OpenCL backend must not run
 * host-shared rings in persistent mode. */
#define RK_CL_SCOPE_SYSTEM memory_scope_device
#endif
RK_FN memory_scope rk_cl_scope(int scope) {
    return scope == RK_SCOPE_SYSTEM ? RK_CL_SCOPE_SYSTEM : memory_scope_device;
}
RK_FN rk_u64 rk_atomic_load_u64(RK_GLOBAL const rk_u64 *p, int order, int scope) {
    return atomic_load_explicit((volatile RK_GLOBAL atomic_ulong *)p, rk_cl_order(order),
                                rk_cl_scope(scope));
}
RK_FN void rk_atomic_store_u64(RK_GLOBAL rk_u64 *p, rk_u64 v, int order, int scope) {
    atomic_store_explicit((volatile RK_GLOBAL atomic_ulong *)p, v, rk_cl_order(order),
                          rk_cl_scope(scope));
}
RK_FN int rk_atomic_cas_u64(RK_GLOBAL rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success,
                            int failure, int scope) {
    return atomic_compare_exchange_strong_explicit((volatile RK_GLOBAL atomic_ulong *)p, expected,
                                                   desired, rk_cl_order(success),
                                                   rk_cl_order(failure), rk_cl_scope(scope));
}
RK_FN rk_u64 rk_atomic_fetch_add_u64(RK_GLOBAL rk_u64 *p, rk_u64 v, int order, int scope) {
    return atomic_fetch_add_explicit((volatile RK_GLOBAL atomic_ulong *)p, v, rk_cl_order(order),
                                     rk_cl_scope(scope));
}
RK_FN rk_i32 rk_atomic_load_i32(RK_GLOBAL const rk_i32 *p, int order, int scope) {
    return atomic_load_explicit((volatile RK_GLOBAL atomic_int *)p, rk_cl_order(order),
                                rk_cl_scope(scope));
}
RK_FN void rk_atomic_store_i32(RK_GLOBAL rk_i32 *p, rk_i32 v, int order, int scope) {
    atomic_store_explicit((volatile RK_GLOBAL atomic_int *)p, v, rk_cl_order(order),
                          rk_cl_scope(scope));
}
RK_FN rk_i32 rk_atomic_fetch_add_i32(RK_GLOBAL rk_i32 *p, rk_i32 v, int order, int scope) {
    return atomic_fetch_add_explicit((volatile RK_GLOBAL atomic_int *)p, v, rk_cl_order(order),
                                     rk_cl_scope(scope));
}
#else
/* OpenCL C 1.2 baseline: volatile accesses ordered by full fences, read-modify-write through the
 * cl_khr_int64 atomics. Every ordered access is fenced on both sides, which is stronger than the
 * order asked for and therefore correct for each of them. */
RK_FN rk_u64 rk_atomic_load_u64(RK_GLOBAL const rk_u64 *p, int order, int scope) {
    (void)scope;
    rk_u64 v = *(volatile RK_GLOBAL const rk_u64 *)p;
    if (order != RK_RELAXED) mem_fence(CLK_GLOBAL_MEM_FENCE);
    return v;
}
RK_FN void rk_atomic_store_u64(RK_GLOBAL rk_u64 *p, rk_u64 v, int order, int scope) {
    (void)scope;
    if (order != RK_RELAXED) mem_fence(CLK_GLOBAL_MEM_FENCE);
    *(volatile RK_GLOBAL rk_u64 *)p = v;
    if (order == RK_SEQ_CST) mem_fence(CLK_GLOBAL_MEM_FENCE);
}
RK_FN int rk_atomic_cas_u64(RK_GLOBAL rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success,
                            int failure, int scope) {
    (void)success; (void)failure; (void)scope;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    rk_u64 seen = atom_cmpxchg((volatile RK_GLOBAL ulong *)p, *expected, desired);
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    if (seen == *expected) return 1;
    *expected = seen;
    return 0;
}
RK_FN rk_u64 rk_atomic_fetch_add_u64(RK_GLOBAL rk_u64 *p, rk_u64 v, int order, int scope) {
    (void)order; (void)scope;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    rk_u64 old = atom_add((volatile RK_GLOBAL ulong *)p, v);
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    return old;
}
RK_FN rk_i32 rk_atomic_load_i32(RK_GLOBAL const rk_i32 *p, int order, int scope) {
    (void)scope;
    rk_i32 v = *(volatile RK_GLOBAL const rk_i32 *)p;
    if (order != RK_RELAXED) mem_fence(CLK_GLOBAL_MEM_FENCE);
    return v;
}
RK_FN void rk_atomic_store_i32(RK_GLOBAL rk_i32 *p, rk_i32 v, int order, int scope) {
    (void)scope;
    if (order != RK_RELAXED) mem_fence(CLK_GLOBAL_MEM_FENCE);
    *(volatile RK_GLOBAL rk_i32 *)p = v;
    if (order == RK_SEQ_CST) mem_fence(CLK_GLOBAL_MEM_FENCE);
}
RK_FN rk_i32 rk_atomic_fetch_add_i32(RK_GLOBAL rk_i32 *p, rk_i32 v, int order, int scope) {
    (void)order; (void)scope;
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    rk_i32 old = atomic_add((volatile RK_GLOBAL int *)p, v);
    mem_fence(CLK_GLOBAL_MEM_FENCE);
    return old;
}
#endif
RK_FN void rk_cpu_relax(void) {}
#endif

#endif /* RK_ATOMIC_H */
