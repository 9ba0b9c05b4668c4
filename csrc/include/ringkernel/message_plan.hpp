// message_plan.hpp — validation and canonicalisation of fixed-layout message records.
//
// A MessagePlan is built once per message type (by ringkernel.messages from the type's layout) and
// then applied to raw records: validate() checks every field whose bytes can be invalid (bool,
// enum, bytes/string length prefixes, UTF-8) and throws MessageFormatError naming the field;
// canonicalise() zeroes struct padding and the unused storage of bytes/string fields, so equal
// messages have equal bytes. Per-record work stays in C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rk {

struct MessageCheck {
    enum class Kind : std::uint8_t { Bool, Enum, Length, Utf8 };
    Kind kind = Kind::Bool;
    std::uint32_t offset = 0;     // byte offset in the record
    std::uint32_t count = 1;      // Bool/Enum: consecutive elements
    std::uint32_t size = 1;       // Enum: element size (1, 2, 4, 8); Length/Utf8: capacity in bytes
    bool is_signed = false;       // Enum
    std::vector<std::int64_t> valid;  // Enum: sorted member values
    std::string path;             // e.g. "Order.history[0].on"
    std::string enum_name;        // Enum
};

class MessagePlan {
public:
    MessagePlan(std::uint32_t itemsize, std::vector<MessageCheck> checks,
                std::vector<std::pair<std::uint32_t, std::uint32_t>> zero_ranges,
                std::vector<std::pair<std::uint32_t, std::uint32_t>> tails);

    std::uint32_t itemsize() const noexcept { return itemsize_; }
    // Check n records; throws MessageFormatError ("record i: " prefixed when n > 1).
    void validate(const std::uint8_t *records, std::size_t n) const;
    // Zero padding and unused bytes/string storage of n (valid) records in place.
    void canonicalise(std::uint8_t *records, std::size_t n) const noexcept;

private:
    void validate_one(const std::uint8_t *record) const;

    std::uint32_t itemsize_;
    std::vector<MessageCheck> checks_;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> zero_;   // [start, end)
    std::vector<std::pair<std::uint32_t, std::uint32_t>> tails_;  // (offset of length, capacity)
};

// Index of the first byte where [data, data + n) stops being well-formed UTF-8 (n if it is).
// Strict like Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF.
std::size_t utf8_valid_prefix(const std::uint8_t *data, std::size_t n) noexcept;

}  // namespace rk
