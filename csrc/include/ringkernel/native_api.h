/*
 * native_api.h — what a handler compiled outside the library (rk.jit: Numba) calls while it runs on the
 * CPU backend: the handler API of the device dialect (rk_handler.h) without the rk_ctx argument, for
 * code that is not given one. The block being served is the calling thread's (a CPU worker thread serves
 * one block for its life and publishes it when it starts); called from any other thread they answer as
 * documented.
 * Exported with default visibility from the library (and the Python extension that embeds it), so a JIT
 * resolves them by name.
 */
#ifndef RK_NATIVE_API_H
#define RK_NATIVE_API_H

#include "ringkernel/rk_types.h"

#if defined(__cplusplus)
extern "C" {
#endif

#if defined(__GNUC__)
#define RK_NATIVE_EXPORT __attribute__((visibility("default")))
#else
#define RK_NATIVE_EXPORT
#endif

/* This thread within the block, and the block's thread count (0 and 1 outside a compiled handler). */
RK_NATIVE_EXPORT rk_u32 rk_native_thread_rank(void);
RK_NATIVE_EXPORT rk_u32 rk_native_thread_count(void);
/* Send `record` (an output record) on channel `channel` (1..7, the kernel's named channels in launch order;
 * 0 is the default output): the number of rings that took it; RK_ERR_CHANNEL for a channel the kernel
 * does not have (or outside a compiled handler); 0 from threads other than rank 0. */
RK_NATIVE_EXPORT rk_i32 rk_native_emit(rk_u32 channel, const void *record);
/* The memory behind a buffer handle if it holds at least `min_bytes`, else NULL (also outside a handler). */
RK_NATIVE_EXPORT void *rk_native_buffer(rk_u64 handle, rk_u64 min_bytes);
/* The kernel's state record if it has one of at least `min_bytes`, else NULL (also outside a handler). */
RK_NATIVE_EXPORT void *rk_native_state(rk_u64 min_bytes);

#if defined(__cplusplus)
}
#endif

#endif /* RK_NATIVE_API_H */
