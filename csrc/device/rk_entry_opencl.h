/*
 * rk_entry_opencl.h — the OpenCL kernels that run the persistent loop (rk_step.h) on a device.
 *
 * RK_DEFINE_OPENCL_KERNEL(name, step, out_bytes, run_limit) defines `__kernel void name(params)`: every
 * block (work-group) stays resident, idles while the kernel is inactive, runs `step` while it is
 * active, and leaves when told to terminate -- each block on its own, so there is no grid-wide
 * barrier a block can miss. The last block out sets has_terminated. out_bytes and run_limit size
 * the block's reply buffers in local memory (compile-time constants in OpenCL C). The dispatch-mode
 * kernels (RK_DEFINE_OPENCL_DISPATCH_KERNEL, RK_DEFINE_OPENCL_COPY_KERNEL) run while there is work and
 * return. Empty under every other target.
 */
#ifndef RK_ENTRY_OPENCL_H
#define RK_ENTRY_OPENCL_H

#include "rk_step.h"

#if defined(RK_TARGET_OPENCL)
/* A block's local memory (run bookkeeping, reply buffers, rk_shared) and its context. */
#define RK_OPENCL_BLOCK_SETUP(ctx, out_bytes, run_limit)                                                 \
    __local rk_run_info rk_run_;                                                                       \
    __local rk_i32 rk_status_[RK_MAX_RUN];                                                             \
    __local rk_i32 rk_error_[RK_MAX_RUN];                                                              \
    __local rk_u64 rk_out_[((out_bytes) * (run_limit) + 7) / 8];                                       \
    __local rk_u64 rk_shared_[RK_SHARED_BYTES / 8];                                                    \
    rk_ctx ctx;                                                                                        \
    rk_device_ctx_init(&ctx, params, (rk_u32)get_group_id(0), (rk_u32)get_num_groups(0), (rk_u32)get_local_id(0), \
                       (rk_u32)get_local_size(0), &rk_run_, rk_status_, rk_error_, rk_out_, rk_shared_, (run_limit));

#define RK_DEFINE_OPENCL_KERNEL(kernel_name, step_name, out_bytes, run_limit)                             \
    __kernel void kernel_name(__global const rk_kernel_params *params) {                             \
        RK_OPENCL_BLOCK_SETUP(ctx, out_bytes, run_limit)                                               \
        __local int mode;                                                                              \
        for (;;) {                                                                                     \
            if (ctx.thread_rank == 0)                                                                  \
                mode = rk_should_terminate(&ctx) ? 2                                                   \
                       : rk_note_active(&ctx, rk_atomic_load_i32(&ctx.cb->is_active, RK_ACQUIRE,       \
                                                                 RK_SCOPE_SYSTEM) != 0);               \
            barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);                                       \
            int m = mode;                                                                              \
            barrier(CLK_LOCAL_MEM_FENCE);                                                              \
            if (m == 2) break;                                                                         \
            if (m == 0 || step_name(&ctx) == RK_STEP_IDLE)                                             \
                for (int spin = 0; spin < 64; ++spin) rk_cpu_relax();                                  \
        }                                                                                              \
        if (ctx.thread_rank == 0 &&                                                                    \
            rk_atomic_fetch_add_i32(&ctx.cb->blocks_exited, 1, RK_ACQ_REL, RK_SCOPE_SYSTEM) + 1 ==      \
                (rk_i32)ctx.grid)                                                                      \
            rk_atomic_store_i32(&ctx.cb->has_terminated, 1, RK_RELEASE, RK_SCOPE_SYSTEM);               \
    }

/* Free slots in the fullest ring the kernel's channels feed (a hint: other producers may share one). */
RK_FN rk_u32 rk_output_space(rk_ctx *ctx) {
    RK_GLOBAL rk_routes *routes = rk_current_routes(ctx);
    rk_u64 space = RK_MAX_RUN;
    for (rk_u32 c = 0; c < routes->n_channels; ++c)
        for (rk_u32 i = 0; i < routes->channels[c].count; ++i) {
            RK_GLOBAL rk_ring_header *r = routes->channels[c].targets[i].ring;
            rk_u64 used = rk_ring_size(r, RK_SCOPE_SYSTEM);
            rk_u64 free_slots = used >= r->capacity ? 0 : r->capacity - used;
            if (free_slots < space) space = free_slots;
        }
    return (rk_u32)space;
}

