// actor_state.cpp — what a kernel keeps besides its rings (DESIGN §11): its state record, the pause that
// makes copies of it consistent, and the dead letters of the requests its handler failed.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "kernel_core.hpp"
#include "supervision.hpp"
#include "rk_kernel.h"

namespace rk {

namespace {
constexpr std::int64_t kDefaultPauseNs = 5'000'000'000;
constexpr std::size_t kMaxFailureTexts = 4096;

const char *code_meaning(std::int32_t code) {
    switch (code) {
    case RK_ERR_HANDLER: return "RK_ERR_HANDLER: the handler reported a failure";
    case RK_ERR_BUFFER: return "RK_ERR_BUFFER: a buffer handle did not resolve, or its buffer is too small";
    case RK_ERR_INPUT: return "RK_ERR_INPUT: the request is malformed";
    case RK_ERR_HOST: return "RK_ERR_HOST: the host handler raised";
    case RK_ERR_CHANNEL: return "RK_ERR_CHANNEL: an emit on a channel the kernel does not have";
    case RK_ERR_OPERATION: return "RK_ERR_OPERATION: an operation code the handler does not know";
    case RK_ERR_RETURN: return "RK_ERR_RETURN: the handler returned a positive value other than RK_REPLY";
    case RK_ERR_FAULT: return "RK_ERR_FAULT: the handler reported a fault of its kernel (rk_fault)";
    case RK_ERR_TIMEOUT: return "RK_ERR_TIMEOUT: the handler ran past handler_timeout";
    default: return nullptr;
    }
}
}  // namespace

bool wait_blocks_paused(const KernelCore &core, std::int64_t timeout_ns) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
    const auto grid = static_cast<rk_i32>(core.spec.grid);
    for (int polls = 0;; ++polls) {
        if (rk_atomic_load_i32(&core.cb->blocks_paused, RK_SEQ_CST, RK_SCOPE_SYSTEM) >= grid) return true;
        // A kernel that faults meanwhile (past RestartPolicy.max_restarts, a device fault) will not pause:
        // its faulted block has left. The caller says so instead of waiting out the timeout.
        if (core.faulted.load(std::memory_order_acquire)) return false;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        if (polls < 64) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::microseconds(polls < 1024 ? 10 : 200));
    }
}

// ---- pause -----------------------------------------------------------------------------------------------

