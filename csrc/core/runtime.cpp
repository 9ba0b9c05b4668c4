// runtime.cpp — kernels, their lifecycle, the named-queue registry, routes (K2K, topics), buffers.
#include "ringkernel/runtime.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <thread>

#include "backend_registry.hpp"
#include "kernel_core.hpp"
#include "process.hpp"
#include "source_cache.hpp"
#include "ringkernel/ids.hpp"
#include "rk_builtins.h"

namespace rk {

const char *to_string(KernelState s) noexcept {
    switch (s) {
    case KernelState::Created: return "CREATED";
    case KernelState::Launched: return "LAUNCHED";
    case KernelState::Active: return "ACTIVE";
    case KernelState::Deactivated: return "DEACTIVATED";
    case KernelState::Terminating: return "TERMINATING";
    case KernelState::Terminated: return "TERMINATED";
    case KernelState::Faulted: return "FAULTED";
    }
    return "?";
}

const char *to_string(KernelMode m) noexcept {
    switch (m) {
    case KernelMode::Auto: return "auto";
    case KernelMode::Persistent: return "persistent";
    case KernelMode::Dispatch: return "dispatch";
    }
    return "?";
}

KernelMode kernel_mode_from_string(const std::string &name) {
    for (KernelMode m : {KernelMode::Auto, KernelMode::Persistent, KernelMode::Dispatch})
        if (name == to_string(m)) return m;
    throw std::invalid_argument("mode must be 'auto', 'persistent' or 'dispatch', got '" + name + "'");
}

Handler Handler::builtin(std::string name) {
    Handler h;
    h.kind = Kind::Builtin;
    h.name = std::move(name);
    return h;
}

Handler Handler::source(std::string code, std::string entry) {
    Handler h;
    h.kind = Kind::Source;
    h.code = std::move(code);
    h.entry = std::move(entry);
    return h;
}

Handler Handler::on_host(std::shared_ptr<HostHandler> host) {
    Handler h;
    h.kind = Kind::Host;
    h.host = std::move(host);
    return h;
}

Handler Handler::compiled(std::string name, NativeHandlerFn fn, std::shared_ptr<const void> keepalive) {
    if (!fn) throw std::invalid_argument("a compiled handler needs a function (got a null pointer)");
    Handler h;
    h.kind = Kind::Native;
    h.name = std::move(name);
    h.native = fn;
    h.keepalive = std::move(keepalive);
    return h;
}

Handler Handler::image(std::string name, std::string target, std::string image, std::string entry) {
    if (!valid_identifier(target))
        throw std::invalid_argument("a handler image names the backend it was built for (e.g. 'cuda'), got target '" +
                                    target + "'");
    if (image.empty()) throw std::invalid_argument("handler image '" + name + "' is empty");
    if (!valid_identifier(entry))
        throw std::invalid_argument("entry must be a C identifier naming the image's kernel, got '" + entry + "'");
    Handler h;
    h.kind = Kind::Image;
    h.name = std::move(name);
    h.target = std::move(target);
    h.code = std::move(image);
    h.entry = std::move(entry);
    return h;
}

std::string Handler::describe() const {
    switch (kind) {
    case Kind::Builtin: return "builtin:" + name;
    case Kind::Source: return "source:" + entry;
    case Kind::Host: return "host";
    case Kind::Native: return "compiled:" + name;
    case Kind::Image: return "image:" + target + ":" + name;
    }
    return "?";
}

std::vector<std::string> builtin_handlers() {
#define RK_BUILTIN_NAME(builtin, fn, records) #builtin,
    return {RK_BUILTINS(RK_BUILTIN_NAME)};
#undef RK_BUILTIN_NAME
}

const char *check_builtin(const KernelSpec &spec) {
    const std::string &name = spec.handler.name;
    int records = -1;
    const char *entry = nullptr;
#define RK_BUILTIN_FIND(n, fn, rec) \
    if (name == #n) {               \
        records = rec;              \
        entry = #fn;                \
    }
    RK_BUILTINS(RK_BUILTIN_FIND)
#undef RK_BUILTIN_FIND
    if (!entry) {
        std::string names;
        for (const auto &n : builtin_handlers()) names += (names.empty() ? "" : ", ") + n;
        throw std::invalid_argument("no built-in handler named '" + name + "' (built-ins: " + names + ")");
    }
    if (records == RK_BUILTIN_SAME_SIZE && spec.input_size != spec.output_size)
        throw std::invalid_argument("the " + name + " handler needs input and output of one size, got " +
                                    std::to_string(spec.input_size) + " and " + std::to_string(spec.output_size) +
                                    " bytes");
    if (records == RK_BUILTIN_VECTOR &&
        (spec.input_size != sizeof(rk_vector_add_request) || spec.output_size != sizeof(rk_vector_add_response)))
        throw std::invalid_argument("the " + name + " handler takes VectorAddRequest (" +
                                    std::to_string(sizeof(rk_vector_add_request)) + " bytes) and answers VectorAddResponse (" +
                                    std::to_string(sizeof(rk_vector_add_response)) + " bytes), got " +
                                    std::to_string(spec.input_size) + " and " + std::to_string(spec.output_size));
    return entry;
}

std::vector<BackendStatus> backend_statuses() {
    std::vector<BackendStatus> out;
    for (const auto &e : backend_registry().entries()) out.push_back(e.status());
    return out;
}

// ---- buffers -----------------------------------------------------------------------------------------

BufferTableMem::BufferTableMem(std::uint32_t capacity, std::shared_ptr<MemoryResource> mem,
                               std::shared_ptr<MemoryResource> data_mem)
    : resource(std::move(mem)), data(std::move(data_mem)), memory(capacity, nullptr), sizes(capacity, 0) {
    entries = static_cast<rk_buffer_entry *>(resource->allocate(sizeof(rk_buffer_entry) * capacity, 64));
    count = capacity;
    table = static_cast<rk_buffer_table *>(resource->allocate(sizeof(rk_buffer_table), 64));
    table->capacity = capacity;
    table->entries = entries;
}

BufferTableMem::~BufferTableMem() {
    for (std::size_t i = 0; i < memory.size(); ++i)
        if (memory[i]) data->deallocate(memory[i], sizes[i]);
    resource->deallocate(table, sizeof(rk_buffer_table));
    resource->deallocate(entries, sizeof(rk_buffer_entry) * count);
}

struct Runtime::BufferTable : BufferTableMem {
    using BufferTableMem::BufferTableMem;
};

// ---- kernel core -----------------------------------------------------------------------------------------

thread_local const KernelCore *t_block_core = nullptr;

std::string BlockRunner::stuck() const {
    // The runner knows its kernel only through the blocks it counts; the caller names the kernel.
    return std::to_string(alive()) + " block(s) still inside the handler";
}

KernelCore::KernelCore(std::shared_ptr<MemoryResource> mem) : memory(std::move(mem)) {
    cb = static_cast<rk_control_block *>(memory->allocate(sizeof(rk_control_block), RK_CACHE_LINE));
    tel = static_cast<rk_telemetry *>(memory->allocate(sizeof(rk_telemetry), 64));
    routes_word = static_cast<rk_u64 *>(memory->allocate(sizeof(rk_u64), 64));
}

KernelCore::~KernelCore() {
    runner.reset();  // the blocks first: they read everything below
    dead_letters.reset();
    if (state) memory->deallocate(state, spec.state_size);
    for (rk_routes *r : route_history) memory->deallocate(r, sizeof(rk_routes));
    memory->deallocate(routes_word, sizeof(rk_u64));
    memory->deallocate(tel, sizeof(rk_telemetry));
    memory->deallocate(cb, sizeof(rk_control_block));
}

void KernelCore::fault(const std::string &why) {
    {
        std::lock_guard<std::mutex> lock(err_mu);
        if (faulted.load(std::memory_order_relaxed)) return;  // the first fault is the one reported
        fault_message = why;
        last_error_message = why;
        faulted.store(true, std::memory_order_release);
    }
    rk_atomic_store_i32(&cb->last_error, RK_ERR_FAULT, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_fetch_add_i32(&cb->errors_encountered, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(&cb->should_terminate, 1, RK_RELEASE, RK_SCOPE_SYSTEM);  // the other blocks leave too
    std::vector<std::shared_ptr<Queue>> queues;
    {
        std::lock_guard<std::mutex> lock(routes_mu);
        queues = held;
    }
    for (auto &q : queues) q->close("kernel '" + spec.name + "' is FAULTED: " + why);
    wake();
}

std::string KernelCore::fault_text() const {
    std::lock_guard<std::mutex> lock(err_mu);
    return fault_message;
}

void KernelCore::publish_routes(const rk_routes &next, std::vector<std::shared_ptr<Queue>> keep) {
    // Caller holds routes_mu.
    auto *table = static_cast<rk_routes *>(memory->allocate(sizeof(rk_routes), 64));
    *table = next;
    for (auto &q : keep) held.push_back(std::move(q));
    route_history.push_back(table);
    __atomic_store_n(routes_word, static_cast<rk_u64>(reinterpret_cast<std::uintptr_t>(table)), __ATOMIC_RELEASE);
    wake();
}

// ---- kernel ------------------------------------------------------------------------------------------------

namespace {
constexpr std::int64_t kDefaultTerminateNs = 5'000'000'000;
constexpr std::size_t kMaxQueuesPerKernel = 16;

rk_route route_of(const std::shared_ptr<Queue> &q) {
    rk_route r;
    r.ring = q->kernel_ring();
    r.cookie = static_cast<rk_u64>(reinterpret_cast<std::uintptr_t>(q.get()));
    return r;
}
}  // namespace

Kernel::Kernel(Runtime &rt, KernelSpec spec, std::uint16_t id)
    : rt_(&rt), spec_(std::move(spec)), id_(id), process_(process_generation()) {}

Kernel::~Kernel() {
    if (process_ != process_generation()) {
        // A fork() copy: the blocks' threads were not copied, so nothing may wait for them or free what they
        // would use (see Runtime::close).
        new std::shared_ptr<KernelCore>(std::move(core_));
        return;
    }
    const KernelState s = raw_state();
    if (s == KernelState::Launched || s == KernelState::Active || s == KernelState::Deactivated) {
        try {
            terminate(kDefaultTerminateNs);
        } catch (...) {
        }
    }
}

void Kernel::require(std::initializer_list<KernelState> allowed, const char *call, const char *allowed_calls) const {
    check_process(call);
    const KernelState s = state();
    for (KernelState a : allowed)
        if (a == s) return;
    std::ostringstream msg;
    msg << call << " is not allowed: kernel '" << name() << "' is " << to_string(s) << "; " << allowed_calls;
    throw LifecycleError(msg.str());
}

namespace {
const char *allowed_in(KernelState s) {
    switch (s) {
    case KernelState::Created: return "allowed now: launch(), terminate(), send() (it waits until the kernel runs)";
    case KernelState::Launched: return "allowed now: activate(), terminate(), send()";
    case KernelState::Active: return "allowed now: deactivate(), terminate(), send(), receive()";
    case KernelState::Deactivated: return "allowed now: activate(), terminate(), send(), receive()";
    case KernelState::Terminating: return "it is stopping; nothing is allowed until it has stopped";
    case KernelState::Terminated:
    case KernelState::Faulted: return "it has stopped: receive() what is left; launch a new kernel to go on";
    }
    return "";
}
}  // namespace

void Kernel::activate() {
    std::lock_guard<std::mutex> lock(mu_);
    require({KernelState::Launched, KernelState::Deactivated}, "activate()", allowed_in(state()));
    rk_atomic_store_i32(&core_->cb->is_active, 1, RK_RELEASE, RK_SCOPE_SYSTEM);
    state_.store(KernelState::Active, std::memory_order_release);
    core_->wake();
}

void Kernel::deactivate() {
    std::lock_guard<std::mutex> lock(mu_);
    require({KernelState::Active}, "deactivate()", allowed_in(state()));
    rk_atomic_store_i32(&core_->cb->is_active, 0, RK_RELEASE, RK_SCOPE_SYSTEM);
    state_.store(KernelState::Deactivated, std::memory_order_release);
}

void Kernel::check_process(const char *call) const {
    if (process_ != process_generation())
        throw LifecycleError(std::string(call) + ": " + forked_message("kernel '" + name() + "'"));
}

KernelState Kernel::terminate(std::int64_t timeout_ns) {
    check_process("terminate()");
    if (timeout_ns < 0) timeout_ns = kDefaultTerminateNs;
    const auto now = std::chrono::steady_clock::now();
    const auto deadline = now + std::chrono::nanoseconds(timeout_ns);
    KernelState s;
    {
        std::lock_guard<std::mutex> lock(mu_);
        s = raw_state();  // a kernel whose block faulted is stopped here like any other
        if (s == KernelState::Terminated || s == KernelState::Faulted) return s;  // idempotent
        if (s == KernelState::Terminating) {
            // Another caller is stopping it: join that, and the earlier of the two deadlines holds.
            if (deadline < stop_by_) stop_by_ = deadline;
        } else {
            stopping_since_ = now;
            stop_by_ = deadline;
            never_started_ = s == KernelState::Created;
            state_.store(KernelState::Terminating, std::memory_order_release);
            rk_atomic_store_i32(&core_->cb->is_active, 0, RK_RELEASE, RK_SCOPE_SYSTEM);
            rk_atomic_store_i32(&core_->cb->should_terminate, 1, RK_RELEASE, RK_SCOPE_SYSTEM);
        }
        if (core_->runs_on_this_thread()) {
            // A handler stopping its own kernel: its block cannot wait for itself to return. The stop is
            // asked for above; a helper thread waits for the blocks (within the timeout) and completes it.
            std::thread([self = shared_from_this(), timeout_ns] { self->terminate(timeout_ns); }).detach();
            return KernelState::Terminating;
        }
    }
    // Wait without the lock, in slices, so that other calls on this kernel answer at once (TERMINATING)
    // and a second terminate() can shorten the wait. One caller waits on the blocks at a time.
    for (;;) {
        bool stopped = true;
        {
            std::lock_guard<std::mutex> waiting(wait_mu_);
            if (raw_state() != KernelState::Terminating) break;  // another caller completed it
            std::chrono::steady_clock::time_point until;
            {
                std::lock_guard<std::mutex> lock(mu_);
                until = stop_by_;
            }
            const auto left = until - std::chrono::steady_clock::now();
            const std::int64_t slice = std::max<std::int64_t>(
                0, std::min<std::int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(left).count(), 20'000'000));
            if (!never_started_ && core_->runner) stopped = core_->runner->wait_stopped(slice);
            std::lock_guard<std::mutex> lock(mu_);
            if (!stopped && std::chrono::steady_clock::now() < stop_by_) continue;
            end_termination(stopped);
        }
        break;
    }
    std::unique_lock<std::mutex> lock(mu_);
    ended_cv_.wait(lock, [this] { return raw_state() != KernelState::Terminating; });
    const KernelState final_state = raw_state();
    std::shared_ptr<HostHandler> handler = std::move(dropped_handler_);
    lock.unlock();
    handler.reset();  // outside every lock (see end_termination)
    return final_state;
}

void Kernel::end_termination(bool stopped) {
    // Caller holds mu_ and wait_mu_; the kernel is TERMINATING.
    KernelState final_state = KernelState::Terminated;
    if (!stopped) {
        const std::string stuck = core_->runner->stuck();
        core_->runner->abandon();
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopping_since_).count();
        std::ostringstream msg;
        msg << "kernel '" << name() << "' did not stop within " << std::fixed << std::setprecision(1) << waited
            << " s: " << stuck << " (grid " << spec_.grid << "); it was abandoned and its blocks exit when the "
            << "handler returns (their memory is kept until then)";
        fault_ = msg.str();
        final_state = KernelState::Faulted;
    } else if (core_->runner) {
        if (std::string why = core_->runner->failure(); !why.empty()) {
            fault_ = why;
            final_state = KernelState::Faulted;
        } else if (core_->faulted.load(std::memory_order_acquire)) {
            fault_ = core_->fault_text();
            final_state = KernelState::Faulted;
        }
        core_->runner->stopped();
        // The blocks are gone: let go of a host handler now, not when the last handle of the kernel goes,
        // so that a handler that refers to its own kernel (to terminate it, say) makes no cycle that keeps
        // the kernel and its rings alive. Dropped by terminate() once the locks are released: a Python
        // handler is released under the GIL.
        dropped_handler_ = std::move(spec_.handler.host);
        core_->spec.handler.host.reset();  // the same handler: dropped_handler_ still holds it
    }
    release_queues(final_state == KernelState::Faulted ? "it is FAULTED: " + fault_
                                                        : "it is TERMINATED; launch a new kernel to go on");
    state_.store(final_state, std::memory_order_release);
    ended_cv_.notify_all();
}

void Kernel::release_queues(const std::string &why) {
    input_->close("cannot send to kernel '" + name() + "': " + why);
    // Receivers drain what arrived, then return at once instead of waiting for replies that cannot come.
    for (auto &q : channel_queues_) q->close("kernel '" + name() + "' sends no more: " + why);
    if (Runtime *rt = rt_.load()) rt->unregister_kernel(*this);
}

KernelState Kernel::state() const noexcept {
    const KernelState s = raw_state();
    if ((s == KernelState::Launched || s == KernelState::Active || s == KernelState::Deactivated) && core_ &&
        core_->faulted.load(std::memory_order_acquire))
        return KernelState::Faulted;
    return s;
}

std::string Kernel::fault() const {
    std::lock_guard<std::mutex> lock(mu_);
    if (fault_.empty() && core_ && core_->faulted.load(std::memory_order_acquire)) return core_->fault_text();
    return fault_;
}

const rk_control_block *Kernel::control_block() const noexcept { return core_->cb; }
const rk_telemetry *Kernel::telemetry_block() const noexcept { return core_->tel; }

void Kernel::enable_telemetry() {
    require({KernelState::Launched, KernelState::Active, KernelState::Deactivated}, "enable_telemetry()",
            "telemetry can be enabled on a launched kernel that has not been terminated");
    rk_atomic_store_i32(&core_->cb->telemetry_enabled, 1, RK_RELEASE, RK_SCOPE_SYSTEM);
}

void Kernel::disable_telemetry() { rk_atomic_store_i32(&core_->cb->telemetry_enabled, 0, RK_RELEASE, RK_SCOPE_SYSTEM); }

bool Kernel::telemetry_enabled() const noexcept {
    return rk_atomic_load_i32(&core_->cb->telemetry_enabled, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;
}

void Kernel::reset_telemetry() {
    rk_telemetry &t = *core_->tel;
    for (rk_u64 *f : {&t.messages_processed, &t.messages_dropped, &t.last_processed_timestamp, &t.total_latency_ns,
                      &t.min_latency_ns, &t.max_latency_ns})
        rk_atomic_store_u64(f, 0, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&t.queue_depth), 0, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&t.error_code), 0, RK_RELEASE, RK_SCOPE_SYSTEM);
}

