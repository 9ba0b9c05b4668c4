// native_handler.hpp — internal: compiled handlers (Handler::Kind::Native, e.g. rk.jit from Python) on the
// CPU backend, and the C entry points their code calls back into (ringkernel/native_api.h).
#pragma once

#include "rk_kernel.h"

namespace rk {

// The block step of a compiled handler: ctx->handler_data is its NativeHandlerFn.
int native_handler_step(rk_ctx *ctx);

// Publish the block this worker thread serves to the rk_native_* entry points (nullptr: none). A worker
// serves one block for its whole life, so this is set once, not per message.
void native_handler_serve(rk_ctx *ctx) noexcept;

}  // namespace rk
