/*
 * rk_entry_cuda.h — the CUDA kernel that runs the persistent loop (rk_step.h) on a GPU.
 *
 * RK_DEFINE_CUDA_KERNEL(kernel_name, step_name) defines `extern "C" __global__ void kernel_name(params)`,
 * the same loop as the OpenCL one: every block stays resident, idles while the kernel is inactive, runs
 * `step` while it is active, and leaves when told to terminate, each block on its own (no grid-wide
 * barrier a block can miss); the last block out sets has_terminated. Each block counts itself in
 * (blocks_started) as it starts, so the host can tell whether all of them are resident at once.
 * Dynamic shared memory holds the reply buffers (params->run_limit records of out_size bytes, rounded
 * up to 16) followed by RK_SHARED_BYTES for rk_shared; the launch gives rk_cuda_dynamic_smem() bytes.
 * An idle block sleeps (__nanosleep) between polls, doubling from 64 ns up to params->idle_backoff_ns.
 */
#ifndef RK_ENTRY_CUDA_H
#define RK_ENTRY_CUDA_H

#include "rk_step.h"

/* Sizes the host needs to launch the CUDA kernel (defined for every target). */
RK_FN rk_u32 rk_cuda_reply_bytes(rk_u32 out_size, rk_u32 run_limit) { return (out_size * run_limit + 15u) & ~15u; }
RK_FN rk_u32 rk_cuda_dynamic_smem(rk_u32 out_size, rk_u32 run_limit) {
    return rk_cuda_reply_bytes(out_size, run_limit) + RK_SHARED_BYTES;
}

#if defined(RK_TARGET_CUDA)
/* The loop reads is_active (low half) and should_terminate (high half) as one little-endian word. */
RK_STATIC_ASSERT(RK_OFFSETOF(rk_control_block, is_active) == 0 && RK_OFFSETOF(rk_control_block, should_terminate) == 4,
                 control_block_flags_word);

__device__ inline void rk_cuda_ctx_init(rk_ctx *ctx, const rk_kernel_params *p, rk_run_info *run, rk_i32 *status,
                                        rk_i32 *error, rk_u8 *dynamic_smem) {
    const rk_u32 run_limit = p->run_limit < 1u ? 1u : p->run_limit > RK_MAX_RUN ? RK_MAX_RUN : p->run_limit;
    rk_device_ctx_init(ctx, p, blockIdx.x, gridDim.x, threadIdx.x, blockDim.x, run, status, error, dynamic_smem,
                       dynamic_smem + rk_cuda_reply_bytes(p->out_size, run_limit), run_limit);
}

/* The device clock's offset onto the host's wall clock drifts: the host re-measures it and publishes it in
 * the control block, and every thread of a block reloads it as the block goes idle and every 1024 busy
 * steps (one read across PCIe, shared by the warp). */
__device__ inline void rk_cuda_reload_clock(rk_ctx *ctx) {
    ctx->clock_offset = rk_atomic_load_u64(&ctx->cb->clock_offset_ns, RK_RELAXED, RK_SCOPE_SYSTEM);
}

#define RK_DEFINE_CUDA_KERNEL(kernel_name, step_name)                                                     \
    extern "C" __global__ void kernel_name(const rk_kernel_params *params) {                           \
        __shared__ rk_run_info rk_run_;                                                                \
        __shared__ rk_i32 rk_status_[RK_MAX_RUN];                                                      \
        __shared__ rk_i32 rk_error_[RK_MAX_RUN];                                                       \
        __shared__ int rk_mode_;                                                                       \
        extern __shared__ __align__(16) rk_u8 rk_dynamic_[];                                           \
        rk_ctx ctx;                                                                                    \
        rk_cuda_ctx_init(&ctx, params, &rk_run_, rk_status_, rk_error_, rk_dynamic_);                  \
        const rk_u32 longest_sleep = params->idle_backoff_ns;                                          \
        if (threadIdx.x == 0)                                                                          \
            rk_atomic_fetch_add_i32(&ctx.cb->blocks_started, 1, RK_RELEASE, RK_SCOPE_SYSTEM);          \
        rk_u32 idle = 0, busy = 0;                                                                     \
        for (;;) {                                                                                     \
            if (threadIdx.x == 0) {                                                                    \
                /* is_active and should_terminate share one 8-byte word: one read across PCIe. */      \
                const rk_u64 flags = rk_atomic_load_u64((const rk_u64 *)&ctx.cb->is_active, RK_ACQUIRE,   \
                                                        RK_SCOPE_SYSTEM);                              \
                rk_mode_ = (rk_u32)(flags >> 32) != 0u ? 2 : rk_note_active(&ctx, (rk_u32)flags != 0u); \
            }                                                                                          \
            __syncthreads();                                                                           \
            const int m = rk_mode_;                                                                    \
            __syncthreads();                                                                           \
            if (m == 2) break;                                                                         \
            if (m == 1 && step_name(&ctx) != RK_STEP_IDLE) {                                           \
                idle = 0;                                                                              \
                if ((++busy & 1023u) == 0u) rk_cuda_reload_clock(&ctx);                                \
                continue;                                                                              \
            }                                                                                          \
            if (idle == 0) {                                                                           \
                rk_cuda_reload_clock(&ctx);                                                            \
                if (threadIdx.x == 0) rk_block_refresh(&ctx);                                          \
            }                                                                                          \
            rk_u32 sleep = 64u << (idle < 14u ? idle : 14u); /* up to ~1 ms, then the bound */      \
            if (sleep > longest_sleep) sleep = longest_sleep;                                          \
            if (sleep != 0) __nanosleep(sleep);                                                        \
            ++idle;                                                                                    \
        }                                                                                              \
        if (threadIdx.x == 0 &&                                                                        \
            rk_atomic_fetch_add_i32(&ctx.cb->blocks_exited, 1, RK_ACQ_REL, RK_SCOPE_SYSTEM) + 1 ==      \
                (rk_i32)ctx.grid)                                                                      \
            rk_atomic_store_i32(&ctx.cb->has_terminated, 1, RK_RELEASE, RK_SCOPE_SYSTEM);               \
    }
#endif

#endif /* RK_ENTRY_CUDA_H */
