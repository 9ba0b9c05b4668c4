// adapters.hpp — one producer/consumer interface over our ring and queue and over the peer queues,
// so every benchmark runs the same loop against each of them.
//
// A queue type Q offers Q(capacity), Q::kName, and per-thread handles from q.producer() and
// q.consumer(): push(const Msg &) / pop(Msg &) return false when full / empty and never wait.
// Types with a bulk path also offer push_n(const Msg *, n) / pop_n(Msg *, n), returning how many
// moved. Handles exist because some peers want per-thread state (moodycamel's tokens) and because
// our ring sends an envelope with every message: each producer builds its envelope once and each
// consumer receives one, as real callers do. The envelope (56 travelling bytes) is part of our
// protocol, so our figures include moving it; the peers move the 64-byte message alone.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>
#include <concurrentqueue/concurrentqueue.h>
#include <readerwriterqueue/readerwriterqueue.h>

#include "ringkernel/hlc.hpp"
#include "ringkernel/queue.hpp"
#include "ringkernel/ring.hpp"
#include "rk_atomic.h"

namespace rkbench {

// The message every benchmark moves: 64 bytes, w[0] carries a sequence number for checksums.
struct Msg {
    std::uint64_t w[8];
};
static_assert(sizeof(Msg) == 64, "benchmarks move 64-byte messages");
static_assert(std::is_trivially_copyable<Msg>::value, "peers copy messages bytewise");

inline Msg make_msg(std::uint64_t seq) {
    Msg m;
    for (std::uint64_t i = 0; i < 8; ++i) m.w[i] = seq + i;
    return m;
}

// Every queue holds this many messages (a compile-time constant where the peer wants one).
constexpr std::uint32_t kCapacity = 4096;

// How a thread waits on a full or empty queue: spin briefly, then yield. The same for every queue,
// and yielding matters here: with more threads than cores a pure spinner would starve the thread
// it waits for.
class Backoff {
public:
    void operator()() noexcept {
        if (++n_ < 64) {
            rk_cpu_relax();
        } else {
            std::this_thread::yield();
        }
    }
    void reset() noexcept { n_ = 0; }

private:
    unsigned n_ = 0;
};

// The CPUs this process may run on, as they were when first asked (main asks before any pinning,
// so a pinned thread's children still see them all).
inline const std::vector<int> &allowed_cpus() {
    static const std::vector<int> cpus = [] {
        std::vector<int> v;
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof set, &set) == 0)
            for (int c = 0; c < CPU_SETSIZE; ++c)
                if (CPU_ISSET(c, &set)) v.push_back(c);
        return v;
    }();
    return cpus;
}

// Pins the calling thread to the k-th allowed CPU (modulo their number), so the threads of a run
// sit on distinct cores from the first message on instead of whenever the scheduler spreads them:
// unpinned, two threads can start on one core and measure time slices, not the queue. Returns
// the previous affinity, for restore_affinity.
inline cpu_set_t pin_to_nth_cpu(unsigned k) {
    cpu_set_t old;
    CPU_ZERO(&old);
    pthread_getaffinity_np(pthread_self(), sizeof old, &old);
    const std::vector<int> &cpus = allowed_cpus();
    if (cpus.size() >= 2) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[k % cpus.size()], &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    }
    return old;
}
inline void restore_affinity(const cpu_set_t &set) { pthread_setaffinity_np(pthread_self(), sizeof set, &set); }

// ---- ours ----------------------------------------------------------------------------------------

inline rk_envelope make_envelope() {
    rk_envelope env{};
    env.payload_size = sizeof(Msg);
    env.type_id = 1;
    return env;
}

// rk::Ring, whole-message copies; Single selects the SPSC fast path (try_push_single/try_pop_single)
// instead of the MPMC protocol (try_push/try_pop).
template <bool Single>
class RkRing {
public:
    static constexpr const char *kName = Single ? "rk_ring_spsc" : "rk_ring_mpmc";

    explicit RkRing(std::uint32_t capacity) : ring_(capacity, sizeof(Msg)) {}

    class Producer {
    public:
        explicit Producer(rk::Ring &r) : r_(r), env_(make_envelope()) {}
        bool push(const Msg &m) noexcept {
            return Single ? r_.try_push_single(env_, &m) : r_.try_push(env_, &m);
        }

    private:
        rk::Ring &r_;
        rk_envelope env_;
    };
    class Consumer {
    public:
        explicit Consumer(rk::Ring &r) : r_(r), env_() {}
        bool pop(Msg &m) noexcept {
            return Single ? r_.try_pop_single(env_, &m, sizeof m) : r_.try_pop(env_, &m, sizeof m);
        }

    private:
        rk::Ring &r_;
        rk_envelope env_;
    };

    Producer producer() { return Producer(ring_); }
    Consumer consumer() { return Consumer(ring_); }
    rk::Ring &ring() { return ring_; }

private:
    rk::Ring ring_;
};

// rk::Queue (BLOCK backpressure, no dedup, priority or TTL) through its public send/receive, never
// waiting: the ring plus the policy layer (HLC stamp, enqueue time, waiter notification).
class RkQueue {
public:
    static constexpr const char *kName = "rk_queue";

    explicit RkQueue(std::uint32_t capacity) : q_(config(capacity), std::make_shared<rk::HlcClock>()) {}

    class Producer {
    public:
        explicit Producer(rk::Queue &q) : q_(q) {}
        bool push(const Msg &m) { return q_.send(&m, rk::SendOptions{}, rk::Wait::none()); }
        std::size_t push_n(const Msg *m, std::size_t n) {
            return q_.send_batch(m, n, sizeof(Msg), nullptr, 0, rk::Wait::none());
        }