TelemetrySnapshot Kernel::telemetry() const {
    if (!telemetry_enabled())
        throw TelemetryNotEnabledError("telemetry of kernel '" + name() +
                                       "' is not enabled: call enable_telemetry() first");
    rk_telemetry &t = *core_->tel;
    TelemetrySnapshot s;
    s.messages_processed = rk_atomic_load_u64(&t.messages_processed, RK_ACQUIRE, RK_SCOPE_SYSTEM);
    s.messages_dropped = rk_atomic_load_u64(&t.messages_dropped, RK_RELAXED, RK_SCOPE_SYSTEM);
    s.last_processed_timestamp = rk_atomic_load_u64(&t.last_processed_timestamp, RK_RELAXED, RK_SCOPE_SYSTEM);
    s.queue_depth = static_cast<std::uint32_t>(
        rk_atomic_load_i32(reinterpret_cast<rk_i32 *>(&t.queue_depth), RK_RELAXED, RK_SCOPE_SYSTEM));
    s.error_code = static_cast<std::uint32_t>(
        rk_atomic_load_i32(reinterpret_cast<rk_i32 *>(&t.error_code), RK_RELAXED, RK_SCOPE_SYSTEM));
    s.total_latency_ns = rk_atomic_load_u64(&t.total_latency_ns, RK_RELAXED, RK_SCOPE_SYSTEM);
    s.min_latency_ns = rk_atomic_load_u64(&t.min_latency_ns, RK_RELAXED, RK_SCOPE_SYSTEM);
    s.max_latency_ns = rk_atomic_load_u64(&t.max_latency_ns, RK_RELAXED, RK_SCOPE_SYSTEM);
    s.restarts = restarts();
    s.abandoned_workers = abandoned_workers();
    s.dead_letters = const_cast<Kernel *>(this)->dead_letter_counts().total;  // collects what the blocks pushed
    return s;
}

