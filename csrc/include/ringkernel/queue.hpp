// queue.hpp — the host message queue: the ring of rk_ring.h plus the policy of DESIGN §4
// (backpressure, deduplication, priority, TTL, exact accounting).
//
// Records are fixed-size (QueueConfig::payload_size bytes). Without priority the store is the
// lock-free ring; with priority it is a locked store with one FIFO per level (a lock-free ring
// cannot reorder), which honours "higher first, FIFO among equals" exactly.
//
// Accounting. On the ring path the hot counters are the ring cursors themselves: every accepted
// message advanced `tail`, every dequeued or evicted one advanced `head`. Only the rare outcomes
// (rejected, evicted, dropped-new, duplicate, expired, timed out) have counters of their own, so
// sending costs no shared counter increment. When the queue is quiescent:
//     sent == received + size() + dropped + expired
// with rejected, duplicates and timed_out counted apart (a message counted there never entered).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "ringkernel/hlc.hpp"
#include "ringkernel/layout.h"
#include "ringkernel/options.hpp"
#include "ringkernel/ring.hpp"
#include "ringkernel/wait.hpp"

namespace rk {

struct QueueStats {
    std::uint64_t sent = 0;        // took responsibility for: entered, or dropped by DROP_NEW
    std::uint64_t received = 0;    // handed to a receiver
    std::uint64_t rejected = 0;    // refused by REJECT
    std::uint64_t dropped = 0;     // evicted by DROP_OLDEST or discarded by DROP_NEW
    std::uint64_t duplicates = 0;  // refused by the dedup window
    std::uint64_t expired = 0;     // older than the TTL at dequeue
    std::uint64_t timed_out = 0;   // BLOCK gave up at the caller's timeout
};

struct SendOptions {
    bool has_id = false;       // else an automatic id, unique within the process (ids.hpp)
    std::uint64_t id = 0;
    std::uint64_t correlation_id = 0;
    std::uint8_t priority = 0; // non-zero needs a priority queue
    std::uint8_t flags = 0;
};

namespace detail {
class PriorityStore;
class DedupWindow;
}  // namespace detail

class Queue {
public:
    // Throws std::invalid_argument if cfg is invalid. `clock` stamps messages (default_clock()).
    // `readable`, if set, is the event count receivers wait on and senders notify; a ring kernel
    // shares one among all of its input queues, so its workers wait on every input at once.
    // `memory`: where the ring lives (a device backend's shared memory; default the host heap).
    explicit Queue(const QueueConfig &cfg, std::shared_ptr<HlcClock> clock = nullptr,
                   std::shared_ptr<WaitSet> readable = nullptr, std::shared_ptr<MemoryResource> memory = nullptr);
    ~Queue();
    Queue(const Queue &) = delete;
    Queue &operator=(const Queue &) = delete;

    // One record of payload_size bytes. True exactly when it entered the queue.
    bool send(const void *record, const SendOptions &opts = {}, const Wait &wait = {});
    // One attempt that never waits and, on a full BLOCK queue, counts nothing: Full tells the caller
    // to follow up with send() and a timeout (the Python binding tries this before releasing the
    // GIL). Other strategies act and count exactly as send() does.
    enum class Attempt { Accepted, Refused, Full };
    Attempt try_send(const void *record, const SendOptions &opts = {});

    // One record into `record` (payload_size bytes) and, if env is set, its envelope. False when
    // nothing arrived in time; `record` may then hold an expired message's bytes.
    bool receive(void *record, rk_envelope *env = nullptr, const Wait &wait = {});

    // n records `stride` bytes apart; ids (optional) gives each one's id. Returns how many entered;
    // the rest are accounted by the backpressure strategy (rejected, dropped or timed out).
    std::size_t send_batch(const void *records, std::size_t n, std::size_t stride,
                           const std::uint64_t *ids = nullptr, std::uint8_t priority = 0,
                           const Wait &wait = {});
    // Up to n records into `records` (stride apart), envelopes into envs if set. Waits (per
    // `wait`) for the first one only; returns how many were written.
    std::size_t receive_batch(void *records, std::size_t n, std::size_t stride,
                              rk_envelope *envs = nullptr, const Wait &wait = Wait::none());

    // Wait (per `wait`) until a message may be received; true when one may (a hint: another
    // receiver can take it first). Lets a caller size its buffer before it receives.
    bool wait_readable(const Wait &wait);

    // Close the queue: from now on send() and send_batch() throw LifecycleError(reason), and every
    // blocked sender wakes and throws it too. Receivers still get what is in the queue; a receiver
    // waiting on an empty closed queue returns at once. Idempotent (the first reason stays).
    void close(const std::string &reason);
    bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }
    // Tie the queue to the process that calls this (a runtime does, for the queues of its kernels): used in
    // a process forked from it, send and receive raise LifecycleError instead of waiting for kernels whose
    // threads the fork did not copy.
    void bind_to_process() noexcept;

