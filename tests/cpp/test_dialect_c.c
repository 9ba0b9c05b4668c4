/* The device dialect compiled by the host C compiler (as runtime-compiled handlers will be): the
 * ring protocol must be valid C11 and behave the same as under C++. */
#include <stdlib.h>
#include <string.h>

#include "ringkernel/layout.h"
#include "rk_ring.h"

unsigned rk_c_sizeof_envelope(void) { return (unsigned)sizeof(rk_envelope); }
unsigned rk_c_sizeof_control_block(void) { return (unsigned)sizeof(rk_control_block); }
unsigned rk_c_sizeof_telemetry(void) { return (unsigned)sizeof(rk_telemetry); }
unsigned rk_c_sizeof_ring_header(void) { return (unsigned)sizeof(rk_ring_header); }

/* Fill a 16-slot ring, check it refuses the 17th, drain it in order. 0 on success. */
int rk_c_dialect_roundtrip(void) {
    const rk_u32 cap = 16, stride = rk_ring_slot_stride(8);
    size_t bytes = (size_t)rk_ring_bytes(cap, stride);
    rk_ring_header *r = (rk_ring_header *)aligned_alloc(RK_CACHE_LINE, (bytes + 127) / 128 * 128);
    if (!r) return 1;
    memset(r, 0, bytes);
    rk_ring_init(r, cap, stride, 0);
    rk_envelope env;
    memset(&env, 0, sizeof env);
    env.payload_size = 8;
    int status = 0;
    for (rk_u64 i = 0; i < cap; ++i) {
        env.message_id = i;
        if (!rk_ring_try_push(r, &env, (const rk_u8 *)&i, 0, RK_SCOPE_SYSTEM)) status = 2;
    }
    if (rk_ring_try_push(r, &env, (const rk_u8 *)&env, 0, RK_SCOPE_SYSTEM)) status = 3;
    if (rk_ring_size(r, RK_SCOPE_SYSTEM) != cap) status = 4;
    for (rk_u64 i = 0; i < cap; ++i) {
        rk_envelope out;
        memset(&out, 0, sizeof out);
        rk_u64 value = 0;
        if (!rk_ring_try_pop(r, &out, (rk_u8 *)&value, 8, 1, RK_SCOPE_SYSTEM)) status = 5;
        if (out.message_id != i || value != i) status = 6;
    }
    if (rk_ring_can_acquire(r, RK_SCOPE_SYSTEM)) status = 7;
    free(r);
    return status;
}
