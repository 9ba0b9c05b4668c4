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

#if defined(RK_TARGET_HOST) || defined(RK_TARGET_CUDA)
/* Host and CUDA: each operation is written once below and dispatches, per compilation pass, to one of
 * two implementations (the cccl way): rk_host_* on the host (the host target, and nvcc's host pass of
 * the CUDA target, whose RK_FN functions are __host__ __device__) and rk_ptx_* in CUDA device code. */
#if defined(__CUDA_ARCH__)
#define RK_ATOMIC_IMPL(op) rk_ptx_##op
#else
#define RK_ATOMIC_IMPL(op) rk_host_##op
#endif

#if !defined(__CUDA_ARCH__)
/* The host: GCC/Clang __atomic builtins, valid in C and C++ and understood by TSan. Scope is ignored (all
 * host threads share one coherent memory). The RK_* order values are the __ATOMIC_* values, asserted. */
#if defined(__cplusplus)
static_assert(RK_ACQUIRE == __ATOMIC_ACQUIRE && RK_RELEASE == __ATOMIC_RELEASE &&
                  RK_SEQ_CST == __ATOMIC_SEQ_CST && RK_RELAXED == __ATOMIC_RELAXED,
              "RK_* memory orders must equal the __ATOMIC_* constants");
#endif
static inline rk_u64 rk_host_load_u64(const rk_u64 *p, int order, int scope) {
    (void)scope;
    return __atomic_load_n(p, order);
}
static inline void rk_host_store_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    (void)scope;
    __atomic_store_n(p, v, order);
}
static inline int rk_host_cas_u64(rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success, int failure,
                                  int scope) {
    (void)scope;
    return __atomic_compare_exchange_n(p, expected, desired, 0, success, failure);
}
static inline rk_u64 rk_host_fetch_add_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    (void)scope;
    return __atomic_fetch_add(p, v, order);
}
static inline rk_i32 rk_host_load_i32(const rk_i32 *p, int order, int scope) {
    (void)scope;
    return __atomic_load_n(p, order);
}
static inline void rk_host_store_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    (void)scope;
    __atomic_store_n(p, v, order);
}
static inline rk_i32 rk_host_fetch_add_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    (void)scope;
    return __atomic_fetch_add(p, v, order);
}
static inline void rk_host_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#else
/* CUDA device code: PTX loads, stores and atomics with explicit semantics and scope (sm_70 and later):
 * .sys for memory the host shares (page-locked, device-mapped host memory), .gpu for device memory.
 * Written in PTX rather than through libcu++'s cuda::atomic_ref so that NVRTC compiles the dialect with
 * no include path at all. */
/* RK_PTX_SCOPED(scope, X, sem): X(sem, "sys") or X(sem, "gpu"). */
#define RK_PTX_SCOPED(scope, X, sem)                                                                   \
    do {                                                                                               \
        if ((scope) == RK_SCOPE_SYSTEM) X(sem, "sys");                                                 \
        else X(sem, "gpu");                                                                            \
    } while (0)
/* A read-modify-write's semantics: the stronger of the success and failure orders. */
#define RK_PTX_RMW(order, scope, X)                                                                    \
    do {                                                                                               \
        if ((order) == RK_SEQ_CST) rk_ptx_fence_sc(scope);                                             \
        if ((order) == RK_RELAXED) RK_PTX_SCOPED(scope, X, "relaxed");                                 \
        else if ((order) == RK_ACQUIRE) RK_PTX_SCOPED(scope, X, "acquire");                            \
        else if ((order) == RK_RELEASE) RK_PTX_SCOPED(scope, X, "release");                            \
        else RK_PTX_SCOPED(scope, X, "acq_rel");                                                       \
    } while (0)

__device__ inline void rk_ptx_fence_sc(int scope) {
    if (scope == RK_SCOPE_SYSTEM) asm volatile("fence.sc.sys;" ::: "memory");
    else asm volatile("fence.sc.gpu;" ::: "memory");
}
/* Loads are relaxed or acquire (seq_cst: a fence.sc first); stores relaxed or release (seq_cst: a
 * fence.sc, then relaxed), the mapping libcu++ uses. */