std::uint64_t Kernel::restarts() const noexcept {
    return core_->supervision->restarts.load(std::memory_order_relaxed);
}
std::uint64_t Kernel::abandoned_workers() const noexcept {
    return core_->supervision->abandoned.load(std::memory_order_relaxed);
}

std::uint64_t Kernel::messages_processed() const noexcept {
    return rk_atomic_load_u64(reinterpret_cast<rk_u64 *>(&core_->cb->messages_processed), RK_ACQUIRE, RK_SCOPE_SYSTEM);
}
std::int32_t Kernel::errors() const noexcept {
    return rk_atomic_load_i32(&core_->cb->errors_encountered, RK_ACQUIRE, RK_SCOPE_SYSTEM);
}
std::int32_t Kernel::last_error() const noexcept {
    return rk_atomic_load_i32(&core_->cb->last_error, RK_ACQUIRE, RK_SCOPE_SYSTEM);
}
std::string Kernel::last_error_message() const {
    std::lock_guard<std::mutex> lock(core_->err_mu);
    return core_->last_error_message;
}
std::uint64_t Kernel::messages_dropped() const noexcept {
    return rk_atomic_load_u64(&core_->cb->messages_dropped, RK_ACQUIRE, RK_SCOPE_SYSTEM);
}

KernelMode Kernel::mode() const noexcept { return core_->mode; }

