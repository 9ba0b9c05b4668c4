/*
 * rk_kernel.h — the persistent ring-kernel loop and the handler API (DESIGN.md §6), written once in
 * the device dialect: what a handler (rk.Source) or a backend includes. Four parts, one concept each:
 *   rk_handler.h       the handler API, the block context (rk_ctx) and the target hooks
 *   rk_step.h          one step of the persistent loop (RK_DEFINE_BLOCK_STEP), for every target
 *   rk_entry_opencl.h  the OpenCL kernels that run it (persistent, dispatch, copy)
 *   rk_entry_cuda.h    the CUDA kernel that runs it (and the shared-memory sizes its host needs)
 * Under them: rk_ring.h (the ring protocol), rk_atomic.h (atomics per target), rk_target.h (which
 * target), ringkernel/layout.h (the structs host and device share). Built-in handlers: rk_builtins.h.
 */
#ifndef RK_KERNEL_H
#define RK_KERNEL_H

#include "rk_handler.h"
#include "rk_step.h"
#include "rk_entry_opencl.h"
#include "rk_entry_cuda.h"

#endif /* RK_KERNEL_H */