__device__ inline rk_u64 rk_ptx_load_u64(const rk_u64 *p, int order, int scope) {
    rk_u64 v;
#define RK_PTX_LD64(sem, sc) asm volatile("ld." sem "." sc ".u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory")
    if (order == RK_SEQ_CST) rk_ptx_fence_sc(scope);
    if (order == RK_RELAXED) RK_PTX_SCOPED(scope, RK_PTX_LD64, "relaxed");
    else RK_PTX_SCOPED(scope, RK_PTX_LD64, "acquire");
#undef RK_PTX_LD64
    return v;
}
__device__ inline rk_i32 rk_ptx_load_i32(const rk_i32 *p, int order, int scope) {
    rk_i32 v;
#define RK_PTX_LD32(sem, sc) asm volatile("ld." sem "." sc ".s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory")
    if (order == RK_SEQ_CST) rk_ptx_fence_sc(scope);
    if (order == RK_RELAXED) RK_PTX_SCOPED(scope, RK_PTX_LD32, "relaxed");
    else RK_PTX_SCOPED(scope, RK_PTX_LD32, "acquire");
#undef RK_PTX_LD32
    return v;
}
__device__ inline void rk_ptx_store_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
#define RK_PTX_ST64(sem, sc) asm volatile("st." sem "." sc ".u64 [%0], %1;" ::"l"(p), "l"(v) : "memory")
    if (order == RK_SEQ_CST) rk_ptx_fence_sc(scope);
    if (order == RK_RELAXED || order == RK_SEQ_CST) RK_PTX_SCOPED(scope, RK_PTX_ST64, "relaxed");
    else RK_PTX_SCOPED(scope, RK_PTX_ST64, "release");
#undef RK_PTX_ST64
}
__device__ inline void rk_ptx_store_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
#define RK_PTX_ST32(sem, sc) asm volatile("st." sem "." sc ".s32 [%0], %1;" ::"l"(p), "r"(v) : "memory")
    if (order == RK_SEQ_CST) rk_ptx_fence_sc(scope);
    if (order == RK_RELAXED || order == RK_SEQ_CST) RK_PTX_SCOPED(scope, RK_PTX_ST32, "relaxed");
    else RK_PTX_SCOPED(scope, RK_PTX_ST32, "release");
#undef RK_PTX_ST32
}
__device__ inline int rk_ptx_cas_u64(rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success, int failure,
                                     int scope) {
    const rk_u64 want = *expected;
    rk_u64 old;
    /* The stronger of the two orders: a failure that acquires adds acquire to a relaxed or release success. */
    const bool fail_acquires = failure == RK_ACQUIRE || failure == RK_ACQ_REL || failure == RK_SEQ_CST;
    const int order = success == RK_RELAXED && fail_acquires   ? RK_ACQUIRE
                      : success == RK_RELEASE && fail_acquires ? RK_ACQ_REL
                                                               : success;
#define RK_PTX_CAS(sem, sc)                                                                            \
    asm volatile("atom." sem "." sc ".cas.b64 %0, [%1], %2, %3;"                                       \
                 : "=l"(old)                                                                           \
                 : "l"(p), "l"(want), "l"(desired)                                                     \
                 : "memory")
    RK_PTX_RMW(order, scope, RK_PTX_CAS);
#undef RK_PTX_CAS
    *expected = old;
    return old == want;
}
__device__ inline rk_u64 rk_ptx_fetch_add_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    rk_u64 old;
#define RK_PTX_ADD64(sem, sc)                                                                          \
    asm volatile("atom." sem "." sc ".add.u64 %0, [%1], %2;" : "=l"(old) : "l"(p), "l"(v) : "memory")
    RK_PTX_RMW(order, scope, RK_PTX_ADD64);
#undef RK_PTX_ADD64
    return old;
}
__device__ inline rk_i32 rk_ptx_fetch_add_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    rk_i32 old;
#define RK_PTX_ADD32(sem, sc)                                                                          \
    asm volatile("atom." sem "." sc ".add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory")
    RK_PTX_RMW(order, scope, RK_PTX_ADD32);
#undef RK_PTX_ADD32
    return old;
}
__device__ inline void rk_ptx_relax(void) { __nanosleep(32); }
#endif

/* The operations, once. */
RK_FN rk_u64 rk_atomic_load_u64(const rk_u64 *p, int order, int scope) {
    return RK_ATOMIC_IMPL(load_u64)(p, order, scope);
}
RK_FN void rk_atomic_store_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    RK_ATOMIC_IMPL(store_u64)(p, v, order, scope);
}
/* Strong compare-and-swap; on failure *expected receives the current value. */
RK_FN int rk_atomic_cas_u64(rk_u64 *p, rk_u64 *expected, rk_u64 desired, int success, int failure,
                            int scope) {
    return RK_ATOMIC_IMPL(cas_u64)(p, expected, desired, success, failure, scope);
}
RK_FN rk_u64 rk_atomic_fetch_add_u64(rk_u64 *p, rk_u64 v, int order, int scope) {
    return RK_ATOMIC_IMPL(fetch_add_u64)(p, v, order, scope);
}
RK_FN rk_i32 rk_atomic_load_i32(const rk_i32 *p, int order, int scope) {
    return RK_ATOMIC_IMPL(load_i32)(p, order, scope);
}
RK_FN void rk_atomic_store_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    RK_ATOMIC_IMPL(store_i32)(p, v, order, scope);
}
RK_FN rk_i32 rk_atomic_fetch_add_i32(rk_i32 *p, rk_i32 v, int order, int scope) {
    return RK_ATOMIC_IMPL(fetch_add_i32)(p, v, order, scope);
}
RK_FN void rk_cpu_relax(void) { RK_ATOMIC_IMPL(relax)(); }

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