bool Kernel::stopped() const noexcept {
    return rk_atomic_load_i32(&core_->cb->has_terminated, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;
}
std::uint64_t Kernel::hlc() const noexcept { return rk_atomic_load_u64(&core_->cb->hlc, RK_ACQUIRE, RK_SCOPE_SYSTEM); }

std::uint32_t Kernel::channel_index(const std::string &channel) const {
    if (channel.empty()) return 0;
    for (std::size_t i = 0; i < spec_.channels.size(); ++i)
        if (spec_.channels[i] == channel) return static_cast<std::uint32_t>(i + 1);
    std::string names;
    for (const auto &c : spec_.channels) names += (names.empty() ? "" : ", ") + c;
    throw std::out_of_range("kernel '" + name() + "' has no output channel '" + channel + "' (its channels: " +
                            (names.empty() ? std::string("none; declare them with channels= at launch") : names) + ")");
}

// ---- runtime ------------------------------------------------------------------------------------------------

Runtime::Runtime(const std::string &backend, RuntimeConfig cfg) : cfg_(std::move(cfg)), process_(process_generation()) {
    const BackendRegistry &registry = backend_registry();
    std::string chosen = backend;
    if (backend == "auto") {
        // The registered backends in their "auto" order; the first candidate that opens wins: a device that
        // reports available but cannot start (busy, too old for this build's device code) falls through to
        // the next, and the last one's error is the answer when none opens.
        std::vector<const BackendEntry *> order;
        for (const auto &e : registry.entries())
            if (e.auto_rank >= 0 && e.make) order.push_back(&e);
        std::stable_sort(order.begin(), order.end(),
                         [](const BackendEntry *a, const BackendEntry *b) { return a->auto_rank < b->auto_rank; });
        for (std::size_t i = 0; i < order.size() && !backend_; ++i) {
            const BackendEntry &e = *order[i];
            const bool last = i + 1 == order.size();
            if (!last && !(e.auto_candidate ? e.auto_candidate() : e.status().available)) continue;
            try {
                backend_ = e.make(cfg_);
                chosen = e.name;
            } catch (const BackendUnavailableError &) {
                if (last) throw;
            }
        }
        if (!backend_) throw BackendUnavailableError("no backend of this build can run here");
    } else {
        const BackendEntry *e = registry.find(backend);
        if (!e) {
            std::string names = "'auto'";
            for (const auto &r : registry.entries()) names += ", '" + r.name + "'";
            throw std::invalid_argument("backend must be one of " + names + "; got '" + backend + "'");
        }
        const BackendStatus s = e->status();
        if (!s.available) throw BackendUnavailableError("backend '" + backend + "' is unavailable: " + s.detail);
        if (!e->make) throw BackendUnavailableError("backend '" + backend + "' has no implementation in this build");
        backend_ = e->make(cfg_);
    }
    backend_name_ = chosen;
    if (cfg_.max_buffers == 0 || cfg_.max_buffers > (1u << 20))
        throw std::invalid_argument("max_buffers must be in [1, 1048576], got " + std::to_string(cfg_.max_buffers));
    buffers_ = std::make_shared<BufferTable>(cfg_.max_buffers, backend_->memory(), backend_->buffer_memory());
}

std::string Runtime::device_target() const { return backend_->device_target(); }

Runtime::~Runtime() {
    try {
        close();
    } catch (...) {
    }
}

void Runtime::check_open(const char *call) const {
    if (process_ != process_generation()) throw LifecycleError(std::string(call) + ": " + forked_message("this runtime"));
    if (closed_.load(std::memory_order_acquire)) throw LifecycleError(std::string(call) + " is not allowed: the runtime is closed");
}

void Runtime::check_name(const std::string &what, const std::string &name) {
    bool ok = !name.empty() && name.size() <= 64;
    for (std::size_t i = 0; ok && i < name.size(); ++i) {
        const char c = name[i];
        const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
        ok = alpha || (i > 0 && ((c >= '0' && c <= '9') || c == '-'));
    }
    if (!ok)
        throw std::invalid_argument(what + " must be 1 to 64 characters of [A-Za-z0-9_-], starting with a letter or "
                                           "'_'; got '" + name + "'");
}

void Runtime::register_queue(const std::string &name, std::shared_ptr<Queue> q, const std::string &owner) {
    // Caller holds mu_.
    if (queues_.count(name)) throw std::invalid_argument("a queue named '" + name + "' exists already");
    if (!owner.empty()) {
        std::size_t owned = 0;
        for (const auto &kv : queue_owner_) owned += kv.second == owner;
        if (owned >= kMaxQueuesPerKernel)
            throw std::invalid_argument("kernel '" + owner + "' has " + std::to_string(kMaxQueuesPerKernel) +
                                        " named queues already (the most a kernel may have)");
    }
    q->bind_to_process();
    queues_[name] = std::move(q);
    queue_owner_[name] = owner;
}

void Runtime::unregister_kernel(Kernel &k) {
    // The kernel's inputs (its .in, the K2K and topic rings into it) go away: nobody may go on
    // feeding them. Upstream kernels get routes without them (a reply waiting for space in one gives
    // up, counted dropped) and topics stop publishing into them.
    std::vector<std::shared_ptr<Queue>> inputs;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = queue_owner_.begin(); it != queue_owner_.end();) {
        if (it->second == k.name()) {
            if (queues_[it->first] != k.output_) inputs.push_back(queues_[it->first]);
            queues_.erase(it->first);
            it = queue_owner_.erase(it);
        } else {
            ++it;
        }
    }
    auto gone = [&](rk_u64 cookie) {
        for (auto &q : inputs)
            if (static_cast<rk_u64>(reinterpret_cast<std::uintptr_t>(q.get())) == cookie) return true;
        return false;
    };
    for (auto &other : kernels_) {
        if (other.get() == &k) continue;
        KernelCore &core = *other->core_;
        std::lock_guard<std::mutex> rl(core.routes_mu);
        rk_routes next = core.routes();
        bool changed = false;
        for (rk_u32 c = 0; c < next.n_channels; ++c) {
            rk_channel &ch = next.channels[c];
            rk_u32 kept = 0;
            for (rk_u32 i = 0; i < ch.count; ++i) {
                if (gone(ch.targets[i].cookie)) changed = true;
                else ch.targets[kept++] = ch.targets[i];
            }
            ch.count = kept;
        }
        if (changed) core.publish_routes(next, {});
    }
    for (auto &kv : topics_) {
        Topic &t = kv.second;
        auto &subs = t.info.subscribers;
        subs.erase(std::remove(subs.begin(), subs.end(), k.name()), subs.end());
        t.rings.erase(std::remove_if(t.rings.begin(), t.rings.end(),
                                     [&](const std::shared_ptr<Queue> &q) {
                                         return gone(static_cast<rk_u64>(reinterpret_cast<std::uintptr_t>(q.get())));
                                     }),
                      t.rings.end());
        t.publishers.erase(std::remove_if(t.publishers.begin(), t.publishers.end(),
                                          [&](const std::pair<std::weak_ptr<Kernel>, std::uint32_t> &p) {
                                              auto sp = p.first.lock();
                                              return !sp || sp.get() == &k;
                                          }),
                           t.publishers.end());
    }
    for (auto &q : inputs) q->close("the receiving kernel '" + k.name() + "' has stopped");
    kernels_.erase(std::remove_if(kernels_.begin(), kernels_.end(),
                                  [&](const std::shared_ptr<Kernel> &p) { return p.get() == &k; }),
                   kernels_.end());
}