/* Dispatch mode's kernel: every block handles runs while messages wait, the kernel is active and its
 * outputs have room for a whole run (so a launch never waits on a consumer that may need the very
 * compute unit it holds), then returns; the host launches it again when that changes. */
#define RK_DEFINE_OPENCL_DISPATCH_KERNEL(kernel_name, step_name, out_bytes, run_limit)                    \
    __kernel void kernel_name(__global const rk_kernel_params *params) {                             \
        RK_OPENCL_BLOCK_SETUP(ctx, out_bytes, run_limit)                                               \
        __local int go;                                                                                \
        for (;;) {                                                                                     \
            if (ctx.thread_rank == 0) {                                                                \
                rk_u32 space = rk_output_space(&ctx);                                                  \
                ctx.max_run = space < (run_limit) ? space : (run_limit);                               \
                go = !rk_should_terminate(&ctx) && space > 0 &&                                        \
                     rk_atomic_load_i32(&ctx.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;          \
            }                                                                                          \
            barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);                                       \
            int g = go;                                                                                \
            barrier(CLK_LOCAL_MEM_FENCE);                                                              \
            if (!g || step_name(&ctx) == RK_STEP_IDLE) break;                                          \
        }                                                                                              \
    }

/* Dispatch mode on a device that cannot share memory with the host while a kernel runs: the host
 * copies a batch of requests into `in` (a ring in device memory), the control block and telemetry into
 * `cb` and `tel`, the live buffers into `arena` (with the buffer table, each entry's `reserved` its
 * offset there), launches this kernel, and copies the replies (`out`), the failed requests (`dead`), the
 * counters and the buffers back. The routes live in device memory too (`routes`, written here). */
#define RK_DEFINE_OPENCL_COPY_KERNEL(kernel_name, step_name, out_bytes, run_limit)                        \
    __kernel void kernel_name(__global const rk_kernel_params *params, __global rk_control_block *cb,   \
                              __global rk_telemetry *tel, __global rk_routes *routes,                  \
                              __global rk_u64 *routes_word, __global rk_ring_header *in,               \
                              __global rk_ring_header *out, __global rk_buffer_table *buffers,         \
                              __global rk_u8 *arena, __global rk_ring_header *dead) {                  \
        RK_OPENCL_BLOCK_SETUP(ctx, out_bytes, run_limit)                                               \
        ctx.cb = cb;                                                                                   \
        ctx.dead_letters = dead;                                                                       \
        ctx.tel = tel;                                                                                 \
        ctx.routes = routes_word;                                                                      \
        ctx.buffers = buffers;                                                                         \
        ctx.max_run = (run_limit);                                                                     \
        if (ctx.thread_rank == 0) { /* every block writes the same values: no grid-wide barrier */     \
            /* The host sent the buffer table with arena offsets: make them device addresses. */       \
            buffers->entries = (__global rk_buffer_entry *)(buffers + 1);                              \
            for (rk_u32 b = 0; b < buffers->capacity; ++b)                                             \
                if (buffers->entries[b].live)                                                          \
                    buffers->entries[b].address = (rk_u64)(rk_uptr)(arena + buffers->entries[b].reserved); \
            routes->n_inputs = 1;                                                                      \
            routes->inputs[0].ring = in;                                                               \
            routes->inputs[0].cookie = 0;                                                              \
            routes->n_channels = 1;                                                                    \
            routes->channels[0].count = 1;                                                             \
            routes->channels[0].targets[0].ring = out;                                                 \
            routes->channels[0].targets[0].cookie = 0;                                                 \
            *routes_word = (rk_u64)(rk_uptr)routes;                                                    \
        }                                                                                              \
        barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);                                           \
        while (step_name(&ctx) != RK_STEP_IDLE) {                                                      \
        }                                                                                              \
    }
#endif

#endif /* RK_ENTRY_OPENCL_H */