    private:
        rk::Queue &q_;
    };
    class Consumer {
    public:
        explicit Consumer(rk::Queue &q) : q_(q) {}
        bool pop(Msg &m) { return q_.receive(&m, nullptr, rk::Wait::none()); }
        std::size_t pop_n(Msg *m, std::size_t n) {
            return q_.receive_batch(m, n, sizeof(Msg), nullptr, rk::Wait::none());
        }

    private:
        rk::Queue &q_;
    };

    Producer producer() { return Producer(q_); }
    Consumer consumer() { return Consumer(q_); }

private:
    static rk::QueueConfig config(std::uint32_t capacity) {
        rk::QueueConfig cfg;
        cfg.capacity = capacity;
        cfg.payload_size = sizeof(Msg);
        cfg.backpressure = rk::Backpressure::Block;
        cfg.dedup_window = 0;
        return cfg;
    }
    rk::Queue q_;
};

// ---- peers ---------------------------------------------------------------------------------------

// A handle that only forwards to the queue, for peers without per-thread state.
template <class Q>
class Forward {
public:
    explicit Forward(Q &q) : q_(q) {}
    bool push(const Msg &m) { return q_.push(m); }
    bool pop(Msg &m) { return q_.pop(m); }
    std::size_t push_n(const Msg *m, std::size_t n) { return q_.push_n(m, n); }
    std::size_t pop_n(Msg *m, std::size_t n) { return q_.pop_n(m, n); }

private:
    Q &q_;
};

// boost::lockfree::spsc_queue with compile-time capacity (its fastest form).
class BoostSpsc {
public:
    static constexpr const char *kName = "boost_spsc_queue";
    explicit BoostSpsc(std::uint32_t) : q_(std::make_unique<Impl>()) {}
    bool push(const Msg &m) { return q_->push(m); }
    bool pop(Msg &m) { return q_->pop(m); }
    std::size_t push_n(const Msg *m, std::size_t n) { return q_->push(m, n); }
    std::size_t pop_n(Msg *m, std::size_t n) { return q_->pop(m, n); }
    Forward<BoostSpsc> producer() { return Forward<BoostSpsc>(*this); }
    Forward<BoostSpsc> consumer() { return Forward<BoostSpsc>(*this); }

private:
    using Impl = boost::lockfree::spsc_queue<Msg, boost::lockfree::capacity<kCapacity>>;
    std::unique_ptr<Impl> q_;
};

// boost::lockfree::queue, fixed capacity (node pool of kCapacity, bounded_push never allocates).
class BoostQueue {
public:
    static constexpr const char *kName = "boost_queue";
    explicit BoostQueue(std::uint32_t) : q_(std::make_unique<Impl>()) {}
    bool push(const Msg &m) { return q_->bounded_push(m); }
    bool pop(Msg &m) { return q_->pop(m); }
    Forward<BoostQueue> producer() { return Forward<BoostQueue>(*this); }
    Forward<BoostQueue> consumer() { return Forward<BoostQueue>(*this); }

private:
    using Impl = boost::lockfree::queue<Msg, boost::lockfree::capacity<kCapacity>>;
    std::unique_ptr<Impl> q_;
};

// moodycamel::ReaderWriterQueue (SPSC); try_enqueue never allocates past the initial capacity.
class MoodyRwq {
public:
    static constexpr const char *kName = "moodycamel_rwq";
    explicit MoodyRwq(std::uint32_t capacity) : q_(capacity) {}
    bool push(const Msg &m) { return q_.try_enqueue(m); }
    bool pop(Msg &m) { return q_.try_dequeue(m); }
    Forward<MoodyRwq> producer() { return Forward<MoodyRwq>(*this); }
    Forward<MoodyRwq> consumer() { return Forward<MoodyRwq>(*this); }

private:
    moodycamel::ReaderWriterQueue<Msg> q_;
};

// moodycamel::ConcurrentQueue (MPMC) with producer and consumer tokens, its fast path, its pool
// sized for `capacity` messages per producer. It is the one unbounded peer: enqueue allocates
// a block when the pool runs dry. The bounded try_enqueue was tried and, with two producers,
// sometimes failed for ever on an empty queue (version 1.0.3; each producer keeps the blocks it
// once took, and its block index cannot grow without allocating), hanging the benchmark.
class MoodyCq {
public:
    static constexpr const char *kName = "moodycamel_cq";
    static constexpr std::size_t kMaxProducers = 2;
    using Impl = moodycamel::ConcurrentQueue<Msg>;

    explicit MoodyCq(std::uint32_t capacity) : q_(capacity, kMaxProducers, 0) {}

    class Producer {
    public:
        explicit Producer(Impl &q) : q_(q), tok_(q) {}
        bool push(const Msg &m) { return q_.enqueue(tok_, m); }
        std::size_t push_n(const Msg *m, std::size_t n) { return q_.enqueue_bulk(tok_, m, n) ? n : 0; }

    private:
        Impl &q_;
        moodycamel::ProducerToken tok_;
    };
    class Consumer {
    public:
        explicit Consumer(Impl &q) : q_(q), tok_(q) {}
        bool pop(Msg &m) { return q_.try_dequeue(tok_, m); }
        std::size_t pop_n(Msg *m, std::size_t n) { return q_.try_dequeue_bulk(tok_, m, n); }

    private:
        Impl &q_;
        moodycamel::ConsumerToken tok_;
    };

    Producer producer() { return Producer(q_); }
    Consumer consumer() { return Consumer(q_); }

private:
    Impl q_;
};

}  // namespace rkbench