std::shared_ptr<Kernel> Runtime::create(const KernelSpec &spec_in) {
    check_open("create()");
    KernelSpec spec = spec_in;
    check_name("kernel name", spec.name);
    if (spec.grid < 1 || spec.grid > 256)
        throw std::invalid_argument("grid must be in [1, 256] blocks, got " + std::to_string(spec.grid));
    if (spec.block < 1 || spec.block > 1024)
        throw std::invalid_argument("block must be in [1, 1024] threads, got " + std::to_string(spec.block));
    if (spec.input_size < 1 || spec.input_size > kMaxPayload || spec.output_size < 1 || spec.output_size > kMaxPayload)
        throw std::invalid_argument("record sizes must be in [1, " + std::to_string(kMaxPayload) + "] bytes, got input " +
                                    std::to_string(spec.input_size) + " and output " + std::to_string(spec.output_size));
    if (spec.options.priority())
        throw std::invalid_argument(
            "priority=True is not supported by ring kernels: a kernel takes its input ring in FIFO order; launch with "
            "priority=False (use an rk.Queue with priority=True in front of the kernel to reorder)");
    if (spec.channels.size() > RK_MAX_CHANNELS - 1)
        throw std::invalid_argument("a kernel has at most " + std::to_string(RK_MAX_CHANNELS - 1) +
                                    " named channels, got " + std::to_string(spec.channels.size()));
    for (std::size_t i = 0; i < spec.channels.size(); ++i) {
        check_name("channel name", spec.channels[i]);
        for (std::size_t j = 0; j < i; ++j)
            if (spec.channels[j] == spec.channels[i])
                throw std::invalid_argument("channel '" + spec.channels[i] + "' is declared twice");
    }
    if (backend_name_ == "cpu" && spec.mode.value_or(cfg_.mode) == KernelMode::Dispatch)
        throw std::invalid_argument("the CPU backend runs kernels persistently (workers park when idle); "
                                    "mode='dispatch' is a device-backend option");
    if (spec.handler.kind == Handler::Kind::Image && (spec.handler.target != backend_name_ || backend_->device_target().empty()))
        throw std::invalid_argument("handler image '" + spec.handler.name + "' was built for backend '" +
                                    spec.handler.target + "' and runs there only, not on " + backend_name_ +
                                    (backend_->device_target().empty() ? " (which loads no handler images)" : ""));
    if (spec.state_size > kMaxStateBytes)
        throw std::invalid_argument("state records must be at most " + std::to_string(kMaxStateBytes) + " bytes, got " +
                                    std::to_string(spec.state_size));
    if (spec.restart) spec.restart->validate();
    if (spec.options.handler_timeout_ns() && !backend_->supervises())
        throw std::invalid_argument(
            "kernel '" + spec.name + "': handler_timeout (the watchdog) is supported on the cpu backend; the " +
            backend_name_ + " backend cannot take a hung block over yet (a restart= policy works there: rk_fault() "
            "restarts the kernel)");
    if (spec.restart && !backend_->restarts())
        throw std::invalid_argument("kernel '" + spec.name + "': restart= (a RestartPolicy) is not supported by the " +
                                    backend_name_ + " backend (a handler error there still fails only its message, "
                                    "which goes to dead_letters())");
    if (spec.handler.kind == Handler::Kind::Host && spec.handler.host && spec.block != 1)
        throw std::invalid_argument("a host (Python) handler runs once per message: block must be 1, got " +
                                    std::to_string(spec.block));

    std::uint16_t id;
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto &k : kernels_)
            if (k->name() == spec.name)
                throw std::invalid_argument("a kernel named '" + spec.name + "' exists already in this runtime");
        id = next_kernel_id_++;
        if (next_kernel_id_ == 0) next_kernel_id_ = 1;
    }

    auto core = std::make_shared<KernelCore>(backend_->memory());
    core->spec = spec;
    core->cb->node = id;
    if (spec.state_size) {
        core->state = core->memory->allocate(spec.state_size, 64);
        std::memset(core->state, 0, spec.state_size);
    }
    {
        std::uint32_t slots = RK_RING_MIN_CAPACITY;
        while (slots < spec.options.dead_letter_capacity()) slots <<= 1;
        core->dead_letters = std::make_unique<Ring>(slots, spec.input_size, 0, core->memory);
    }
    core->supervision = std::make_unique<Supervision>(spec);
    if (spec.restart && !backend_->supervises()) {  // a device kernel's supervisor redelivers through a ring of its own
        std::uint32_t slots = RK_RING_MIN_CAPACITY;
        while (slots < 2 * spec.grid) slots <<= 1;
        core->redelivery = std::make_unique<Ring>(slots, spec.input_size, 0, core->memory);
    }
    core->reply_id_base = next_message_ids(1ull << 36);
    core->buffers = buffers_;
    backend_->prepare(*core, cfg_);  // the handler: built-in lookup, source compile (may throw)

    std::shared_ptr<Kernel> k(new Kernel(*this, spec, id));
    k->core_ = core;
    QueueConfig in_cfg = spec.options.queue_config(spec.input_size);
    in_cfg.type_id = spec.input_type;
    const auto mem = backend_->memory();
    k->input_ = std::make_shared<Queue>(in_cfg, nullptr, core->doorbell, mem);
    QueueConfig out_cfg = spec.options.queue_config(spec.output_size);
    out_cfg.type_id = spec.output_type;
    out_cfg.source = id;
    out_cfg.dedup_window = 0;  // reply ids are unique by construction
    k->output_ = std::make_shared<Queue>(out_cfg, nullptr, nullptr, mem);

    rk_routes routes{};
    if (core->redelivery) {  // first: the blocks try it before the others
        routes.inputs[routes.n_inputs].ring = core->redelivery->header();
        routes.inputs[routes.n_inputs++].cookie = 0;
    }
    routes.inputs[routes.n_inputs++] = route_of(k->input_);
    routes.n_channels = static_cast<rk_u32>(1 + spec.channels.size());
    routes.channels[0].count = 1;
    routes.channels[0].targets[0] = route_of(k->output_);
    std::vector<std::shared_ptr<Queue>> keep{k->input_, k->output_};
    k->channel_queues_.push_back(k->output_);
    k->channel_to_host_.push_back(true);
    k->bridged_.push_back(false);
    for (std::size_t i = 0; i < spec.channels.size(); ++i) {
        QueueConfig ch_cfg = out_cfg;
        auto q = std::make_shared<Queue>(ch_cfg, nullptr, nullptr, mem);
        routes.channels[i + 1].count = 1;
        routes.channels[i + 1].targets[0] = route_of(q);
        keep.push_back(q);
        k->channel_queues_.push_back(q);
        k->channel_to_host_.push_back(true);
        k->bridged_.push_back(false);
    }
    {
        std::lock_guard<std::mutex> rl(core->routes_mu);
        core->publish_routes(routes, keep);
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        check_open("create()");  // re-check: close() may have begun meanwhile
        for (const auto &other : kernels_)  // re-check: another thread may have won the name
            if (other->name() == spec.name)
                throw std::invalid_argument("a kernel named '" + spec.name + "' exists already in this runtime");
        for (const std::string &n : {spec.name + ".in", spec.name + ".out"})
            if (queues_.count(n)) throw std::invalid_argument("a queue named '" + n + "' exists already");
        register_queue(spec.name + ".in", k->input_, spec.name);
        register_queue(spec.name + ".out", k->output_, spec.name);
        for (std::size_t i = 0; i < spec.channels.size(); ++i)
            register_queue(spec.name + "." + spec.channels[i], k->channel_queues_[i + 1], spec.name);
        kernels_.push_back(k);
    }
    return k;
}

