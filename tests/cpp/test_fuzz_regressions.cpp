// Regression tests for what the fuzz targets of tests/fuzz found (tests/fuzz/README.md, "Findings"):
// one test per finding, named after it, with the smallest input that shows it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "ringkernel/queue.hpp"
#include "ringkernel/ring.hpp"
#include "rk_ring.h"

using namespace std::chrono_literals;

namespace {

constexpr std::uint8_t kSentinel = 0xA5;

rk_envelope envelope(std::uint64_t id, std::uint32_t size) {
    rk_envelope e{};
    e.message_id = id;
    e.payload_size = size;
    return e;
}

// Run `fn` on a thread of its own and wait up to `limit` for it. A call that never returns (the bug)
// is left spinning on its detached thread, with `keep` (what it uses) kept alive for it, and the
// test fails instead of hanging.
template <class Fn>
bool returns_within(std::chrono::milliseconds limit, std::shared_ptr<void> keep, Fn fn) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread t([done, keep, fn]() mutable {
        fn();
        done->store(true);
    });
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done->load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
    if (done->load()) {
        t.join();
        return true;
    }
    t.detach();
    new std::shared_ptr<void>(keep);  // never freed: the spinning thread may still read it at exit
    return false;
}

}  // namespace

// K1 (fuzz_envelope): a slot whose payload_size claims more than the slot holds, popped into a
// destination larger than the slot, must not copy bytes from past the slot (the next slot here; past
// the allocation when it is the last one -- ASan: heap-buffer-overflow in rk_ring_try_pop).
// Either refusing the message or copying at most max_payload bytes is fine.
TEST(FuzzRegressions, K1_TryPopNeverReadsPastTheSlot) {
    for (std::uint32_t last : {0u, 1u}) {
        rk::Ring ring(16, 8);  // 128-byte slots: max_payload 64
        const std::uint32_t max_payload = ring.max_payload();
        std::vector<std::uint8_t> payload(max_payload, 0x11);
        std::uint64_t pos = 0;
        if (last) {  // move the consumer to the last slot of the allocation
            rk_envelope e;
            for (; pos < 15; ++pos) {
                ASSERT_TRUE(ring.try_push(envelope(pos, 8), payload.data()));
                ASSERT_TRUE(ring.try_pop(e, payload.data(), 8));
            }
        }
        ASSERT_TRUE(ring.try_push(envelope(pos, 8), payload.data()));
        ring.slot(pos)->payload_size = max_payload + 100;  // a malformed envelope
        std::vector<std::uint8_t> dst(4 * max_payload, kSentinel);
        rk_envelope got;
        if (!ring.try_pop(got, dst.data(), static_cast<std::uint32_t>(dst.size()))) continue;  // refused: fine
        for (std::size_t k = max_payload; k < dst.size(); ++k)
            ASSERT_EQ(dst[k], kSentinel) << "byte " << k << " came from past the " << max_payload
                                         << "-byte payload of the slot (last slot: " << last << ")";
    }
}

// K3 (fuzz_envelope): a slot whose turn counter is ahead of the cursor (a corrupted or foreign
// `sequence`) made rk_ring_acquire / rk_ring_claim spin forever: a pop, a push, and a receive or send
// with a timeout never returned. Under the protocol a turn ahead of the cursor means another side has
// moved the cursor already; when the cursor has not moved, the call must give up (empty / full).
TEST(FuzzRegressions, K3_SequenceAheadOfTheCursorDoesNotSpinForever) {
    {
        auto ring = std::make_shared<rk::Ring>(16, 8);
        std::uint64_t v = 1;
        ASSERT_TRUE(ring->try_push(envelope(1, 8), &v));
        ring->slot(0)->sequence = 5;  // published would be 1
        EXPECT_TRUE(returns_within(2000ms, ring, [ring] {
            rk_envelope e;
            std::uint64_t out;
            (void)ring->try_pop(e, &out, 8);
        })) << "rk_ring_try_pop spins on a sequence ahead of head";
    }
    {
        auto ring = std::make_shared<rk::Ring>(16, 8);
        ring->slot(0)->sequence = 3;  // free would be 0
        EXPECT_TRUE(returns_within(2000ms, ring, [ring] {
            std::uint64_t v = 1;
            (void)ring->try_push(envelope(1, 8), &v);
        })) << "rk_ring_try_push spins on a sequence ahead of tail";
    }
    {
        rk::QueueConfig c;
        c.capacity = 16;
        c.payload_size = 8;
        auto q = std::make_shared<rk::Queue>(c);
        std::uint64_t v = 1;
        ASSERT_TRUE(q->send(&v, {}, rk::Wait::none()));
        q->ring()->slot(0)->sequence = 7;
        EXPECT_TRUE(returns_within(2000ms, q, [q] {
            std::uint64_t out;
            (void)q->receive(&out, nullptr, rk::Wait::for_ns(50'000'000));
        })) << "Queue::receive with a 50 ms timeout spins on a sequence ahead of head";
    }
}

namespace {
// Leaves a recognisable pattern in the stack below the caller, where the next call's frame goes.
__attribute__((noinline)) void dirty_stack() {
    volatile std::uint8_t junk[8192];
    for (std::size_t i = 0; i < sizeof junk; ++i) junk[i] = 0xAB;
}
}  // namespace

// K4 (fuzz_envelope): Queue::receive copied out an envelope whose `sequence` it never wrote (the
// ring copies only the 56 travelling bytes into a stack rk_envelope), handing the caller stack bytes.
// receive_batch zeroes it; receive must too.
TEST(FuzzRegressions, K4_ReceiveZeroesTheEnvelopeSequence) {
    rk::QueueConfig c;
    c.capacity = 16;
    c.payload_size = 8;
    rk::Queue q(c);
    for (int i = 0; i < 4; ++i) {
        std::uint64_t v = static_cast<std::uint64_t>(i);
        ASSERT_TRUE(q.send(&v, {}, rk::Wait::none()));
        rk_envelope env;
        std::memset(&env, 0xEE, sizeof env);
        dirty_stack();
        std::uint64_t out = 0;
        ASSERT_TRUE(q.receive(&out, &env, rk::Wait::none()));
        EXPECT_EQ(out, v);
        EXPECT_EQ(env.sequence, 0u) << "receive " << i;
    }
}
