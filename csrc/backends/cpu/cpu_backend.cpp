// cpu_backend.cpp — the CPU backend: each block of a ring kernel is one worker thread running the
// device-dialect persistent loop (rk_kernel.h) compiled by the host compiler.
//
// The block's threads are emulated inside its worker. A handler that never calls rk_barrier runs
// thread after thread on the worker's stack (any interleaving is a valid schedule for threads that
// do not synchronise). A handler that does gets one small stack per thread (ucontext fibers): each
// runs until it reaches the barrier or returns, and the barrier opens when every thread is there —
// the semantics of __syncthreads / barrier(CLK_LOCAL_MEM_FENCE).
//
// Idle policy: a worker with nothing to do spins briefly (a message arriving right after the last
// one is picked up within a microsecond), then parks on the kernel's doorbell, an event count every
// input queue notifies; a parked kernel costs no CPU.
#include <cxxabi.h>
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "../../core/backend_registry.hpp"
#include "../../core/kernel_core.hpp"
#include "handler_faults.hpp"
#include "host_compiler.hpp"
#include "native_handler.hpp"
#include "ringkernel/clock.hpp"
#include "rk_builtins.h"

#if defined(__SANITIZE_ADDRESS__)
#define RK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RK_ASAN 1
#endif
#endif
#if defined(RK_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(RK_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace rk {
namespace {

// ---- built-in and host handler steps ---------------------------------------------------------------

#define RK_CPU_BUILTIN_STEP(builtin, fn, records) RK_DEFINE_BLOCK_STEP(step_##builtin, fn)
RK_BUILTINS(RK_CPU_BUILTIN_STEP)
#undef RK_CPU_BUILTIN_STEP

KernelCore &core_of(rk_ctx *ctx) { return *static_cast<KernelCore *>(static_cast<void **>(ctx->host)[0]); }

// A host handler's exception: the kernel's last error message, and the text of this request's dead letter.
void record_host_error(rk_ctx *ctx, const std::string &what) {
    KernelCore &core = core_of(ctx);
    core.set_last_error_message(what);
    if (ctx->request) core.note_failure(ctx->request->message_id, what);
}

int host_trampoline(rk_ctx *ctx, const void *in, void *out) {
    auto *h = static_cast<HostHandler *>(ctx->handler_data);
    try {
        return h->handle(ctx, in, out);
    } catch (abi::__forced_unwind &) {
        throw;  // thread cancellation (e.g. at interpreter exit) must unwind
    } catch (const KernelAtFault &e) {
        record_host_error(ctx, e.what());
        return RK_ERR_FAULT;
    } catch (const std::exception &e) {
        record_host_error(ctx, e.what());
    } catch (...) {
        record_host_error(ctx, "unknown exception");
    }
    return RK_ERR_HOST;
}
RK_DEFINE_BLOCK_STEP(step_host, host_trampoline)

rk_u64 host_now_ns() { return wall_ns(); }

// ---- emulated block threads -----------------------------------------------------------------------

constexpr std::size_t kFiberStack = 256 * 1024;

struct Block;

// ---- supervision: the watchdog's view of a block (DESIGN §11) ------------------------------------------
// phase: 0 while the block holds no run; the wall-clock ns its run began while it does (BEGIN hook); the
// watchdog turns a run older than handler_timeout into kAbandoning (by CAS, so the block cannot finish it
// meanwhile), takes its messages over, and sets kAbandoned: the block leaves as soon as its handler returns.
constexpr std::uint64_t kAbandoning = ~0ull;
constexpr std::uint64_t kAbandoned = ~0ull - 1;
struct BlockSlot {
    std::atomic<std::uint64_t> phase{0};
    struct Block *block = nullptr;  // the block using the slot (read by the watchdog only while it holds a run)
};

struct Fiber {
    ucontext_t uc{};
    std::vector<char> stack;
    rk_ctx ctx{};
    int rc = 0;
    bool done = true;
    Block *block = nullptr;
#if defined(RK_ASAN)
    void *fake_stack = nullptr;
#endif
#if defined(RK_TSAN)
    void *tsan_fiber = nullptr;
#endif
};

// One step of a block, in the shape run_catching_faults calls.
struct StepCall {
    int (*step)(rk_ctx *);
    rk_ctx *ctx;
    static int run(void *self) {
        auto *c = static_cast<StepCall *>(self);
        return c->step(c->ctx);
    }
};

struct Block {
    void *host_slot[1];  // ctx.host points here: [0] = the KernelCore
    std::shared_ptr<KernelCore> core;
    rk_ctx ctx{};
    std::unique_ptr<GuardedBuffer> out;  // reply buffers, ending at a guard page
    std::vector<std::uint8_t> shared;
    std::vector<Fiber> fibers;
    ucontext_t sched{};
    Fiber *current = nullptr;
    RK_GLOBAL const void *in = nullptr;  // the message the fibers handle, and its reply buffer
    void *cur_out = nullptr;
    rk_run_info run{};
    rk_i32 run_status[RK_MAX_RUN] = {};
    rk_i32 run_error[RK_MAX_RUN] = {};
#if defined(RK_ASAN)
    void *sched_fake = nullptr;
    const void *sched_bottom = nullptr;
    std::size_t sched_size = 0;
#endif
#if defined(RK_TSAN)
    void *tsan_sched = nullptr;
#endif
    // Batched host handler buffers.
    std::vector<std::uint8_t> batch_in, batch_out;
    std::vector<rk_envelope> batch_env;
    std::size_t batch_n = 0;  // messages of the batch in flight (read by the watchdog)
    // Supervision: the watchdog's slot (null: no watchdog), whether the block was abandoned, a restart's
    // wait, and the one-message ring and routes a held message is redelivered through.
    std::shared_ptr<BlockSlot> slot;
    bool in_handlers = false;  // between the BEGIN and FINISH hooks: a trap now is a handler's
    bool abandoned = false;
    std::uint64_t backoff_ns = 0;
    std::unique_ptr<Ring> held_ring;
    rk_routes held_routes{};
    rk_u64 held_word = 0;
    // Wake-ups owed to host threads: a waiter's notify costs a full fence, so a block collects them and
    // pays once per run of messages (flush()). Spinning receivers see the data at once regardless.
    static constexpr int kPending = 8;
    Queue *pending_data[kPending] = {};
    Queue *pending_space[kPending] = {};
    int n_data = 0, n_space = 0;
    int since_flush = 0;