void Kernel::launch() {
    std::lock_guard<std::mutex> lock(mu_);
    require({KernelState::Created}, "launch()", allowed_in(state()));
    try {
        core_->runner->start(core_);
    } catch (const std::exception &e) {
        // A start that failed half way (a device launch withdrawn) cannot be retried: the kernel is FAULTED.
        fault_ = std::string("launch failed: ") + e.what();
        rk_atomic_store_i32(&core_->cb->should_terminate, 1, RK_RELEASE, RK_SCOPE_SYSTEM);
        release_queues("it is FAULTED: " + fault_);
        state_.store(KernelState::Faulted, std::memory_order_release);
        throw;
    }
    state_.store(KernelState::Launched, std::memory_order_release);
}

std::shared_ptr<Kernel> Runtime::launch(const KernelSpec &spec) {
    auto k = create(spec);
    k->launch();
    return k;
}

std::vector<std::shared_ptr<Kernel>> Runtime::kernels() const {
    std::lock_guard<std::mutex> lock(mu_);
    return kernels_;
}

std::shared_ptr<Kernel> Runtime::kernel(const std::string &name) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto &k : kernels_)
        if (k->name() == name) return k;
    throw std::out_of_range("no kernel named '" + name + "' in this runtime");
}

std::vector<std::string> Runtime::queue_names() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto &kv : queues_) out.push_back(kv.first);
    return out;
}

std::shared_ptr<Queue> Runtime::queue(const std::string &name) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queues_.find(name);
    if (it == queues_.end()) throw std::out_of_range("no queue named '" + name + "' in this runtime");
    return it->second;
}

std::shared_ptr<Queue> Runtime::create_queue(const std::string &name, const QueueConfig &cfg) {
    check_open("create_queue()");
    check_name("queue name", name);
    auto q = std::make_shared<Queue>(cfg);
    std::lock_guard<std::mutex> lock(mu_);
    register_queue(name, q, "");
    return q;
}

void Runtime::destroy_queue(const std::string &name) {
    std::shared_ptr<Queue> q;
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = queues_.find(name);
        if (it == queues_.end()) throw std::out_of_range("no queue named '" + name + "' in this runtime");
        const std::string &owner = queue_owner_[name];
        if (!owner.empty())
            throw std::invalid_argument("queue '" + name + "' belongs to kernel '" + owner +
                                        "' and is released when that kernel terminates");
        q = it->second;
        queues_.erase(it);
        queue_owner_.erase(name);
    }
    q->close("queue '" + name + "' was destroyed");
}

void Runtime::add_input(Kernel &dst, const std::shared_ptr<Queue> &ring) {
    KernelCore &core = *dst.core_;
    std::lock_guard<std::mutex> rl(core.routes_mu);
    rk_routes next = core.routes();
    if (next.n_inputs >= RK_MAX_INPUTS)
        throw std::invalid_argument("kernel '" + dst.name() + "' reads " + std::to_string(RK_MAX_INPUTS) +
                                    " inputs already (the most a kernel may have)");
    next.inputs[next.n_inputs++] = route_of(ring);
    core.publish_routes(next, {ring});
}

void Runtime::add_output(Kernel &src, std::uint32_t channel, const std::vector<std::shared_ptr<Queue>> &rings) {
    KernelCore &core = *src.core_;
    std::lock_guard<std::mutex> rl(core.routes_mu);
    rk_routes next = core.routes();
    rk_channel &ch = next.channels[channel];
    if (src.channel_to_host_[channel]) ch.count = 0;  // the first connection replaces the host queue
    for (const auto &r : rings) {
        if (ch.count >= RK_MAX_FANOUT)
            throw std::invalid_argument("channel " + std::to_string(channel) + " of kernel '" + src.name() +
                                        "' feeds " + std::to_string(RK_MAX_FANOUT) + " rings already (the most)");
        ch.targets[ch.count++] = route_of(r);
    }
    src.channel_to_host_[channel] = false;
    core.publish_routes(next, rings);
}

namespace {
// LifecycleError when a kernel that has stopped (or is stopping) would be connected.
void check_running(std::initializer_list<const Kernel *> kernels) {
    for (const Kernel *k : kernels) {
        const KernelState s = k->state();
        if (s == KernelState::Terminating || s == KernelState::Terminated || s == KernelState::Faulted)
            throw LifecycleError("cannot connect kernel '" + k->name() + "': it is " + to_string(s));
    }
}

void check_connectable(const Kernel &src, std::uint32_t src_size, std::uint16_t src_type, const Kernel &dst) {
    const KernelSpec &d = dst.spec();
    if (src_size != d.input_size || (src_type && d.input_type && src_type != d.input_type)) {
        std::ostringstream msg;
        msg << "cannot connect '" << src.name() << "' to '" << dst.name() << "': '" << src.name() << "' sends "
            << src_size << "-byte records of type id " << src_type << ", '" << dst.name() << "' takes " << d.input_size
            << "-byte records of type id " << d.input_type;
        throw TypeMismatch(msg.str());
    }
    check_running({&src, &dst});
}
}  // namespace

std::string Runtime::connect(Kernel &src, Kernel &dst, const std::string &channel) {
    check_open("connect()");
    if (src.rt_.load() != this || dst.rt_.load() != this)
        throw std::invalid_argument("both kernels must belong to this runtime (and not be terminated)");
    const std::uint32_t ch = src.channel_index(channel);
    check_connectable(src, src.spec().output_size, src.spec().output_type, dst);
    const std::string name = src.name() + (channel.empty() ? "" : "." + channel) + "->" + dst.name();
    QueueConfig cfg = dst.spec().options.queue_config(dst.spec().input_size);
    cfg.type_id = src.spec().output_type;
    cfg.source = src.id();
    cfg.dedup_window = 0;
    cfg.backpressure = src.spec().options.backpressure();  // the policy src's blocks apply to it
    auto ring = std::make_shared<Queue>(cfg, nullptr, dst.core_->doorbell, backend_->memory());
    if (auto device = backend_->k2k_memory())
        ring->move_ring_to_device(device, "queue '" + name + "' joins two kernels through " + backend_name_ +
                                              " device memory, which the host cannot reach: send to '" + src.name() +
                                              "' and receive from the end of the pipeline");
    {
        std::lock_guard<std::mutex> lock(mu_);
        register_queue(name, ring, dst.name());
    }
    add_input(dst, ring);
    add_output(src, ch, {ring});
    return name;
}

