// Queue policy (DESIGN §4): backpressure, dedup, priority, TTL, batches and exact accounting.
#include <gtest/gtest.h>

#include <algorithm>
#include <ctime>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "ringkernel/ids.hpp"
#include "ringkernel/errors.hpp"
#include "ringkernel/queue.hpp"
#include "rk_ring.h"

using namespace std::chrono_literals;

namespace {

rk::QueueConfig cfg(std::uint32_t capacity, rk::Backpressure bp, std::uint32_t dedup = 0, bool priority = false) {
    rk::QueueConfig c;
    c.capacity = capacity;
    c.payload_size = 8;
    c.backpressure = bp;
    c.dedup_window = dedup;
    c.priority = priority;
    return c;
}

bool send(rk::Queue &q, std::uint64_t v, std::int64_t timeout_ns = 0) {
    return q.send(&v, {}, rk::Wait::for_ns(timeout_ns));
}
bool send_id(rk::Queue &q, std::uint64_t v, std::uint64_t id) {
    rk::SendOptions o;
    o.has_id = true;
    o.id = id;
    return q.send(&v, o, rk::Wait::none());
}
bool send_prio(rk::Queue &q, std::uint64_t v, std::uint8_t prio) {
    rk::SendOptions o;
    o.priority = prio;
    return q.send(&v, o, rk::Wait::none());
}
std::vector<std::uint64_t> drain(rk::Queue &q) {
    std::vector<std::uint64_t> out;
    std::uint64_t v;
    while (q.receive(&v, nullptr, rk::Wait::none())) out.push_back(v);
    return out;
}
void expect_balanced(rk::Queue &q) {
    const rk::QueueStats s = q.stats();
    EXPECT_EQ(s.sent, s.received + q.size() + s.dropped + s.expired)
        << "sent=" << s.sent << " received=" << s.received << " size=" << q.size() << " dropped=" << s.dropped
        << " expired=" << s.expired;
}
double thread_cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

TEST(QueueConfig, InvalidValuesNameTheFieldAndRange) {
    rk::QueueConfig c;
    c.capacity = 1000;
    try {
        rk::Queue q(c);
        FAIL() << "capacity 1000 accepted";
    } catch (const std::invalid_argument &e) {
        EXPECT_NE(std::string(e.what()).find("capacity must be a power of two in [16, 1048576]"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("1024"), std::string::npos) << e.what();
    }
    c = rk::QueueConfig{};
    c.dedup_window = 8;
    EXPECT_THROW(rk::Queue{c}, std::invalid_argument);
    c = rk::QueueConfig{};
    c.payload_size = 0;
    EXPECT_THROW(rk::Queue{c}, std::invalid_argument);
    c = rk::QueueConfig{};
    c.backpressure = rk::Backpressure::DropOldest;
    c.single_consumer = true;
    EXPECT_THROW(rk::Queue{c}, std::invalid_argument);
}

TEST(QueueConfig, DedupWindowIsClampedToCapacity) {
    rk::Queue q(cfg(16, rk::Backpressure::Reject, 1024));
    EXPECT_EQ(q.config().dedup_window, 16u);
}

TEST(Backpressure, RejectReturnsFalseAtOnceAndCounts) {
    rk::Queue q(cfg(16, rk::Backpressure::Reject));
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(send(q, i));
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(send(q, 100, 1000000000));  // the timeout does not apply to REJECT
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
    EXPECT_EQ(q.stats().rejected, 1u);
    EXPECT_EQ(q.stats().sent, 16u);
    EXPECT_EQ(drain(q).size(), 16u);
    expect_balanced(q);
}

TEST(Backpressure, DropOldestEvictsTheOldestAndAccepts) {
    rk::Queue q(cfg(16, rk::Backpressure::DropOldest));
    for (std::uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(send(q, i));
    const auto got = drain(q);
    ASSERT_EQ(got.size(), 16u);
    EXPECT_EQ(got.front(), 4u);
    EXPECT_EQ(got.back(), 19u);
    const auto s = q.stats();
    EXPECT_EQ(s.dropped, 4u);
    EXPECT_EQ(s.sent, 20u);
    EXPECT_EQ(s.received, 16u);
    expect_balanced(q);
}

TEST(Backpressure, DropNewDiscardsTheNewMessage) {
    rk::Queue q(cfg(16, rk::Backpressure::DropNew));
    for (std::uint64_t i = 0; i < 20; ++i) EXPECT_EQ(send(q, i), i < 16);
    const auto got = drain(q);
    ASSERT_EQ(got.size(), 16u);
    EXPECT_EQ(got.back(), 15u);
    const auto s = q.stats();
    EXPECT_EQ(s.dropped, 4u);
    EXPECT_EQ(s.sent, 20u);
    EXPECT_EQ(s.rejected, 0u);
    expect_balanced(q);
}

TEST(Backpressure, BlockTimesOutAndCounts) {
    rk::Queue q(cfg(16, rk::Backpressure::Block));
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(send(q, i));
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(send(q, 99, 50'000'000));
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(waited, 50ms);
    EXPECT_LT(waited, 2s);
    EXPECT_EQ(q.stats().timed_out, 1u);
    EXPECT_EQ(q.stats().sent, 16u);
    EXPECT_FALSE(send(q, 99, 0));  // timeout 0: try once
    EXPECT_EQ(q.stats().timed_out, 2u);
}

TEST(Backpressure, BlockedSendersWakeWhenSpaceAppears) {
    rk::Queue q(cfg(16, rk::Backpressure::Block));
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(send(q, i));
    std::atomic<int> done{0};
    std::vector<std::thread> senders;
    for (int t = 0; t < 3; ++t)
        senders.emplace_back([&, t] {
            if (send(q, 100 + t, 10'000'000'000)) ++done;
        });
    std::this_thread::sleep_for(100ms);  // long enough for all three to park
    EXPECT_EQ(done.load(), 0);
    std::uint64_t v;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(q.receive(&v, nullptr, rk::Wait::none()));
    for (auto &t : senders) t.join();
    EXPECT_EQ(done.load(), 3);
    EXPECT_EQ(q.size(), 16u);
    expect_balanced(q);
}

TEST(Backpressure, BlockingWaitDoesNotBurnACore) {
    rk::Queue q(cfg(16, rk::Backpressure::Block));
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(send(q, i));
    double cpu = 0;
    std::thread waiter([&] {
        const double c0 = thread_cpu_seconds();
        send(q, 1, 400'000'000);
        cpu = thread_cpu_seconds() - c0;
    });
    waiter.join();
    EXPECT_LT(cpu, 0.1) << "a 400 ms blocked send used " << cpu << " s of CPU";
}

TEST(Receive, TimesOutWithNothingAndWakesOnArrival) {
    rk::Queue q(cfg(16, rk::Backpressure::Block));
    std::uint64_t v = 0;
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(q.receive(&v, nullptr, rk::Wait::for_ns(30'000'000)));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
    std::thread later([&] {
        std::this_thread::sleep_for(50ms);
        send(q, 42);
    });
    EXPECT_TRUE(q.receive(&v, nullptr, rk::Wait::for_ns(5'000'000'000)));
    EXPECT_EQ(v, 42u);
    later.join();
}

TEST(Receive, InterruptCanAbandonAnInfiniteWait) {
    rk::Queue q(cfg(16, rk::Backpressure::Block));
    int calls = 0;
    std::function<void()> interrupt = [&] {
        if (++calls == 2) throw std::runtime_error("interrupted");
    };
    std::uint64_t v;
    EXPECT_THROW(q.receive(&v, nullptr, rk::Wait{-1, &interrupt}), std::runtime_error);
    EXPECT_EQ(calls, 2);
}

TEST(Dedup, DuplicateIdsAreRefusedAndCounted) {
    rk::Queue q(cfg(64, rk::Backpressure::Reject, 16));
    EXPECT_TRUE(send_id(q, 1, 7));
    EXPECT_FALSE(send_id(q, 2, 7));
    EXPECT_EQ(q.stats().duplicates, 1u);
    EXPECT_EQ(drain(q), std::vector<std::uint64_t>{1});
    EXPECT_FALSE(send_id(q, 3, 7));  // still in the window after it was received
    expect_balanced(q);
}

TEST(Dedup, WindowSlidesOverTheLastWAcceptedIds) {
    rk::Queue q(cfg(64, rk::Backpressure::Reject, 16));
    for (std::uint64_t id = 0; id < 16; ++id) ASSERT_TRUE(send_id(q, id, id));
    EXPECT_FALSE(send_id(q, 0, 0));
    ASSERT_TRUE(send_id(q, 16, 16));  // pushes id 0 out of the window
    EXPECT_TRUE(send_id(q, 0, 0));
    EXPECT_FALSE(send_id(q, 2, 2));
}

TEST(Dedup, RefusedMessagesDoNotEnterTheWindow) {
    rk::Queue q(cfg(16, rk::Backpressure::Reject, 16));
    for (std::uint64_t id = 0; id < 16; ++id) ASSERT_TRUE(send_id(q, id, id));
    EXPECT_FALSE(send_id(q, 99, 99));  // rejected: full
    std::uint64_t v;
    ASSERT_TRUE(q.receive(&v, nullptr, rk::Wait::none()));
    EXPECT_TRUE(send_id(q, 99, 99));  // not a duplicate: it never entered
    EXPECT_EQ(q.stats().duplicates, 0u);
    EXPECT_EQ(q.stats().rejected, 1u);
}

TEST(Ids, AutomaticIdsAreUniqueAcrossThreadsAndQueues) {
    std::vector<std::vector<std::uint64_t>> per(4);
    std::vector<std::thread> threads;
    for (auto &v : per)
        threads.emplace_back([&v] {
            for (int i = 0; i < 10000; ++i) v.push_back(rk::next_message_ids(i % 7 == 0 ? 5000 : 1));
        });
    for (auto &t : threads) t.join();
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // [first, last] of each grant
    for (auto &v : per)
        for (std::size_t i = 0; i < v.size(); ++i) ranges.push_back({v[i], v[i] + (i % 7 == 0 ? 4999 : 0)});
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i) ASSERT_GT(ranges[i].first, ranges[i - 1].second);
}

TEST(Dedup, AutomaticIdsNeverCollide) {
    rk::Queue q(cfg(1024, rk::Backpressure::Reject, 1024));
    for (std::uint64_t i = 0; i < 1000; ++i) ASSERT_TRUE(send(q, i));
    EXPECT_EQ(q.stats().duplicates, 0u);
}

TEST(Priority, HigherFirstFifoAmongEquals) {
    rk::Queue q(cfg(64, rk::Backpressure::Reject, 0, true));
    const std::uint8_t prios[] = {1, 5, 1, 255, 0, 5, 5, 1};
    for (std::uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(send_prio(q, i, prios[i]));
    EXPECT_EQ(drain(q), (std::vector<std::uint64_t>{3, 1, 5, 6, 0, 2, 7, 4}));
    expect_balanced(q);
}

TEST(Priority, RefusedOnAFifoQueue) {
    rk::Queue q(cfg(16, rk::Backpressure::Reject));
    std::uint64_t v = 1;
    rk::SendOptions o;
    o.priority = 3;
    EXPECT_THROW(q.send(&v, o), std::invalid_argument);
    EXPECT_THROW(q.send_batch(&v, 1, 8, nullptr, 3), std::invalid_argument);
    o.priority = 0;
    EXPECT_TRUE(q.send(&v, o));
}

TEST(Priority, DropOldestEvictsTheOldestWhateverItsPriority) {
    rk::Queue q(cfg(16, rk::Backpressure::DropOldest, 0, true));
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(send_prio(q, i, static_cast<std::uint8_t>(i % 3 == 0 ? 200 : 1)));
    ASSERT_TRUE(send_prio(q, 100, 7));  // evicts message 0 (priority 200, oldest)
    auto got = drain(q);
    ASSERT_EQ(got.size(), 16u);
    EXPECT_EQ(got[0], 3u);  // 3, 6, 9, 12, 15 at 200, then 100 at 7, then the 1s
    EXPECT_EQ(got[5], 100u);
    EXPECT_EQ(std::count(got.begin(), got.end(), 0u), 0);
    EXPECT_EQ(q.stats().dropped, 1u);
    expect_balanced(q);
}

TEST(Priority, BlockingAndBatchesWork) {
    rk::Queue q(cfg(16, rk::Backpressure::Block, 0, true));
    std::vector<std::uint64_t> in(16);
    for (std::uint64_t i = 0; i < 16; ++i) in[i] = i;
    EXPECT_EQ(q.send_batch(in.data(), 16, 8, nullptr, 9), 16u);
    EXPECT_EQ(q.send_batch(in.data(), 4, 8, nullptr, 9, rk::Wait::for_ns(20'000'000)), 0u);
    EXPECT_EQ(q.stats().timed_out, 4u);
    std::vector<std::uint64_t> out(32);
    EXPECT_EQ(q.receive_batch(out.data(), 32, 8), 16u);
    out.resize(16);
    EXPECT_EQ(out, in);
}

TEST(Ttl, MessagesOlderThanTtlAreDroppedAtDequeue) {
    for (bool priority : {false, true}) {
        auto c = cfg(64, rk::Backpressure::Block, 0, priority);
        c.ttl_ns = 30'000'000;
        rk::Queue q(c);
        ASSERT_TRUE(send(q, 1));
        ASSERT_TRUE(send(q, 2));
        std::this_thread::sleep_for(80ms);
        ASSERT_TRUE(send(q, 3));
        EXPECT_EQ(drain(q), std::vector<std::uint64_t>{3});
        EXPECT_EQ(q.stats().expired, 2u);
        ASSERT_TRUE(send(q, 4));
        std::this_thread::sleep_for(80ms);
        std::uint64_t out[4];
        EXPECT_EQ(q.receive_batch(out, 4, 8), 0u);
        EXPECT_EQ(q.stats().expired, 3u);
        expect_balanced(q);
    }
}

TEST(Envelope, StampsIdsAndMetadata) {
    auto c = cfg(64, rk::Backpressure::Block);
    c.type_id = 0x1234;
    c.source = 9;
    auto clock = std::make_shared<rk::HlcClock>(9);
    rk::Queue q(c, clock);
    rk::SendOptions o;
    o.correlation_id = 77;
    std::uint64_t v = 5;
    ASSERT_TRUE(q.send(&v, o));
    ASSERT_TRUE(q.send(&v, o));
    rk_envelope a, b;
    ASSERT_TRUE(q.receive(&v, &a, rk::Wait::none()));
    ASSERT_TRUE(q.receive(&v, &b, rk::Wait::none()));
    EXPECT_LT(a.timestamp, b.timestamp);
    EXPECT_GE(a.message_id, 1ull << 63);  // automatic ids live above the explicit range
    EXPECT_NE(a.message_id, b.message_id);
    EXPECT_EQ(a.correlation_id, 77u);
    EXPECT_EQ(a.type_id, 0x1234);
    EXPECT_EQ(a.source_kernel, 9);
    EXPECT_EQ(a.payload_size, 8u);
    EXPECT_GT(a.enqueue_ns, 0u);
    EXPECT_LE(a.enqueue_ns, b.enqueue_ns);
    EXPECT_EQ(a.enqueue_ns / 1000000u, rk::HlcTimestamp::unpack(a.timestamp, 9).physical);  // one clock read
    EXPECT_EQ(clock->last().pack(), b.timestamp);
}

TEST(Batch, SendAndReceiveKeepOrderAcrossWrapAround) {
    rk::Queue q(cfg(64, rk::Backpressure::Block));
    std::uint64_t next = 0, expect = 0;
    std::vector<std::uint64_t> buf(50), out(50);
    std::vector<rk_envelope> envs(50);
    std::uint64_t last_batch_stamp = 0;
    for (int round = 0; round < 100; ++round) {
        for (auto &x : buf) x = next++;
        ASSERT_EQ(q.send_batch(buf.data(), buf.size(), 8), 50u);
        ASSERT_EQ(q.receive_batch(out.data(), out.size(), 8, envs.data()), 50u);
        for (std::size_t i = 0; i < 50; ++i) {
            ASSERT_EQ(out[i], expect++);
            if (i) {  // one send event: one stamp, consecutive ids
                ASSERT_EQ(envs[i - 1].timestamp, envs[i].timestamp);
                ASSERT_EQ(envs[i - 1].message_id + 1, envs[i].message_id);
            }
        }
        ASSERT_GT(envs[0].timestamp, last_batch_stamp);
        last_batch_stamp = envs[0].timestamp;
    }
    expect_balanced(q);
}

TEST(Batch, BackpressureAppliesToTheRemainder) {
    std::vector<std::uint64_t> buf(40);
    for (std::uint64_t i = 0; i < 40; ++i) buf[i] = i;
    {
        rk::Queue q(cfg(16, rk::Backpressure::Reject));
        EXPECT_EQ(q.send_batch(buf.data(), 40, 8), 16u);
        EXPECT_EQ(q.stats().rejected, 24u);
        expect_balanced(q);
    }
    {
        rk::Queue q(cfg(16, rk::Backpressure::DropNew));
        EXPECT_EQ(q.send_batch(buf.data(), 40, 8), 16u);
        EXPECT_EQ(q.stats().dropped, 24u);
        EXPECT_EQ(q.stats().sent, 40u);
        expect_balanced(q);
    }
    {
        rk::Queue q(cfg(16, rk::Backpressure::DropOldest));
        EXPECT_EQ(q.send_batch(buf.data(), 40, 8), 40u);
        std::vector<std::uint64_t> out(16);
        EXPECT_EQ(q.receive_batch(out.data(), 16, 8), 16u);
        EXPECT_EQ(out.front(), 24u);
        EXPECT_EQ(out.back(), 39u);
        EXPECT_EQ(q.stats().dropped, 24u);
        expect_balanced(q);
    }
    {
        rk::Queue q(cfg(16, rk::Backpressure::Block));
        EXPECT_EQ(q.send_batch(buf.data(), 40, 8, nullptr, 0, rk::Wait::for_ns(10'000'000)), 16u);
        EXPECT_EQ(q.stats().timed_out, 24u);
    }
    {
        rk::Queue q(cfg(64, rk::Backpressure::Reject, 16));
        std::vector<std::uint64_t> ids = {1, 2, 2, 3, 1};
        EXPECT_EQ(q.send_batch(buf.data(), 5, 8, ids.data()), 3u);
        EXPECT_EQ(q.stats().duplicates, 2u);
    }
}

TEST(Batch, ReceiveBatchWaitsForTheFirstMessageOnly) {
    rk::Queue q(cfg(64, rk::Backpressure::Block));
    std::vector<std::uint64_t> out(8);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(q.receive_batch(out.data(), 8, 8, nullptr, rk::Wait::for_ns(30'000'000)), 0u);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
    std::thread later([&] {
        std::this_thread::sleep_for(30ms);
        send(q, 5);
    });
    EXPECT_EQ(q.receive_batch(out.data(), 8, 8, nullptr, rk::Wait::for_ns(5'000'000'000)), 1u);
    EXPECT_EQ(out[0], 5u);
    later.join();
}

// Regression: a send also fails while a receiver is still copying out of the slot it must reuse;
// DROP_OLDEST used to evict message after message until that receiver let go (or the queue was
// empty). It must wait for the receiver instead and evict nothing.
TEST(Backpressure, DropOldestDoesNotEvictWhileAReceiverIsMidCopy) {
    rk::Queue q(cfg(16, rk::Backpressure::DropOldest));
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(send(q, i));
    std::uint64_t pos;
    rk_envelope *slot = q.ring()->acquire(pos, false);  // a receiver that has not released yet
    ASSERT_NE(slot, nullptr);
    std::thread receiver([&] {
        std::this_thread::sleep_for(50ms);
        q.ring()->release(slot, pos);
    });
    EXPECT_TRUE(send(q, 100));
    receiver.join();
    EXPECT_EQ(q.stats().dropped, 0u);
    EXPECT_EQ(q.size(), 16u);
    const auto got = drain(q);
    EXPECT_EQ(got.front(), 1u);
    EXPECT_EQ(got.back(), 100u);
}

// Regression: a live stats() snapshot read the consumer cursor before the eviction counter and
// could report received as a wrapped, huge number.
TEST(Stats, LiveSnapshotsNeverGoNegative) {
    rk::Queue q(cfg(16, rk::Backpressure::DropOldest));
    std::atomic<bool> done{false};
    std::thread sender([&] {
        for (std::uint64_t i = 0; i < 200000; ++i) send(q, i);
        done = true;
    });
    std::uint64_t worst = 0;
    while (!done) worst = std::max(worst, q.stats().received);
    sender.join();
    // Live, an eviction in progress may show as received for a moment; never as a wrapped count.
    EXPECT_LE(worst, 16u);
    EXPECT_EQ(q.stats().received, 0u);
    expect_balanced(q);
}

// ---- a queue whose ring moved to device memory (CUDA kernel-to-kernel rings) -------------------------

namespace {
// Memory that says it belongs to a device: the host reaches it only through copy_in/copy_out, which
// count their calls. (It is host memory underneath, so the test can look at what the kernels would see.)
class DeviceLikeMemory final : public rk::MemoryResource {
public:
    void *allocate(std::size_t bytes, std::size_t align) override { return rk::host_memory()->allocate(bytes, align); }
    void deallocate(void *p, std::size_t bytes) noexcept override { rk::host_memory()->deallocate(p, bytes); }
    const char *name() const noexcept override { return "device-like"; }
    int device() const noexcept override { return 0; }
    void copy_in(void *dst, const void *src, std::size_t n) override {
        ++copies_in;
        std::memcpy(dst, src, n);
    }
    int copies_in = 0;
};
}  // namespace

TEST(DeviceRing, IsInitialisedByCopyFlaggedDeviceLocalAndClosesTheHostSide) {
    rk::QueueConfig cfg;
    cfg.capacity = 64;
    cfg.payload_size = 48;
    rk::Queue q(cfg);
    auto mem = std::make_shared<DeviceLikeMemory>();
    rk_ring_header *host_ring = q.kernel_ring();
    ASSERT_FALSE(q.device_resident());
    q.move_ring_to_device(mem, "queue 'a->b' joins two kernels through device memory");
    EXPECT_TRUE(q.device_resident());
    EXPECT_EQ(mem->copies_in, 1);  // the header and every slot's turn counter, in one copy
    const rk_ring_header *dev = q.kernel_ring();
    ASSERT_NE(dev, host_ring);
    EXPECT_EQ(dev->magic, RK_RING_MAGIC);
    EXPECT_EQ(dev->capacity, 64u);
    EXPECT_EQ(dev->max_payload, host_ring->max_payload);
    EXPECT_NE(dev->flags & RK_RING_FLAG_DEVICE_LOCAL, 0u);
    EXPECT_EQ(host_ring->flags & RK_RING_FLAG_DEVICE_LOCAL, 0u);
    // Kernels can use it: a push and a pop through the device ring's protocol.
    std::uint8_t payload[48] = {7};
    rk_envelope env{};
    env.payload_size = 48;
    EXPECT_TRUE(rk_ring_try_push(const_cast<rk_ring_header *>(dev), &env, payload, 0, RK_SCOPE_DEVICE));
    std::uint8_t out[48] = {};
    rk_envelope got{};
    EXPECT_TRUE(rk_ring_try_pop(const_cast<rk_ring_header *>(dev), &got, out, 48, 0, RK_SCOPE_DEVICE));
    EXPECT_EQ(out[0], 7);
    // The host side is closed, with the reason.
    std::uint8_t rec[48] = {};
    try {
        q.send(rec);
        FAIL() << "expected LifecycleError";
    } catch (const rk::LifecycleError &e) {
        EXPECT_NE(std::string(e.what()).find("device memory"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(q.receive(rec, nullptr, rk::Wait::for_ns(0)));
    EXPECT_THROW(q.move_ring_to_device(mem, "again"), std::logic_error);
}
