// supervision.hpp — internal: what the supervisor keeps for one kernel (DESIGN §11).
//
// A fault of the kernel's handler (a watchdog timeout, a trap, rk_fault(), rk.KernelFault) is reported here
// with the messages it was handling. Without a RestartPolicy they become dead letters and the kernel goes
// on. With one, the restart is counted, the messages are held for redelivery (each at most max_attempts
// times in all, then a dead letter), and the backend restarts its block after the policy's backoff -- or,
// past max_restarts within `within` seconds, the kernel faults and the held messages wait for drain().
//
// Held messages are taken by the blocks before anything in the input rings (they were accepted first), and
// are part of what checkpoint() copies and drain() returns.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "ringkernel/runtime.hpp"

namespace rk {

struct KernelCore;

// One message taken from a ring: its envelope (reserved0 = deliveries that failed so far) and payload.
struct HeldMessage {
    rk_envelope envelope{};
    std::vector<std::uint8_t> payload;
};

class Supervision {
public:
    explicit Supervision(const KernelSpec &spec) : policy_(spec.restart), in_size_(spec.input_size) {}

    // What a fault comes to.
    struct Decision {
        bool fault = false;           // the kernel is FAULTED (why says so); else the block goes on
        std::uint64_t backoff_ns = 0; // before the restarted block takes messages again
        std::string why;
    };
    // The handler faulted (code, text) on `failed`; `untouched` were taken with them but not yet handled
    // (the rest of a run). Decides as described above; dead letters go straight to the core's store.
    Decision on_fault(KernelCore &core, std::vector<HeldMessage> failed, std::vector<HeldMessage> untouched,
                      std::int32_t code, const std::string &text);

    // The kernel is terminating: `messages` (a block's run, taken from it while its handler hung) are not
    // finished and no block will restart to take them -- they wait, first, for drain(). No restart is counted,
    // no delivery is failed; the error (code, text) is recorded.
    void hold_unfinished(KernelCore &core, std::vector<HeldMessage> messages, std::int32_t code, const std::string &text);

    // Device kernels (a backend whose blocks hand a fault over through the dead-letter ring, rk_finish_run):
    // collect_dead_letters hands each such fault over with its position in that ring (caller holds dead_mu);
    // the bridge thread serves them every round -- decides (on_fault), pushes the redeliveries into the
    // kernel's redelivery ring (its first input, which blocks try first), and after the backoff tells the
    // block it may go on (the ring header's supervised_upto).
    void hand_over(HeldMessage m, std::uint64_t position);
    bool serve_device(KernelCore &core);  // true while a fault is being served (the bridge polls fast then)

    // Messages waiting for redelivery.
    bool waiting() const noexcept { return waiting_.load(std::memory_order_acquire) != 0; }
    bool take(HeldMessage &out);                  // the oldest; false when none
    std::vector<HeldMessage> take_all();          // drain()
    std::vector<HeldMessage> copy_all() const;    // checkpoint()
    // Held by checkpoint() and drain() while they collect the dead-letter ring, take these and read the input
    // rings: serve_device moves a device kernel's messages between them under it, so none is seen twice.
    std::unique_lock<std::mutex> serving() const { return std::unique_lock<std::mutex>(serve_mu_); }

    bool supervised() const noexcept { return policy_.has_value(); }
    const std::optional<RestartPolicy> &policy() const noexcept { return policy_; }
    std::atomic<std::uint64_t> restarts{0};
    std::atomic<std::uint64_t> abandoned{0};

private:
    std::optional<RestartPolicy> policy_;
    std::uint32_t in_size_;
    mutable std::mutex mu_;
    std::deque<HeldMessage> held_;               // under mu_
    std::deque<std::int64_t> recent_;            // under mu_: steady-clock ns of the restarts within `within`
    std::atomic<std::size_t> waiting_{0};
    struct Handed {
        HeldMessage message;
        std::uint64_t position = 0;
    };
    mutable std::mutex serve_mu_;                 // see serving()
    std::deque<Handed> handed_;                   // under mu_: device faults not yet decided (first in drain)
    bool releasing_ = false;                      // the bridge's: a decided fault waits for its backoff
    std::uint64_t release_at_ns_ = 0, release_upto_ = 0;
};

// Copy the message at a ring slot.
HeldMessage held_copy(const rk_envelope *slot, std::uint32_t in_size);

}  // namespace rk
