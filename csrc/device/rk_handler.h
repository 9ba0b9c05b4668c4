/*
 * rk_handler.h — the handler API of the device dialect (DESIGN.md §6): what a handler is, what it
 * returns, the block context it is given (rk_ctx), the target hooks under it, and the calls a handler
 * makes (thread rank and count, barrier, shared memory, buffers, the request, named channels).
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
 *     rk_state(ctx)                               the kernel's state record (launched with state=), or RK_NULL
 *     rk_state_size(ctx)                          its size in bytes (0 without state)
 *     return rk_fault(ctx);                       the kernel is at fault, not only this message (RK_ERR_FAULT)
 *
 * State is one record per kernel, zeroed at launch, in memory the device reaches; it survives restarts
 * and travels in checkpoints. Every block of the kernel sees the same record: with grid > 1 (or several
 * threads of a block writing it) concurrent updates are the handler's business -- use the dialect's
 * atomics (rk_atomic_fetch_add_u64(&st->count, 1, RK_RELAXED, RK_SCOPE_SYSTEM), ...), or keep grid=1 and
 * let thread 0 write it. The host reads it only while the kernel is paused (Kernel::actor_state), so a
 * handler never sees the host write it under its feet.
 *
 * The loop that calls handlers is rk_step.h; the kernels that run it on each device, rk_entry_*.h.
 */
#ifndef RK_HANDLER_H
#define RK_HANDLER_H

#include "ringkernel/rk_status.h"
#include "rk_ring.h"

#define RK_KERNEL_ABI 1

/* One step's outcome. */
#define RK_STEP_IDLE 0    /* nothing to take */
#define RK_STEP_DONE 1    /* one message handled */
#define RK_STEP_EXPIRED 2 /* one message dropped by its TTL */
#define RK_STEP_ABANDONED 3 /* host: the supervisor gave up on this block while its handler ran; leave */

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
    RK_GLOBAL void *state;               /* the kernel's state record (RK_NULL: launched without state) */
    rk_u32 state_size;                   /* its bytes */
    rk_u32 paused;                       /* thread 0: this block is counted in the control block's blocks_paused */
    RK_GLOBAL rk_ring_header *dead_letters; /* where failed requests go (RK_NULL: nowhere, counted only) */
    rk_u32 supervised;                   /* devices: under a RestartPolicy (rk_finish_run hands a fault to the
                                            host's supervisor; the host backend uses its hooks instead) */
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
    /* The supervisor's hooks (RK_SUPERVISE in rk_step.h); null when the kernel is not supervised. */
    int (*supervise)(rk_ctx *ctx, int what);
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
RK_FN RK_GLOBAL void *rk_state(const rk_ctx *ctx) { return ctx->state; }
RK_FN rk_u32 rk_state_size(const rk_ctx *ctx) { return ctx->state_size; }
/* What a handler returns when its kernel is at fault (it cannot go on as it is), not only the message: the
 * message fails with RK_ERR_FAULT and is dead-lettered. */
RK_FN int rk_fault(const rk_ctx *ctx) {
    (void)ctx;
    return RK_ERR_FAULT;
}

/* Thread 0, at the top of the persistent loop, with what it read of is_active: whether the block may
 * take a run. The block counts itself in the control block's blocks_paused when it sees the kernel
 * inactive and out when it resumes; only changes cost a write, so a running kernel pays nothing for being
 * pausable. The host pauses a kernel (Kernel::pause) by clearing is_active and waiting until every live
 * block is counted: a block resuming re-reads is_active after counting itself out (sequentially
 * consistent on both sides, Dekker's pattern), so either the host sees it out and waits, or it sees the
 * kernel inactive again and takes nothing. */
RK_FN int rk_note_active(rk_ctx *ctx, int active) {
    if (!active) {
        if (!ctx->paused) {
            ctx->paused = 1u;
            rk_atomic_fetch_add_i32(&ctx->cb->blocks_paused, 1, RK_SEQ_CST, RK_SCOPE_SYSTEM);
        }
        return 0;
    }
    if (ctx->paused) {
        rk_atomic_fetch_add_i32(&ctx->cb->blocks_paused, -1, RK_SEQ_CST, RK_SCOPE_SYSTEM);
        if (rk_atomic_load_i32(&ctx->cb->is_active, RK_SEQ_CST, RK_SCOPE_SYSTEM) == 0) {
            rk_atomic_fetch_add_i32(&ctx->cb->blocks_paused, 1, RK_SEQ_CST, RK_SCOPE_SYSTEM);
            return 0;
        }
        ctx->paused = 0u;
    }
    return 1;
}

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

#endif /* RK_HANDLER_H */