    void flush() {
        for (int i = 0; i < n_data; ++i) pending_data[i]->notify_readable();
        for (int i = 0; i < n_space; ++i) pending_space[i]->notify_space();
        n_data = n_space = 0;
        since_flush = 0;
        rk_block_refresh(&ctx);
    }
    static void owe(Queue **list, int &n, Queue *q, bool data) {
        for (int i = 0; i < n; ++i)
            if (list[i] == q) return;
        if (n < kPending) {
            list[n++] = q;
        } else if (data) {
            q->notify_readable();
        } else {
            q->notify_space();
        }
    }
};

thread_local Block *t_block = nullptr;

// ---- supervision, the block's side ------------------------------------------------------------------------

std::string handler_label(const KernelSpec &spec) {
    const Handler &h = spec.handler;
    switch (h.kind) {
    case Handler::Kind::Source: return "handler '" + h.entry + "' (rk.Source)";
    case Handler::Kind::Native: return "handler '" + h.name + "' (compiled)";
    case Handler::Kind::Builtin: return "built-in handler '" + h.name + "'";
    default: return "the host handler of kernel '" + spec.name + "'";
    }
}

// The block holds a run now (taken at `now`, wall_ns): the watchdog's clock starts.
void begin_supervised(Block &b, std::uint64_t now) {
    if (b.slot) b.slot->phase.store(std::max<std::uint64_t>(now, 1), std::memory_order_release);
}

// The handlers of the run have returned: true when the watchdog took the run over meanwhile (the block must
// leave without touching the rings), else the run is the block's to finish.
bool run_taken_over(Block &b) {
    if (!b.slot) return false;
    std::uint64_t v = b.slot->phase.load(std::memory_order_acquire);
    while (v != kAbandoning && v != kAbandoned)
        if (b.slot->phase.compare_exchange_weak(v, 0, std::memory_order_acq_rel, std::memory_order_acquire)) return false;
    while (b.slot->phase.load(std::memory_order_acquire) != kAbandoned) std::this_thread::yield();
    b.abandoned = true;
    return true;
}

// What the block does with the supervisor's decision: fault the kernel, or go on as a fresh block after the
// backoff.
void apply(Block &b, const Supervision::Decision &d) {
    if (d.fault) {
        b.core->fault(d.why);
        return;
    }
    b.backoff_ns = d.backoff_ns;
    b.run.routes = 0;  // a fresh view of the inputs, fresh block memory
    std::fill(b.shared.begin(), b.shared.end(), 0);
    b.ctx.max_run = 1;
}

// Under a RestartPolicy, a message its handler failed with RK_ERR_FAULT (rk_fault, rk.KernelFault) is a fault of
// the kernel: the run stopped there (RK_FAULT_STOPS_RUN); the supervisor takes that message (redelivery or dead
// letter) and holds the rest of the run, which was not handled, for the restarted block. The messages before it
// are finished as usual.
void hold_faulted(Block &b) {
    KernelCore &core = *b.core;
    if (!core.supervision->supervised()) return;
    rk_ctx &ctx = b.ctx;
    const std::uint32_t in_size = core.spec.input_size;
    rk_u32 at = b.run.n;
    for (rk_u32 j = 0; j < b.run.n && at == b.run.n; ++j)
        if (ctx.run_status[j] != RK_STATUS_EXPIRED && ctx.run_error[j] == RK_ERR_FAULT) at = j;
    if (at == b.run.n) return;
    const rk_envelope *faulted = rk_run_slot(&b.run, b.run.first + at);
    std::vector<HeldMessage> failed{held_copy(faulted, in_size)}, untouched;
    const std::string text = core.failure_text(faulted->message_id, RK_ERR_FAULT);
    ctx.run_status[at] = RK_STATUS_HELD;
    for (rk_u32 j = at + 1; j < b.run.n; ++j) {
        if (ctx.run_status[j] == RK_STATUS_EXPIRED) continue;
        untouched.push_back(held_copy(rk_run_slot(&b.run, b.run.first + j), in_size));
        ctx.run_status[j] = RK_STATUS_HELD;
    }
    apply(b, core.supervision->on_fault(core, std::move(failed), std::move(untouched), RK_ERR_FAULT,
                                        handler_label(core.spec) + " faulted: " + text));
}

int supervise_hook(rk_ctx *, int what) {
    Block &b = *t_block;
    if (what == RK_SUPERVISE_FAULTED) return b.core->supervision->supervised() ? 1 : 0;
    if (what == RK_SUPERVISE_BEGIN) {
        b.in_handlers = true;
        begin_supervised(b, b.ctx.run_started_ns);  // rk_begin_run read the clock (host_now_ns) just now
        return 0;
    }
    b.in_handlers = false;
    if (run_taken_over(b)) return 1;
    hold_faulted(b);
    return 0;
}

// Route the block's next step to the oldest message the supervisor holds for redelivery, alone in the block's
// one-message ring (the outputs stay the kernel's). False when none is held.
bool route_held(Block &b) {
    KernelCore &core = *b.core;
    HeldMessage m;
    if (!core.supervision->take(m)) return false;
    if (!b.held_ring) b.held_ring = std::make_unique<Ring>(RK_RING_MIN_CAPACITY, core.spec.input_size, 0, core.memory);
    m.envelope.sequence = 0;
    b.held_ring->try_push(m.envelope, m.payload.data());  // always room: the block empties it every time
    {
        std::lock_guard<std::mutex> lock(core.routes_mu);
        b.held_routes = core.routes();
    }
    b.held_routes.n_inputs = 1;
    b.held_routes.inputs[0].ring = b.held_ring->header();
    b.held_routes.inputs[0].cookie = 0;
    b.held_word = reinterpret_cast<rk_u64>(&b.held_routes);
    b.ctx.routes = &b.held_word;
    return true;
}

void switch_to_sched(Fiber &f, bool dying) {
    Block &b = *f.block;
#if defined(RK_ASAN)
    __sanitizer_start_switch_fiber(dying ? nullptr : &f.fake_stack, b.sched_bottom, b.sched_size);
#endif
#if defined(RK_TSAN)
    __tsan_switch_to_fiber(b.tsan_sched, 0);
#endif
    (void)dying;
    swapcontext(&f.uc, &b.sched);
#if defined(RK_ASAN)
    __sanitizer_finish_switch_fiber(f.fake_stack, &b.sched_bottom, &b.sched_size);
#endif
}

void fiber_main() {
    Block &b = *t_block;
    Fiber &f = *b.current;
#if defined(RK_ASAN)
    __sanitizer_finish_switch_fiber(nullptr, &b.sched_bottom, &b.sched_size);
#endif
    f.rc = b.ctx.handler(&f.ctx, b.in, b.cur_out);
    f.done = true;
    switch_to_sched(f, true);  // never resumed
}

void fiber_barrier(rk_ctx *ctx) {
    Block &b = *t_block;
    if (b.fibers.empty()) {  // cannot happen: a handler that may reach a barrier always gets fibers
        std::fprintf(stderr, "ringkernel: rk_barrier reached by a handler run without per-thread stacks\n");
        std::abort();
    }
    Fiber &f = b.fibers[ctx->thread_rank];
    switch_to_sched(f, false);
}

int combine(int acc, int rc, std::uint32_t rank) {
    if (rc < 0) return acc < 0 && acc < rc ? acc : rc;  // an error from any thread wins
    if (acc < 0) return acc;
    return rank == 0 ? rc : acc;
}

// Run ctx->handler on every thread of the block.
int run_threads(rk_ctx *ctx, RK_GLOBAL const void *in, void *out) {
    Block &b = *t_block;
    const std::uint32_t n = ctx->thread_count;
    if (!ctx->uses_barrier) {
        int result = RK_NO_REPLY;
        for (std::uint32_t r = 0; r < n; ++r) {
            ctx->thread_rank = r;
            result = combine(result, ctx->handler(ctx, in, out), r);
        }
        ctx->thread_rank = 0;
        return result;
    }
    b.in = in;
    b.cur_out = out;
    for (std::uint32_t r = 0; r < n; ++r) {
        Fiber &f = b.fibers[r];
        f.ctx = *ctx;
        f.ctx.thread_rank = r;
        f.done = false;
        f.block = &b;
        getcontext(&f.uc);
        f.uc.uc_stack.ss_sp = f.stack.data();
        f.uc.uc_stack.ss_size = f.stack.size();
        f.uc.uc_link = nullptr;
        makecontext(&f.uc, fiber_main, 0);
    }
    for (;;) {  // one round: every live thread runs to the barrier or to its end
        bool live = false;
        for (std::uint32_t r = 0; r < n; ++r) {
            Fiber &f = b.fibers[r];
            if (f.done) continue;
            b.current = &f;
#if defined(RK_ASAN)
            __sanitizer_start_switch_fiber(&b.sched_fake, f.stack.data(), f.stack.size());
#endif
#if defined(RK_TSAN)
            __tsan_switch_to_fiber(f.tsan_fiber, 0);
#endif
            swapcontext(&b.sched, &f.uc);
#if defined(RK_ASAN)
            __sanitizer_finish_switch_fiber(b.sched_fake, nullptr, nullptr);
#endif
            if (!f.done) live = true;
        }
        if (!live) break;
    }
    int result = RK_NO_REPLY;
    for (std::uint32_t r = 0; r < n; ++r) result = combine(result, b.fibers[r].rc, r);
    return result;
}

void backoff(rk_ctx *, rk_u32 attempt) {
    if (attempt == 0 && t_block) t_block->flush();  // the consumer we wait for may be parked
    if (attempt < 64) {
        rk_cpu_relax();
    } else if (attempt < 96) {
        std::this_thread::yield();
    } else {
        const unsigned shift = std::min<unsigned>(attempt - 96, 10);
        std::this_thread::sleep_for(std::chrono::microseconds(1u << shift));  // up to ~1 ms
    }
}

void on_event(rk_ctx *, int kind, rk_u64 cookie, rk_u32) {
    auto *q = reinterpret_cast<Queue *>(static_cast<std::uintptr_t>(cookie));
    if (!q) return;
    Block *b = t_block;
    // A parked waiter is woken at once (it pays a futex wake anyway); otherwise the wake-up is owed
    // and paid at the block's next flush. A waiter parking right now, unseen without the fence, is
    // woken by that flush: after at most 32 messages, or when the block goes idle.
    switch (kind) {
    case RK_EVENT_DATA:
        if (b && !q->readers_waiting()) Block::owe(b->pending_data, b->n_data, q, true);
        else q->notify_readable();
        break;
    case RK_EVENT_SPACE:
        if (b && !q->writers_waiting()) Block::owe(b->pending_space, b->n_space, q, false);
        else q->notify_space();
        break;
    case RK_EVENT_EVICTED: q->notify_space(); break;  // counted in the ring header (rk_push_route)
    default: break;
    }
}

// The messages of a block the watchdog abandoned in its handler: the one being handled (failed) and the rest
// of its run or batch (untouched). The run's slots are released here: the block will not touch them again.
// A batch handler's batch (copied out of the ring before the handler ran): every message of it in flight.
std::vector<HeldMessage> batch_in_flight(const Block &b) {
    const std::uint32_t in_size = b.core->spec.input_size;
    std::vector<HeldMessage> out(b.batch_n);
    for (std::size_t i = 0; i < b.batch_n; ++i) {
        out[i].envelope = b.batch_env[i];
        out[i].payload.assign(b.batch_in.data() + i * in_size, b.batch_in.data() + (i + 1) * in_size);
    }
    return out;
}

void take_in_flight(Block &b, std::vector<HeldMessage> &failed, std::vector<HeldMessage> &untouched) {
    const std::uint32_t in_size = b.core->spec.input_size;
    if (b.batch_n) {
        failed = batch_in_flight(b);
        return;
    }
    // A watched block's run is one message (run_limit 1), written before the BEGIN hook published the run:
    // the message in flight. (A longer run would have the ones after it untouched; ctx.request, written after
    // the hook, is not read here.)
    rk_run_info &run = b.run;
    for (rk_u32 j = 0; j < run.n; ++j)
        (j == 0 ? failed : untouched).push_back(held_copy(rk_run_slot(&run, run.first + j), in_size));
    for (rk_u32 j = 0; j < run.n; ++j) rk_ring_release_at(rk_run_slot(&run, run.first + j), run.first + j, run.capacity, run.scope);
    on_event(&b.ctx, RK_EVENT_SPACE, run.cookie, run.n);
}

// ---- batched host handlers -------------------------------------------------------------------------

int host_batch_step(Block &b, HostHandler &h, std::size_t batch, std::mutex &serial) {
    rk_ctx *ctx = &b.ctx;
    KernelCore &core = *b.core;
    const rk_routes *routes = rk_current_routes(ctx);
    const std::uint32_t n_in = routes->n_inputs;
    for (std::uint32_t k = 0; k < n_in; ++k) {
        const std::uint32_t idx = (ctx->next_input + k) % n_in;
        const rk_route in = routes->inputs[idx];
        std::uint64_t first;
        const std::uint32_t got = rk_ring_acquire_n(in.ring, static_cast<std::uint32_t>(batch), &first,
                                                   static_cast<int>(ctx->single_consumer), RK_SCOPE_SYSTEM);
        if (!got) continue;
        ctx->next_input = (idx + 1) % n_in;
        const std::uint64_t now = wall_ns();
        std::size_t n = 0;
        std::uint64_t expired = 0, remote = 0;
        for (std::uint32_t i = 0; i < got; ++i) {
            rk_envelope *slot = rk_ring_slot(in.ring, first + i);
            if (ctx->ttl_ns && now > slot->enqueue_ns && now - slot->enqueue_ns > ctx->ttl_ns) {
                ++expired;
            } else {
                std::memcpy(&b.batch_env[n], slot, sizeof(rk_envelope));
                std::memcpy(b.batch_in.data() + n * ctx->in_size, rk_envelope_payload(slot), ctx->in_size);
                remote = std::max<std::uint64_t>(remote, slot->timestamp);
                ++n;
            }
            rk_ring_release(in.ring, slot, first + i, RK_SCOPE_SYSTEM);
        }
        on_event(ctx, RK_EVENT_SPACE, in.cookie, got);
        if (expired) {
            rk_count_dropped(ctx, expired);
            rk_atomic_fetch_add_u64(&in.ring->expired, expired, RK_RELAXED, RK_SCOPE_SYSTEM);  // after the cursor
        }
        if (!n) return RK_STEP_EXPIRED;
        ctx->stamp = rk_hlc_advance(&ctx->cb->hlc, remote, now / 1000000u);
        std::memset(b.batch_out.data(), 0, n * ctx->out_size);
        long replies;
        std::string error;
        b.batch_n = n;
        begin_supervised(b, now);  // read above, when the batch was taken
        try {
            std::unique_lock<std::mutex> lock(serial, std::defer_lock);
            if (!h.concurrent()) lock.lock();
            replies = h.handle_batch(ctx, b.batch_in.data(), n, ctx->in_size, b.batch_out.data());
        } catch (const std::exception &e) {
            error = e.what();
            replies = dynamic_cast<const KernelAtFault *>(&e) ? RK_ERR_FAULT : RK_ERR_HOST;
        }
        if (run_taken_over(b)) return RK_STEP_ABANDONED;
        if (replies == RK_ERR_FAULT && core.supervision->supervised()) {
            // A fault of the kernel under a RestartPolicy: the whole batch was in flight.
            std::vector<HeldMessage> failed = batch_in_flight(b);
            b.batch_n = 0;
            apply(b, core.supervision->on_fault(core, std::move(failed), {}, RK_ERR_FAULT,
                                                handler_label(core.spec) + " faulted: " + error));
            return RK_STEP_DONE;
        }
        b.batch_n = 0;
        if (replies < 0 && !error.empty()) {
            core.set_last_error_message(error);
            for (std::size_t i = 0; i < n; ++i) core.note_failure(b.batch_env[i].message_id, error);
        }
        if (replies < 0) {
            // The batch failed: every request of it is a dead letter.
            rk_record_error(ctx, static_cast<rk_i32>(replies));
            for (std::size_t i = 0; i < n; ++i)
                rk_dead_letter(ctx, &b.batch_env[i], b.batch_in.data() + i * ctx->in_size, static_cast<rk_i32>(replies));
            replies = 0;
        }
        const std::uint64_t done = rk_now_ns(ctx);  // also the replies' enqueue time
        rk_atomic_fetch_add_u64(reinterpret_cast<rk_u64 *>(&ctx->cb->messages_processed), n, RK_RELEASE,
                                RK_SCOPE_SYSTEM);
        rk_atomic_store_u64(reinterpret_cast<rk_u64 *>(&ctx->cb->last_activity_ns), done, RK_RELAXED, RK_SCOPE_SYSTEM);
        if (rk_atomic_load_i32(&ctx->cb->telemetry_enabled, RK_RELAXED, RK_SCOPE_SYSTEM)) {
            rk_telemetry *t = ctx->tel;
            std::uint64_t total = 0;
            for (std::size_t i = 0; i < n; ++i) {
                const std::uint64_t lat = done > b.batch_env[i].enqueue_ns ? done - b.batch_env[i].enqueue_ns : 1;
                total += lat;
                rk_atomic_min_nonzero_u64(&t->min_latency_ns, lat);
                rk_atomic_max_u64(&t->max_latency_ns, lat);
            }
            rk_atomic_fetch_add_u64(&t->messages_processed, n, RK_RELAXED, RK_SCOPE_SYSTEM);
            rk_atomic_fetch_add_u64(&t->total_latency_ns, total, RK_RELAXED, RK_SCOPE_SYSTEM);
            rk_atomic_max_u64(&t->last_processed_timestamp, ctx->stamp);
            rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&t->queue_depth),
                                static_cast<rk_i32>(rk_ring_size(in.ring, RK_SCOPE_SYSTEM)), RK_RELAXED,
                                RK_SCOPE_SYSTEM);
        }
        for (std::size_t i = 0; i < static_cast<std::size_t>(replies) && i < n; ++i) {
            ctx->request = &b.batch_env[i];
            rk_deliver(ctx, 0, b.batch_out.data() + i * ctx->out_size);
        }
        ctx->request = nullptr;
        return RK_STEP_DONE;
    }
    return RK_STEP_IDLE;
}

