// supervision.cpp — see supervision.hpp.
#include "supervision.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "kernel_core.hpp"
#include "rk_kernel.h"

namespace rk {

HeldMessage held_copy(const rk_envelope *slot, std::uint32_t in_size) {
    HeldMessage m;
    std::memcpy(&m.envelope, slot, sizeof m.envelope);
    m.payload.resize(in_size);
    std::memcpy(m.payload.data(), rk_envelope_payload(const_cast<rk_envelope *>(slot)), in_size);
    return m;
}

Supervision::Decision Supervision::on_fault(KernelCore &core, std::vector<HeldMessage> failed,
                                            std::vector<HeldMessage> untouched, std::int32_t code,
                                            const std::string &text) {
    Decision d;
    std::vector<HeldMessage> dead, again;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (!policy_) {
            dead = std::move(failed);
        } else {
            const RestartPolicy &p = *policy_;
            const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::steady_clock::now().time_since_epoch())
                                         .count();
            const std::int64_t window = static_cast<std::int64_t>(p.within * 1e9);
            while (!recent_.empty() && now - recent_.front() > window) recent_.pop_front();
            if (recent_.size() >= p.max_restarts) {
                d.fault = true;
                char within[32];
                std::snprintf(within, sizeof within, "%g", p.within);
                d.why = "kernel '" + core.spec.name + "' faulted " + std::to_string(recent_.size() + 1) +
                        (recent_.empty() ? " time" : " times") + " within " + within + " s, past RestartPolicy.max_restarts=" +
                        std::to_string(p.max_restarts) + " (last: " + text + "); drain() returns its unprocessed input";
                again = std::move(failed);  // not a failed delivery: the kernel stopped first
            } else {
                recent_.push_back(now);
                restarts.fetch_add(1, std::memory_order_relaxed);
                for (HeldMessage &m : failed) {
                    const std::uint32_t attempts = static_cast<std::uint32_t>(m.envelope.reserved0) + 1u;
                    if (attempts >= p.max_attempts) {
                        dead.push_back(std::move(m));
                    } else {
                        m.envelope.reserved0 = static_cast<std::uint16_t>(attempts);
                        again.push_back(std::move(m));
                    }
                }
                double delay = p.backoff;
                for (std::size_t i = 1; i < recent_.size() && delay < 1.0; ++i) delay *= 2;
                delay = std::min(delay, std::max(1.0, p.backoff));
                d.backoff_ns = static_cast<std::uint64_t>(delay * 1e9);
            }
        }
        // Ahead of what is held already: these were taken from the rings after it, but the redelivery of the
        // message in flight comes first, then the rest of its run.
        for (auto it = untouched.rbegin(); it != untouched.rend(); ++it) held_.push_front(std::move(*it));
        for (auto it = again.rbegin(); it != again.rend(); ++it) held_.push_front(std::move(*it));
        waiting_.store(held_.size(), std::memory_order_release);
    }
    if (!dead.empty()) {
        std::lock_guard<std::mutex> lock(core.dead_mu);
        core.collect_dead_letters();  // what the blocks failed before this goes first
        const std::uint32_t cap = core.spec.options.dead_letter_capacity();
        for (HeldMessage &m : dead) {
            if (core.dead.size() >= cap) {
                ++core.dead_dropped;
                continue;
            }
            DeadLetter l;
            l.envelope = m.envelope;
            l.attempts = static_cast<std::uint32_t>(m.envelope.reserved0) + 1u;
            l.envelope.reserved0 = 0;
            l.envelope.reserved1 = 0;
            l.record = std::move(m.payload);
            l.code = code;
            l.error = text;
            core.dead.push_back(std::move(l));
        }
    }
    // A dead letter was handled (and failed), as one a block fails itself is; held messages are not, yet.
    if (!dead.empty()) {
        rk_atomic_fetch_add_u64(reinterpret_cast<rk_u64 *>(&core.cb->messages_processed), dead.size(), RK_RELEASE,
                                RK_SCOPE_SYSTEM);
        if (rk_atomic_load_i32(&core.cb->telemetry_enabled, RK_RELAXED, RK_SCOPE_SYSTEM))
            rk_atomic_fetch_add_u64(&core.tel->messages_processed, dead.size(), RK_RELAXED, RK_SCOPE_SYSTEM);
    }
    rk_atomic_fetch_add_i32(&core.cb->errors_encountered, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(&core.cb->last_error, code, RK_RELAXED, RK_SCOPE_SYSTEM);
    core.set_last_error_message(text);
    return d;
}

