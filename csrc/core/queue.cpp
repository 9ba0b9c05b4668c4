#include "ringkernel/queue.hpp"

#include "process.hpp"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>
#include <cstring>
#include <sstream>
#include <thread>
#include <stdexcept>
#include <unordered_set>
#include <vector>

#include "ringkernel/clock.hpp"
#include "ringkernel/errors.hpp"
#include "ringkernel/ids.hpp"
#include "rk_ring.h"

namespace rk {
namespace detail {

// The last W accepted message ids, oldest evicted first. Guarded by the owner's mutex.
class DedupWindow {
public:
    explicit DedupWindow(std::uint32_t window) : order_(window) { seen_.reserve(window * 2); }

    bool contains(std::uint64_t id) const { return seen_.count(id) != 0; }
    void insert(std::uint64_t id) {
        if (seen_.size() == order_.size()) seen_.erase(order_[next_]);
        seen_.insert(id);
        order_[next_] = id;
        next_ = (next_ + 1) % order_.size();
    }

    std::mutex mu;

private:
    std::unordered_set<std::uint64_t> seen_;
    std::vector<std::uint64_t> order_;
    std::size_t next_ = 0;
};

// A bounded store that dequeues by priority (higher first) and FIFO among equals: one intrusive
// FIFO list per level over a fixed pool of slots, and a 256-bit map of the non-empty levels.
class PriorityStore {
public:
    PriorityStore(std::uint32_t capacity, std::uint32_t payload)
        : capacity_(capacity), payload_(payload), stride_(sizeof(rk_envelope) + payload),
          storage_(static_cast<std::size_t>(capacity) * stride_), next_(capacity), order_(capacity) {
        for (std::uint32_t i = 0; i < capacity; ++i) next_[i] = i + 1;
        std::fill(std::begin(head_), std::end(head_), kNil);
        std::fill(std::begin(tail_), std::end(tail_), kNil);
    }

