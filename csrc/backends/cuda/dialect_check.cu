// dialect_check.cu — compiles the device dialect (layout, atomics, ring protocol) under nvcc for
// every target architecture, so a CUDA compile error in csrc/device/ fails the build. The kernels
// are real users of the protocol (one block moves messages from one ring to another, in device
// and in system scope); the CUDA backend launches its own persistent loop built on the same code.
#include "ringkernel/layout.h"
#include "rk_builtins.h"
#include "rk_ring.h"

namespace {

template <int Scope>
__global__ void rk_dialect_forward(rk_ring_header *in, rk_ring_header *out, rk_u32 max_messages) {
    if (threadIdx.x != 0) return;
    for (rk_u32 moved = 0; moved < max_messages;) {
        rk_u64 pos;
        rk_envelope *src = rk_ring_acquire(in, &pos, 0, Scope);
        if (src == nullptr) break;
        rk_u64 out_pos;
        rk_envelope *dst = rk_ring_claim(out, &out_pos, 0, Scope);
        if (dst == nullptr) {
            rk_ring_release(in, src, pos, Scope);
            break;
        }
        rk_envelope_copy(dst, src);
        rk_copy_bytes(rk_envelope_payload(dst), rk_envelope_payload(src), src->payload_size);
        rk_ring_publish(dst, out_pos, Scope);
        rk_ring_release(in, src, pos, Scope);
        ++moved;
    }
}

__global__ void rk_dialect_batch(rk_ring_header *r, rk_u32 n) {
    rk_u64 first;
    rk_u32 k = rk_ring_claim_n(r, n, &first, 1, RK_SCOPE_DEVICE);
    for (rk_u32 i = 0; i < k; ++i) rk_ring_publish(rk_ring_slot(r, first + i), first + i, RK_SCOPE_DEVICE);
    k = rk_ring_acquire_n(r, n, &first, 1, RK_SCOPE_DEVICE);
    for (rk_u32 i = 0; i < k; ++i) rk_ring_release(r, rk_ring_slot(r, first + i), first + i, RK_SCOPE_DEVICE);
    rk_cpu_relax();
}

// The persistent loop's block step with the built-in handlers: thread 0 takes and finishes runs, every
// thread runs the handler, the block syncs between (compile check; the CUDA backend launches it).
RK_DEFINE_BLOCK_STEP(rk_cuda_step_echo, rk_builtin_echo)
RK_DEFINE_BLOCK_STEP(rk_cuda_step_vector_add, rk_builtin_vector_add)

__global__ void rk_dialect_steps(const rk_kernel_params *p) {
    __shared__ rk_run_info run;
    __shared__ rk_i32 status[RK_MAX_RUN];
    __shared__ rk_i32 error[RK_MAX_RUN];
    __shared__ rk_u64 out[RK_MAX_RUN * sizeof(rk_vector_add_response) / 8];
    __shared__ rk_u64 shared[RK_SHARED_BYTES / 8];
    rk_ctx ctx{};
    ctx.cb = reinterpret_cast<rk_control_block *>(p->control_block);
    ctx.tel = reinterpret_cast<rk_telemetry *>(p->telemetry);
    ctx.routes = reinterpret_cast<rk_u64 *>(p->routes_word);
    ctx.thread_rank = threadIdx.x;
    ctx.thread_count = blockDim.x;
    ctx.grid = gridDim.x;
    ctx.in_size = p->in_size;
    ctx.out_size = p->out_size;
    ctx.max_run = ctx.run_limit = RK_MAX_RUN;
    ctx.run = &run;
    ctx.run_status = status;
    ctx.run_error = error;
    ctx.out = out;
    ctx.shared = shared;
    rk_cuda_step_echo(&ctx);
    rk_cuda_step_vector_add(&ctx);
}

}  // namespace

// Referenced so the kernels are instantiated and compiled for each architecture.
void *rk_cuda_dialect_kernels[] = {
    reinterpret_cast<void *>(&rk_dialect_forward<RK_SCOPE_SYSTEM>),
    reinterpret_cast<void *>(&rk_dialect_forward<RK_SCOPE_DEVICE>),
    reinterpret_cast<void *>(&rk_dialect_batch),
    reinterpret_cast<void *>(&rk_dialect_steps),
};
