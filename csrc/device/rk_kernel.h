/*
 * rk_kernel.h — the persistent ring-kernel loop and the handler API (DESIGN.md §6), written once in
 * the device dialect.
 *
 * A handler is a function
 *
 *     int my_handler(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out);
 *
 * called by every thread of a block for each message the block takes. `in` points at the request
 * payload (in place, in the input ring), `out` at the block's reply buffer (zeroed, the size of the
 * kernel's output record). It returns RK_REPLY (send `out` on the default output), RK_NO_REPLY, or a
 * negative error code (any negative value; the loop's own bookkeeping never takes one for something else),
 * which the loop records (control block errors_encountered and last_error,
 * telemetry error_code) before it goes on serving. The block's result is thread 0's return value,
 * unless a thread returned an error. Inside a handler:
 *
 *     rk_thread_rank(ctx), rk_thread_count(ctx)   this thread within the block
 *     rk_barrier(ctx)                             every thread of the block reaches it first
 *     rk_shared(ctx)                              RK_SHARED_BYTES of memory shared by the block
 *     rk_buffer(ctx, handle, min_bytes)           the memory behind a buffer handle, or RK_NULL
 *     rk_request(ctx)                             the request's envelope
 *     rk_emit(ctx, channel, payload)              send a record on a named output channel (1..7)
 *
 * One iteration of the persistent loop is rk_block_step(): take one message from the inputs (round
 * robin over the kernel's input rings), drop it if its TTL has passed, advance the kernel's HLC past
 * the request's stamp (so causal order holds along a pipeline), run the handler on the block's
 * threads, deliver the reply to every ring of the default channel, release the input slot, update
 * the control block and, when enabled, the telemetry. RK_DEFINE_BLOCK_STEP(name, handler) makes
 * one for a given handler; each backend wraps it in its own outer loop (idle back-off, terminate).
 */
#ifndef RK_KERNEL_H
#define RK_KERNEL_H

#include "rk_ring.h"

#define RK_KERNEL_ABI 1

/* Handler results. */
#define RK_REPLY 1
#define RK_NO_REPLY 0
#define RK_ERR_HANDLER (-1)   /* the handler reported a failure */
#define RK_ERR_BUFFER (-2)    /* a buffer handle did not resolve, or its buffer is too small */
#define RK_ERR_INPUT (-3)     /* the request is malformed (e.g. length out of range) */
#define RK_ERR_HOST (-4)      /* a host (Python) handler raised */
#define RK_ERR_CHANNEL (-5)   /* rk_emit on a channel the kernel does not have */
#define RK_ERR_OPERATION (-6) /* an operation code the handler does not know */
#define RK_ERR_LAUNCH (-7)    /* the backend could not launch the kernel (see the kernel's error message) */
#define RK_ERR_RETURN (-8)    /* the handler returned a positive value other than RK_REPLY */
#define RK_ERR_FAULT (-9)     /* a block faulted (a signal in a native handler, a device fault): FAULTED */

/* One step's outcome. */
#define RK_STEP_IDLE 0    /* nothing to take */
#define RK_STEP_DONE 1    /* one message handled */
#define RK_STEP_EXPIRED 2 /* one message dropped by its TTL */

#define RK_SHARED_BYTES 16384u
#define RK_MAX_RUN 32 /* messages a block takes at once, at most */

/* Backpressure of the kernel's outputs (values of rk::Backpressure). */
#define RK_BP_BLOCK 0
#define RK_BP_REJECT 1
#define RK_BP_DROP_OLDEST 2
#define RK_BP_DROP_NEW 3

/* Host events a step reports (rk_ctx.event): who to wake, what to account. */
#define RK_EVENT_DATA 1    /* a message was published into the ring of `cookie` */
#define RK_EVENT_SPACE 2   /* a slot of the input ring of `cookie` was released */
#define RK_EVENT_EVICTED 4 /* n messages of the output ring of `cookie` were evicted (its senders may go on) */
/* What a kernel drops is counted in the ring header (expired, rejected, dropped_new, evicted) on every
 * target, where the host queue reads it: a device kernel cannot call into the host. */

/* rk_route, rk_channel, rk_routes, rk_buffer_entry, rk_buffer_table and rk_kernel_params, shared by the host
 * and every device target, are in ringkernel/layout.h. */

/* An input ring as a block sees it: the ring, the host's name for it, and its geometry (read-only after
 * initialisation), so that taking a run reads the ring's cursor and turn counters and nothing else. */
typedef struct rk_input_view {
    RK_GLOBAL rk_ring_header *ring;
    rk_u64 cookie;
    rk_u32 mask, stride, capacity;
    rk_i32 scope;                        /* RK_SCOPE_* of the ring's atomics */
} rk_input_view;

/* The run a block is working on, shared by its threads (block-local memory on devices), and the block's
 * view of its inputs, copied from the routes table at address `routes`. A table is never edited in place
 * and never freed (so never reused) while the kernel runs: the address alone says whether the copy is
 * current, and a block rereads only that word of the routes while they stay the same. */
typedef struct rk_run_info {
    RK_GLOBAL rk_ring_header *ring;      /* the input ring it was taken from */
    rk_u64 first;                        /* position of its first message */
    rk_u64 cookie;                       /* the host's name for that ring */
    rk_u32 n;                            /* messages in the run (0: nothing was waiting) */
    rk_u32 input;                        /* index of the input */
    rk_u32 mask, stride, capacity;       /* that ring's geometry */
    rk_i32 scope;
    rk_u64 routes;                       /* the routes table `inputs` was copied from (0: none yet) */
    rk_u32 n_inputs, reserved;
    rk_input_view inputs[RK_MAX_INPUTS];
} rk_run_info;

