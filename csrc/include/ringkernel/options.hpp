// options.hpp — queue configuration, backpressure and launch options (DESIGN §4, §7).
//
// Every setter validates and throws std::invalid_argument naming the field and its valid range.
#pragma once

#include <cstdint>
#include <string>

namespace rk {

// What a full queue does with a new message.
enum class Backpressure : std::uint8_t {
    Block = 0,       // wait (spin, yield, park) for space or the caller's timeout; false on timeout
    Reject = 1,      // refuse at once: false, counted `rejected`
    DropOldest = 2,  // evict the oldest message (counted `dropped`) and accept the new one
    DropNew = 3,     // discard the new message: false, counted `dropped`
};

const char *to_string(Backpressure b) noexcept;

constexpr std::uint32_t kMinCapacity = 16;
constexpr std::uint32_t kMaxCapacity = 1u << 20;
constexpr std::uint32_t kMinDedupWindow = 16;
constexpr std::uint32_t kMaxDedupWindow = 1024;
constexpr std::uint32_t kMaxPayload = 1u << 16;

// Throw std::invalid_argument unless `value` is a power of two in [16, 1048576].
void validate_capacity(const char *field, std::uint64_t value);
// Throw unless `value` is 0 or in [16, 1024].
void validate_dedup_window(const char *field, std::uint64_t value);
// Throw unless `seconds` is finite and > 0. Returns nanoseconds (at least 1).
std::uint64_t ttl_to_ns(const char *field, double seconds);

struct QueueConfig {
    std::uint32_t capacity = 4096;
    std::uint32_t payload_size = 64;   // bytes per record, in [1, 65536]
    Backpressure backpressure = Backpressure::Block;
    std::uint32_t dedup_window = 0;    // 0 = off, else [16, 1024]; clamped to capacity
    bool priority = false;             // honour per-message priority 0..255 (higher first)
    std::uint64_t ttl_ns = 0;          // 0 = off; older messages are dropped at dequeue
    std::uint16_t type_id = 0;         // stamped into every envelope
    std::uint16_t source = 0;          // source kernel / node stamped into every envelope
    bool single_producer = false;      // promise: one thread sends at a time (SPSC fast path)
    bool single_consumer = false;      // promise: one thread receives at a time

    // Throws std::invalid_argument for any field out of range or a contradictory combination.
    void validate() const;
    std::uint32_t effective_dedup_window() const noexcept {
        return dedup_window < capacity ? dedup_window : capacity;
    }
};

constexpr std::uint64_t kMaxIdleBackoffNs = 1'000'000;  // 1 ms
constexpr std::uint32_t kMinDeadLetters = 16;
constexpr std::uint32_t kMaxDeadLetters = 65536;
constexpr std::uint64_t kMinHandlerTimeoutNs = 1'000'000;              // 1 ms
constexpr std::uint64_t kMaxHandlerTimeoutNs = 86'400'000'000'000ull;  // a day

class LaunchOptions {
public:
    LaunchOptions() = default;  // the production preset

    static LaunchOptions production();      // 4096, BLOCK, dedup 1024
    static LaunchOptions low_latency();     // 256, REJECT, dedup off
    static LaunchOptions high_throughput(); // 16384, BLOCK, dedup off

    std::uint32_t queue_capacity() const noexcept { return queue_capacity_; }
    // The window in force: the requested one clamped to the queue capacity.
    std::uint32_t dedup_window() const noexcept {
        return dedup_window_ < queue_capacity_ ? dedup_window_ : queue_capacity_;
    }
    Backpressure backpressure() const noexcept { return backpressure_; }
    bool priority() const noexcept { return priority_; }
    std::uint64_t ttl_ns() const noexcept { return ttl_ns_; }
    // Device backends that can sleep (CUDA): the longest an idle block waits between polls of its inputs.
    std::uint64_t idle_backoff_ns() const noexcept { return idle_backoff_ns_; }
    // How many failed messages the kernel keeps for Kernel::dead_letters(); more are counted, not kept.
    std::uint32_t dead_letter_capacity() const noexcept { return dead_letter_capacity_; }
    // The watchdog (DESIGN §11): a handler running longer than this on one message is a fault of the kernel
    // (0: no watchdog). CPU backend.
    std::uint64_t handler_timeout_ns() const noexcept { return handler_timeout_ns_; }

    LaunchOptions &set_queue_capacity(std::uint64_t v);
    LaunchOptions &set_dedup_window(std::uint64_t v);
    LaunchOptions &set_backpressure(Backpressure v) noexcept { backpressure_ = v; return *this; }
    LaunchOptions &set_priority(bool v) noexcept { priority_ = v; return *this; }
    LaunchOptions &set_ttl_ns(std::uint64_t v) noexcept { ttl_ns_ = v; return *this; }
    LaunchOptions &set_idle_backoff_ns(std::uint64_t v);  // [0, kMaxIdleBackoffNs]
    LaunchOptions &set_dead_letter_capacity(std::uint64_t v);  // [kMinDeadLetters, kMaxDeadLetters]
    LaunchOptions &set_handler_timeout_ns(std::uint64_t v);    // 0, or [kMinHandlerTimeoutNs, kMaxHandlerTimeoutNs]

    // The queue configuration these options give for records of `payload_size` bytes.
    QueueConfig queue_config(std::uint32_t payload_size) const;
    std::string to_string() const;

private:
    std::uint32_t queue_capacity_ = 4096;
    std::uint32_t dedup_window_ = 1024;
    Backpressure backpressure_ = Backpressure::Block;
    bool priority_ = false;
    std::uint64_t ttl_ns_ = 0;
    std::uint64_t idle_backoff_ns_ = 1000;
    std::uint32_t dead_letter_capacity_ = 1024;
    std::uint64_t handler_timeout_ns_ = 0;
};

// How the supervisor restarts a kernel whose handler faulted (DESIGN §11): a timeout, a trap, rk_fault() or
// rk.KernelFault. The message in flight is delivered again, at most max_attempts times in all (then it is a
// dead letter); a restart waits `backoff` (doubled for each further restart within `within`, at most 1 s or
// backoff if longer); the max_restarts + 1st restart within `within` seconds faults the kernel instead.
struct RestartPolicy {
    std::uint32_t max_restarts = 3;      // [0, 1000000]
    double within = 60.0;                // seconds, (0, 86400]
    std::uint32_t max_attempts = 2;      // deliveries of one message, [1, 65535]
    double backoff = 0.0;                // seconds, [0, 60]
    // Throws std::invalid_argument naming the field and its valid range.
    void validate() const;
    std::string to_string() const;
};

}  // namespace rk