    bool try_put(const rk_envelope &env, const void *payload) {
        std::lock_guard<std::mutex> lock(mu_);
        if (count_.load(std::memory_order_relaxed) == capacity_) return false;
        const std::uint32_t s = free_;
        free_ = next_[s];
        std::memcpy(slot(s), &env, sizeof env);
        std::memcpy(slot(s) + sizeof(rk_envelope), payload, payload_);
        order_[s] = serial_++;
        next_[s] = kNil;
        const unsigned p = env.priority;
        if (tail_[p] == kNil)
            head_[p] = s;
        else
            next_[tail_[p]] = s;
        tail_[p] = s;
        bits_[p >> 6] |= 1ull << (p & 63);
        count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        pushed_.store(pushed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        return true;
    }

    bool try_take(rk_envelope &env, void *payload) {
        std::lock_guard<std::mutex> lock(mu_);
        const int p = highest();
        if (p < 0) return false;
        take_head(static_cast<unsigned>(p), &env, payload);
        return true;
    }

    // Remove the message that entered first, whatever its priority.
    bool evict_oldest() {
        std::lock_guard<std::mutex> lock(mu_);
        int best = -1;
        for (unsigned w = 0; w < 4; ++w) {
            for (std::uint64_t b = bits_[w]; b != 0; b &= b - 1) {
                const int p = static_cast<int>(w * 64 + static_cast<unsigned>(__builtin_ctzll(b)));
                if (best < 0 || order_[head_[p]] < order_[head_[best]]) best = p;
            }
        }
        if (best < 0) return false;
        take_head(static_cast<unsigned>(best), nullptr, nullptr);
        return true;
    }

    std::size_t size() const noexcept { return count_.load(std::memory_order_acquire); }
    bool has_space() const noexcept { return size() < capacity_; }
    bool has_data() const noexcept { return size() > 0; }
    std::uint64_t pushed() const noexcept { return pushed_.load(std::memory_order_relaxed); }
    std::uint64_t popped() const noexcept { return popped_.load(std::memory_order_relaxed); }

private:
    static constexpr std::uint32_t kNil = 0xFFFFFFFFu;

    std::uint8_t *slot(std::uint32_t s) { return storage_.data() + static_cast<std::size_t>(s) * stride_; }

    int highest() const noexcept {
        for (int w = 3; w >= 0; --w)
            if (bits_[w]) return w * 64 + 63 - __builtin_clzll(bits_[w]);
        return -1;
    }

    void take_head(unsigned p, rk_envelope *env, void *payload) {
        const std::uint32_t s = head_[p];
        if (env) std::memcpy(env, slot(s), sizeof *env);
        if (payload) std::memcpy(payload, slot(s) + sizeof(rk_envelope), payload_);
        head_[p] = next_[s];
        if (head_[p] == kNil) {
            tail_[p] = kNil;
            bits_[p >> 6] &= ~(1ull << (p & 63));
        }
        next_[s] = free_;
        free_ = s;
        count_.store(count_.load(std::memory_order_relaxed) - 1, std::memory_order_release);
        popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    std::mutex mu_;
    const std::uint32_t capacity_;
    const std::uint32_t payload_;
    const std::size_t stride_;
    std::vector<std::uint8_t> storage_;
    std::vector<std::uint32_t> next_;
    std::vector<std::uint64_t> order_;
    std::uint32_t head_[256];
    std::uint32_t tail_[256];
    std::uint64_t bits_[4] = {0, 0, 0, 0};
    std::uint32_t free_ = 0;
    std::uint64_t serial_ = 0;
    std::atomic<std::uint32_t> count_{0};
    std::atomic<std::uint64_t> pushed_{0};
    std::atomic<std::uint64_t> popped_{0};
};

}  // namespace detail

Queue::Queue(const QueueConfig &cfg, std::shared_ptr<HlcClock> clock, std::shared_ptr<WaitSet> readable,
             std::shared_ptr<MemoryResource> memory)
    : cfg_(cfg), data_(readable ? std::move(readable) : std::make_shared<WaitSet>()) {
    cfg_.validate();
    cfg_.dedup_window = cfg_.effective_dedup_window();
    clock_ = clock ? std::move(clock) : std::shared_ptr<HlcClock>(&default_clock(), [](HlcClock *) {});
    if (cfg_.priority)
        pstore_ = std::make_unique<detail::PriorityStore>(cfg_.capacity, cfg_.payload_size);
    else
        ring_ = std::make_unique<Ring>(cfg_.capacity, cfg_.payload_size,
                                       (cfg_.single_producer ? RK_RING_FLAG_SINGLE_PRODUCER : 0u) |
                                           (cfg_.single_consumer ? RK_RING_FLAG_SINGLE_CONSUMER : 0u),
                                       std::move(memory));
    if (cfg_.dedup_window) dedup_ = std::make_unique<detail::DedupWindow>(cfg_.dedup_window);
}

Queue::~Queue() = default;

void Queue::move_ring_to_device(std::shared_ptr<MemoryResource> memory, const std::string &why) {
    if (!ring_) throw std::invalid_argument("a priority queue cannot join kernels on a device");
    if (device_ring_) throw std::logic_error("the queue's ring is in device memory already");
    device_ring_ = std::make_unique<Ring>(cfg_.capacity, cfg_.payload_size, ring_->header()->flags, std::move(memory));
    close(why);
}

void Queue::close(const std::string &reason) {
    {
        std::lock_guard<std::mutex> lock(close_mu_);
        if (closed_.load(std::memory_order_relaxed)) return;
        close_reason_ = reason;
        closed_.store(true, std::memory_order_release);
    }
    space_.notify();
    data_->notify();
}

int Queue::watch_readable() {
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
    data_->watch_fd(fd);
    return fd;
}

int Queue::watch_writable() {
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
    space_.watch_fd(fd);
    return fd;
}

void Queue::unwatch(int fd) {
    data_->unwatch_fd(fd);
    space_.unwatch_fd(fd);
    ::close(fd);
}

void Queue::check_open() const {
    check_process();
    if (closed_.load(std::memory_order_acquire)) throw LifecycleError(close_reason_);
}

void Queue::bind_to_process() noexcept { process_ = process_generation(); }

void Queue::check_sole(std::atomic<std::uint64_t> &owner, const char *side) const {
    const auto self = static_cast<std::uint64_t>(::pthread_self());
    std::uint64_t seen = owner.load(std::memory_order_relaxed);
    if (seen == self || (seen == 0 && owner.compare_exchange_strong(seen, self, std::memory_order_relaxed))) return;
    throw Error(std::string("this queue was made with single_") + side + "=True, and a second thread has just " +
                (side[0] == 'p' ? "sent" : "received") + " on it: a single-" + side +
                " queue may be used from one thread only (the first that did). Use single_" + side +
                "=False for several threads");
}

void Queue::check_process() const {
    if (process_ != ~0u && process_ != process_generation())
        throw LifecycleError(forked_message("this queue of a ring-kernel runtime"));
}

void Queue::check_priority(unsigned priority) const {
    if (priority != 0 && !cfg_.priority) {
        std::ostringstream msg;
        msg << "priority=" << priority
            << " needs a queue created with priority=True; this queue is FIFO and would ignore it";
        throw std::invalid_argument(msg.str());
    }
}

bool Queue::try_put(const rk_envelope &env, const void *payload) {
    if (pstore_) return pstore_->try_put(env, payload);
    return rk_ring_try_push(ring_->header(), &env, static_cast<const rk_u8 *>(payload),
                            cfg_.single_producer, RK_SCOPE_SYSTEM);
}

bool Queue::try_take(rk_envelope &env, void *payload) {
    if (pstore_) return pstore_->try_take(env, payload);
    return rk_ring_try_pop(ring_->header(), &env, static_cast<rk_u8 *>(payload), cfg_.payload_size,
                           cfg_.single_consumer, RK_SCOPE_SYSTEM);
}

bool Queue::evict_oldest() {
    if (pstore_) return pstore_->evict_oldest();
    std::uint64_t pos;
    rk_envelope *slot = ring_->acquire(pos, false);
    if (!slot) return false;
    ring_->release(slot, pos);
    return true;
}

bool Queue::really_full() const noexcept {
    if (pstore_) return true;  // the priority store is only full when every slot holds a message
    const rk_ring_header *h = ring_->header();
    const std::uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    const std::uint64_t tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    return tail - head >= h->capacity;
}

bool Queue::has_space() noexcept { return pstore_ ? pstore_->has_space() : ring_->can_push(); }
bool Queue::has_data() noexcept { return pstore_ ? pstore_->has_data() : ring_->can_pop(); }

bool Queue::wait_readable(const Wait &wait) {
    if (has_data()) return true;
    if (wait.timeout_ns == 0) return false;
    return data_->wait([this] { return has_data() || closed(); }, Deadline::from(wait), wait.interrupt) &&
           has_data();
}

std::size_t Queue::size() const noexcept {
    return pstore_ ? pstore_->size() : const_cast<Ring &>(*ring_).size();
}

QueueStats Queue::stats() const noexcept {
    QueueStats s;
    // Evictions and expiries advance the consumer cursor before their counter, and the producer
    // cursor never trails the consumer's. So: counters, then head, then tail, and again while the
    // counters moved in between (a few tries). A live snapshot then never goes negative and is
    // off by at most the evictions/expiries in flight; once the queue is quiet it is exact.
    // What kernels dropped is counted in the ring header (layout.h), beside what the host queue counted.
    const rk_ring_header *h = pstore_ ? nullptr : ring_->header();
    auto by_kernels = [h](rk_u64 rk_ring_header::*field) -> std::uint64_t {
        return h ? __atomic_load_n(&(h->*field), __ATOMIC_ACQUIRE) : 0;
    };
    std::uint64_t evicted = 0, dropped_new = 0, popped = 0, pushed = 0;
    for (int attempt = 0; attempt < 8; ++attempt) {
        evicted = evicted_.load(std::memory_order_acquire) + by_kernels(&rk_ring_header::evicted);
        s.expired = expired_.load(std::memory_order_acquire) + by_kernels(&rk_ring_header::expired);
        dropped_new = dropped_new_.load(std::memory_order_acquire) + by_kernels(&rk_ring_header::dropped_new);
        popped = pstore_ ? pstore_->popped() : ring_->popped();
        pushed = pstore_ ? pstore_->pushed() : ring_->pushed();
        if (evicted == evicted_.load(std::memory_order_acquire) + by_kernels(&rk_ring_header::evicted) &&
            s.expired == expired_.load(std::memory_order_acquire) + by_kernels(&rk_ring_header::expired))
            break;
    }
    s.sent = pushed + dropped_new;
    s.received = popped >= evicted + s.expired ? popped - evicted - s.expired : 0;
    s.dropped = evicted + dropped_new;
    s.rejected = rejected_.load(std::memory_order_relaxed) + by_kernels(&rk_ring_header::rejected);
    s.duplicates = duplicates_.load(std::memory_order_relaxed);
    s.timed_out = timed_out_.load(std::memory_order_relaxed);
    return s;
}

void Queue::fill_envelope(rk_envelope &env, std::uint64_t id, std::uint64_t stamp, std::uint64_t enq,
                          std::uint64_t corr, std::uint8_t priority, std::uint8_t flags) const noexcept {
    env.message_id = id;
    env.correlation_id = corr;
    env.timestamp = stamp;
    env.enqueue_ns = enq;
    env.payload_size = cfg_.payload_size;
    env.type_id = cfg_.type_id;
    env.source_kernel = cfg_.source;
    env.priority = priority;
    env.flags = flags;
    env.reserved0 = 0;
    env.reserved1 = 0;
    env.reserved2 = 0;
    env.sequence = 0;
}

bool Queue::send(const void *record, const SendOptions &opts, const Wait &wait) {
    check_priority(opts.priority);
    check_open();
    if (cfg_.single_producer) check_sole(producer_, "producer");
    return send_one(record, opts, wait) == Outcome::Accepted;
}

Queue::Attempt Queue::try_send(const void *record, const SendOptions &opts) {
    check_priority(opts.priority);
    check_open();
    if (cfg_.single_producer) check_sole(producer_, "producer");
    switch (send_one(record, opts, Wait::none(), true)) {
    case Outcome::Accepted: return Attempt::Accepted;
    case Outcome::Full: return Attempt::Full;
    default: return Attempt::Refused;
    }
}

Queue::Outcome Queue::send_one(const void *record, const SendOptions &opts, const Wait &wait, bool probe) {
    // One clock read stamps the message: HLC physical part and enqueue time.
    const std::uint64_t now = wall_ns();
    const std::uint64_t stamp = clock_->reserve_at(now / 1000000u);
    rk_envelope env;
    fill_envelope(env, opts.has_id ? opts.id : next_message_ids(1), stamp, now, opts.correlation_id, opts.priority,
                  opts.flags);
    LazyDeadline deadline(wait);

    std::unique_lock<std::mutex> dedup_lock;
    if (dedup_) {
        dedup_lock = std::unique_lock<std::mutex>(dedup_->mu);
        if (dedup_->contains(env.message_id)) {
            duplicates_.fetch_add(1, std::memory_order_relaxed);
            return Outcome::Refused;
        }
    }
    for (;;) {
        if (try_put(env, record)) {
            if (dedup_) {
                dedup_->insert(env.message_id);
                dedup_lock.unlock();
            }
            data_->notify();
            return Outcome::Accepted;
        }
        switch (cfg_.backpressure) {
        case Backpressure::Reject:
            rejected_.fetch_add(1, std::memory_order_relaxed);
            return Outcome::Refused;
        case Backpressure::DropNew:
            dropped_new_.fetch_add(1, std::memory_order_relaxed);
            return Outcome::Refused;
        case Backpressure::DropOldest:
            // Evict only from a queue that is really full. A send also fails while a receiver
            // still copies out of the slot it must reuse; evicting then would free another slot
            // and fail again, emptying the queue. That receiver finishes within its copy: yield.
            if (!really_full()) {
                std::this_thread::yield();
            } else if (evict_oldest()) {
                evicted_.fetch_add(1, std::memory_order_relaxed);
                space_.notify();
            }
            break;
        case Backpressure::Block: {
            if (probe) return Outcome::Full;
            if (wait.timeout_ns == 0) {
                timed_out_.fetch_add(1, std::memory_order_relaxed);
                return Outcome::TimedOut;
            }
            if (dedup_lock.owns_lock()) dedup_lock.unlock();
            if (!space_.wait([this] { return has_space() || closed(); }, deadline.get(), wait.interrupt)) {
                timed_out_.fetch_add(1, std::memory_order_relaxed);
                return Outcome::TimedOut;
            }
            check_open();  // closed while this sender waited
            if (dedup_) {
                dedup_lock.lock();
                if (dedup_->contains(env.message_id)) {  // a concurrent send of the same id won
                    duplicates_.fetch_add(1, std::memory_order_relaxed);
                    return Outcome::Refused;
                }
            }
            env.enqueue_ns = wall_ns();
            break;
        }
        }
    }
}

bool Queue::receive(void *record, rk_envelope *env_out, const Wait &wait) {
    check_process();
    if (cfg_.single_consumer) check_sole(consumer_, "consumer");
    LazyDeadline deadline(wait);
    rk_envelope env{};  // the ring copies the travelling bytes only: `sequence` must not be stack garbage
    for (;;) {
        while (try_take(env, record)) {
            space_.notify();
            if (cfg_.ttl_ns && expired(env, wall_ns())) {
                expired_.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            if (env_out) *env_out = env;
            return true;
        }
        if (wait.timeout_ns == 0 || closed()) return false;
        if (!data_->wait([this] { return has_data() || closed(); }, deadline.get(), wait.interrupt)) return false;
    }
}

std::size_t Queue::send_batch_ring(const std::uint8_t *src, std::size_t n, std::size_t stride,
                                   const std::uint64_t *ids, const Wait &wait) {
    LazyDeadline deadline(wait);
    rk_ring_header *hdr = ring_->header();
    // A batch is one send event: one clock read, one HLC stamp, consecutive automatic ids.
    const std::uint64_t now = wall_ns();
    rk_envelope tmpl;
    fill_envelope(tmpl, 0, clock_->reserve_at(now / 1000000u), now, 0, 0, 0);
    const std::uint64_t first_id = ids ? 0 : next_message_ids(n);
    std::size_t done = 0;
    while (done < n) {
        std::uint64_t first;
        const std::uint32_t want = static_cast<std::uint32_t>(std::min<std::size_t>(n - done, cfg_.capacity));
        const std::uint32_t k = rk_ring_claim_n(hdr, want, &first, cfg_.single_producer, RK_SCOPE_SYSTEM);
        if (k) {
            for (std::uint32_t i = 0; i < k; ++i) {
                rk_envelope *slot = rk_ring_slot(hdr, first + i);
                const std::size_t idx = done + i;
                // The travelling part only; the sequence field stays as the ring left it.
                std::memcpy(slot, &tmpl, RK_ENVELOPE_MESSAGE_BYTES);
                slot->message_id = ids ? ids[idx] : first_id + idx;
                std::memcpy(rk_envelope_payload(slot), src + idx * stride, cfg_.payload_size);
                rk_ring_publish(slot, first + i, RK_SCOPE_SYSTEM);
            }
            done += k;
            data_->notify();
            continue;
        }
        const std::uint64_t left = n - done;
        switch (cfg_.backpressure) {
        case Backpressure::Reject:
            rejected_.fetch_add(left, std::memory_order_relaxed);
            return done;
        case Backpressure::DropNew:
            dropped_new_.fetch_add(left, std::memory_order_relaxed);
            return done;
        case Backpressure::DropOldest: {
            if (!really_full()) {  // a receiver is still copying out of the next slot (see send_one)
                std::this_thread::yield();
                break;
            }
            const std::uint32_t evict = static_cast<std::uint32_t>(std::min<std::uint64_t>(left, cfg_.capacity));
            std::uint32_t got = rk_ring_acquire_n(hdr, evict, &first, 0, RK_SCOPE_SYSTEM);
            for (std::uint32_t i = 0; i < got; ++i)
                rk_ring_release(hdr, rk_ring_slot(hdr, first + i), first + i, RK_SCOPE_SYSTEM);
            if (got) {
                evicted_.fetch_add(got, std::memory_order_relaxed);
                space_.notify();
            }
            break;
        }
        case Backpressure::Block:
            if (wait.timeout_ns == 0 ||
                !space_.wait([this] { return has_space() || closed(); }, deadline.get(), wait.interrupt)) {
                timed_out_.fetch_add(left, std::memory_order_relaxed);
                return done;
            }
            if (closed()) {  // closed while this sender waited: what entered stays, the rest is refused
                if (done == 0) check_open();
                return done;
            }
            break;
        }
    }
    return done;
}

std::size_t Queue::send_batch(const void *records, std::size_t n, std::size_t stride,
                              const std::uint64_t *ids, std::uint8_t priority, const Wait &wait) {
    check_priority(priority);
    check_open();
    if (cfg_.single_producer) check_sole(producer_, "producer");
    if (n == 0) return 0;
    const auto *src = static_cast<const std::uint8_t *>(records);
    if (!pstore_ && !dedup_) return send_batch_ring(src, n, stride, ids, wait);

    // Dedup or priority: the per-message path, still one C++ loop.
    const Deadline deadline = Deadline::from(wait);
    std::size_t done = 0;
    for (std::size_t i = 0; i < n; ++i) {
        SendOptions o;
        o.has_id = ids != nullptr;
        o.id = ids ? ids[i] : 0;
        o.priority = priority;
        const Outcome r = send_one(src + i * stride, o, Wait{deadline.remaining_ns(), wait.interrupt});
        if (r == Outcome::Accepted) {
            ++done;
        } else if (r == Outcome::TimedOut) {
            // The deadline passed: the rest of the batch times out with it.
            timed_out_.fetch_add(n - i - 1, std::memory_order_relaxed);
            break;
        }
    }
    return done;
}

std::size_t Queue::receive_batch(void *records, std::size_t n, std::size_t stride, rk_envelope *envs,
                                 const Wait &wait) {
    check_process();
    if (cfg_.single_consumer) check_sole(consumer_, "consumer");
    if (n == 0) return 0;
    auto *dst = static_cast<std::uint8_t *>(records);
    LazyDeadline deadline(wait);
    std::size_t got = 0;
    for (;;) {
        if (pstore_) {
            rk_envelope env;
            while (got < n && pstore_->try_take(env, dst + got * stride)) {
                space_.notify();
                if (cfg_.ttl_ns && expired(env, wall_ns())) {
                    expired_.fetch_add(1, std::memory_order_relaxed);
                    continue;
                }
                if (envs) envs[got] = env;
                ++got;
            }
        } else {
            rk_ring_header *hdr = ring_->header();
            while (got < n) {
                std::uint64_t first;
                const std::uint32_t want = static_cast<std::uint32_t>(std::min<std::size_t>(n - got, cfg_.capacity));
                const std::uint32_t k = rk_ring_acquire_n(hdr, want, &first, cfg_.single_consumer, RK_SCOPE_SYSTEM);
                if (!k) break;
                const std::uint64_t now = cfg_.ttl_ns ? wall_ns() : 0;
                std::uint64_t expired_here = 0;
                for (std::uint32_t i = 0; i < k; ++i) {
                    rk_envelope *slot = rk_ring_slot(hdr, first + i);
                    if (cfg_.ttl_ns && expired(*slot, now)) {
                        ++expired_here;
                    } else {
                        std::memcpy(dst + got * stride, rk_envelope_payload(slot), cfg_.payload_size);
                        if (envs) {
                            std::memcpy(&envs[got], slot, RK_ENVELOPE_MESSAGE_BYTES);
                            envs[got].sequence = 0;
                        }
                        ++got;
                    }
                    rk_ring_release(hdr, slot, first + i, RK_SCOPE_SYSTEM);
                }
                if (expired_here) expired_.fetch_add(expired_here, std::memory_order_relaxed);
                space_.notify();
            }
        }
        if (got > 0 || wait.timeout_ns == 0 || closed()) return got;
        if (!data_->wait([this] { return has_data() || closed(); }, deadline.get(), wait.interrupt)) return got;
    }
}

}  // namespace rk
