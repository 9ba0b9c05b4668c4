// clock.hpp — the two host clocks the core uses.
#pragma once

#include <cstdint>
#include <ctime>

namespace rk {

// Monotonic nanoseconds (CLOCK_MONOTONIC, system-wide): enqueue times and TTL ages.
inline std::uint64_t monotonic_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Wall-clock milliseconds since the Unix epoch (CLOCK_REALTIME): the HLC's physical component.
inline std::uint64_t wall_ms() noexcept {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000ull + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000ull;
}

}  // namespace rk
