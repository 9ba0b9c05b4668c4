// Hybrid logical clock (DESIGN §5): monotonic, causal, skew-guarded, never wraps.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "ringkernel/clock.hpp"
#include "ringkernel/errors.hpp"
#include "ringkernel/hlc.hpp"

namespace {
struct ManualTime {
    std::atomic<std::uint64_t> ms{1'700'000'000'000ull};
    static std::uint64_t read(void *self) { return static_cast<ManualTime *>(self)->ms.load(); }
};
}  // namespace

TEST(Hlc, PackUnpackRoundTrip) {
    rk::HlcTimestamp t{1'700'000'123'456ull, 0xBEEF, 42};
    EXPECT_EQ(t.pack(), (1'700'000'123'456ull << 16) | 0xBEEF);
    EXPECT_EQ(rk::HlcTimestamp::unpack(t.pack(), 42), t);
}

TEST(Hlc, TotalOrderIsPhysicalLogicalNode) {
    rk::HlcTimestamp a{10, 5, 1}, b{10, 5, 2}, c{10, 6, 0}, d{11, 0, 0};
    EXPECT_LT(a, b);
    EXPECT_LT(b, c);
    EXPECT_LT(c, d);
    EXPECT_FALSE(b < a);
    EXPECT_NE(a, b);
}

TEST(Hlc, NowTracksWallClockAndIsStrictlyMonotonic) {
    rk::HlcClock clock(3);
    const std::uint64_t wall = rk::wall_ms();
    rk::HlcTimestamp prev = clock.now();
    EXPECT_GE(prev.physical, wall);
    EXPECT_LE(prev.physical, wall + 1000);
    EXPECT_EQ(prev.node, 3);
    for (int i = 0; i < 100000; ++i) {
        rk::HlcTimestamp t = clock.now();
        ASSERT_LT(prev, t);
        prev = t;
    }
}

TEST(Hlc, LogicalCounterAdvancesWhilePhysicalTimeStands) {
    ManualTime time;
    rk::HlcClock clock(1);
    clock.set_physical_source(&ManualTime::read, &time);
    auto a = clock.now(), b = clock.now();
    EXPECT_EQ(a.physical, time.ms.load());
    EXPECT_EQ(a.logical, 0);
    EXPECT_EQ(b.logical, 1);
    time.ms += 5;
    auto c = clock.now();
    EXPECT_EQ(c.physical, time.ms.load());
    EXPECT_EQ(c.logical, 0);
}

TEST(Hlc, UpdateIsCausal) {
    ManualTime time;
    rk::HlcClock clock(1, 500);
    clock.set_physical_source(&ManualTime::read, &time);
    rk::HlcTimestamp remote{time.ms + 200, 7, 2};  // ahead of us, within max_offset
    auto t = clock.update(remote);
    EXPECT_GT(t.pack(), remote.pack());
    EXPECT_EQ(t.physical, remote.physical);
    EXPECT_EQ(t.logical, 8);
    EXPECT_LT(remote.pack(), clock.now().pack());
    // A remote stamp in the past does not move us backwards.
    auto before = clock.now();
    auto after = clock.update(rk::HlcTimestamp{time.ms - 10000, 0, 2});
    EXPECT_GT(after, before);
}

TEST(Hlc, RemoteTooFarAheadIsRefusedAndStateUnchanged) {
    ManualTime time;
    rk::HlcClock clock(1, 500);
    clock.set_physical_source(&ManualTime::read, &time);
    auto before = clock.now();
    try {
        clock.update(rk::HlcTimestamp{time.ms + 501, 0, 2});
        FAIL() << "no ClockSkewError";
    } catch (const rk::ClockSkewError &e) {
        EXPECT_NE(std::string(e.what()).find("501 ms ahead"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("500 ms"), std::string::npos) << e.what();
    }
    EXPECT_EQ(clock.last(), before);
    EXPECT_NO_THROW(clock.update(rk::HlcTimestamp{time.ms + 500, 0, 2}));
}

TEST(Hlc, LogicalCounterNeverWrapsItCarries) {
    ManualTime time;
    rk::HlcClock clock(1, 500);
    clock.set_physical_source(&ManualTime::read, &time);
    auto t = clock.update(rk::HlcTimestamp{time.ms, 0xFFFE, 2});
    EXPECT_EQ(t.logical, 0xFFFF);
    auto u = clock.now();
    EXPECT_GT(u, t);
    EXPECT_EQ(u.physical, t.physical + 1);
    EXPECT_EQ(u.logical, 0);
    EXPECT_EQ(clock.borrows(), 1u);
    // Exhausting a whole millisecond's counter in one reservation also carries.
    std::uint64_t first = clock.reserve(70000);
    EXPECT_GT(first, u.pack());
    EXPECT_GT(clock.last().pack(), first + 69998);
    EXPECT_EQ(clock.borrows(), 2u);
}

TEST(Hlc, ReserveHandsOutConsecutiveStamps) {
    rk::HlcClock clock(1);
    auto before = clock.now_packed();
    auto first = clock.reserve(1000);
    EXPECT_GT(first, before);
    EXPECT_EQ(clock.last().pack(), first + 999);
    EXPECT_GT(clock.now_packed(), first + 999);
}

TEST(Hlc, UniqueAndMonotonicUnderContention) {
    rk::HlcClock clock(1);
    constexpr int kThreads = 4, kPer = 100000;
    std::vector<std::vector<std::uint64_t>> seen(kThreads);
    std::vector<std::thread> threads;
    rk::HlcTimestamp remote{rk::wall_ms() + 100, 0, 9};
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            auto &v = seen[t];
            v.reserve(kPer);
            for (int i = 0; i < kPer; ++i)
                v.push_back(i % 1000 == 0 ? clock.update(remote).pack() : clock.now_packed());
        });
    for (auto &th : threads) th.join();
    std::vector<std::uint64_t> all;
    for (auto &v : seen) {
        EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
        EXPECT_EQ(std::adjacent_find(v.begin(), v.end()), v.end());
        all.insert(all.end(), v.begin(), v.end());
    }
    std::sort(all.begin(), all.end());
    EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "two events got the same stamp";
    EXPECT_GT(all.front(), remote.pack() - 1000000);
}

TEST(Hlc, TheLastRepresentableStampIsRefusedNotWrapped) {
    rk::HlcClock clock(1, ~0ull);
    EXPECT_THROW(clock.update_packed(~0ull), rk::ClockSkewError);
}