// ---- workers ------------------------------------------------------------------------------------------

bool any_input_ready(const rk_ctx &ctx) {
    const rk_routes *routes = rk_current_routes(&ctx);
    for (std::uint32_t i = 0; i < routes->n_inputs; ++i)
        if (rk_ring_can_acquire(routes->inputs[i].ring, RK_SCOPE_SYSTEM)) return true;
    return false;
}

class CpuBlocks final : public BlockRunner {
public:
    explicit CpuBlocks(KernelCore &core) : core_(core) {}

    void start(const std::shared_ptr<KernelCore> &core) override {
        const std::uint32_t grid = core->spec.grid;
        // The watchdog's view of each block (a policy alone needs none: a fault stops the run where it is).
        const bool watched = core->spec.options.handler_timeout_ns() != 0;
        std::lock_guard<std::mutex> lock(threads_mu_);
        threads_.reserve(grid);
        slots_.resize(grid);
        for (std::uint32_t i = 0; i < grid; ++i) {
            alive_.fetch_add(1, std::memory_order_relaxed);
            if (watched) slots_[i] = std::make_shared<BlockSlot>();
            // Each worker holds the core, and with it this runner, until it exits.
            threads_.emplace_back([core, i, slot = slots_[i]] { run(core, i, slot, 0); });
        }
        if (core->spec.options.handler_timeout_ns()) watchdog_ = std::thread([this, core] { watch(core); });
    }

