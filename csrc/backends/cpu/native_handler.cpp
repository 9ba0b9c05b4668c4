// native_handler.cpp — compiled handlers on the CPU backend: their block step, and the rk_native_* entry
// points (ringkernel/native_api.h) they call, answered from the block the calling worker is serving.
#include "native_handler.hpp"

#include <string>

#include "../../core/kernel_core.hpp"
#include "ringkernel/native_api.h"
#include "ringkernel/runtime.hpp"

namespace rk {
namespace {

thread_local rk_ctx *t_ctx = nullptr;  // the block this worker thread serves (a worker serves one block)

int native_trampoline(rk_ctx *ctx, const void *in, void *out) {
    const auto fn = reinterpret_cast<NativeHandlerFn>(ctx->handler_data);
    const int rc = fn(ctx, in, out);
    if (rc == RK_ERR_HOST) {
        // The compiled code caught an exception its handler raised (Numba keeps no text for it).
        auto *core = static_cast<KernelCore *>(static_cast<void **>(ctx->host)[0]);
        core->set_last_error_message("compiled handler '" + core->spec.handler.name +
                                     "' raised an exception (the message failed; the kernel goes on)");
    }
    return rc;
}

RK_DEFINE_BLOCK_STEP(step_native, native_trampoline)

}  // namespace

int native_handler_step(rk_ctx *ctx) { return step_native(ctx); }

void native_handler_serve(rk_ctx *ctx) noexcept { t_ctx = ctx; }

}  // namespace rk

extern "C" {

rk_u32 rk_native_thread_rank(void) { return rk::t_ctx ? rk::t_ctx->thread_rank : 0u; }

rk_u32 rk_native_thread_count(void) { return rk::t_ctx ? rk::t_ctx->thread_count : 1u; }

rk_i32 rk_native_emit(rk_u32 channel, const void *record) {
    if (!rk::t_ctx) return RK_ERR_CHANNEL;
    if (channel == 0) {
        if (rk::t_ctx->thread_rank != 0) return 0;
        return rk_deliver(rk::t_ctx, 0, record);
    }
    return rk_emit(rk::t_ctx, channel, record);
}

void *rk_native_buffer(rk_u64 handle, rk_u64 min_bytes) {
    return rk::t_ctx ? rk_buffer(rk::t_ctx, handle, min_bytes) : nullptr;
}

void *rk_native_state(rk_u64 min_bytes) {
    if (!rk::t_ctx || !rk::t_ctx->state || rk::t_ctx->state_size < min_bytes) return nullptr;
    return rk::t_ctx->state;
}

}  // extern "C"
