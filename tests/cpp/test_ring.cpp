// The ring protocol through rk::Ring: capacity, order, wrap-around, batch claims, SPSC paths.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "ringkernel/ring.hpp"

namespace {

rk_envelope env_with(std::uint64_t id, std::uint32_t size) {
    rk_envelope e{};
    e.message_id = id;
    e.payload_size = size;
    return e;
}

}  // namespace

TEST(Ring, RejectsInvalidGeometry) {
    EXPECT_THROW(rk::Ring(15, 8), std::invalid_argument);
    EXPECT_THROW(rk::Ring(100, 8), std::invalid_argument);
    EXPECT_THROW(rk::Ring(1u << 21, 8), std::invalid_argument);
    EXPECT_THROW(rk::Ring(16, 0), std::invalid_argument);
    EXPECT_THROW(rk::Ring(16, (1u << 16) + 1), std::invalid_argument);
    EXPECT_NO_THROW(rk::Ring(16, 1));
    EXPECT_NO_THROW(rk::Ring(1u << 20, 1));
}

TEST(Ring, HoldsExactlyCapacityThenRefuses) {
    rk::Ring ring(16, 8);
    for (std::uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(ring.try_push(env_with(i, 8), &i));
    std::uint64_t x = 99;
    EXPECT_FALSE(ring.try_push(env_with(99, 8), &x));
    EXPECT_FALSE(ring.can_push());
    EXPECT_EQ(ring.size(), 16u);
}

TEST(Ring, FifoAcrossManyLaps) {
    rk::Ring ring(16, 8);
    std::uint64_t next_in = 0, next_out = 0;
    for (int round = 0; round < 1000; ++round) {
        for (int i = 0; i < 11; ++i, ++next_in) ASSERT_TRUE(ring.try_push(env_with(next_in, 8), &next_in));
        for (int i = 0; i < 11; ++i, ++next_out) {
            rk_envelope e;
            std::uint64_t v = 0;
            ASSERT_TRUE(ring.try_pop(e, &v, 8));
            ASSERT_EQ(v, next_out);
            ASSERT_EQ(e.message_id, next_out);
        }
    }
    rk_envelope e;
    std::uint64_t v;
    EXPECT_FALSE(ring.try_pop(e, &v, 8));
    EXPECT_EQ(ring.pushed(), next_in);
    EXPECT_EQ(ring.popped(), next_out);
}

TEST(Ring, PayloadLargerThanSlotIsRefusedNotTruncated) {
    rk::Ring ring(16, 8);  // stride 128: the slot holds 64 payload bytes
    std::vector<unsigned char> big(65, 1);
    EXPECT_FALSE(ring.try_push(env_with(1, 65), big.data()));
    EXPECT_TRUE(ring.try_push(env_with(1, 64), big.data()));
}

TEST(Ring, PopCopiesAtMostTheCallersCapacity) {
    rk::Ring ring(16, 32);
    unsigned char in[32];
    std::memset(in, 7, sizeof in);
    ASSERT_TRUE(ring.try_push(env_with(1, 32), in));
    unsigned char out[40];
    std::memset(out, 0, sizeof out);
    rk_envelope e;
    ASSERT_TRUE(ring.try_pop(e, out, 16));
    EXPECT_EQ(e.payload_size, 32u);
    EXPECT_EQ(out[15], 7);
    EXPECT_EQ(out[16], 0);
}

TEST(Ring, SequenceIsRingOwnedNotCopiedFromTheSender) {
    rk::Ring ring(16, 8);
    rk_envelope e = env_with(5, 8);
    e.sequence = 0xDEADBEEF;
    std::uint64_t v = 1;
    ASSERT_TRUE(ring.try_push(e, &v));
    EXPECT_EQ(ring.slot(0)->sequence, 1u);  // published turn of position 0
}

TEST(Ring, BatchClaimAndAcquire) {
    rk::Ring ring(16, 8);
    std::uint64_t first = 0;
    ASSERT_EQ(ring.claim_n(10, first, false), 10u);
    EXPECT_EQ(first, 0u);
    EXPECT_EQ(ring.claim_n(10, first, false), 6u);  // only six free slots remain
    EXPECT_EQ(first, 10u);
    EXPECT_EQ(ring.claim_n(1, first, false), 0u);
    // Nothing is ready until published: the consumer stops at the first unpublished slot.
    for (std::uint64_t p = 0; p < 4; ++p) ring.publish(ring.slot(p), p);
    ASSERT_EQ(ring.acquire_n(16, first, false), 4u);
    for (std::uint64_t p = 0; p < 4; ++p) ring.release(ring.slot(p), p);
    for (std::uint64_t p = 4; p < 16; ++p) ring.publish(ring.slot(p), p);
    ASSERT_EQ(ring.acquire_n(16, first, true), 12u);
    EXPECT_EQ(first, 4u);
    // Released out of order: the producer may only reuse the prefix that is free.
    ring.release(ring.slot(4), 4);
    ring.release(ring.slot(6), 6);
    EXPECT_EQ(ring.claim_n(16, first, false), 5u);  // positions 16..20 use free slots 0..4
    EXPECT_EQ(first, 16u);
    EXPECT_EQ(ring.claim_n(16, first, false), 0u);  // slot 5 is not released, slot 6 must wait
}

TEST(Ring, SingleProducerSingleConsumerThreadedSum) {
    rk::Ring ring(64, 8);
    constexpr std::uint64_t kN = 200000;
    std::thread producer([&] {
        for (std::uint64_t i = 1; i <= kN; ++i)
            while (!ring.try_push_single(env_with(i, 8), &i)) std::this_thread::yield();
    });
    std::uint64_t sum = 0, expect_next = 1;
    bool ordered = true;
    while (expect_next <= kN) {
        rk_envelope e;
        std::uint64_t v;
        if (!ring.try_pop_single(e, &v, 8)) {
            std::this_thread::yield();
            continue;
        }
        ordered = ordered && v == expect_next;
        sum += v;
        ++expect_next;
    }
    producer.join();
    EXPECT_TRUE(ordered);
    EXPECT_EQ(sum, kN * (kN + 1) / 2);
}

TEST(Ring, SingleProducerInteroperatesWithMultipleConsumers) {
    rk::Ring ring(64, 8);
    constexpr std::uint64_t kN = 100000;
    std::atomic<std::uint64_t> sum{0}, count{0};
    std::vector<std::thread> consumers;
    for (int c = 0; c < 3; ++c)
        consumers.emplace_back([&] {
            while (count.load() < kN) {
                rk_envelope e;
                std::uint64_t v;
                if (ring.try_pop(e, &v, 8)) {
                    sum += v;
                    ++count;
                } else {
                    std::this_thread::yield();
                }
            }
        });
    for (std::uint64_t i = 1; i <= kN; ++i)
        while (!ring.try_push_single(env_with(i, 8), &i)) std::this_thread::yield();
    for (auto &t : consumers) t.join();
    EXPECT_EQ(count.load(), kN);
    EXPECT_EQ(sum.load(), kN * (kN + 1) / 2);
}

TEST(Ring, ZeroLengthBatchesReturnAtOnce) {
    rk::Ring ring(16, 8);
    std::uint64_t first = 7;
    EXPECT_EQ(ring.claim_n(0, first, false), 0u);
    EXPECT_EQ(ring.acquire_n(0, first, false), 0u);
    EXPECT_EQ(ring.pushed(), 0u);
}