    bool wait_stopped(std::int64_t timeout_ns) override {
        core_.wake();  // parked workers see should_terminate
        // The watchdog keeps watching while the blocks finish their runs: a handler hung past handler_timeout
        // is abandoned then too (its messages wait for drain()), so terminate() need not wait it out.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
        std::unique_lock<std::mutex> lock(core_.exit_mu);
        const bool stopped = core_.exit_cv.wait_until(lock, deadline, [this] { return alive_.load() == 0; });
        lock.unlock();
        if (stopped) {
            stop_watchdog();  // (terminate() waits in slices: only once every block has left)
            std::lock_guard<std::mutex> threads(threads_mu_);
            for (auto &t : threads_)
                if (t.joinable()) t.join();
        }
        return stopped;
    }

    void abandon() override {
        stop_watchdog();  // first: the watchdog takes threads_mu_ when it replaces a block
        std::lock_guard<std::mutex> lock(threads_mu_);
        for (auto &t : threads_)
            if (t.joinable()) t.detach();
    }

    std::uint32_t alive() const override { return alive_.load(); }

    bool quiesce(std::int64_t timeout_ns) override {
        core_.wake();  // parked workers count themselves paused
        return wait_blocks_paused(core_, timeout_ns);
    }

    // What serialises a non-concurrent host handler: replaced when the watchdog abandons a worker, which may
    // hold it for as long as its handler runs.
    std::shared_ptr<std::mutex> serial_lock() const { return std::atomic_load(&serial_); }

