/*
 * rk_step.h — one step of the persistent loop, the same for every target (DESIGN.md §6).
 *
 * One iteration of the persistent loop is a block step: take a run of messages from the inputs (round
 * robin over the kernel's input rings), drop those whose TTL has passed, advance the kernel's HLC past
 * each request's stamp (so causal order holds along a pipeline), run the handler on the block's
 * threads, deliver the replies to every ring of the default channel, release the input slots, update
 * the control block and, when enabled, the telemetry. RK_DEFINE_BLOCK_STEP(name, handler) makes one
 * for a given handler; each backend wraps it in its own outer loop (idle back-off, terminate): the CPU
 * backend's worker threads, and on devices the kernels of rk_entry_opencl.h and rk_entry_cuda.h.
 */
#ifndef RK_STEP_H
#define RK_STEP_H

#include "rk_handler.h"

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
#define RK_STATUS_HELD (-1001) /* taken over by the supervisor (redelivery, a dead letter): only released here */

/* Host supervision (DESIGN §11): a supervised block says when it holds a run (BEGIN: the watchdog's clock
 * starts) and asks before it finishes one (FINISH: nonzero when the supervisor has abandoned the block, which
 * then leaves without touching the rings; it may also take over failed messages, RK_STATUS_HELD). */
#define RK_SUPERVISE_BEGIN 1
#define RK_SUPERVISE_FINISH 2
/* FAULTED: message j's handler returned RK_ERR_FAULT; nonzero when the kernel is under a RestartPolicy, and
 * then the run stops there: the messages after j are not handled (the restarted block redelivers them). Asked
 * only on a fault, so a run pays one compare per message for it. */
#define RK_SUPERVISE_FAULTED 3
#if defined(RK_TARGET_HOST)
#define RK_SUPERVISE(ctx, what) ((ctx)->supervise != RK_NULL ? (ctx)->supervise((ctx), (what)) : 0)
#define RK_FAULT_STOPS_RUN(ctx, j) ((ctx)->run_error[j] == RK_ERR_FAULT && RK_SUPERVISE((ctx), RK_SUPERVISE_FAULTED) != 0)
#else
#define RK_SUPERVISE(ctx, what) 0
#define RK_FAULT_STOPS_RUN(ctx, j) 0
#endif

