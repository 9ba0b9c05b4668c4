// Threaded stress per backpressure strategy: 4 producers x 4 consumers, 1M messages, exact
// accounting; for BLOCK, every message exactly once and in per-producer order.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "ringkernel/queue.hpp"

namespace {

constexpr int kProducers = 4;
constexpr int kConsumers = 4;
constexpr std::uint64_t kTotal = 1'000'000;
constexpr std::uint64_t kPerProducer = kTotal / kProducers;

struct Msg {
    std::uint32_t producer;
    std::uint32_t pad;
    std::uint64_t seq;
    std::uint64_t body[6];
};
static_assert(sizeof(Msg) == 64, "64-byte messages");

struct Result {
    rk::QueueStats stats;
    std::uint64_t accepted = 0;     // send() returned true
    std::uint64_t consumed = 0;
    std::uint64_t order_violations = 0;
    std::vector<std::vector<std::uint8_t>> seen;  // [producer][seq] times received
};

Result run(rk::Backpressure bp, bool batches, bool single_flags = false) {
    rk::QueueConfig c;
    c.capacity = 1024;
    c.payload_size = sizeof(Msg);
    c.backpressure = bp;
    c.single_producer = single_flags;
    c.single_consumer = single_flags;
    rk::Queue q(c);
    const int producers = single_flags ? 1 : kProducers;
    const int consumers = single_flags ? 1 : kConsumers;
    const std::uint64_t per = kTotal / producers;

    Result r;
    r.seen.assign(producers, std::vector<std::uint8_t>(per, 0));
    std::atomic<std::uint64_t> accepted{0}, consumed{0}, violations{0};
    std::atomic<int> producers_left{producers};

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p)
        threads.emplace_back([&, p] {
            std::uint64_t ok = 0;
            if (batches) {
                std::vector<Msg> batch(64);
                for (std::uint64_t s = 0; s < per;) {
                    const std::size_t n = std::min<std::uint64_t>(batch.size(), per - s);
                    for (std::size_t i = 0; i < n; ++i) batch[i] = Msg{static_cast<std::uint32_t>(p), 0, s + i, {}};
                    const std::size_t sent = q.send_batch(batch.data(), n, sizeof(Msg));
                    ok += sent;
                    // BLOCK with no timeout sends everything; the others move on.
                    s += n;
                }
            } else {
                for (std::uint64_t s = 0; s < per; ++s) {
                    Msg m{static_cast<std::uint32_t>(p), 0, s, {}};
                    if (q.send(&m)) ++ok;
                }
            }
            accepted += ok;
            --producers_left;
        });
    for (int c2 = 0; c2 < consumers; ++c2)
        threads.emplace_back([&] {
            std::vector<std::uint64_t> last(producers, ~0ull);
            std::vector<Msg> buf(32);
            std::uint64_t mine = 0;
            for (;;) {
                const std::size_t n = batches ? q.receive_batch(buf.data(), buf.size(), sizeof(Msg), nullptr,
                                                                rk::Wait::for_ns(2'000'000))
                                              : (q.receive(buf.data(), nullptr, rk::Wait::for_ns(2'000'000)) ? 1 : 0);
                for (std::size_t i = 0; i < n; ++i) {
                    const Msg &m = buf[i];
                    if (last[m.producer] != ~0ull && m.seq <= last[m.producer]) ++violations;
                    last[m.producer] = m.seq;
                    // Each (producer, seq) cell is written by exactly one consumer if delivery is
                    // exactly-once; a duplicate delivery makes it 2 (benign race only then).
                    __atomic_fetch_add(&r.seen[m.producer][m.seq], 1, __ATOMIC_RELAXED);
                }
                mine += n;
                if (n == 0 && producers_left.load() == 0 && q.size() == 0) break;
            }
            consumed += mine;
        });
    for (auto &t : threads) t.join();
    r.stats = q.stats();
    r.accepted = accepted;
    r.consumed = consumed;
    r.order_violations = violations;
    EXPECT_EQ(q.size(), 0u);
    return r;
}

void expect_exact_accounting(const Result &r) {
    const auto &s = r.stats;
    EXPECT_EQ(s.sent, s.received + s.dropped + s.expired);
    EXPECT_EQ(s.received, r.consumed);
    EXPECT_EQ(s.sent + s.rejected + s.duplicates + s.timed_out, kTotal)
        << "every offered message is accounted exactly once";
    std::uint64_t delivered = 0, twice = 0;
    for (const auto &v : r.seen)
        for (auto n : v) {
            delivered += n;
            twice += n > 1;
        }
    EXPECT_EQ(delivered, r.consumed);
    EXPECT_EQ(twice, 0u) << "a message was delivered more than once";
    EXPECT_EQ(r.order_violations, 0u) << "a consumer saw a producer's messages out of order";
}

}  // namespace

TEST(Stress, BlockDeliversEverythingExactlyOnceInProducerOrder) {
    const Result r = run(rk::Backpressure::Block, false);
    expect_exact_accounting(r);
    EXPECT_EQ(r.accepted, kTotal);
    EXPECT_EQ(r.stats.received, kTotal);
    for (const auto &v : r.seen)
        for (auto n : v) ASSERT_EQ(n, 1);
}

TEST(Stress, BlockBatchesDeliverEverythingExactlyOnceInProducerOrder) {
    const Result r = run(rk::Backpressure::Block, true);
    expect_exact_accounting(r);
    EXPECT_EQ(r.stats.received, kTotal);
    for (const auto &v : r.seen)
        for (auto n : v) ASSERT_EQ(n, 1);
}

TEST(Stress, SpscFastPathDeliversEverythingInOrder) {
    const Result r = run(rk::Backpressure::Block, true, true);
    expect_exact_accounting(r);
    EXPECT_EQ(r.stats.received, kTotal);
}

TEST(Stress, RejectAccountsExactly) {
    const Result r = run(rk::Backpressure::Reject, false);
    expect_exact_accounting(r);
    EXPECT_EQ(r.accepted, r.stats.sent);
    EXPECT_EQ(r.stats.dropped, 0u);
}

TEST(Stress, DropOldestAccountsExactly) {
    const Result r = run(rk::Backpressure::DropOldest, false);
    expect_exact_accounting(r);
    EXPECT_EQ(r.accepted, kTotal);
    EXPECT_EQ(r.stats.sent, kTotal);
    EXPECT_EQ(r.stats.rejected, 0u);
}

TEST(Stress, DropNewAccountsExactly) {
    const Result r = run(rk::Backpressure::DropNew, false);
    expect_exact_accounting(r);
    EXPECT_EQ(r.stats.sent, kTotal);
    EXPECT_EQ(r.accepted + r.stats.dropped, kTotal);
}

TEST(Stress, BatchPoliciesAccountExactly) {
    for (auto bp : {rk::Backpressure::Reject, rk::Backpressure::DropOldest, rk::Backpressure::DropNew}) {
        const Result r = run(bp, true);
        expect_exact_accounting(r);
    }
}
