// hlc.hpp — hybrid logical clock (Kulkarni et al. 2014; DESIGN §5).
//
// The clock's whole state is one packed u64, (physical_ms << 16) | logical, which orders exactly
// as the pair (physical, logical) does. Every event is one CAS that replaces the state with
//     now():          max(state + 1, pt << 16)
//     update(m):      max(state + 1, m + 1, pt << 16)
// which is the paper's rule for l and c in one expression: a new physical maximum resets the
// counter, an equal one increments the larger counter. When the 16-bit counter is exhausted the
// increment carries into the physical part (the clock borrows one millisecond) instead of wrapping,
// so stamps stay strictly monotonic and never repeat; borrows() counts how often that happened.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <tuple>

namespace rk {

struct HlcTimestamp {
    std::uint64_t physical = 0;  // milliseconds since the Unix epoch, 48 bits
    std::uint16_t logical = 0;
    std::uint16_t node = 0;

    static constexpr std::uint64_t kMaxPhysical = (1ull << 48) - 1;

    std::uint64_t pack() const noexcept { return (physical << 16) | logical; }
    static HlcTimestamp unpack(std::uint64_t packed, std::uint16_t node) noexcept {
        return HlcTimestamp{packed >> 16, static_cast<std::uint16_t>(packed & 0xFFFFu), node};
    }
    std::string to_string() const;

    friend bool operator<(const HlcTimestamp &a, const HlcTimestamp &b) noexcept {
        return std::tie(a.physical, a.logical, a.node) < std::tie(b.physical, b.logical, b.node);
    }
    friend bool operator==(const HlcTimestamp &a, const HlcTimestamp &b) noexcept {
        return a.physical == b.physical && a.logical == b.logical && a.node == b.node;
    }
    friend bool operator!=(const HlcTimestamp &a, const HlcTimestamp &b) noexcept { return !(a == b); }
    friend bool operator>(const HlcTimestamp &a, const HlcTimestamp &b) noexcept { return b < a; }
    friend bool operator<=(const HlcTimestamp &a, const HlcTimestamp &b) noexcept { return !(b < a); }
    friend bool operator>=(const HlcTimestamp &a, const HlcTimestamp &b) noexcept { return !(a < b); }
};

class HlcClock {
public:
    // Source of physical time in ms; the default reads CLOCK_REALTIME. Tests inject their own.
    using PhysicalSource = std::uint64_t (*)(void *ctx);

    // max_offset_ms: how far (ms) a remote stamp's physical time may run ahead of ours.
    explicit HlcClock(std::uint16_t node = 0, std::uint64_t max_offset_ms = 500);

    HlcClock(const HlcClock &) = delete;
    HlcClock &operator=(const HlcClock &) = delete;

    // A local or send event.
    HlcTimestamp now() { return HlcTimestamp::unpack(now_packed(), node_); }
    std::uint64_t now_packed() { return reserve(1); }

    // n consecutive stamps in one step; returns the first (the others are first+1 … first+n-1).
    std::uint64_t reserve(std::uint32_t n) { return advance(0, n == 0 ? 1 : n, physical_ms()); }
    // The same, for a caller that has just read the wall clock (ms since the epoch); an injected
    // physical source still takes precedence.
    std::uint64_t reserve_at(std::uint64_t wall_ms, std::uint32_t n = 1) {
        return advance(0, n == 0 ? 1 : n, source_ ? physical_ms() : clamp_ms(wall_ms));
    }

    // A receive event. Throws ClockSkewError (state unchanged) when remote's physical time is more
    // than max_offset ahead of our physical clock.
    HlcTimestamp update(const HlcTimestamp &remote) { return HlcTimestamp::unpack(update_packed(remote.pack()), node_); }
    std::uint64_t update_packed(std::uint64_t remote);

    // The last stamp issued (no tick).
    HlcTimestamp last() const noexcept { return HlcTimestamp::unpack(state_.load(std::memory_order_acquire), node_); }

    std::uint16_t node() const noexcept { return node_; }
    std::uint64_t max_offset_ms() const noexcept { return max_offset_ms_; }
    // Times the logical counter was exhausted and carried into the physical part.
    std::uint64_t borrows() const noexcept { return borrows_.load(std::memory_order_relaxed); }

    void set_physical_source(PhysicalSource fn, void *ctx) noexcept { source_ = fn; source_ctx_ = ctx; }

private:
    static std::uint64_t clamp_ms(std::uint64_t ms) noexcept {
        return ms > HlcTimestamp::kMaxPhysical ? HlcTimestamp::kMaxPhysical : ms;
    }
    std::uint64_t physical_ms() const noexcept;
    std::uint64_t advance(std::uint64_t floor, std::uint32_t n, std::uint64_t physical);

    alignas(64) std::atomic<std::uint64_t> state_{0};
    std::atomic<std::uint64_t> borrows_{0};
    std::uint16_t node_;
    std::uint64_t max_offset_ms_;
    PhysicalSource source_ = nullptr;
    void *source_ctx_ = nullptr;
};

// The clock queues stamp with when none is given (node 0).
HlcClock &default_clock();

}  // namespace rk