RK_FN void rk_record_error(rk_ctx *ctx, rk_i32 code) {
    rk_atomic_fetch_add_i32(&ctx->cb->errors_encountered, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(&ctx->cb->last_error, code, RK_RELAXED, RK_SCOPE_SYSTEM);
    if (rk_atomic_load_i32(&ctx->cb->telemetry_enabled, RK_RELAXED, RK_SCOPE_SYSTEM))
        rk_atomic_store_i32((RK_GLOBAL rk_i32 *)&ctx->tel->error_code, -code, RK_RELAXED, RK_SCOPE_SYSTEM);
}

/* From a handler (any one thread): record an error for this message and go on, e.g. before answering
 * with a reply that carries the status. Returning a negative code records it too, without a reply. */
RK_FN void rk_report_error(rk_ctx *ctx, rk_i32 code) { rk_record_error(ctx, code); }

/* A request its handler failed (code < 0) goes to the kernel's dead-letter ring, never silently away: the
 * envelope as it arrived (its ring-owned sequence aside) with reserved0 = the attempts and reserved1 = the
 * code, and its payload. A full ring counts it in the ring's `rejected` (the host reports it as dropped). */
#define RK_DEAD_LETTER_ATTEMPTS(env) ((rk_u32)(env)->reserved0 + 1u)
RK_FN void rk_dead_letter(rk_ctx *ctx, RK_GLOBAL const rk_envelope *req, RK_GLOBAL const rk_u8 *payload,
                          rk_i32 code) {
    RK_GLOBAL rk_ring_header *r = ctx->dead_letters;
    if (r == RK_NULL) return;
    rk_u64 pos;
    RK_GLOBAL rk_envelope *slot = rk_ring_claim(r, &pos, 0, RK_SCOPE_SYSTEM);
    if (slot == RK_NULL) {
        rk_atomic_fetch_add_u64(&r->rejected, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
        return;
    }
    rk_envelope_copy(slot, req);
    rk_u32 attempts = RK_DEAD_LETTER_ATTEMPTS(req);
    slot->reserved0 = (rk_u16)(attempts > 0xFFFFu ? 0xFFFFu : attempts);
    slot->reserved1 = (rk_u32)code;
    rk_u32 n = ctx->in_size < r->max_payload ? ctx->in_size : r->max_payload;
    slot->payload_size = n;
    rk_copy_bytes(rk_envelope_payload(slot), payload, n);
    rk_ring_publish(slot, pos, RK_SCOPE_SYSTEM);
}

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
    /* A supervised device kernel's first input is the supervisor's redelivery ring: tried first (what it holds
     * was accepted before anything waiting elsewhere), then the inputs round robin. */
    rk_u32 start = ctx->supervised && count != 0 ? 1u : 0u;
    for (rk_u32 k = 0; k < count + start && run->n == 0; ++k) {
        rk_u32 i = k < start ? 0u : (ctx->next_input + k - start) % count;
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

/* Device supervision (DESIGN §11; the host backend supervises through RK_SUPERVISE instead). Under a
 * RestartPolicy a message whose handler returned RK_ERR_FAULT is not finished: it goes to the dead-letter ring
 * flagged RK_ENVELOPE_FLAG_HELD (waiting for room there: the host takes them out every bridge round), and its
 * block takes no more input until the host's supervisor has decided -- redelivery through the kernel's first
 * input, a dead letter after max_attempts, or FAULTED -- and said so in the ring's supervised_upto. Returns the
 * position after the letter. */
RK_FN rk_u64 rk_hold_for_supervisor(rk_ctx *ctx, RK_GLOBAL rk_envelope *req) {
    RK_GLOBAL rk_ring_header *r = ctx->dead_letters;
    rk_u64 pos;
    RK_GLOBAL rk_envelope *slot;
    for (rk_u32 attempt = 0; (slot = rk_ring_claim(r, &pos, 0, RK_SCOPE_SYSTEM)) == RK_NULL; ++attempt) {
        if (rk_should_terminate(ctx)) return 0;  /* stopping: the message is lost with the run (counted below) */
        rk_backoff(ctx, attempt);
    }
    rk_envelope_copy(slot, req);
    slot->flags = (rk_u8)(slot->flags | RK_ENVELOPE_FLAG_HELD);
    slot->reserved1 = (rk_u32)RK_ERR_FAULT;  /* reserved0 keeps the deliveries that failed before this one */
    rk_u32 n = ctx->in_size < r->max_payload ? ctx->in_size : r->max_payload;
    slot->payload_size = n;
    rk_copy_bytes(rk_envelope_payload(slot), rk_envelope_payload(req), n);
    rk_ring_publish(slot, pos, RK_SCOPE_SYSTEM);
    return pos + 1u;
}

/* Thread 0, after a run that handed a fault to the supervisor: wait for its decision, then start over as a
 * fresh block (a fresh view of the inputs, zeroed block memory). */
RK_FN void rk_await_supervisor(rk_ctx *ctx, rk_u64 upto) {
    RK_GLOBAL rk_ring_header *r = ctx->dead_letters;
    for (rk_u32 attempt = 0; !rk_should_terminate(ctx); ++attempt) {
        rk_u32 done = (rk_u32)rk_atomic_load_i32((RK_GLOBAL rk_i32 *)&r->supervised_upto, RK_ACQUIRE, RK_SCOPE_SYSTEM);
        if ((rk_i32)(done - (rk_u32)upto) >= 0) break;
        /* It holds no run (its slots are released): a pause (checkpoint) need not wait for the backoff. */
        rk_note_active(ctx, rk_atomic_load_i32(&ctx->cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0);
        rk_backoff(ctx, attempt > 64u ? 64u : attempt);
    }
    ctx->run->routes = 0;
    rk_zero_local((RK_LOCAL rk_u8 *)ctx->shared, RK_SHARED_BYTES);
}

/* Block-level, thread 0, after the handlers: account (first: whoever sees a reply, published with
 * release order, sees the counters too), deliver the replies, release the slots. */
RK_FN int rk_finish_run(rk_ctx *ctx) {
    RK_LOCAL rk_run_info *run = ctx->run;
    rk_u32 n = run->n;
    RK_GLOBAL rk_ring_header *ring = run->ring;
    rk_u64 done = rk_now_ns(ctx);
    rk_u32 handled = 0, expired = 0;
    rk_u64 total = 0, lo = 0, hi = 0, held_upto = 0;
    for (rk_u32 j = 0; j < n; ++j) {
        rk_i32 rc = ctx->run_status[j];
        if (rc == RK_STATUS_EXPIRED) {
            ++expired;
            continue;
        }
        if (rc == RK_STATUS_HELD) continue;
        /* Every thread has passed the block sync before this: run_status is thread 0's to write again. */
        rc = ctx->run_error[j] < 0 ? ctx->run_error[j] : ((ctx->reply_mask >> j) & 1u) != 0u ? RK_REPLY : RK_NO_REPLY;
        if (rc == RK_ERR_FAULT && ctx->supervised && ctx->dead_letters != RK_NULL) {
            ctx->run_status[j] = RK_STATUS_HELD;
            held_upto = rk_hold_for_supervisor(ctx, rk_run_slot(run, run->first + j));
            continue;
        }
        ctx->run_status[j] = rc;
        ++handled;
        if (rc < 0) {
            rk_record_error(ctx, rc);
            RK_GLOBAL rk_envelope *failed = rk_run_slot(run, run->first + j);
            rk_dead_letter(ctx, failed, rk_envelope_payload(failed), rc);
        }
        rk_u64 enq = rk_run_slot(run, run->first + j)->enqueue_ns;
        rk_u64 latency = done > enq ? done - enq : 1;
        total += latency;
        if (lo == 0 || latency < lo) lo = latency;
        if (latency > hi) hi = latency;
    }
    if (handled != 0) {
        RK_GLOBAL rk_u64 *processed = (RK_GLOBAL rk_u64 *)&ctx->cb->messages_processed;
        if (ctx->grid == 1 && !ctx->supervised) /* the only writer (a device supervisor adds dead letters) */
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
    if (held_upto != 0) rk_await_supervisor(ctx, held_upto);
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
        if (RK_SUPERVISE(ctx, RK_SUPERVISE_BEGIN) != 0) return RK_STEP_ABANDONED;                    \
        rk_u64 first = ctx->run->first;                                                                \
        for (rk_u32 j = 0; j < n; ++j) {                                                               \
            if (ctx->run_status[j] == RK_STATUS_EXPIRED) continue;                                     \
            RK_GLOBAL rk_envelope *slot = rk_run_slot(ctx->run, first + j);                              \
            ctx->request = slot;                                                                       \
            RK_RUN_HANDLER(ctx, handler_fn, rk_envelope_payload(slot),                                 \
                           (RK_LOCAL rk_u8 *)ctx->out + (rk_u64)j * ctx->out_size, j);                  \
            if (RK_FAULT_STOPS_RUN(ctx, j)) break;                                                     \
        }                                                                                              \
        rk_block_sync(ctx);                                                                            \
        if (RK_SUPERVISE(ctx, RK_SUPERVISE_FINISH) != 0) return RK_STEP_ABANDONED;                   \
        int rc = RK_STEP_DONE;                                                                         \
        if (ctx->thread_rank == 0) rc = rk_finish_run(ctx);                                            \
        rk_block_sync(ctx);                                                                            \
        return rc;                                                                                     \
    }

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
    ctx->supervised = p->supervised;
    ctx->run_limit = p->supervised ? 1u : run_limit; /* supervised: the message in flight is the run */
    ctx->reply_mask = 0u;
    ctx->run = run;
    if (thread_rank == 0u) run->routes = 0; /* no view of the inputs yet (block-local memory starts undefined) */
    ctx->run_status = status;
    ctx->run_error = error;
    ctx->out = out;
    ctx->shared = shared;
    ctx->uses_barrier = 1u;
    ctx->clock_offset = p->clock_offset_ns;
    ctx->state = (RK_GLOBAL void *)(rk_uptr)p->state;
    ctx->state_size = p->state_size;
    ctx->paused = 0u;
    ctx->dead_letters = (RK_GLOBAL rk_ring_header *)(rk_uptr)p->dead_letters;
}
#endif

#endif /* RK_STEP_H */
