// Embeds the ringkernel core: a queue of 64-byte records between two threads, HLC stamps, and the
// stats that prove nothing was lost. Built by ctest against an installed copy of the package.
#include <ringkernel/ringkernel.hpp>

#include <cstdint>
#include <cstdio>
#include <thread>

struct Sample {
    std::uint64_t seq;
    double values[7];
};
static_assert(sizeof(Sample) == 64, "64-byte record");

int main() {
    rk::QueueConfig cfg;
    cfg.capacity = 1024;
    cfg.payload_size = sizeof(Sample);
    cfg.backpressure = rk::Backpressure::Block;
    rk::Queue q(cfg);

    constexpr std::uint64_t kCount = 100000;
    std::thread producer([&] {
        for (std::uint64_t i = 0; i < kCount; ++i) {
            Sample s{i, {static_cast<double>(i)}};
            q.send(&s);
        }
    });
    std::uint64_t expected = 0, last_stamp = 0;
    bool ordered = true;
    while (expected < kCount) {
        Sample s;
        rk_envelope env;
        if (!q.receive(&s, &env, rk::Wait::for_ns(1000000000))) break;
        ordered = ordered && s.seq == expected && env.timestamp > last_stamp;
        last_stamp = env.timestamp;
        ++expected;
    }
    producer.join();
    const rk::QueueStats st = q.stats();
    std::printf("ringkernel %s: sent=%llu received=%llu in order=%s\n", RINGKERNEL_VERSION,
                static_cast<unsigned long long>(st.sent), static_cast<unsigned long long>(st.received),
                ordered ? "yes" : "no");
    if (!ordered || st.sent != kCount || st.received != kCount) return 1;
    std::printf("consumer ok\n");
    return 0;
}