typedef struct rk_ctx rk_ctx;
#if defined(RK_TARGET_HOST)
typedef int (*rk_handler_fn)(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out);
#endif

/* A block's view of its kernel. The first part is shared by every thread of the block; rank and
 * the current message change per thread and per message. */
struct rk_ctx {
    RK_GLOBAL rk_control_block *cb;
    RK_GLOBAL rk_telemetry *tel;
    RK_GLOBAL rk_u64 *routes;            /* address of the current rk_routes (swapped atomically) */
    RK_GLOBAL rk_buffer_table *buffers;
    rk_u32 block_index, grid;
    rk_u32 thread_rank, thread_count;
    rk_u32 in_size, out_size;            /* record sizes of the input and output types */
    rk_u16 out_type;
    rk_u16 node;
    rk_u32 single_consumer;              /* 1 when this block is the inputs' only consumer */
    rk_u32 next_input;                   /* round-robin cursor over the inputs */
    rk_u32 backpressure;                 /* RK_BP_* for the kernel's outputs */
    rk_u64 ttl_ns;                       /* 0 = off */
    rk_u64 reply_id_base;
    RK_GLOBAL const rk_envelope *request; /* the message being handled */
    rk_u64 stamp;                        /* the HLC stamp of its receipt */
    rk_u64 recent_ns;                    /* the block's last clock reading */
    rk_u64 run_started_ns;               /* when the current run began */
    rk_u32 max_run;                      /* length of the next run (adapted to the handler) */
    rk_u32 run_limit;                    /* at most this many (the reply buffers' size) */
    rk_u32 reply_mask;                   /* thread 0: bit j set when message j of the run answered RK_REPLY */
    /* Block-shared state (block-local memory on devices): */
    RK_LOCAL rk_run_info *run;           /* the current run */
    RK_LOCAL rk_i32 *run_status;         /* thread 0's handler result per message of the run */
    RK_LOCAL rk_i32 *run_error;          /* the lowest error any thread returned (0: none) */
    RK_LOCAL void *out;                  /* the block's reply buffers (run_limit * out_size bytes) */
    RK_LOCAL void *shared;               /* RK_SHARED_BYTES per block */
    rk_u32 uses_barrier;                 /* the handler calls rk_barrier: threads need their own stacks */
    rk_u64 clock_offset;                 /* CUDA: added to %globaltimer to give wall-clock ns (the host keeps
                                            the control block's clock_offset_ns current; blocks reload it) */
#if defined(RK_TARGET_HOST)
    /* Host services: the CPU backend emulates the block's threads and wakes waiting host threads. */
    void *host;                          /* the backend's per-block state */
    void *handler_data;                  /* a host handler's object */
    rk_handler_fn handler;               /* the handler run_threads runs */
    int (*run_threads)(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out);
    void (*barrier)(rk_ctx *ctx);
    void (*backoff)(rk_ctx *ctx, rk_u32 attempt);
    void (*event)(rk_ctx *ctx, int kind, rk_u64 cookie, rk_u32 n);
    rk_u64 (*now_ns)(void);
#endif
};

/* ---- target hooks ------------------------------------------------------------------------------------
 *   rk_now_ns(ctx)          wall-clock ns since the epoch (devices without a wall clock read the one the
 *                           host publishes in the control block)
 *   rk_backoff(ctx, n)      wait a little before retry n (a full ring)
 *   rk_event(ctx, ...)      tell the host what a step did (wake-ups); on devices the host bridge polls
 *                           ring progress for the wake-ups instead. What a kernel drops is counted in
 *                           the ring headers on every target (see layout.h), where the host queue
 *                           adds it to its counts, and in the kernel's messages_dropped
 *   rk_block_sync(ctx)      all threads of the block meet (between the block-level parts of a step; the
 *                           host runs those on one thread and emulates threads inside handlers only)
 *   rk_barrier(ctx)         the same, for handlers
 */
#if defined(RK_TARGET_HOST)
RK_FN rk_u64 rk_now_ns(rk_ctx *ctx) { return ctx->recent_ns = ctx->now_ns(); }
RK_FN void rk_backoff(rk_ctx *ctx, rk_u32 attempt) { ctx->backoff(ctx, attempt); }
RK_FN void rk_event(rk_ctx *ctx, int kind, rk_u64 cookie, rk_u32 n) { ctx->event(ctx, kind, cookie, n); }
RK_FN void rk_block_sync(rk_ctx *ctx) { (void)ctx; }
RK_FN void rk_barrier(rk_ctx *ctx) {
    if (ctx->thread_count > 1) ctx->barrier(ctx);
}
#else
#if defined(RK_TARGET_CUDA)
/* %globaltimer: the GPU's nanosecond clock, moved onto the host's wall clock by the offset the
 * backend measured when it opened the device. */
