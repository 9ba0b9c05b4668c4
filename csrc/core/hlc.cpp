#include "ringkernel/hlc.hpp"

#include <algorithm>
#include <cstdio>

#include "ringkernel/clock.hpp"
#include "ringkernel/errors.hpp"
#include "ringkernel/layout.h"

namespace rk {

std::string HlcTimestamp::to_string() const {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%llu.%u@%u", static_cast<unsigned long long>(physical),
                  static_cast<unsigned>(logical), static_cast<unsigned>(node));
    return buf;
}

HlcClock::HlcClock(std::uint16_t node, std::uint64_t max_offset_ms)
    : node_(node), max_offset_ms_(max_offset_ms) {}

std::uint64_t HlcClock::physical_ms() const noexcept { return clamp_ms(source_ ? source_(source_ctx_) : wall_ms()); }

// Issue n consecutive stamps: the first is max(state + 1, floor, pt << 16). Returns the first.
// `floor` is 0 for local events and remote + 1 for receive events.
std::uint64_t HlcClock::advance(std::uint64_t floor, std::uint32_t n, std::uint64_t physical) {
    const std::uint64_t wall = physical << 16;
    std::uint64_t old = state_.load(std::memory_order_relaxed);
    for (;;) {
        const std::uint64_t first = rk_hlc_next(old, floor, physical);  // the rule kernels use too (layout.h)
        const std::uint64_t last = first + (n - 1);
        if (state_.compare_exchange_weak(old, last, std::memory_order_acq_rel, std::memory_order_relaxed)) {
            // The physical part moved past every input: the logical counter was exhausted.
            const std::uint64_t inputs_ms = std::max({old >> 16, wall >> 16, floor == 0 ? 0 : (floor - 1) >> 16});
            if ((last >> 16) > inputs_ms) borrows_.fetch_add(1, std::memory_order_relaxed);
            return first;
        }
    }
}

std::uint64_t HlcClock::update_packed(std::uint64_t remote) {
    if (remote == ~0ull) throw ClockSkewError("remote HLC stamp is the last one the 64-bit format can hold");
    const std::uint64_t remote_ms = remote >> 16;
    const std::uint64_t local_ms = physical_ms();
    if (remote_ms > local_ms && remote_ms - local_ms > max_offset_ms_) {
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "remote HLC stamp is %llu ms ahead of the local clock; the limit (max_offset) is "
                      "%llu ms",
                      static_cast<unsigned long long>(remote_ms - local_ms),
                      static_cast<unsigned long long>(max_offset_ms_));
        throw ClockSkewError(buf);
    }
    return advance(remote + 1, 1, local_ms);
}

HlcClock &default_clock() {
    static HlcClock clock(0, 500);
    return clock;
}

}  // namespace rk
