// clock.hpp — the host wall clock the core stamps messages with.
#pragma once

#include <cstdint>
#include <ctime>

namespace rk {

// Wall-clock nanoseconds since the Unix epoch (CLOCK_REALTIME): envelope enqueue times, TTL ages
// and, divided down, the HLC's physical part, all from one read per send. Device producers stamp
// from clocks on the same epoch (%globaltimer on CUDA), so ages compare across host and device.
inline std::uint64_t wall_ns() noexcept {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Wall-clock milliseconds since the Unix epoch: the HLC's physical component.
inline std::uint64_t wall_ms() noexcept { return wall_ns() / 1000000ull; }

}  // namespace rk
