// native_handler.hpp — internal: compiled handlers (Handler::Kind::Native, e.g. rk.jit from Python) on the
// CPU backend, and the C entry points their code calls back into (ringkernel/native_api.h).
#pragma once

#include "rk_kernel.h"

namespace rk {

// The block step of a compiled handler: ctx->handler_data is its NativeHandlerFn. Each call runs with the
// block's context published to the rk_native_* entry points (a thread-local of the worker).
int native_handler_step(rk_ctx *ctx);

}  // namespace rk
