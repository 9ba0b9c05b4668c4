// LaunchOptions: presets and validation messages (ValueError in Python).
#include <gtest/gtest.h>

#include <string>

#include "ringkernel/options.hpp"

namespace {
std::string error_of(void (*fn)()) {
    try {
        fn();
    } catch (const std::invalid_argument &e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST(LaunchOptions, Presets) {
    auto p = rk::LaunchOptions::production();
    EXPECT_EQ(p.queue_capacity(), 4096u);
    EXPECT_EQ(p.backpressure(), rk::Backpressure::Block);
    EXPECT_EQ(p.dedup_window(), 1024u);
    auto l = rk::LaunchOptions::low_latency();
    EXPECT_EQ(l.queue_capacity(), 256u);
    EXPECT_EQ(l.backpressure(), rk::Backpressure::Reject);
    auto h = rk::LaunchOptions::high_throughput();
    EXPECT_EQ(h.queue_capacity(), 16384u);
    EXPECT_EQ(h.backpressure(), rk::Backpressure::Block);
    EXPECT_EQ(rk::LaunchOptions().queue_capacity(), p.queue_capacity());
}

TEST(LaunchOptions, DedupWindowIsClampedToCapacity) {
    rk::LaunchOptions o;
    o.set_queue_capacity(64).set_dedup_window(1024);
    EXPECT_EQ(o.dedup_window(), 64u);
    o.set_queue_capacity(2048);
    EXPECT_EQ(o.dedup_window(), 1024u);
    EXPECT_EQ(o.queue_config(8).dedup_window, 1024u);
}

TEST(LaunchOptions, ValidationNamesFieldAndRange) {
    EXPECT_NE(error_of([] { rk::LaunchOptions().set_queue_capacity(8); })
                  .find("queue_capacity must be a power of two in [16, 1048576], got 8"),
              std::string::npos);
    EXPECT_NE(error_of([] { rk::LaunchOptions().set_queue_capacity(3000); }).find("nearest valid: 2048"),
              std::string::npos);
    EXPECT_NE(error_of([] { rk::LaunchOptions().set_queue_capacity(1u << 21); }).find("got 2097152"),
              std::string::npos);
    EXPECT_NE(error_of([] { rk::LaunchOptions().set_dedup_window(2000); })
                  .find("dedup_window must be 0 (off) or in [16, 1024], got 2000"),
              std::string::npos);
    EXPECT_NE(error_of([] { rk::LaunchOptions().set_dedup_window(15); }).find("got 15"), std::string::npos);
    EXPECT_NE(error_of([] { rk::ttl_to_ns("ttl", -1.0); }).find("ttl must be None or a number of seconds"),
              std::string::npos);
    EXPECT_NE(error_of([] { rk::ttl_to_ns("ttl", 0.0 / 0.0); }).find("ttl"), std::string::npos);
    EXPECT_EQ(rk::ttl_to_ns("ttl", 0.25), 250'000'000u);
}

TEST(LaunchOptions, FailedSetterLeavesOptionsUnchanged) {
    rk::LaunchOptions o;
    EXPECT_THROW(o.set_queue_capacity(17), std::invalid_argument);
    EXPECT_EQ(o.queue_capacity(), 4096u);
}
