// MessagePlan: record validation and canonicalisation, and the strict UTF-8 check behind it.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ringkernel/errors.hpp"
#include "ringkernel/message_plan.hpp"

namespace {

// A 24-byte record: u8 enum at 0 {0, 1, 5}, bool at 1, 2 padding bytes, string(12) at 4 (u32
// length + 12 bytes), 4 padding bytes at 20.
rk::MessagePlan plan() {
    std::vector<rk::MessageCheck> checks(4);
    checks[0].kind = rk::MessageCheck::Kind::Enum;
    checks[0].offset = 0;
    checks[0].size = 1;
    checks[0].valid = {5, 0, 1};
    checks[0].enum_name = "Op";
    checks[0].path = "Msg.op";
    checks[1].kind = rk::MessageCheck::Kind::Bool;
    checks[1].offset = 1;
    checks[1].path = "Msg.on";
    checks[2].kind = rk::MessageCheck::Kind::Length;
    checks[2].offset = 4;
    checks[2].size = 12;
    checks[2].path = "Msg.name";
    checks[3] = checks[2];
    checks[3].kind = rk::MessageCheck::Kind::Utf8;
    return rk::MessagePlan(24, checks, {{2, 4}, {20, 24}}, {{4, 12}});
}

std::vector<std::uint8_t> record(std::uint8_t op, std::uint8_t on, const std::string &name) {
    std::vector<std::uint8_t> r(24, 0);
    r[0] = op;
    r[1] = on;
    const std::uint32_t len = static_cast<std::uint32_t>(name.size());
    std::memcpy(&r[4], &len, 4);
    std::memcpy(&r[8], name.data(), std::min<std::size_t>(name.size(), 12));
    return r;
}

std::string error_of(const rk::MessagePlan &p, const std::vector<std::uint8_t> &r, std::size_t n = 1) {
    try {
        p.validate(r.data(), n);
    } catch (const rk::MessageFormatError &e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST(MessagePlan, AcceptsValidRecordsAndNamesTheFieldOfInvalidOnes) {
    const auto p = plan();
    EXPECT_EQ(error_of(p, record(5, 1, "héllo")), "");
    EXPECT_EQ(error_of(p, record(3, 0, "x")), "Msg.op: 3 is not a member of Op (valid: 0, 1, 5)");
    EXPECT_EQ(error_of(p, record(0, 2, "x")), "Msg.on: a bool_ holds 2; only 0 and 1 are valid");
    auto long_name = record(0, 0, "x");
    long_name[4] = 13;
    EXPECT_EQ(error_of(p, long_name), "Msg.name: length prefix 13 exceeds the capacity of 12 bytes");
    EXPECT_EQ(error_of(p, record(0, 0, "ok\xff")), "Msg.name: invalid UTF-8 at byte 2");
    auto two = record(0, 0, "a");
    const auto bad = record(9, 0, "b");
    two.insert(two.end(), bad.begin(), bad.end());
    EXPECT_EQ(error_of(p, two, 2), "record 1: Msg.op: 9 is not a member of Op (valid: 0, 1, 5)");
}

TEST(MessagePlan, CanonicaliseZeroesPaddingAndUnusedStorage) {
    const auto p = plan();
    auto r = record(1, 1, "abc");
    r[2] = r[3] = 0xEE;   // padding
    r[20] = 0xEE;         // trailing padding
    r[8 + 5] = 0x41;      // beyond the 3-byte name
    p.canonicalise(r.data(), 1);
    EXPECT_EQ(r, record(1, 1, "abc"));
}

TEST(MessagePlan, RejectsPlansThatReachPastTheRecord) {
    std::vector<rk::MessageCheck> checks(1);
    checks[0].kind = rk::MessageCheck::Kind::Length;
    checks[0].offset = 20;
    checks[0].size = 12;
    EXPECT_THROW(rk::MessagePlan(24, checks, {}, {}), std::invalid_argument);
    EXPECT_THROW(rk::MessagePlan(24, {}, {{20, 30}}, {}), std::invalid_argument);
}

TEST(Utf8, StrictLikePython) {
    auto ok = [](const std::string &s) { return rk::utf8_valid_prefix(reinterpret_cast<const std::uint8_t *>(s.data()), s.size()); };
    EXPECT_EQ(ok("plain"), 5u);
    EXPECT_EQ(ok("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"), 15u);
    EXPECT_EQ(ok("\xc0\xaf"), 0u);          // overlong '/'
    EXPECT_EQ(ok("a\xe0\x80\xaf"), 1u);     // overlong three-byte form
    EXPECT_EQ(ok("\xed\xa0\x80"), 0u);      // a UTF-16 surrogate
    EXPECT_EQ(ok("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
    EXPECT_EQ(ok("ab\xe2\x82"), 2u);        // truncated sequence
    EXPECT_EQ(ok("\x80"), 0u);              // stray continuation byte
}