bool Kernel::pause(const char *call, std::int64_t timeout_ns) {
    if (timeout_ns < 0) timeout_ns = kDefaultPauseNs;
    const bool was_active = rk_atomic_load_i32(&core_->cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;
    rk_atomic_store_i32(&core_->cb->is_active, 0, RK_SEQ_CST, RK_SCOPE_SYSTEM);
    if (raw_state() == KernelState::Created || core_->runner->quiesce(timeout_ns)) return was_active;
    resume(was_active);
    if (core_->faulted.load(std::memory_order_acquire))
        throw LifecycleError(std::string(call) + " is not allowed: kernel '" + name() +
                             "' became FAULTED while it was being paused (" + core_->fault_text() +
                             "); drain() returns its unprocessed input once it is terminated");
    std::ostringstream msg;
    msg << call << ": kernel '" << name() << "' did not pause within " << static_cast<double>(timeout_ns) / 1e9
        << " s: a block is still inside a run -- its handler, or a reply waiting for room in a full output ("
        << core_->runner->stuck() << "); nothing was copied";
    throw KernelFaultError(msg.str());
}

void Kernel::resume(bool was_active) {
    if (!was_active) return;
    rk_atomic_store_i32(&core_->cb->is_active, 1, RK_SEQ_CST, RK_SCOPE_SYSTEM);
    core_->wake();
}

// ---- state -------------------------------------------------------------------------------------------------

std::vector<std::uint8_t> Kernel::actor_state(std::int64_t timeout_ns) {
    check_process("actor_state()");
    if (!core_->state)
        throw std::invalid_argument("kernel '" + name() + "' has no state: launch it with state= (a record type)");
    std::lock_guard<std::mutex> lock(mu_);
    const KernelState s = raw_state();
    std::vector<std::uint8_t> out(spec_.state_size);
    if (s == KernelState::Terminating)
        throw LifecycleError("actor_state() is not allowed: kernel '" + name() + "' is TERMINATING; " +
                             "read it once it has stopped");
    if (s == KernelState::Terminated || s == KernelState::Faulted || !core_->runner) {
        // Its blocks have left (or, FAULTED and abandoned, are stuck in a handler): the state as they left it.
        std::memcpy(out.data(), core_->state, out.size());
        return out;
    }
    bool was_active = false;
    try {
        was_active = pause("actor_state()", timeout_ns);
    } catch (const LifecycleError &) {
        if (!core_->faulted.load(std::memory_order_acquire)) throw;
        std::memcpy(out.data(), core_->state, out.size());  // FAULTED meanwhile: the state as its blocks left it
        return out;
    }
    std::memcpy(out.data(), core_->state, out.size());
    resume(was_active);
    return out;
}

// ---- dead letters ----------------------------------------------------------------------------------------

void KernelCore::note_failure(std::uint64_t message_id, const std::string &what) {
    std::lock_guard<std::mutex> lock(err_mu);
    failure_texts[message_id] = what;
    if (failure_texts.size() > kMaxFailureTexts) failure_texts.erase(failure_texts.begin());  // ids grow: oldest
}

std::string KernelCore::failure_text(std::uint64_t message_id, std::int32_t code) {
    {
        std::lock_guard<std::mutex> lock(err_mu);
        auto it = failure_texts.find(message_id);
        if (it != failure_texts.end()) {
            std::string text = std::move(it->second);
            failure_texts.erase(it);
            return text;
        }
    }
    if (const char *m = code_meaning(code)) return m;
    return "the handler returned error code " + std::to_string(code);
}

void KernelCore::collect_dead_letters() {
    if (!dead_letters) return;
    const std::uint32_t cap = spec.options.dead_letter_capacity();
    const std::uint32_t in_size = spec.input_size;
    DeadLetter d;
    d.record.resize(in_size);
    while (dead_letters->try_pop(d.envelope, d.record.data(), in_size)) {
        const std::uint64_t position = dead_position++;
        if ((d.envelope.flags & RK_ENVELOPE_FLAG_HELD) != 0 && redelivery) {
            // A device block handed a fault over: the supervisor decides (Supervision::serve_device).
            HeldMessage m;
            m.envelope = d.envelope;
            m.envelope.flags = static_cast<rk_u8>(m.envelope.flags & ~RK_ENVELOPE_FLAG_HELD);
            m.envelope.reserved1 = 0;
            m.payload = d.record;
            supervision->hand_over(std::move(m), position);
            continue;
        }
        d.code = static_cast<std::int32_t>(d.envelope.reserved1);
        d.attempts = d.envelope.reserved0 ? d.envelope.reserved0 : 1u;
        d.envelope.reserved0 = 0;
        d.envelope.reserved1 = 0;
        d.error = failure_text(d.envelope.message_id, d.code);
        if (dead.size() >= cap) {
            ++dead_dropped;
            continue;
        }
        dead.push_back(d);
        d.record.assign(in_size, 0);
    }
}

std::vector<DeadLetter> Kernel::dead_letters(bool clear) {
    std::lock_guard<std::mutex> lock(core_->dead_mu);
    core_->collect_dead_letters();
    std::vector<DeadLetter> out(core_->dead.begin(), core_->dead.end());
    if (clear) {
        core_->dead_taken += core_->dead.size();
        core_->dead.clear();
    }
    return out;
}

DeadLetterCounts Kernel::dead_letter_counts() {
    std::lock_guard<std::mutex> lock(core_->dead_mu);
    core_->collect_dead_letters();
    DeadLetterCounts c;
    c.held = core_->dead.size();
    const std::uint64_t ring_full = core_->dead_letters ? __atomic_load_n(&core_->dead_letters->header()->rejected, __ATOMIC_ACQUIRE) : 0;
    c.dropped = core_->dead_dropped + ring_full;
    c.total = c.held + core_->dead_taken + c.dropped;
    return c;
}

}  // namespace rk
