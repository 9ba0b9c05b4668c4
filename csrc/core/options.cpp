#include "ringkernel/options.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace rk {

const char *to_string(Backpressure b) noexcept {
    switch (b) {
    case Backpressure::Block: return "BLOCK";
    case Backpressure::Reject: return "REJECT";
    case Backpressure::DropOldest: return "DROP_OLDEST";
    case Backpressure::DropNew: return "DROP_NEW";
    }
    return "?";
}

static bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

void validate_capacity(const char *field, std::uint64_t value) {
    if (value >= kMinCapacity && value <= kMaxCapacity && is_pow2(value)) return;
    std::ostringstream msg;
    msg << field << " must be a power of two in [" << kMinCapacity << ", " << kMaxCapacity << "], got "
        << value;
    if (value > kMinCapacity && value < kMaxCapacity) {
        std::uint64_t up = 1;
        while (up < value) up <<= 1;
        msg << " (nearest valid: " << (up - value <= value - up / 2 ? up : up / 2) << ")";
    }
    throw std::invalid_argument(msg.str());
}

void validate_dedup_window(const char *field, std::uint64_t value) {
    if (value == 0 || (value >= kMinDedupWindow && value <= kMaxDedupWindow)) return;
    std::ostringstream msg;
    msg << field << " must be 0 (off) or in [" << kMinDedupWindow << ", " << kMaxDedupWindow << "], got "
        << value;
    throw std::invalid_argument(msg.str());
}

std::uint64_t ttl_to_ns(const char *field, double seconds) {
    if (!std::isfinite(seconds) || seconds <= 0.0 || seconds > 1e9) {
        std::ostringstream msg;
        msg << field << " must be None or a number of seconds in (0, 1e9], got " << seconds;
        throw std::invalid_argument(msg.str());
    }
    double ns = seconds * 1e9;
    return ns < 1.0 ? 1 : static_cast<std::uint64_t>(ns);
}

void QueueConfig::validate() const {
    validate_capacity("capacity", capacity);
    validate_dedup_window("dedup_window", dedup_window);
    if (payload_size < 1 || payload_size > kMaxPayload) {
        std::ostringstream msg;
        msg << "record size must be in [1, " << kMaxPayload << "] bytes, got " << payload_size;
        throw std::invalid_argument(msg.str());
    }
    if (static_cast<unsigned>(backpressure) > 3)
        throw std::invalid_argument("backpressure must be one of BLOCK, REJECT, DROP_OLDEST, DROP_NEW");
    if (backpressure == Backpressure::DropOldest && single_consumer && !priority)
        throw std::invalid_argument(
            "backpressure DROP_OLDEST evicts from the sending thread, which makes it a second "
            "consumer: it cannot be combined with single_consumer=True");
}

LaunchOptions LaunchOptions::production() { return LaunchOptions(); }

LaunchOptions LaunchOptions::low_latency() {
    LaunchOptions o;
    o.queue_capacity_ = 256;
    o.dedup_window_ = 0;
    o.backpressure_ = Backpressure::Reject;
    return o;
}

LaunchOptions LaunchOptions::high_throughput() {
    LaunchOptions o;
    o.queue_capacity_ = 16384;
    o.dedup_window_ = 0;
    o.backpressure_ = Backpressure::Block;
    return o;
}

LaunchOptions &LaunchOptions::set_queue_capacity(std::uint64_t v) {
    validate_capacity("queue_capacity", v);
    queue_capacity_ = static_cast<std::uint32_t>(v);
    return *this;
}

LaunchOptions &LaunchOptions::set_dedup_window(std::uint64_t v) {
    validate_dedup_window("dedup_window", v);
    dedup_window_ = static_cast<std::uint32_t>(v);
    return *this;
}

LaunchOptions &LaunchOptions::set_idle_backoff_ns(std::uint64_t v) {
    if (v > kMaxIdleBackoffNs) {
        std::ostringstream msg;
        msg << "idle_backoff must be in [0, " << static_cast<double>(kMaxIdleBackoffNs) / 1e9 << "] seconds, got "
            << static_cast<double>(v) / 1e9;
        throw std::invalid_argument(msg.str());
    }
    idle_backoff_ns_ = v;
    return *this;
}

LaunchOptions &LaunchOptions::set_dead_letter_capacity(std::uint64_t v) {
    if (v < kMinDeadLetters || v > kMaxDeadLetters)
        throw std::invalid_argument("dead_letter_capacity must be in [" + std::to_string(kMinDeadLetters) + ", " +
                                    std::to_string(kMaxDeadLetters) + "] messages, got " + std::to_string(v));
    dead_letter_capacity_ = static_cast<std::uint32_t>(v);
    return *this;
}

LaunchOptions &LaunchOptions::set_handler_timeout_ns(std::uint64_t v) {
    if (v != 0 && (v < kMinHandlerTimeoutNs || v > kMaxHandlerTimeoutNs)) {
        std::ostringstream msg;
        msg << "handler_timeout must be None or in [" << static_cast<double>(kMinHandlerTimeoutNs) / 1e9 << ", "
            << static_cast<double>(kMaxHandlerTimeoutNs) / 1e9 << "] seconds, got " << static_cast<double>(v) / 1e9;
        throw std::invalid_argument(msg.str());
    }
    handler_timeout_ns_ = v;
    return *this;
}

void RestartPolicy::validate() const {
    auto bad = [](const char *field, const char *range, const std::string &got) {
        throw std::invalid_argument(std::string("RestartPolicy.") + field + " must be in " + range + ", got " + got);
    };
    if (max_restarts > 1000000) bad("max_restarts", "[0, 1000000]", std::to_string(max_restarts));
    if (!(within > 0.0 && within <= 86400.0)) bad("within", "(0, 86400] seconds", std::to_string(within));
    if (max_attempts < 1 || max_attempts > 65535) bad("max_attempts", "[1, 65535]", std::to_string(max_attempts));
    if (!(backoff >= 0.0 && backoff <= 60.0)) bad("backoff", "[0, 60] seconds", std::to_string(backoff));
}

std::string RestartPolicy::to_string() const {
    std::ostringstream s;
    s << "RestartPolicy(max_restarts=" << max_restarts << ", within=" << within << ", max_attempts=" << max_attempts
      << ", backoff=" << backoff << ")";
    return s.str();
}

QueueConfig LaunchOptions::queue_config(std::uint32_t payload_size) const {
    QueueConfig c;
    c.capacity = queue_capacity_;
    c.payload_size = payload_size;
    c.backpressure = backpressure_;
    c.dedup_window = dedup_window();
    c.priority = priority_;
    c.ttl_ns = ttl_ns_;
    return c;
}

std::string LaunchOptions::to_string() const {
    std::ostringstream s;
    s << "LaunchOptions(queue_capacity=" << queue_capacity_ << ", dedup_window=" << dedup_window()
      << ", backpressure=" << rk::to_string(backpressure_) << ", priority=" << (priority_ ? "True" : "False")
      << ", ttl=";
    if (ttl_ns_ == 0)
        s << "None";
    else
        s << static_cast<double>(ttl_ns_) / 1e9;
    s << ", idle_backoff=" << static_cast<double>(idle_backoff_ns_) / 1e9
      << ", dead_letter_capacity=" << dead_letter_capacity_ << ", handler_timeout=";
    if (handler_timeout_ns_ == 0)
        s << "None";
    else
        s << static_cast<double>(handler_timeout_ns_) / 1e9;
    s << ")";
    return s.str();
}

}  // namespace rk