struct Runtime::Bridge {
    std::atomic<bool> stop{false};
    std::thread thread;
    ~Bridge() {
        stop.store(true);
        if (thread.joinable()) thread.join();
    }
};

namespace {
struct BridgeStopped {};
}  // namespace

std::string Runtime::bridge(Kernel &src, Kernel &dst, const std::string &channel) {
    check_open("connect()");
    if (src.rt_.load() != this) throw std::invalid_argument("kernel '" + src.name() + "' does not belong to this runtime");
    const std::uint32_t ch = src.channel_index(channel);
    check_connectable(src, src.spec().output_size, src.spec().output_type, dst);
    if (src.connected(ch))
        throw std::invalid_argument("channel " + (channel.empty() ? std::string("(default)") : "'" + channel + "'") +
                                    " of kernel '" + src.name() + "' is connected already");
    std::shared_ptr<Queue> from = src.channel_queue(ch), to = dst.input();
    src.bridged_[ch] = true;
    auto b = std::make_unique<Bridge>();
    Bridge *self = b.get();
    const std::uint32_t size = src.spec().output_size;
    b->thread = std::thread([self, from, to, size] {
        const std::function<void()> interrupt = [self] {
            if (self->stop.load()) throw BridgeStopped{};
        };
        // One send per batch received: BLOCK waits for room (interruptible); REJECT and DROP_NEW refuse
        // what does not fit and count it, as they would for any sender -- nothing is retried.
        constexpr std::size_t kBatch = 256;
        std::vector<std::uint8_t> buf(kBatch * size);
        std::vector<rk_envelope> envs(kBatch);
        try {
            while (!self->stop.load()) {
                const std::size_t got = from->receive_batch(buf.data(), kBatch, size, envs.data(),
                                                            Wait{100'000'000, nullptr});
                if (got == 0) {
                    if (from->closed() && from->size() == 0) return;
                    continue;
                }
                std::uint64_t newest = 0;
                for (std::size_t i = 0; i < got; ++i) newest = std::max<std::uint64_t>(newest, envs[i].timestamp);
                try {
                    to->clock().update_packed(newest);  // what it forwards is stamped after what it received
                } catch (const ClockSkewError &) {
                }
                to->send_batch(buf.data(), got, size, nullptr, 0, Wait{-1, &interrupt});
            }
        } catch (const BridgeStopped &) {
        } catch (const LifecycleError &) {  // the receiving kernel stopped
        }
    });
    std::lock_guard<std::mutex> lock(mu_);
    bridges_.push_back(std::move(b));
    return src.name() + (channel.empty() ? "" : "." + channel) + "=>" + dst.name() + " (host bridge)";
}

void Runtime::create_topic(const std::string &name, std::uint32_t record_size, std::uint16_t type_id) {
    check_open("create_topic()");
    check_name("topic name", name);
    if (record_size < 1 || record_size > kMaxPayload)
        throw std::invalid_argument("record_size must be in [1, " + std::to_string(kMaxPayload) + "], got " +
                                    std::to_string(record_size));
    std::lock_guard<std::mutex> lock(mu_);
    if (topics_.count(name)) throw std::invalid_argument("a topic named '" + name + "' exists already");
    Topic t;
    t.info.name = name;
    t.info.record_size = record_size;
    t.info.type_id = type_id;
    topics_[name] = std::move(t);
}

Runtime::Topic &Runtime::topic_ref(const std::string &name) {
    auto it = topics_.find(name);
    if (it == topics_.end()) throw std::out_of_range("no topic named '" + name + "' in this runtime");
    return it->second;
}

TopicInfo Runtime::topic(const std::string &name) const {
    std::lock_guard<std::mutex> lock(mu_);
    return const_cast<Runtime *>(this)->topic_ref(name).info;
}

void Runtime::subscribe(const std::string &topic_name, Kernel &k) {
    check_open("subscribe()");
    if (k.rt_.load() != this) throw std::invalid_argument("kernel '" + k.name() + "' does not belong to this runtime");
    std::shared_ptr<Queue> ring;
    std::vector<std::pair<std::weak_ptr<Kernel>, std::uint32_t>> publishers;
    {
        std::lock_guard<std::mutex> lock(mu_);
        Topic &t = topic_ref(topic_name);
        check_running({&k});
        if (t.info.record_size != k.spec().input_size || (t.info.type_id && k.spec().input_type &&
                                                          t.info.type_id != k.spec().input_type))
            throw TypeMismatch("kernel '" + k.name() + "' takes " + std::to_string(k.spec().input_size) +
                               "-byte records of type id " + std::to_string(k.spec().input_type) + "; topic '" +
                               topic_name + "' carries " + std::to_string(t.info.record_size) +
                               "-byte records of type id " + std::to_string(t.info.type_id));
        const std::string name = topic_name + "=>" + k.name();
        QueueConfig cfg = k.spec().options.queue_config(k.spec().input_size);
        cfg.type_id = t.info.type_id;
        cfg.dedup_window = 0;
        ring = std::make_shared<Queue>(cfg, nullptr, k.core_->doorbell, backend_->memory());
        register_queue(name, ring, k.name());
        t.rings.push_back(ring);
        t.info.subscribers.push_back(k.name());
        publishers = t.publishers;
    }
    add_input(k, ring);
    for (auto &p : publishers)
        if (auto src = p.first.lock()) add_output(*src, p.second, {ring});
}

void Runtime::connect_topic(Kernel &src, const std::string &topic_name, const std::string &channel) {
    check_open("connect()");
    if (src.rt_.load() != this)
        throw std::invalid_argument("kernel '" + src.name() + "' does not belong to this runtime");
    const std::uint32_t ch = src.channel_index(channel);
    std::vector<std::shared_ptr<Queue>> rings;
    {
        std::lock_guard<std::mutex> lock(mu_);
        Topic &t = topic_ref(topic_name);
        if (src.spec().output_size != t.info.record_size ||
            (src.spec().output_type && t.info.type_id && src.spec().output_type != t.info.type_id))
            throw TypeMismatch("kernel '" + src.name() + "' sends " + std::to_string(src.spec().output_size) +
                               "-byte records of type id " + std::to_string(src.spec().output_type) + "; topic '" +
                               topic_name + "' carries " + std::to_string(t.info.record_size) +
                               "-byte records of type id " + std::to_string(t.info.type_id));
        if (t.host_published)
            if (const std::string why = backend_->mixed_atomics_refusal(); !why.empty())
                throw std::invalid_argument("topic '" + topic_name + "' has host publishers, so kernel '" + src.name() +
                                            "' cannot publish into it too: " + why);
        t.publishers.emplace_back(src.shared_from_this(), ch);
        rings = t.rings;
    }
    // Even with no subscriber yet the channel now belongs to the topic (replies are dropped, counted).
    add_output(src, ch, rings);
}