    ~CpuBlocks() override {
        stop_watchdog();
        // The last owner of the core may be a worker of this very runner (an abandoned block whose
        // handler finally returned): it cannot join itself.
        for (auto &t : threads_) {
            if (!t.joinable()) continue;
            if (t.get_id() == std::this_thread::get_id()) t.detach();
            else t.join();
        }
    }

private:
    static void run(std::shared_ptr<KernelCore> core, std::uint32_t index, std::shared_ptr<BlockSlot> slot,
                    std::uint64_t delay_ns);
    void watch(std::shared_ptr<KernelCore> core);
    void abandon_block(const std::shared_ptr<KernelCore> &core, std::uint32_t index, std::uint64_t began);
    void stop_watchdog() {
        {
            std::lock_guard<std::mutex> lock(watch_mu_);
            watch_stop_ = true;
        }
        watch_cv_.notify_all();
        if (watchdog_.joinable()) {
            if (watchdog_.get_id() == std::this_thread::get_id()) watchdog_.detach();
            else watchdog_.join();
        }
    }
    // A block leaves for good (it exited, or was abandoned with no replacement): the last one marks the kernel
    // terminated.
    void block_gone() {
        std::lock_guard<std::mutex> lock(core_.exit_mu);
        if (alive_.fetch_sub(1, std::memory_order_acq_rel) == 1)
            rk_atomic_store_i32(&core_.cb->has_terminated, 1, RK_RELEASE, RK_SCOPE_SYSTEM);
        core_.exit_cv.notify_all();
    }