RK_FN rk_u64 rk_device_clock(void) {
#if defined(__CUDA_ARCH__)
    rk_u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#else
    return 0;
#endif
}
RK_FN rk_u64 rk_now_ns(rk_ctx *ctx) { return ctx->recent_ns = rk_device_clock() + ctx->clock_offset; }
RK_FN void rk_backoff(rk_ctx *ctx, rk_u32 attempt) {
    (void)ctx;
#if defined(__CUDA_ARCH__)
    __nanosleep(attempt < 6 ? 32u << attempt : 2048u);
#else
    (void)attempt;
#endif
}
#else
RK_FN rk_u64 rk_now_ns(rk_ctx *ctx) {
    return ctx->recent_ns = rk_atomic_load_u64(&ctx->cb->clock_ns, RK_RELAXED, RK_SCOPE_SYSTEM);
}
RK_FN void rk_backoff(rk_ctx *ctx, rk_u32 attempt) {
    (void)ctx;
    (void)attempt;
    rk_cpu_relax();
}
#endif
RK_FN void rk_event(rk_ctx *ctx, int kind, rk_u64 cookie, rk_u32 n) {
    (void)ctx;
    (void)kind;
    (void)cookie;
    (void)n;
}
#if defined(RK_TARGET_OPENCL)
RK_FN void rk_block_sync(rk_ctx *ctx) {
    (void)ctx;
    barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE);
}
#else
RK_FN void rk_block_sync(rk_ctx *ctx) {
    (void)ctx;
#if defined(__CUDA_ARCH__)
    __syncthreads();
#endif
}
#endif
RK_FN void rk_barrier(rk_ctx *ctx) { rk_block_sync(ctx); }
#endif

/* The scope of a ring's atomics: device scope for a ring in device memory between kernels of one device
 * (CUDA), system scope for everything the host shares. Only CUDA has device-local rings. */
#if defined(RK_TARGET_CUDA)
RK_FN int rk_ring_scope(RK_GLOBAL const rk_ring_header *r) {
    return (r->flags & RK_RING_FLAG_DEVICE_LOCAL) != 0u ? RK_SCOPE_DEVICE : RK_SCOPE_SYSTEM;
}
#else
RK_FN int rk_ring_scope(RK_GLOBAL const rk_ring_header *r) {
    (void)r;
    return RK_SCOPE_SYSTEM;
}
#endif

/* The kernel's HLC: one packed u64 advanced by rk_hlc_next (layout.h), the host clock's rule, so stamps are strictly increasing and always after the stamp they answer. */
RK_FN rk_u64 rk_hlc_advance(RK_GLOBAL rk_u64 *state, rk_u64 remote, rk_u64 now_ms) {
    rk_u64 cur = rk_atomic_load_u64(state, RK_RELAXED, RK_SCOPE_SYSTEM);
    for (;;) {
        const rk_u64 next = rk_hlc_next(cur, remote + 1u, now_ms);
        if (rk_atomic_cas_u64(state, &cur, next, RK_ACQ_REL, RK_RELAXED, RK_SCOPE_SYSTEM)) return next;
    }
}

RK_FN void rk_atomic_max_u64(RK_GLOBAL rk_u64 *p, rk_u64 v) {
    rk_u64 cur = rk_atomic_load_u64(p, RK_RELAXED, RK_SCOPE_SYSTEM);
    while (v > cur && !rk_atomic_cas_u64(p, &cur, v, RK_RELAXED, RK_RELAXED, RK_SCOPE_SYSTEM)) {
    }
}

/* Minimum where 0 means "no sample yet". */
RK_FN void rk_atomic_min_nonzero_u64(RK_GLOBAL rk_u64 *p, rk_u64 v) {
    rk_u64 cur = rk_atomic_load_u64(p, RK_RELAXED, RK_SCOPE_SYSTEM);
    while ((cur == 0 || v < cur) && !rk_atomic_cas_u64(p, &cur, v, RK_RELAXED, RK_RELAXED, RK_SCOPE_SYSTEM)) {
    }
}

/* Refresh the block's clock reading and the control block's activity time (the backend calls this when
 * the block goes idle and after each run of messages). */
RK_FN void rk_block_refresh(rk_ctx *ctx) {
    rk_atomic_store_u64((RK_GLOBAL rk_u64 *)&ctx->cb->last_activity_ns, rk_now_ns(ctx), RK_RELAXED, RK_SCOPE_SYSTEM);
}

/* ---- the handler API ------------------------------------------------------------------------------- */
RK_FN rk_u32 rk_thread_rank(const rk_ctx *ctx) { return ctx->thread_rank; }
RK_FN rk_u32 rk_thread_count(const rk_ctx *ctx) { return ctx->thread_count; }
RK_FN RK_LOCAL void *rk_shared(const rk_ctx *ctx) { return ctx->shared; }
RK_FN RK_GLOBAL const rk_envelope *rk_request(const rk_ctx *ctx) { return ctx->request; }

RK_FN RK_GLOBAL void *rk_buffer(const rk_ctx *ctx, rk_u64 handle, rk_u64 min_bytes) {
    rk_u64 index = handle & 0xFFFFFFFFu;
    if (ctx->buffers == RK_NULL || index == 0 || index > ctx->buffers->capacity) return RK_NULL;
    RK_GLOBAL rk_buffer_entry *e = &ctx->buffers->entries[index - 1u];
    if (rk_atomic_load_i32((RK_GLOBAL const rk_i32 *)&e->live, RK_ACQUIRE, RK_SCOPE_SYSTEM) == 0) return RK_NULL;
    if (e->generation != (rk_u32)(handle >> 32) || e->bytes < min_bytes) return RK_NULL;
    return (RK_GLOBAL void *)(rk_uptr)e->address;
}