    // For a consumer or producer that works on ring() directly (a ring kernel's worker): wake the
    // waiting receivers or senders. What such a one drops it counts in the ring header (layout.h), which
    // stats() adds to the queue's own counts.
    void notify_readable() { data_->notify(); }
    void notify_space() { space_.notify(); }
    // Hints (no fence): a receiver or sender may be parked on this queue.
    bool readers_waiting() const noexcept { return data_->has_waiters(); }
    bool writers_waiting() const noexcept { return space_.has_waiters(); }

    // For event loops: a non-blocking eventfd that becomes readable whenever a message may be
    // received (watch_readable) or sent (watch_writable) — after every send, resp. every release,
    // while watched. Check the queue after the call, await the fd, drain it, check again; give the
    // fd back with unwatch(), which closes it.
    int watch_readable();
    int watch_writable();
    void unwatch(int fd);

    std::size_t size() const noexcept;
    std::uint32_t capacity() const noexcept { return cfg_.capacity; }
    const QueueConfig &config() const noexcept { return cfg_; }
    QueueStats stats() const noexcept;
    HlcClock &clock() noexcept { return *clock_; }
    // The ring behind a non-priority queue (nullptr for priority queues).
    Ring *ring() noexcept { return ring_.get(); }

    // Kernel-to-kernel queues on a GPU: give the kernels a ring of the same shape in device memory
    // (`memory`) instead, and close this queue to the host with `why` (sends raise it, receives return
    // nothing): the host cannot reach that ring.
    void move_ring_to_device(std::shared_ptr<MemoryResource> memory, const std::string &why);
    bool device_resident() const noexcept { return device_ring_ != nullptr; }
    // The ring kernels use: the device one after move_ring_to_device, else ring()'s.
    rk_ring_header *kernel_ring() noexcept {
        return device_ring_ ? device_ring_->header() : ring_ ? ring_->header() : nullptr;
    }

private:
    enum class Outcome { Accepted, Refused, TimedOut, Full };
    // probe: on a full BLOCK queue return Full at once without counting.
    Outcome send_one(const void *record, const SendOptions &opts, const Wait &wait, bool probe = false);
    bool try_put(const rk_envelope &env, const void *payload);
    bool try_take(rk_envelope &env, void *payload);
    bool evict_oldest();
    bool has_space() noexcept;
    bool really_full() const noexcept;
    bool has_data() noexcept;
    // Ages are wall-clock differences; a clock stepped backwards gives age 0, never a huge one.
    bool expired(const rk_envelope &env, std::uint64_t now_ns) const noexcept {
        return cfg_.ttl_ns != 0 && now_ns > env.enqueue_ns && now_ns - env.enqueue_ns > cfg_.ttl_ns;
    }
    void fill_envelope(rk_envelope &env, std::uint64_t id, std::uint64_t stamp, std::uint64_t enq,
                       std::uint64_t corr, std::uint8_t priority, std::uint8_t flags) const noexcept;
    std::size_t send_batch_ring(const std::uint8_t *src, std::size_t n, std::size_t stride,
                                const std::uint64_t *ids, const Wait &wait);
    void check_priority(unsigned priority) const;
    void check_open() const;
    void check_process() const;
    // single_producer / single_consumer: the first thread to send (receive) owns that side; another thread
    // gets an Error instead of corrupting the ring (the fast path takes no atomic read-modify-write).
    void check_sole(std::atomic<std::uint64_t> &owner, const char *side) const;

    QueueConfig cfg_;
    std::uint32_t process_ = ~0u;  // the process generation it is bound to (~0: any)
    mutable std::atomic<std::uint64_t> producer_{0}, consumer_{0};  // owning threads (0: none yet)
    std::shared_ptr<HlcClock> clock_;
    std::unique_ptr<Ring> ring_;
    std::unique_ptr<Ring> device_ring_;
    std::unique_ptr<detail::PriorityStore> pstore_;
    std::unique_ptr<detail::DedupWindow> dedup_;
    WaitSet space_;
    std::shared_ptr<WaitSet> data_;
    std::atomic<bool> closed_{false};
    std::string close_reason_;  // written once, before closed_ is set
    std::mutex close_mu_;

    // Rare outcomes, on a line of their own away from the ring cursors.
    alignas(64) std::atomic<std::uint64_t> rejected_{0};
    std::atomic<std::uint64_t> evicted_{0};
    std::atomic<std::uint64_t> dropped_new_{0};
    std::atomic<std::uint64_t> duplicates_{0};
    std::atomic<std::uint64_t> expired_{0};
    std::atomic<std::uint64_t> timed_out_{0};
};

}  // namespace rk