    KernelCore &core_;
    mutable std::mutex threads_mu_;  // threads_ and slots_ (the watchdog replaces abandoned workers)
    std::vector<std::thread> threads_;
    std::vector<std::shared_ptr<BlockSlot>> slots_;  // per block index (null: the kernel has no watchdog)
    std::atomic<std::uint32_t> alive_{0};
    std::shared_ptr<std::mutex> serial_ = std::make_shared<std::mutex>();
    std::thread watchdog_;
    std::mutex watch_mu_;
    std::condition_variable watch_cv_;
    bool watch_stop_ = false;  // under watch_mu_
};

// The watchdog (LaunchOptions::handler_timeout): every quarter of the timeout, a block whose run began longer
// ago than the timeout is abandoned in its handler.
void CpuBlocks::watch(std::shared_ptr<KernelCore> core) {
    const std::uint64_t limit = core->spec.options.handler_timeout_ns();
    const auto tick = std::chrono::nanoseconds(std::min<std::uint64_t>(std::max<std::uint64_t>(limit / 4, 500'000), 100'000'000));
    std::unique_lock<std::mutex> lock(watch_mu_);
    while (!watch_stop_) {
        watch_cv_.wait_for(lock, tick);
        if (watch_stop_) break;
        lock.unlock();
        for (std::uint32_t i = 0; i < core->spec.grid; ++i) {
            std::shared_ptr<BlockSlot> slot;
            {
                std::lock_guard<std::mutex> threads(threads_mu_);
                slot = slots_[i];
            }
            const std::uint64_t began = slot->phase.load(std::memory_order_acquire);
            if (began == 0 || began >= kAbandoned) continue;
            const std::uint64_t now = wall_ns();
            if (now > began && now - began > limit) abandon_block(core, i, began);
        }
        lock.lock();
    }
    lock.unlock();
    core.reset();  // may free the kernel, and this runner with it: nothing of it is touched after
}

void CpuBlocks::abandon_block(const std::shared_ptr<KernelCore> &core, std::uint32_t index, std::uint64_t began) {
    std::shared_ptr<BlockSlot> slot;
    {
        std::lock_guard<std::mutex> lock(threads_mu_);
        slot = slots_[index];
    }
    if (!slot->phase.compare_exchange_strong(began, kAbandoning, std::memory_order_acq_rel)) return;  // it finished
    Block &b = *slot->block;  // stays: the block waits for kAbandoned before it leaves
    std::vector<HeldMessage> failed, untouched;
    take_in_flight(b, failed, untouched);
    const KernelSpec &spec = core->spec;
    char secs[32];
    std::snprintf(secs, sizeof secs, "%g", static_cast<double>(spec.options.handler_timeout_ns()) / 1e9);
    const std::string text = handler_label(spec) + " ran past handler_timeout=" + secs + " s on one message (block " +
                             std::to_string(index) + " of " + std::to_string(spec.grid) +
                             "); its worker thread was abandoned (it cannot be preempted) and its late result will be "
                             "discarded";
    Supervision::Decision d;
    if (rk_atomic_load_i32(&core->cb->should_terminate, RK_ACQUIRE, RK_SCOPE_SYSTEM)) {
        // Terminating: nothing restarts, so the run is not failed or redelivered; it waits for drain().
        failed.insert(failed.end(), std::make_move_iterator(untouched.begin()), std::make_move_iterator(untouched.end()));
        core->supervision->hold_unfinished(*core, std::move(failed), RK_ERR_TIMEOUT,
                                           text + "; the kernel was terminating: drain() returns the message");
    } else {
        d = core->supervision->on_fault(*core, std::move(failed), std::move(untouched), RK_ERR_TIMEOUT, text);
    }
    core->supervision->abandoned.fetch_add(1, std::memory_order_relaxed);
    std::atomic_store(&serial_, std::make_shared<std::mutex>());  // the abandoned handler may hold the old one
    slot->phase.store(kAbandoned, std::memory_order_release);     // from here the old block may leave at any time
    const bool restart = !d.fault && !rk_atomic_load_i32(&core->cb->should_terminate, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    {
        std::lock_guard<std::mutex> lock(threads_mu_);
        if (threads_[index].joinable()) threads_[index].detach();
        if (restart) {  // the fresh block takes the old one's place (and its count in alive_)
            slots_[index] = std::make_shared<BlockSlot>();
            threads_[index] = std::thread([core, index, fresh = slots_[index], delay = d.backoff_ns] {
                run(core, index, fresh, delay);
            });
        }
    }
    if (!restart) block_gone();
    if (d.fault) core->fault(d.why);
}

// Wait up to `ns` (a restart's backoff), or until the kernel is told to terminate. A block waiting here holds no
// run, so it counts itself paused while the kernel is inactive: a pause (checkpoint, actor_state) need not wait
// for the backoff to pass.
void restart_wait(KernelCore &core, rk_ctx &ctx, std::uint64_t ns) {
    if (!ns) return;
    const Deadline until = Deadline::from(Wait::for_ns(static_cast<std::int64_t>(ns)));
    auto active = [&] { return rk_atomic_load_i32(&core.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0; };
    while (!rk_should_terminate(&ctx) && !until.passed()) {
        rk_note_active(&ctx, active());  // in when inactive, out when active again (the top of the loop's protocol)
        core.doorbell->wait([&] { return rk_should_terminate(&ctx) || active() == (ctx.paused != 0u); }, until, nullptr);
    }
}

// A native handler trapped (SIGSEGV, ...) while the block ran its handlers: the message it was handling failed
// -- a dead letter, or under a RestartPolicy a fault of the kernel --, the rest of the run is held for
// redelivery, the messages before it are finished as usual, and the block goes on as a fresh one. False when
// the trap was elsewhere (the kernel faults).
bool recover_trap(Block &b, const std::string &text) {
    rk_ctx &ctx = b.ctx;
    rk_run_info &run = b.run;
    if (!b.in_handlers || !ctx.request) return false;
    rk_u32 at = run.n;
    for (rk_u32 j = 0; j < run.n; ++j)
        if (rk_run_slot(&run, run.first + j) == ctx.request) at = j;
    if (at == run.n) return false;
    b.in_handlers = false;
    if (run_taken_over(b)) return true;  // the watchdog was taking it over: it has the messages
    KernelCore &core = *b.core;
    std::vector<HeldMessage> failed, untouched;
    for (rk_u32 j = at; j < run.n; ++j) {
        if (ctx.run_status[j] == RK_STATUS_EXPIRED) continue;
        (j == at ? failed : untouched).push_back(held_copy(rk_run_slot(&run, run.first + j), core.spec.input_size));
        ctx.run_status[j] = RK_STATUS_HELD;
    }
    ctx.thread_rank = 0;
    const Supervision::Decision d = core.supervision->on_fault(core, std::move(failed), std::move(untouched), RK_ERR_FAULT, text);
    rk_finish_run(&ctx);
    apply(b, d);
    return true;
}

void CpuBlocks::run(std::shared_ptr<KernelCore> core_ptr, std::uint32_t index, std::shared_ptr<BlockSlot> slot,
                    std::uint64_t delay_ns) {
    KernelCore &core = *core_ptr;
    const KernelSpec &spec = core.spec;
    Block b;
    b.core = core_ptr;
    b.host_slot[0] = &core;
    b.slot = std::move(slot);
    if (b.slot) b.slot->block = &b;
    // Runs of up to 32 messages (a host handler: one at a time, as it is slow anyway), within 1 MiB of
    // reply buffers. Under a watchdog (handler_timeout) runs are of one message: the one in flight when the
    // watchdog takes a block over, with no finished replies of the same run still to deliver. (A RestartPolicy
    // alone keeps full runs: a fault stops its run at the faulted message, RK_FAULT_STOPS_RUN.)
    const bool host_handler = spec.handler.kind == Handler::Kind::Host;
    const std::uint32_t run_limit =
        host_handler || b.slot ? 1u : std::max<std::uint32_t>(1, std::min<std::uint32_t>(RK_MAX_RUN, (1u << 20) / spec.output_size));
    b.out = std::make_unique<GuardedBuffer>(static_cast<std::size_t>(run_limit) * std::max<std::uint32_t>(spec.output_size, 8));
    b.shared.assign(RK_SHARED_BYTES, 0);
    rk_ctx &ctx = b.ctx;
    ctx.cb = core.cb;
    ctx.tel = core.tel;
    ctx.routes = core.routes_word;
    ctx.buffers = core.buffers ? core.buffers->table : nullptr;
    ctx.block_index = index;
    ctx.grid = spec.grid;
    ctx.thread_rank = 0;
    ctx.thread_count = spec.block;
    ctx.in_size = spec.input_size;
    ctx.out_size = spec.output_size;
    ctx.out_type = spec.output_type;
    ctx.node = static_cast<rk_u16>(core.cb->node);
    // Never the single-consumer path: besides the blocks, a DROP_OLDEST producer (a host sender, an
    // upstream kernel) evicts from this ring, and that is a second consumer.
    ctx.single_consumer = 0u;
    ctx.backpressure = static_cast<rk_u32>(spec.options.backpressure());
    ctx.ttl_ns = spec.options.ttl_ns();
    ctx.reply_id_base = core.reply_id_base;
    ctx.out = b.out->data();
    ctx.run = &b.run;
    ctx.run_status = b.run_status;
    ctx.run_error = b.run_error;
    ctx.run_limit = run_limit;
    ctx.max_run = 1;  // grows with the first runs, as fast as the handler allows
    ctx.shared = b.shared.data();
    ctx.uses_barrier = core.uses_barrier ? 1u : 0u;
    ctx.state = core.state;
    ctx.state_size = spec.state_size;
    ctx.dead_letters = core.dead_letters ? core.dead_letters->header() : nullptr;
    ctx.host = b.host_slot;
    ctx.run_threads = run_threads;
    ctx.barrier = fiber_barrier;
    ctx.backoff = backoff;
    ctx.event = on_event;
    ctx.now_ns = host_now_ns;
    ctx.supervise = supervise_hook;
    HostHandler *host = spec.handler.host.get();
    ctx.handler_data = host;
    if (spec.handler.kind == Handler::Kind::Native) {
        ctx.handler_data = reinterpret_cast<void *>(spec.handler.native);
        native_handler_serve(&ctx);
    }
    std::size_t batch = host ? host->batch_size() : 1;
    if (batch > 1) {
        b.batch_in.resize(batch * spec.input_size);
        b.batch_out.resize(batch * spec.output_size);
        b.batch_env.resize(batch);
    }
    if (core.uses_barrier && spec.block > 1) {
        b.fibers.resize(spec.block);
        for (Fiber &f : b.fibers) {
            f.stack.resize(kFiberStack);
#if defined(RK_TSAN)
            f.tsan_fiber = __tsan_create_fiber(0);
#endif
        }
#if defined(RK_TSAN)
        b.tsan_sched = __tsan_get_current_fiber();
#endif
    }
    t_block = &b;
    t_block_core = &core;
    const bool native = (spec.handler.kind == Handler::Kind::Source || spec.handler.kind == Handler::Kind::Native) &&
                        handler_faults_catchable() && batch <= 1;
    if (native) {
        install_handler_fault_handlers();
        use_signal_stack();
    }
    rk_block_refresh(&ctx);
    const bool serial_host = host && !host->concurrent();
    auto *runner = static_cast<CpuBlocks *>(core.runner.get());
    Supervision &sup = *core.supervision;
    restart_wait(core, ctx, delay_ns);  // a fresh block after a restart: the policy's backoff first

    constexpr std::int64_t kSpinNs = 50'000;  // spin this long on an idle kernel before parking
    std::int64_t idle_since = -1;
    // Wake for work, for terminate, or to count the block paused when the kernel went inactive (a pause
    // waits for that).
    auto ready = [&] {
        if (rk_should_terminate(&ctx)) return true;
        return rk_atomic_load_i32(&core.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) ? sup.waiting() || any_input_ready(ctx)
                                                                                    : ctx.paused == 0u;
    };
    for (;;) {
        if (rk_should_terminate(&ctx)) break;
        if (!rk_note_active(&ctx, rk_atomic_load_i32(&core.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0)) {
            // Inactive (or paused): consume nothing; park until activated or told to terminate.
            b.flush();
            core.doorbell->wait(
                [&] {
                    return rk_should_terminate(&ctx) ||
                           rk_atomic_load_i32(&core.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;
                },
                Deadline::from(Wait::for_ns(100'000'000)), nullptr);
            continue;
        }
        // Messages held for redelivery go first (they were accepted before what waits in the rings).
        const bool held = sup.waiting() && route_held(b);
        int rc;
        if (batch > 1) {
            std::shared_ptr<std::mutex> serial = runner->serial_lock();
            rc = host_batch_step(b, *host, batch, *serial);
        } else if (serial_host) {
            std::shared_ptr<std::mutex> serial = runner->serial_lock();
            std::lock_guard<std::mutex> lock(*serial);
            rc = core.step(&ctx);
        } else if (native) {
            // A native handler's synchronous fault (SIGSEGV, SIGFPE, ...) fails its message, not the process.
            HandlerFault fault;
            StepCall call{core.step, &ctx};
            if (!run_catching_faults(&StepCall::run, &call, &rc, &fault)) {
                const bool source = spec.handler.kind == Handler::Kind::Source;
                const std::string text = "handler '" + (source ? spec.handler.entry : spec.handler.name) +
                                         (source ? "' (rk.Source) raised " : "' (compiled) raised ") + fault.describe() +
                                         " on block " + std::to_string(index) + " of " + std::to_string(spec.grid);
                if (!recover_trap(b, text)) {
                    core.fault(text + ", outside its handler; the run of messages it was handling is lost and the "
                                      "kernel takes no more");
                    break;
                }
                rc = RK_STEP_DONE;
            }
        } else {
            rc = core.step(&ctx);
        }
        if (held) ctx.routes = core.routes_word;
        if (rc == RK_STEP_ABANDONED || b.abandoned) break;  // the watchdog has its messages; leave quietly
        if (b.backoff_ns) {  // restarted after a fault: the policy's backoff
            b.flush();
            restart_wait(core, ctx, b.backoff_ns);
            b.backoff_ns = 0;
        }
        if (rc != RK_STEP_IDLE) {
            idle_since = -1;
            if (++b.since_flush >= 32) b.flush();
            continue;
        }
        if (b.since_flush || b.n_data || b.n_space) b.flush();
        const std::int64_t now = static_cast<std::int64_t>(wall_ns());
        if (idle_since < 0) idle_since = now;
        if (now - idle_since < kSpinNs) {
            for (int i = 0; i < 16; ++i) rk_cpu_relax();
            continue;
        }
        core.doorbell->wait(ready, Deadline::from(Wait::for_ns(100'000'000)), nullptr);
        idle_since = -1;
    }

    // An abandoned block owes nothing: the watchdog took its messages and its place (it is not counted).
    if (!b.abandoned) b.flush();
#if defined(RK_TSAN)
    for (Fiber &f : b.fibers) __tsan_destroy_fiber(f.tsan_fiber);
#endif
    t_block = nullptr;
    t_block_core = nullptr;
    if (native) release_signal_stack();
    if (spec.handler.kind == Handler::Kind::Native) native_handler_serve(nullptr);
    if (!b.abandoned) {
        rk_atomic_fetch_add_i32(&core.cb->blocks_exited, 1, RK_ACQ_REL, RK_SCOPE_SYSTEM);
        runner->block_gone();
    }
    b.core.reset();
    // core_ptr goes last: when it is the final owner, the kernel's memory is freed here.
}

class CpuBackend final : public Backend {
public:
    const char *name() const noexcept override { return "cpu"; }
    bool supervises() const override { return true; }

    void prepare(KernelCore &core, const RuntimeConfig &cfg) override {
        const KernelSpec &spec = core.spec;
        const Handler &h = spec.handler;
        switch (h.kind) {
        case Handler::Kind::Builtin:
            check_builtin(spec);  // a known name, records of the sizes it needs
#define RK_CPU_BUILTIN_PICK(builtin, fn, records) \
    if (h.name == #builtin) core.step = step_##builtin;
            RK_BUILTINS(RK_CPU_BUILTIN_PICK)
#undef RK_CPU_BUILTIN_PICK
            break;
        case Handler::Kind::Source:
        {
            auto module = compile_host_source(h.code, h.entry, cfg);
            core.step = module->step;
            core.uses_barrier = module->uses_barrier;
            core.module = std::move(module);
        }
            break;
        case Handler::Kind::Host:
            if (!h.host) throw std::invalid_argument("host handler is null");
            core.step = step_host;
            break;
        case Handler::Kind::Native:
            core.step = native_handler_step;  // Handler::compiled() refused a null function
            break;
        case Handler::Kind::Image:  // Runtime::create refuses images on a backend that loads none
            throw std::logic_error("handler image '" + h.name + "' reached the cpu backend, which loads none");
        }
        core.runner = std::make_unique<CpuBlocks>(core);
    }
};

}  // namespace

void register_cpu_backend(BackendRegistry &r) {
    BackendEntry e;
    e.name = "cpu";
    e.auto_rank = 2;  // "auto" falls back to it
    e.status = [] {
        return BackendStatus{"cpu", true,
                             "ring kernels on host worker threads (" +
                                 std::to_string(std::thread::hardware_concurrency()) + " hardware threads)"};
    };
    e.make = [](const RuntimeConfig &) -> std::unique_ptr<Backend> { return std::make_unique<CpuBackend>(); };
    r.add(std::move(e));
}

}  // namespace rk