std::size_t Runtime::publish(const std::string &topic_name, const void *record, const SendOptions &opts,
                             const Wait &wait) {
    std::vector<std::shared_ptr<Queue>> rings;
    {
        std::lock_guard<std::mutex> lock(mu_);
        check_open("publish()");
        Topic &t = topic_ref(topic_name);
        if (!t.publishers.empty())
            if (const std::string why = backend_->mixed_atomics_refusal(); !why.empty())
                throw std::invalid_argument("topic '" + topic_name +
                                            "' is fed by kernels, so the host cannot publish into it too: " + why);
        t.host_published = true;
        rings = t.rings;
    }
    std::size_t n = 0;
    for (auto &r : rings) {
        if (r->closed()) continue;
        n += r->send(record, opts, wait) ? 1 : 0;
    }
    return n;
}

Buffer Runtime::buffer(std::size_t bytes) {
    check_open("buffer()");
    if (bytes == 0 || bytes > (1ull << 40))
        throw std::invalid_argument("buffer size must be in [1, 2^40] bytes, got " + std::to_string(bytes));
    BufferTableMem &t = *buffers_;
    std::lock_guard<std::mutex> lock(t.mu);
    if (t.next_free >= t.count)
        throw std::invalid_argument("this runtime has made " + std::to_string(t.count) +
                                    " buffers, its max_buffers (released ones are reclaimed when the runtime "
                                    "closes, as a kernel may still be reading them)");
    const std::uint32_t i = t.next_free++;
    const std::size_t rounded = (bytes + 63) & ~std::size_t(63);
    void *p = t.data->allocate(rounded, 64);  // zeroed
    t.memory[i] = p;
    t.sizes[i] = rounded;
    rk_buffer_entry &e = t.entries[i];
    e.address = static_cast<rk_u64>(reinterpret_cast<std::uintptr_t>(p));
    e.bytes = bytes;
    // The handle's upper half is random, so that a handle of another runtime, or a guessed one, does not
    // resolve here (a kernel given one gets RK_ERR_BUFFER for that message).
    std::uint32_t tag = 0;
    while (tag == 0) tag = static_cast<std::uint32_t>(t.tags() >> 32);
    e.generation = tag;
    rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&e.live), 1, RK_RELEASE, RK_SCOPE_SYSTEM);
    return Buffer{(static_cast<std::uint64_t>(e.generation) << 32) | (i + 1), p, bytes, t.data->device()};
}

namespace {
rk_buffer_entry *find_entry(BufferTableMem &t, std::uint64_t handle) {
    const std::uint64_t index = handle & 0xFFFFFFFFu;
    if (index == 0 || index > t.count) return nullptr;
    rk_buffer_entry &e = t.entries[index - 1];
    if (!e.live || e.generation != static_cast<std::uint32_t>(handle >> 32)) return nullptr;
    return &e;
}

std::string no_buffer(std::uint64_t handle) {
    return "no live buffer of this runtime has handle " + std::to_string(handle) +
           " (released, or made by another runtime: a handle resolves only in the runtime that made it)";
}
}  // namespace

void Runtime::release_buffer(std::uint64_t handle) {
    check_open("release_buffer()");
    BufferTableMem &t = *buffers_;
    std::lock_guard<std::mutex> lock(t.mu);
    rk_buffer_entry *e = find_entry(t, handle);
    if (!e) throw std::invalid_argument(no_buffer(handle));
    // The handle stops resolving now; the memory stays until the runtime is closed, since a kernel
    // may be reading it this very moment.
    rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&e->live), 0, RK_RELEASE, RK_SCOPE_SYSTEM);
}

Buffer Runtime::resolve(std::uint64_t handle) const {
    check_open("resolve()");
    BufferTableMem &t = *buffers_;
    std::lock_guard<std::mutex> lock(t.mu);
    rk_buffer_entry *e = find_entry(t, handle);
    if (!e) throw std::invalid_argument(no_buffer(handle));
    return Buffer{handle, reinterpret_cast<void *>(static_cast<std::uintptr_t>(e->address)), e->bytes, t.data->device()};
}

namespace {
// The address of bytes [offset, offset + n) of the buffer `b`, or invalid_argument.
char *buffer_range(const Buffer &b, std::size_t offset, std::size_t n) {
    if (offset > b.bytes || n > b.bytes - offset)
        throw std::invalid_argument("bytes [" + std::to_string(offset) + ", " + std::to_string(offset + n) +
                                    ") are outside the buffer, whose range is [0, " + std::to_string(b.bytes) + ")");
    return static_cast<char *>(b.data) + offset;
}
}  // namespace

void Runtime::write_buffer(std::uint64_t handle, std::size_t offset, const void *src, std::size_t n) {
    const Buffer b = resolve(handle);
    buffers_->data->copy_in(buffer_range(b, offset, n), src, n);
}

void Runtime::read_buffer(std::uint64_t handle, std::size_t offset, void *dst, std::size_t n) const {
    const Buffer b = resolve(handle);
    buffers_->data->copy_out(dst, buffer_range(b, offset, n), n);
}

void Runtime::order_buffers_before(std::intptr_t stream) const { buffers_->data->order_before(stream); }

std::shared_ptr<const void> Runtime::buffer_keepalive() const { return buffers_; }

void Runtime::close(std::int64_t timeout_ns) {
    if (process_ != process_generation()) {
        // A fork() copy: its kernels' threads (and a device driver's) exist only in the original process.
        // Nothing here may wait for them or tear down what they use: it is left as it is, for good.
        if (closed_.exchange(true)) return;
        std::lock_guard<std::mutex> lock(mu_);
        for (auto &k : kernels_) k->rt_.store(nullptr);
        new std::vector<std::shared_ptr<Kernel>>(std::move(kernels_));
        new std::map<std::string, std::shared_ptr<Queue>>(std::move(queues_));
        new std::vector<std::unique_ptr<Bridge>>(std::move(bridges_));
        new std::shared_ptr<BufferTable>(std::move(buffers_));
        (void)backend_.release();
        return;
    }
    // One close does the work; a concurrent one returns when it is done.
    std::lock_guard<std::mutex> closing(close_mu_);
    std::vector<std::shared_ptr<Kernel>> ks;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (closed_.exchange(true)) return;  // from here on nothing new is created
        ks = kernels_;
    }
    // Every kernel stops (or is FAULTED when its blocks do not), whatever happens to the others.
    std::exception_ptr first_error;
    for (auto &k : ks) {
        try {
            k->terminate(timeout_ns);
        } catch (...) {
            if (!first_error) first_error = std::current_exception();
        }
    }
    std::vector<std::unique_ptr<Bridge>> bridges;
    {
        std::lock_guard<std::mutex> lock(mu_);
        bridges.swap(bridges_);
    }
    bridges.clear();  // each stops and is joined
    std::lock_guard<std::mutex> lock(mu_);
    for (auto &k : ks) k->rt_.store(nullptr);
    for (auto &kv : queues_) kv.second->close("the runtime is closed");
    queues_.clear();
    queue_owner_.clear();
    topics_.clear();
    kernels_.clear();
    {
        std::lock_guard<std::mutex> bl(buffers_->mu);
        for (std::uint32_t i = 0; i < buffers_->count; ++i)
            rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&buffers_->entries[i].live), 0, RK_RELEASE, RK_SCOPE_SYSTEM);
    }
    buffers_.reset();  // memory goes when the last holder (a view, a faulted kernel) lets go
    if (first_error) std::rethrow_exception(first_error);
}

}  // namespace rk
