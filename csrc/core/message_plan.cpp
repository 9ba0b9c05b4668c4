#include "ringkernel/message_plan.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include "ringkernel/errors.hpp"

namespace rk {

MessagePlan::MessagePlan(std::uint32_t itemsize, std::vector<MessageCheck> checks,
                         std::vector<std::pair<std::uint32_t, std::uint32_t>> zero_ranges,
                         std::vector<std::pair<std::uint32_t, std::uint32_t>> tails)
    : itemsize_(itemsize), checks_(std::move(checks)), zero_(std::move(zero_ranges)), tails_(std::move(tails)) {
    if (itemsize_ == 0) throw std::invalid_argument("message plan: itemsize must be at least 1 byte");
    auto fits = [&](std::uint64_t end) { return end <= itemsize_; };
    for (auto &c : checks_) {
        const std::uint64_t span = c.kind == MessageCheck::Kind::Bool   ? c.count
                                   : c.kind == MessageCheck::Kind::Enum ? std::uint64_t(c.count) * c.size
                                                                        : 4ull + c.size;
        if (!fits(std::uint64_t(c.offset) + span))
            throw std::invalid_argument("message plan: check for " + c.path + " reaches past the record");
        if (c.kind == MessageCheck::Kind::Enum && c.size != 1 && c.size != 2 && c.size != 4 && c.size != 8)
            throw std::invalid_argument("message plan: enum element size must be 1, 2, 4 or 8");
        std::sort(c.valid.begin(), c.valid.end());
    }
    for (auto &z : zero_)
        if (z.first > z.second || !fits(z.second)) throw std::invalid_argument("message plan: bad zero range");
    for (auto &t : tails_)
        if (!fits(std::uint64_t(t.first) + 4 + t.second)) throw std::invalid_argument("message plan: bad tail");
}

namespace {

std::uint32_t read_u32(const std::uint8_t *p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

std::int64_t read_enum(const std::uint8_t *p, std::uint32_t size, bool is_signed) {
    switch (size) {
    case 1: return is_signed ? std::int64_t(std::int8_t(p[0])) : std::int64_t(p[0]);
    case 2: {
        std::uint16_t v;
        std::memcpy(&v, p, 2);
        return is_signed ? std::int64_t(std::int16_t(v)) : std::int64_t(v);
    }
    case 4: {
        std::uint32_t v;
        std::memcpy(&v, p, 4);
        return is_signed ? std::int64_t(std::int32_t(v)) : std::int64_t(v);
    }
    default: {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        return std::int64_t(v);  // u64 members above 2^63 compare by bit pattern, as stored
    }
    }
}

}  // namespace

void MessagePlan::validate_one(const std::uint8_t *r) const {
    for (const MessageCheck &c : checks_) {
        const std::uint8_t *p = r + c.offset;
        switch (c.kind) {
        case MessageCheck::Kind::Bool:
            for (std::uint32_t i = 0; i < c.count; ++i)
                if (p[i] > 1)
                    throw MessageFormatError(c.path + ": a bool_ holds " + std::to_string(p[i]) +
                                             "; only 0 and 1 are valid");
            break;
        case MessageCheck::Kind::Enum:
            for (std::uint32_t i = 0; i < c.count; ++i) {
                const std::int64_t v = read_enum(p + std::size_t(i) * c.size, c.size, c.is_signed);
                if (!std::binary_search(c.valid.begin(), c.valid.end(), v)) {
                    std::ostringstream msg;
                    msg << c.path << ": " << v << " is not a member of " << c.enum_name << " (valid: ";
                    for (std::size_t k = 0; k < c.valid.size(); ++k) msg << (k ? ", " : "") << c.valid[k];
                    msg << ")";
                    throw MessageFormatError(msg.str());
                }
            }
            break;
        case MessageCheck::Kind::Length: {
            const std::uint32_t len = read_u32(p);
            if (len > c.size)
                throw MessageFormatError(c.path + ": length prefix " + std::to_string(len) +
                                         " exceeds the capacity of " + std::to_string(c.size) + " bytes");
            break;
        }
        case MessageCheck::Kind::Utf8: {
            const std::uint32_t len = std::min(read_u32(p), c.size);
            const std::size_t ok = utf8_valid_prefix(p + 4, len);
            if (ok != len) throw MessageFormatError(c.path + ": invalid UTF-8 at byte " + std::to_string(ok));
            break;
        }
        }
    }
}

void MessagePlan::validate(const std::uint8_t *records, std::size_t n) const {
    for (std::size_t i = 0; i < n; ++i) {
        try {
            validate_one(records + i * itemsize_);
        } catch (const MessageFormatError &e) {
            if (n == 1) throw;
            throw MessageFormatError("record " + std::to_string(i) + ": " + e.what());
        }
    }
}

void MessagePlan::canonicalise(std::uint8_t *records, std::size_t n) const noexcept {
    for (std::size_t i = 0; i < n; ++i) {
        std::uint8_t *r = records + i * itemsize_;
        for (const auto &z : zero_) std::memset(r + z.first, 0, z.second - z.first);
        for (const auto &t : tails_) {
            const std::uint32_t len = std::min(read_u32(r + t.first), t.second);
            std::memset(r + t.first + 4 + len, 0, t.second - len);
        }
    }
}

std::size_t utf8_valid_prefix(const std::uint8_t *s, std::size_t n) noexcept {
    std::size_t i = 0;
    while (i < n) {
        const std::uint8_t c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        std::uint8_t lo = 0x80, hi = 0xBF;  // bounds of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;       // no overlong forms
            if (c == 0xED) hi = 0x9F;       // no surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;       // no overlong forms
            if (c == 0xF4) hi = 0x8F;       // nothing above U+10FFFF
        } else {
            return i;
        }
        if (i + len > n) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (std::size_t k = 2; k < len; ++k)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

}  // namespace rk