RK_FN RK_GLOBAL rk_routes *rk_current_routes(const rk_ctx *ctx) {
    return (RK_GLOBAL rk_routes *)(rk_uptr)rk_atomic_load_u64(ctx->routes, RK_ACQUIRE, RK_SCOPE_SYSTEM);
}

RK_FN void rk_count_dropped(rk_ctx *ctx, rk_u64 n) {
    rk_atomic_fetch_add_u64(&ctx->cb->messages_dropped, n, RK_RELAXED, RK_SCOPE_SYSTEM);
    if (rk_atomic_load_i32(&ctx->cb->telemetry_enabled, RK_RELAXED, RK_SCOPE_SYSTEM))
        rk_atomic_fetch_add_u64(&ctx->tel->messages_dropped, n, RK_RELAXED, RK_SCOPE_SYSTEM);
}

RK_FN int rk_should_terminate(const rk_ctx *ctx) {
    return rk_atomic_load_i32(&ctx->cb->should_terminate, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;
}

/* Push one record whose envelope is in private memory and whose payload is in block-local memory
 * (where replies are built on devices). 1 when it entered the ring, 0 when full or too large. */
RK_FN int rk_ring_push_local(RK_GLOBAL rk_ring_header *r, const rk_envelope *env, RK_LOCAL const rk_u8 *payload,
                             int scope) {
    if (env->payload_size > r->max_payload) return 0;
    rk_u64 pos;
    RK_GLOBAL rk_envelope *slot = rk_ring_claim(r, &pos, 0, scope);
    if (slot == RK_NULL) return 0;
    RK_GLOBAL rk_u8 *dst = rk_envelope_payload(slot);
#if defined(RK_TARGET_HOST)
    __builtin_memcpy(slot, env, RK_ENVELOPE_MESSAGE_BYTES);
    __builtin_memcpy(dst, payload, env->payload_size);
#else
    slot->message_id = env->message_id;
    slot->correlation_id = env->correlation_id;
    slot->timestamp = env->timestamp;
    slot->enqueue_ns = env->enqueue_ns;
    slot->payload_size = env->payload_size;
    slot->type_id = env->type_id;
    slot->source_kernel = env->source_kernel;
    slot->priority = env->priority;
    slot->flags = env->flags;
    slot->reserved0 = 0;
    slot->reserved1 = 0;
    slot->reserved2 = 0;
    rk_copy_from_local(dst, payload, env->payload_size);
#endif
    rk_ring_publish(slot, pos, scope);
    return 1;
}

/* Whether `ring` is still a target of `channel` in the kernel's current routes (the host removes the
 * rings of a kernel that terminates; a reply waiting for space in one must then give up). */
RK_FN int rk_route_live(const rk_ctx *ctx, rk_u32 channel, RK_GLOBAL rk_ring_header *ring) {
    RK_GLOBAL rk_routes *routes = rk_current_routes(ctx);
    if (channel >= routes->n_channels) return 0;
    for (rk_u32 i = 0; i < routes->channels[channel].count; ++i)
        if (routes->channels[channel].targets[i].ring == ring) return 1;
    return 0;
}

#define RK_PUSH_GRACE 160u

/* Push one record to one ring of `channel` under the kernel's backpressure: BLOCK waits (backing off)
 * until there is space, the kernel is told to terminate, or the ring is disconnected; REJECT and
 * DROP_NEW refuse the record; DROP_OLDEST evicts the oldest one. Every record that does not arrive is
 * counted (the kernel's messages_dropped, and the queue's rejected/dropped through host events). */
RK_FN int rk_push_route(rk_ctx *ctx, rk_u32 channel, const rk_route *route, const rk_envelope *env,
                        RK_LOCAL const void *payload) {
    RK_GLOBAL rk_ring_header *r = route->ring;
    rk_u32 attempt = 0;
    const int scope = rk_ring_scope(r);
    while (!rk_ring_push_local(r, env, (RK_LOCAL const rk_u8 *)payload, scope)) {
        if (env->payload_size > r->max_payload) {
            rk_count_dropped(ctx, 1);
            return 0;
        }
        if (ctx->backpressure == RK_BP_REJECT || ctx->backpressure == RK_BP_DROP_NEW) {
            rk_count_dropped(ctx, 1);
            rk_atomic_fetch_add_u64(ctx->backpressure == RK_BP_REJECT ? &r->rejected : &r->dropped_new, 1,
                                    RK_RELAXED, scope);
            return 0;
        }
        if (ctx->backpressure == RK_BP_DROP_OLDEST) {
            /* Evict only from a ring that is really full: a push also fails while a consumer is still
             * copying out of the slot it needs, and evicting then would empty the ring. */
            rk_u64 h = rk_atomic_load_u64(&r->head, RK_ACQUIRE, scope);
            rk_u64 t = rk_atomic_load_u64(&r->tail, RK_ACQUIRE, scope);
            if (t - h >= (rk_u64)r->capacity) {
                rk_u64 pos;
                RK_GLOBAL rk_envelope *old = rk_ring_acquire(r, &pos, 0, scope);
                if (old != RK_NULL) {
                    rk_ring_release(r, old, pos, scope);
                    rk_count_dropped(ctx, 1);
                    rk_atomic_fetch_add_u64(&r->evicted, 1, RK_RELAXED, scope);  /* after the cursor moved */
                    rk_event(ctx, RK_EVENT_EVICTED, route->cookie, 1);
                    continue;
                }
            }
        }
        /* Told to terminate, BLOCK stops waiting for space. DROP_OLDEST never waits for space, only for a
         * consumer finishing its copy out of the slot the push needs: it keeps a bounded grace for that
         * (RK_PUSH_GRACE attempts, milliseconds on the CPU backend) instead of losing the record. */
        if ((rk_should_terminate(ctx) && (ctx->backpressure != RK_BP_DROP_OLDEST || attempt >= RK_PUSH_GRACE)) ||
            (attempt % 64 == 63 && !rk_route_live(ctx, channel, r))) {
            rk_count_dropped(ctx, 1);
            return 0;
        }
        rk_backoff(ctx, attempt++);
    }
    rk_event(ctx, RK_EVENT_DATA, route->cookie, 1);
    return 1;
}

/* Send `payload` (out_size bytes) on a channel: every ring connected to it gets a copy. Returns the
 * number of rings that took it, or RK_ERR_CHANNEL for a channel the kernel does not have. A channel
 * whose rings were all disconnected drops the record (counted). */
RK_FN int rk_deliver_at(rk_ctx *ctx, rk_u32 channel, RK_LOCAL const void *payload, rk_u64 now_ns) {
    RK_GLOBAL rk_routes *routes = rk_current_routes(ctx);
    if (channel >= routes->n_channels) return RK_ERR_CHANNEL;
    RK_GLOBAL rk_channel *ch = &routes->channels[channel];
    if (ch->count == 0) {
        rk_count_dropped(ctx, 1);
        return 0;
    }
    rk_envelope env;
    env.message_id = ctx->reply_id_base +
                     rk_atomic_fetch_add_u64(&ctx->cb->next_reply_id, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    env.correlation_id = ctx->request != RK_NULL ? ctx->request->message_id : 0;
    env.enqueue_ns = now_ns;
    env.timestamp = rk_hlc_advance(&ctx->cb->hlc, ctx->stamp, env.enqueue_ns / 1000000u);
    env.payload_size = ctx->out_size;
    env.type_id = ctx->out_type;
    env.source_kernel = ctx->node;
    env.priority = ctx->request != RK_NULL ? ctx->request->priority : 0;
    env.flags = 0;
    env.reserved0 = 0;
    env.reserved1 = 0;
    env.reserved2 = 0;
    env.sequence = 0;
    int delivered = 0;
    for (rk_u32 i = 0; i < ch->count; ++i) {
        rk_route route = ch->targets[i];
        delivered += rk_push_route(ctx, channel, &route, &env, payload);
    }
    return delivered;
}

RK_FN int rk_deliver(rk_ctx *ctx, rk_u32 channel, RK_LOCAL const void *payload) {
    return rk_deliver_at(ctx, channel, payload, rk_now_ns(ctx));
}

/* From a handler: send a record on named channel `channel` (1..7, in the order the kernel's channels
 * were declared at launch). Only thread 0's call sends; the others return 0. */
RK_FN int rk_emit(rk_ctx *ctx, rk_u32 channel, RK_LOCAL const void *payload) {
    if (ctx->thread_rank != 0) return 0;
    if (channel == 0 || channel >= RK_MAX_CHANNELS) return RK_ERR_CHANNEL;
    return rk_deliver(ctx, channel, payload);
}

/* ---- one step of the persistent loop ---------------------------------------------------------------- */
/*
 * A step handles a run: up to ctx->max_run consecutive messages taken from one input with one cursor
 * update. The handler runs for each in turn (replies go to consecutive reply buffers), then the run
 * is accounted, its replies delivered and its slots released. One clock reading starts the run (TTL,
 * HLC) and one ends it (replies' enqueue time, latency). The run adapts to the handler: the backend
 * sizes max_run so that a run takes about RK_RUN_TARGET_NS, so a slow handler's replies are not held
 * back behind those of the messages after it.
 */
#define RK_RUN_TARGET_NS 8000u
#define RK_STATUS_EXPIRED (-1000)

RK_FN void rk_record_error(rk_ctx *ctx, rk_i32 code) {
    rk_atomic_fetch_add_i32(&ctx->cb->errors_encountered, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(&ctx->cb->last_error, code, RK_RELAXED, RK_SCOPE_SYSTEM);
    if (rk_atomic_load_i32(&ctx->cb->telemetry_enabled, RK_RELAXED, RK_SCOPE_SYSTEM))
        rk_atomic_store_i32((RK_GLOBAL rk_i32 *)&ctx->tel->error_code, -code, RK_RELAXED, RK_SCOPE_SYSTEM);
}

/* From a handler (any one thread): record an error for this message and go on, e.g. before answering
 * with a reply that carries the status. Returning a negative code records it too, without a reply. */
RK_FN void rk_report_error(rk_ctx *ctx, rk_i32 code) { rk_record_error(ctx, code); }

/* Message `pos` of the run's ring. */
RK_FN RK_GLOBAL rk_envelope *rk_run_slot(RK_LOCAL const rk_run_info *run, rk_u64 pos) {
    return rk_ring_slot_at(run->ring, pos, run->mask, run->stride);
}

/* Thread 0: bring the block's view of its inputs up to date with the current routes table (one read of
 * the routes word while they stay the same). */
RK_FN void rk_refresh_inputs(rk_ctx *ctx) {
    RK_LOCAL rk_run_info *run = ctx->run;
    rk_u64 address = rk_atomic_load_u64(ctx->routes, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    if (address == run->routes) return;
    RK_GLOBAL rk_routes *routes = (RK_GLOBAL rk_routes *)(rk_uptr)address;
    rk_u32 n = routes->n_inputs < RK_MAX_INPUTS ? routes->n_inputs : RK_MAX_INPUTS;
    for (rk_u32 i = 0; i < n; ++i) {
        RK_GLOBAL rk_ring_header *r = routes->inputs[i].ring;
        RK_LOCAL rk_input_view *in = &run->inputs[i];
        in->ring = r;
        in->cookie = routes->inputs[i].cookie;
        in->mask = r->mask;
        in->stride = r->slot_stride;
        in->capacity = r->capacity;
        in->scope = rk_ring_scope(r);
    }
    run->n_inputs = n;
    run->routes = address;
    if (ctx->next_input >= n) ctx->next_input = 0;
}

/* Block-level, thread 0: take a run from the inputs (round robin) and prepare it -- TTL, the HLC
 * receive stamp (past every request of the run), zeroed replies. Leaves ctx->run->n = 0 when nothing
 * was waiting. */
RK_FN void rk_begin_run(rk_ctx *ctx) {
    RK_LOCAL rk_run_info *run = ctx->run;
    run->n = 0;
    rk_refresh_inputs(ctx);
    rk_u32 count = run->n_inputs;
    for (rk_u32 k = 0; k < count && run->n == 0; ++k) {
        rk_u32 i = (ctx->next_input + k) % count;
        RK_LOCAL rk_input_view *in = &run->inputs[i];
        rk_u64 first = 0;
        rk_u32 got = rk_ring_acquire_n_at(in->ring, in->mask, in->stride, ctx->max_run, &first,
                                          (int)ctx->single_consumer, in->scope);
        if (got != 0) {
            ctx->next_input = (i + 1u) % count;
            run->ring = in->ring;
            run->cookie = in->cookie;
            run->mask = in->mask;
            run->stride = in->stride;
            run->capacity = in->capacity;
            run->scope = in->scope;
            run->first = first;
            run->input = i;
            run->n = got;
        }
    }
    if (run->n == 0) return;
    ctx->reply_mask = 0u;
    rk_u64 now = rk_now_ns(ctx);
    ctx->run_started_ns = now;
    rk_u64 remote = 0;
    for (rk_u32 j = 0; j < run->n; ++j) {
        RK_GLOBAL rk_envelope *slot = rk_run_slot(run, run->first + j);
        ctx->run_error[j] = 0;
        if (ctx->ttl_ns != 0 && now > slot->enqueue_ns && now - slot->enqueue_ns > ctx->ttl_ns) {
            ctx->run_status[j] = RK_STATUS_EXPIRED;
            continue;
        }
        ctx->run_status[j] = RK_NO_REPLY;
        if (slot->timestamp > remote) remote = slot->timestamp;
    }
    ctx->stamp = rk_hlc_advance(&ctx->cb->hlc, remote, now / 1000000u);
    rk_zero_local((RK_LOCAL rk_u8 *)ctx->out, run->n * ctx->out_size);
}

/* Every thread, after running the handler for message j: record its result. Thread 0's result is the
 * message's, unless some thread returned an error (the lowest code wins). Thread 0 keeps whether it
 * answered in its own reply_mask rather than in run_status, which the other threads are still reading
 * (no barrier separates their reads from this write: the handler need not have one). */
RK_FN void rk_note_result(rk_ctx *ctx, rk_u32 j, int rc) {
    if (rc > RK_REPLY) rc = RK_ERR_RETURN; /* neither a reply nor "no reply": an error, never silence */
    if (ctx->thread_rank == 0 && rc == RK_REPLY) ctx->reply_mask |= 1u << j;
    if (rc < 0) {
#if defined(RK_TARGET_OPENCL)
        atomic_min((volatile RK_LOCAL int *)&ctx->run_error[j], rc);
#elif defined(__CUDA_ARCH__)
        atomicMin((int *)&ctx->run_error[j], rc);
#else
        if (rc < ctx->run_error[j]) ctx->run_error[j] = rc;  /* the host runs a block's threads in turn */
#endif
    }
}

/* Block-level, thread 0, after the handlers: account (first: whoever sees a reply, published with
 * release order, sees the counters too), deliver the replies, release the slots. */
RK_FN int rk_finish_run(rk_ctx *ctx) {
    RK_LOCAL rk_run_info *run = ctx->run;
    rk_u32 n = run->n;
    RK_GLOBAL rk_ring_header *ring = run->ring;
    rk_u64 done = rk_now_ns(ctx);
    rk_u32 handled = 0, expired = 0;
    rk_u64 total = 0, lo = 0, hi = 0;
    for (rk_u32 j = 0; j < n; ++j) {
        rk_i32 rc = ctx->run_status[j];
        if (rc == RK_STATUS_EXPIRED) {
            ++expired;
            continue;
        }
        /* Every thread has passed the block sync before this: run_status is thread 0's to write again. */
        rc = ctx->run_error[j] < 0 ? ctx->run_error[j] : ((ctx->reply_mask >> j) & 1u) != 0u ? RK_REPLY : RK_NO_REPLY;
        ctx->run_status[j] = rc;
        ++handled;
        if (rc < 0) rk_record_error(ctx, rc);
        rk_u64 enq = rk_run_slot(run, run->first + j)->enqueue_ns;
        rk_u64 latency = done > enq ? done - enq : 1;
        total += latency;
        if (lo == 0 || latency < lo) lo = latency;
        if (latency > hi) hi = latency;
    }
    if (handled != 0) {
        RK_GLOBAL rk_u64 *processed = (RK_GLOBAL rk_u64 *)&ctx->cb->messages_processed;
        if (ctx->grid == 1) /* the only writer: no read-modify-write needed */
            rk_atomic_store_u64(processed, rk_atomic_load_u64(processed, RK_RELAXED, RK_SCOPE_SYSTEM) + handled,
                                RK_RELEASE, RK_SCOPE_SYSTEM);
        else
            rk_atomic_fetch_add_u64(processed, handled, RK_RELEASE, RK_SCOPE_SYSTEM);
        if (rk_atomic_load_i32(&ctx->cb->telemetry_enabled, RK_RELAXED, RK_SCOPE_SYSTEM)) {
            RK_GLOBAL rk_telemetry *t = ctx->tel;
            /* Latency: from each request's enqueue (the producer's clock) to the end of its run. */
            rk_atomic_fetch_add_u64(&t->messages_processed, handled, RK_RELAXED, RK_SCOPE_SYSTEM);
            rk_atomic_fetch_add_u64(&t->total_latency_ns, total, RK_RELAXED, RK_SCOPE_SYSTEM);
            rk_atomic_min_nonzero_u64(&t->min_latency_ns, lo);
            rk_atomic_max_u64(&t->max_latency_ns, hi);
            rk_atomic_max_u64(&t->last_processed_timestamp, ctx->stamp);
            rk_u64 depth = rk_ring_size(ring, run->scope);
            rk_atomic_store_i32((RK_GLOBAL rk_i32 *)&t->queue_depth, (rk_i32)depth, RK_RELAXED, RK_SCOPE_SYSTEM);
        }
    }
    /* Each request's slot goes back as soon as its reply is out, so a reply that waits for space does
     * not also hold the slots of the requests before it. */
    for (rk_u32 j = 0; j < n; ++j) {
        RK_GLOBAL rk_envelope *slot = rk_run_slot(run, run->first + j);
        if (ctx->run_status[j] == RK_REPLY) {
            ctx->request = slot;
            rk_deliver_at(ctx, 0, (RK_LOCAL rk_u8 *)ctx->out + (rk_u64)j * ctx->out_size, done);
        }
        rk_ring_release_at(slot, run->first + j, run->capacity, run->scope);
    }
    ctx->request = RK_NULL;
    if (expired != 0) {
        rk_count_dropped(ctx, expired);
        rk_atomic_fetch_add_u64(&ring->expired, expired, RK_RELAXED, run->scope);  /* after the cursor moved */
    }
    rk_event(ctx, RK_EVENT_SPACE, run->cookie, n);
    /* Size the next run from this one's handling time. */
    rk_u64 per = handled != 0 ? (done - ctx->run_started_ns) / handled : 0;
    rk_u64 fit = per == 0 ? RK_MAX_RUN : RK_RUN_TARGET_NS / per;
    ctx->max_run = fit < 1 ? 1u : fit > ctx->run_limit ? ctx->run_limit : (rk_u32)fit;
    return handled != 0 ? RK_STEP_DONE : RK_STEP_EXPIRED;
}

/* How one thread runs the handler for one message. On the host the worker is the whole block: it
 * runs the handler itself (one thread) or has the backend emulate the block's threads. */
#if defined(RK_TARGET_HOST)
#define RK_RUN_HANDLER(ctx, handler_fn, in, out, j)                                                     \
    do {                                                                                               \
        if ((ctx)->thread_count == 1) {                                                                \
            (ctx)->thread_rank = 0;                                                                    \
            rk_note_result((ctx), (j), handler_fn((ctx), (in), (out)));                                \
        } else {                                                                                       \
            (ctx)->handler = handler_fn;                                                               \
            rk_note_result((ctx), (j), (ctx)->run_threads((ctx), (in), (out)));                        \
        }                                                                                              \
    } while (0)
#define RK_STEP_FN int
#else
#define RK_RUN_HANDLER(ctx, handler_fn, in, out, j) rk_note_result((ctx), (j), handler_fn((ctx), (in), (out)))
#define RK_STEP_FN RK_FN int
#endif

/* One step of the persistent loop with `handler_fn`: thread 0 takes and prepares a run, every thread
 * runs the handler for each of its messages, thread 0 finishes the run. Returns RK_STEP_IDLE on every
 * thread when nothing was waiting, else a non-idle RK_STEP_* (thread 0 may say EXPIRED where the
 * others say DONE). */
#define RK_DEFINE_BLOCK_STEP(step_name, handler_fn)                                                       \
    RK_STEP_FN step_name(rk_ctx *ctx) {                                                                \
        if (ctx->thread_rank == 0) rk_begin_run(ctx);                                                  \
        rk_block_sync(ctx);                                                                            \
        rk_u32 n = ctx->run->n;                                                                        \
        if (n == 0) {                                                                                  \
            rk_block_sync(ctx); /* everyone has read n before thread 0 takes the next run */             \
            return RK_STEP_IDLE;                                                                       \
        }                                                                                              \
        rk_u64 first = ctx->run->first;                                                                \
        for (rk_u32 j = 0; j < n; ++j) {                                                               \
            if (ctx->run_status[j] == RK_STATUS_EXPIRED) continue;                                     \
            RK_GLOBAL rk_envelope *slot = rk_run_slot(ctx->run, first + j);                              \
            ctx->request = slot;                                                                       \
            RK_RUN_HANDLER(ctx, handler_fn, rk_envelope_payload(slot),                                 \
                           (RK_LOCAL rk_u8 *)ctx->out + (rk_u64)j * ctx->out_size, j);                  \
        }                                                                                              \
        rk_block_sync(ctx);                                                                            \
        int rc = RK_STEP_DONE;                                                                         \
        if (ctx->thread_rank == 0) rc = rk_finish_run(ctx);                                            \
        rk_block_sync(ctx);                                                                            \
        return rc;                                                                                     \
    }

/* ---- the persistent kernel of a device target -----------------------------------------------------
 * RK_DEFINE_OPENCL_KERNEL(name, step, out_bytes, run_limit) defines `__kernel void name(params)`: every
 * block (work-group) stays resident, idles while the kernel is inactive, runs `step` while it is
 * active, and leaves when told to terminate -- each block on its own, so there is no grid-wide
 * barrier a block can miss. The last block out sets has_terminated. out_bytes and run_limit size
 * the block's reply buffers in local memory (compile-time constants in OpenCL C).
 */
#if !defined(RK_TARGET_HOST)
/* A device block's context from its launch parameters; the target says where the block is. */
RK_FN void rk_device_ctx_init(rk_ctx *ctx, RK_GLOBAL const rk_kernel_params *p, rk_u32 block_index, rk_u32 grid,
                              rk_u32 thread_rank, rk_u32 thread_count, RK_LOCAL rk_run_info *run,
                              RK_LOCAL rk_i32 *status, RK_LOCAL rk_i32 *error, RK_LOCAL void *out,
                              RK_LOCAL void *shared, rk_u32 run_limit) {
    ctx->cb = (RK_GLOBAL rk_control_block *)(rk_uptr)p->control_block;
    ctx->tel = (RK_GLOBAL rk_telemetry *)(rk_uptr)p->telemetry;
    ctx->routes = (RK_GLOBAL rk_u64 *)(rk_uptr)p->routes_word;
    ctx->buffers = (RK_GLOBAL rk_buffer_table *)(rk_uptr)p->buffers;
    ctx->block_index = block_index;
    ctx->grid = grid;
    ctx->thread_rank = thread_rank;
    ctx->thread_count = thread_count;
    ctx->in_size = p->in_size;
    ctx->out_size = p->out_size;
    ctx->out_type = p->out_type;
    ctx->node = p->node;
    ctx->single_consumer = 0u;
    ctx->next_input = 0u;
    ctx->backpressure = p->backpressure;
    ctx->ttl_ns = p->ttl_ns;
    ctx->reply_id_base = p->reply_id_base;
    ctx->request = RK_NULL;
    ctx->stamp = 0;
    ctx->recent_ns = 0;
    ctx->run_started_ns = 0;
    ctx->max_run = 1u;
    ctx->run_limit = run_limit;
    ctx->reply_mask = 0u;
    ctx->run = run;
    if (thread_rank == 0u) run->routes = 0; /* no view of the inputs yet (block-local memory starts undefined) */
    ctx->run_status = status;
    ctx->run_error = error;
    ctx->out = out;
    ctx->shared = shared;
    ctx->uses_barrier = 1u;
    ctx->clock_offset = p->clock_offset_ns;
}
#endif

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
                       : rk_atomic_load_i32(&ctx.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) ? 1 : 0;  \
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
 * offset there), launches this kernel, and copies the replies (`out`), the counters and the buffers
 * back. The routes live in device memory too (`routes`, written here). */
#define RK_DEFINE_OPENCL_COPY_KERNEL(kernel_name, step_name, out_bytes, run_limit)                        \
    __kernel void kernel_name(__global const rk_kernel_params *params, __global rk_control_block *cb,   \
                              __global rk_telemetry *tel, __global rk_routes *routes,                  \
                              __global rk_u64 *routes_word, __global rk_ring_header *in,               \
                              __global rk_ring_header *out, __global rk_buffer_table *buffers,         \
                              __global rk_u8 *arena) {                                                 \
        RK_OPENCL_BLOCK_SETUP(ctx, out_bytes, run_limit)                                               \
        ctx.cb = cb;                                                                                   \
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

/* ---- the persistent kernel on CUDA -------------------------------------------------------------------
 * RK_DEFINE_CUDA_KERNEL(kernel_name, step_name) defines `extern "C" __global__ void kernel_name(params)`,
 * the same loop as the OpenCL one: every block stays resident, idles while the kernel is inactive, runs
 * `step` while it is active, and leaves when told to terminate, each block on its own (no grid-wide
 * barrier a block can miss); the last block out sets has_terminated. Each block counts itself in
 * (blocks_started) as it starts, so the host can tell whether all of them are resident at once.
 * Dynamic shared memory holds the reply buffers (params->run_limit records of out_size bytes, rounded
 * up to 16) followed by RK_SHARED_BYTES for rk_shared; the launch gives rk_cuda_dynamic_smem() bytes.
 * An idle block sleeps (__nanosleep) between polls, doubling from 64 ns up to params->idle_backoff_ns.
 */
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
                rk_mode_ = (rk_u32)(flags >> 32) != 0u ? 2 : (rk_u32)flags != 0u ? 1 : 0;              \
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

#endif /* RK_KERNEL_H */