void Supervision::hold_unfinished(KernelCore &core, std::vector<HeldMessage> messages, std::int32_t code,
                                  const std::string &text) {
    {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto it = messages.rbegin(); it != messages.rend(); ++it) held_.push_front(std::move(*it));
        waiting_.store(held_.size(), std::memory_order_release);
    }
    rk_atomic_fetch_add_i32(&core.cb->errors_encountered, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_store_i32(&core.cb->last_error, code, RK_RELAXED, RK_SCOPE_SYSTEM);
    core.set_last_error_message(text);
}

bool Supervision::take(HeldMessage &out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_.empty()) return false;
    out = std::move(held_.front());
    held_.pop_front();
    waiting_.store(held_.size(), std::memory_order_release);
    return true;
}

std::vector<HeldMessage> Supervision::take_all() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<HeldMessage> out;
    for (Handed &h : handed_) out.push_back(std::move(h.message));  // in flight when the kernel stopped: first
    handed_.clear();
    out.insert(out.end(), std::make_move_iterator(held_.begin()), std::make_move_iterator(held_.end()));
    held_.clear();
    waiting_.store(0, std::memory_order_release);
    return out;
}

std::vector<HeldMessage> Supervision::copy_all() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<HeldMessage> out;
    for (const Handed &h : handed_) out.push_back(h.message);
    out.insert(out.end(), held_.begin(), held_.end());
    return out;
}

// ---- device kernels ------------------------------------------------------------------------------------

void Supervision::hand_over(HeldMessage m, std::uint64_t position) {
    std::lock_guard<std::mutex> lock(mu_);
    handed_.push_back(Handed{std::move(m), position});
}

namespace {
std::uint64_t steady_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}
}  // namespace

bool Supervision::serve_device(KernelCore &core) {
    if (!core.redelivery) return false;
    std::lock_guard<std::mutex> serving(serve_mu_);  // checkpoint()/drain() see a message in one place only
    {
        std::lock_guard<std::mutex> lock(core.dead_mu);
        core.collect_dead_letters();
    }
    rk_ring_header *letters = core.dead_letters->header();
    // Redeliveries go through the kernel's first input, which its blocks try first. (It has room for one per
    // block: a supervised device block's run is one message, and it waits for the decision on it.)
    auto redeliver = [&] {
        HeldMessage m;
        while (waiting() && take(m)) {
            m.envelope.sequence = 0;
            if (!core.redelivery->try_push(m.envelope, m.payload.data())) {
                std::lock_guard<std::mutex> lock(mu_);
                held_.push_front(std::move(m));
                waiting_.store(held_.size(), std::memory_order_release);
                return;
            }
        }
    };
    if (!core.faulted.load(std::memory_order_acquire)) redeliver();
    bool served = false;
    for (;;) {
        if (releasing_) {
            if (steady_ns() < release_at_ns_) return true;
            // The block waiting on this fault goes on (as a fresh block; rk_await_supervisor).
            rk_atomic_store_i32(reinterpret_cast<rk_i32 *>(&letters->supervised_upto),
                                static_cast<rk_i32>(static_cast<rk_u32>(release_upto_)), RK_RELEASE, RK_SCOPE_SYSTEM);
            releasing_ = false;
        }
        Handed h;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (handed_.empty()) return served;
            served = true;
            h = std::move(handed_.front());
            handed_.pop_front();
        }
        const std::string text = "handler '" + (core.spec.handler.entry.empty() ? core.spec.handler.name : core.spec.handler.entry) +
                                 "' faulted: " + core.failure_text(h.message.envelope.message_id, RK_ERR_FAULT);
        std::vector<HeldMessage> failed;
        failed.push_back(std::move(h.message));
        const Decision d = on_fault(core, std::move(failed), {}, RK_ERR_FAULT, text);
        if (d.fault) core.fault(d.why);  // the message stays held, for drain(); the blocks leave
        else redeliver();
        release_upto_ = h.position + 1;
        release_at_ns_ = steady_ns() + d.backoff_ns;
        releasing_ = true;
    }
}

}  // namespace rk
