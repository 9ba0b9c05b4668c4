// fuzz_message — the typed-message layer (message_plan.hpp): plans built from fuzz-chosen field
// specs, and fuzz bytes validated and canonicalised as records of them, against a reference written
// independently here.
//
// Two kinds of plan, by the first byte:
//   * laid out: a sequence of fields as ringkernel.messages builds them (padding, plain bytes,
//     bool[n], enum[n] of 1/2/4/8-byte members, signed or not, bytes_(cap) and string(cap) with
//     their u32 length prefix), records made field by field either well-formed or raw;
//   * raw: any itemsize, checks, zero ranges and tails (offsets, counts and sizes anywhere in u32).
// Checked:
//   * the constructor throws std::invalid_argument exactly when some check, zero range or tail does
//     not fit in the record (or an enum member size is not 1, 2, 4 or 8, or itemsize is 0);
//   * validate() throws rk::MessageFormatError exactly when the reference finds a malformed field,
//     with the reference's message ("record i: " first when n > 1), and nothing else;
//   * utf8_valid_prefix() agrees with a code-point decoder (strict: no overlongs, no surrogates,
//     nothing above U+10FFFF) on every string checked;
//   * canonicalise() gives the reference's bytes (padding and unused bytes/string storage zeroed,
//     nothing else touched), is idempotent on laid-out plans, and keeps a valid record valid;
//   * nothing reads or writes outside the records (ASan: the buffer is exactly n * itemsize bytes).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "ringkernel/errors.hpp"
#include "ringkernel/message_plan.hpp"

namespace {

[[noreturn]] void fail(const char *what, const std::string &detail = "") {
    std::fprintf(stderr, "fuzz_message: MISMATCH: %s %s\n", what, detail.c_str());
    std::abort();
}
#define CHECK(cond, ...)                                                                            \
    do {                                                                                            \
        if (!(cond)) fail(#cond, ##__VA_ARGS__);                                                    \
    } while (0)

using Kind = rk::MessageCheck::Kind;
using Ranges = std::vector<std::pair<std::uint32_t, std::uint32_t>>;

struct Spec {
    std::uint32_t itemsize = 0;
    std::vector<rk::MessageCheck> checks;
    Ranges zero, tails;
};

std::uint32_t rd32(const std::uint8_t *p) {
    return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
           static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
void wr32(std::uint8_t *p, std::uint32_t v) {
    for (int k = 0; k < 4; ++k) p[k] = static_cast<std::uint8_t>(v >> (8 * k));
}

// ---- the reference ------------------------------------------------------------------------------------

// Index of the first byte of the first ill-formed sequence, by decoding code points.
std::size_t ref_utf8(const std::uint8_t *s, std::size_t n) {
    std::size_t i = 0;
    while (i < n) {
        const std::uint8_t c = s[i];
        std::size_t len;
        std::uint32_t cp, min;
        if (c < 0x80) { ++i; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1Fu; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0Fu; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07u; min = 0x10000; }
        else return i;  // a continuation byte or 0xF8..0xFF as a lead
        // Python's decoder reports the maximal ill-formed subpart, which starts at i in every case.
        for (std::size_t k = 1; k < len; ++k) {
            if (i + k >= n || (s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

std::int64_t ref_enum(const std::uint8_t *p, std::uint32_t size, bool is_signed) {
    std::uint64_t v = 0;
    for (std::uint32_t k = 0; k < size; ++k) v |= static_cast<std::uint64_t>(p[k]) << (8 * k);
    if (is_signed && size < 8 && (v >> (8 * size - 1)) & 1) v |= ~0ull << (8 * size);  // sign-extend
    return static_cast<std::int64_t>(v);
}

// The message of the first malformed field of one record, "" when it is well-formed.
std::string ref_error(const Spec &sp, const std::uint8_t *r) {
    for (const auto &c : sp.checks) {
        const std::uint8_t *p = r + c.offset;
        switch (c.kind) {
        case Kind::Bool:
            for (std::uint32_t i = 0; i < c.count; ++i)
                if (p[i] > 1) return c.path + ": a bool_ holds " + std::to_string(p[i]) + "; only 0 and 1 are valid";
            break;
        case Kind::Enum:
            for (std::uint32_t i = 0; i < c.count; ++i) {
                const std::int64_t v = ref_enum(p + std::size_t(i) * c.size, c.size, c.is_signed);
                if (std::find(c.valid.begin(), c.valid.end(), v) == c.valid.end()) {
                    std::vector<std::int64_t> sorted = c.valid;
                    std::sort(sorted.begin(), sorted.end());
                    std::ostringstream m;
                    m << c.path << ": " << v << " is not a member of " << c.enum_name << " (valid: ";
                    for (std::size_t k = 0; k < sorted.size(); ++k) m << (k ? ", " : "") << sorted[k];
                    m << ")";
                    return m.str();
                }
            }
            break;
        case Kind::Length: {
            const std::uint32_t len = rd32(p);
            if (len > c.size)
                return c.path + ": length prefix " + std::to_string(len) + " exceeds the capacity of " +
                       std::to_string(c.size) + " bytes";
            break;
        }
        case Kind::Utf8: {
            const std::uint32_t len = std::min(rd32(p), c.size);
            const std::size_t ok = ref_utf8(p + 4, len);
            const std::size_t lib = rk::utf8_valid_prefix(p + 4, len);
            if (ok != lib) fail("utf8_valid_prefix disagrees with the decoder", std::to_string(lib) + " vs " + std::to_string(ok));
            if (ok != len) return c.path + ": invalid UTF-8 at byte " + std::to_string(ok);
            break;
        }
        }
    }
    return "";
}

void ref_canonicalise(const Spec &sp, std::uint8_t *r) {
    for (const auto &z : sp.zero)
        for (std::uint32_t k = z.first; k < z.second; ++k) r[k] = 0;
    for (const auto &t : sp.tails) {
        const std::uint32_t len = std::min(rd32(r + t.first), t.second);
        for (std::uint32_t k = len; k < t.second; ++k) r[t.first + 4 + k] = 0;
    }
}

bool ref_plan_ok(const Spec &sp) {
    if (sp.itemsize == 0) return false;
    const std::uint64_t n = sp.itemsize;
    for (const auto &c : sp.checks) {
        std::uint64_t span;
        if (c.kind == Kind::Bool) span = c.count;
        else if (c.kind == Kind::Enum) span = std::uint64_t(c.count) * c.size;
        else span = 4ull + c.size;
        if (std::uint64_t(c.offset) + span > n) return false;
        if (c.kind == Kind::Enum && c.size != 1 && c.size != 2 && c.size != 4 && c.size != 8) return false;
    }
    for (const auto &z : sp.zero)
        if (z.first > z.second || z.second > n) return false;
    for (const auto &t : sp.tails)
        if (std::uint64_t(t.first) + 4 + t.second > n) return false;
    return true;
}

// ---- plans ------------------------------------------------------------------------------------------

// How to write one field of a record (laid-out plans).
struct Field {
    enum { Pad, Plain, Bool, Enum, Bytes, String } kind;
    std::uint32_t offset, bytes;   // where, how many bytes in all
    std::size_t check = 0;         // index of its (first) check
};

std::int64_t member_in_range(FuzzedDataProvider &in, std::uint32_t size, bool is_signed) {
    const unsigned bits = 8 * size;
    switch (in.ConsumeIntegralInRange<unsigned>(0, 5)) {
    case 0: return 0;
    case 1: return 1;
    case 2: return is_signed ? -1 : 2;
    case 3:  // the largest
        if (bits == 64) return is_signed ? INT64_MAX : -1;  // u64 max: bit pattern
        return is_signed ? (std::int64_t(1) << (bits - 1)) - 1 : (std::int64_t(1) << bits) - 1;
    case 4:  // the smallest
        if (!is_signed) return 0;
        return bits == 64 ? INT64_MIN : -(std::int64_t(1) << (bits - 1));
    default: {
        const std::uint64_t raw = in.ConsumeIntegral<std::uint64_t>();
        return ref_enum(reinterpret_cast<const std::uint8_t *>(&raw), size, is_signed);
    }
    }
}

void build_laid_out(FuzzedDataProvider &in, Spec &sp, std::vector<Field> &fields) {
    const unsigned nf = in.ConsumeIntegralInRange<unsigned>(0, 10);
    std::uint32_t off = 0;
    for (unsigned f = 0; f < nf; ++f) {
        Field fd{};
        fd.offset = off;
        const std::string path = "Msg.f" + std::to_string(f);
        rk::MessageCheck c;
        c.offset = off;
        c.path = path;
        switch (in.ConsumeIntegralInRange<unsigned>(0, 5)) {
        case 0:
            fd.kind = Field::Pad;
            fd.bytes = in.ConsumeIntegralInRange<std::uint32_t>(1, 8);
            sp.zero.push_back({off, off + fd.bytes});
            break;
        case 1:
            fd.kind = Field::Plain;
            fd.bytes = in.ConsumeIntegralInRange<std::uint32_t>(1, 16);
            break;
        case 2:
            fd.kind = Field::Bool;
            c.kind = Kind::Bool;
            c.count = in.ConsumeIntegralInRange<std::uint32_t>(1, 6);
            fd.bytes = c.count;
            if (c.count > 1) c.path += "[]";
            fd.check = sp.checks.size();
            sp.checks.push_back(c);
            break;
        case 3: {
            fd.kind = Field::Enum;
            c.kind = Kind::Enum;
            c.size = 1u << in.ConsumeIntegralInRange<unsigned>(0, 3);
            c.is_signed = in.ConsumeBool();
            c.count = in.ConsumeIntegralInRange<std::uint32_t>(1, 4);
            const unsigned members = in.ConsumeIntegralInRange<unsigned>(1, 6);
            for (unsigned k = 0; k < members; ++k) {
                const std::int64_t v = member_in_range(in, c.size, c.is_signed);
                if (std::find(c.valid.begin(), c.valid.end(), v) == c.valid.end()) c.valid.push_back(v);
            }
            c.enum_name = "E" + std::to_string(f);
            if (c.count > 1) c.path += "[]";
            fd.bytes = c.count * c.size;
            fd.check = sp.checks.size();
            sp.checks.push_back(c);
            break;
        }
        default: {
            const bool str = in.ConsumeBool();
            fd.kind = str ? Field::String : Field::Bytes;
            c.kind = Kind::Length;
            c.size = in.ConsumeIntegralInRange<std::uint32_t>(0, 24);
            fd.bytes = 4 + c.size;
            fd.check = sp.checks.size();
            sp.checks.push_back(c);
            if (str) {
                c.kind = Kind::Utf8;
                sp.checks.push_back(c);
            }
            sp.tails.push_back({off, c.size});
            break;
        }
        }
        off += fd.bytes;
        fields.push_back(fd);
    }
    sp.itemsize = off;
}

void build_raw(FuzzedDataProvider &in, Spec &sp) {
    auto u32 = [&in](std::uint32_t small) {
        switch (in.ConsumeIntegralInRange<unsigned>(0, 3)) {
        case 0: return in.ConsumeIntegralInRange<std::uint32_t>(0, small);
        case 1: return 0xFFFFFFFFu - in.ConsumeIntegralInRange<std::uint32_t>(0, 8);
        default: return in.ConsumeIntegral<std::uint32_t>() % (small * 2 + 1);
        }
    };
    sp.itemsize = in.ConsumeIntegralInRange<std::uint32_t>(0, 256);
    const unsigned nc = in.ConsumeIntegralInRange<unsigned>(0, 6);
    for (unsigned i = 0; i < nc; ++i) {
        rk::MessageCheck c;
        c.kind = static_cast<Kind>(in.ConsumeIntegralInRange<unsigned>(0, 3));
        c.offset = u32(sp.itemsize);
        c.count = u32(16);
        c.size = c.kind == Kind::Enum ? in.ConsumeIntegralInRange<std::uint32_t>(0, 9) : u32(64);
        c.is_signed = in.ConsumeBool();
        const unsigned members = in.ConsumeIntegralInRange<unsigned>(0, 4);
        for (unsigned k = 0; k < members; ++k) c.valid.push_back(in.ConsumeIntegralInRange<std::int64_t>(-3, 300));
        c.path = "Raw.c" + std::to_string(i);
        c.enum_name = "R";
        sp.checks.push_back(c);
    }
    const unsigned nz = in.ConsumeIntegralInRange<unsigned>(0, 3);
    for (unsigned i = 0; i < nz; ++i) sp.zero.push_back({u32(sp.itemsize), u32(sp.itemsize)});
    const unsigned nt = in.ConsumeIntegralInRange<unsigned>(0, 3);
    for (unsigned i = 0; i < nt; ++i) sp.tails.push_back({u32(sp.itemsize), u32(64)});
}

// One record of a laid-out plan, each field well-formed or raw as the input says.
void write_record(FuzzedDataProvider &in, const Spec &sp, const std::vector<Field> &fields, std::uint8_t *r) {
    for (const Field &fd : fields) {
        std::uint8_t *p = r + fd.offset;
        const bool raw = in.ConsumeIntegralInRange<unsigned>(0, 7) == 0;
        if (raw || fd.kind == Field::Pad || fd.kind == Field::Plain) {
            const std::vector<std::uint8_t> b = in.ConsumeBytes<std::uint8_t>(fd.bytes);
            std::memset(p, raw ? 0xFF : 0x5A, fd.bytes);
            if (!b.empty()) std::memcpy(p, b.data(), b.size());
            continue;
        }
        const rk::MessageCheck &c = sp.checks[fd.check];
        switch (fd.kind) {
        case Field::Bool:
            for (std::uint32_t i = 0; i < c.count; ++i) p[i] = in.ConsumeBool();
            break;
        case Field::Enum:
            for (std::uint32_t i = 0; i < c.count; ++i) {
                const std::int64_t v = c.valid[in.ConsumeIntegralInRange<std::size_t>(0, c.valid.size() - 1)];
                std::memcpy(p + std::size_t(i) * c.size, &v, c.size);  // little-endian low bytes
            }
            break;
        case Field::Bytes:
        case Field::String: {
            // Content, then garbage in the unused storage for canonicalise() to clear.
            std::vector<std::uint8_t> content;
            if (fd.kind == Field::Bytes) {
                content = in.ConsumeBytes<std::uint8_t>(in.ConsumeIntegralInRange<std::uint32_t>(0, c.size));
            } else {
                // Code points at the edges of each length, encoded in `len` bytes: the natural
                // length, or a longer (overlong) one; surrogates and past-U+10FFFF among them.
                static const std::uint32_t cps[] = {0x00, 0x41, 0x7F, 0x80, 0xE9, 0x7FF, 0x800, 0xFFFD,
                                                    0xD7FF, 0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xE000, 0xFFFF,
                                                    0x10000, 0x1F600, 0x10FFFF, 0x110000, 0x1FFFFF};
                const bool clean = in.ConsumeIntegralInRange<unsigned>(0, 3) != 0;  // mostly well-formed
                while (in.ConsumeBool()) {
                    const unsigned pick = in.ConsumeIntegralInRange<unsigned>(0, 15);
                    if (!clean && pick == 15) {  // any byte
                        if (content.size() + 1 > c.size) break;
                        content.push_back(in.ConsumeIntegral<std::uint8_t>());
                        continue;
                    }
                    const std::uint32_t cp = cps[in.ConsumeIntegralInRange<std::size_t>(0, sizeof cps / sizeof cps[0] - 1)];
                    const bool bad = (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF;
                    std::size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
                    if (!clean && n < 4 && in.ConsumeIntegralInRange<unsigned>(0, 3) == 0) ++n;  // overlong
                    if (clean && bad) continue;
                    std::uint8_t e[4];
                    static const std::uint8_t lead[5] = {0, 0x00, 0xC0, 0xE0, 0xF0};
                    for (std::size_t k = n - 1; k > 0; --k) e[k] = static_cast<std::uint8_t>(0x80 | ((cp >> (6 * (n - 1 - k))) & 0x3F));
                    e[0] = static_cast<std::uint8_t>(lead[n] | (cp >> (6 * (n - 1))));
                    if (content.size() + n > c.size) break;
                    content.insert(content.end(), e, e + n);
                }
                if (!content.empty() && in.ConsumeIntegralInRange<unsigned>(0, 5) == 0)  // one byte off
                    content[in.ConsumeIntegralInRange<std::size_t>(0, content.size() - 1)] = in.ConsumeIntegral<std::uint8_t>();
            }
            wr32(p, static_cast<std::uint32_t>(content.size()));
            for (std::uint32_t k = 0; k < c.size; ++k) p[4 + k] = static_cast<std::uint8_t>(0xC3 + k);
            if (!content.empty()) std::memcpy(p + 4, content.data(), content.size());
            break;
        }
        default: break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    Spec sp;
    std::vector<Field> fields;
    const bool raw_plan = in.ConsumeIntegralInRange<unsigned>(0, 3) == 0;
    if (raw_plan)
        build_raw(in, sp);
    else
        build_laid_out(in, sp, fields);

    const bool ok = ref_plan_ok(sp);
    std::unique_ptr<rk::MessagePlan> plan;
    try {
        plan = std::make_unique<rk::MessagePlan>(sp.itemsize, sp.checks, sp.zero, sp.tails);
    } catch (const std::invalid_argument &) {
        CHECK(!ok, "the plan was refused but fits");
        return 0;
    }
    CHECK(ok, "the plan was accepted but does not fit");
    CHECK(plan->itemsize() == sp.itemsize);

    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, 4);
    std::vector<std::uint8_t> buf(n * sp.itemsize);  // exactly n records
    for (std::size_t i = 0; i < n; ++i) {
        std::uint8_t *r = buf.data() + i * sp.itemsize;
        if (raw_plan) {
            const std::vector<std::uint8_t> b = in.ConsumeBytes<std::uint8_t>(sp.itemsize);
            if (!b.empty()) std::memcpy(r, b.data(), b.size());
        } else {
            write_record(in, sp, fields, r);
        }
    }

    // validate: exactly the reference's verdict and message, for the whole buffer and for each record.
    std::string want;
    for (std::size_t i = 0; i < n && want.empty(); ++i) {
        want = ref_error(sp, buf.data() + i * sp.itemsize);
        if (!want.empty() && n > 1) want = "record " + std::to_string(i) + ": " + want;
    }
    std::string got;
    try {
        plan->validate(buf.data(), n);
    } catch (const rk::MessageFormatError &e) {
        got = e.what();
        CHECK(!got.empty(), "an empty MessageFormatError");
    }
    CHECK(got == want, "validate: '" + got + "' vs reference '" + want + "'");

    // canonicalise: the reference's bytes, whatever the records hold; idempotent.
    std::vector<std::uint8_t> expect = buf;
    for (std::size_t i = 0; i < n; ++i) ref_canonicalise(sp, expect.data() + i * sp.itemsize);
    std::vector<std::uint8_t> canon = buf;
    plan->canonicalise(canon.data(), n);
    CHECK(canon == expect, "canonicalise differs from the reference");
    // Idempotent where the ranges do not overlap (laid-out plans). In a raw plan a later tail may
    // clear an earlier one's length prefix, so a second pass clears more: as the reference does.
    if (raw_plan)
        for (std::size_t i = 0; i < n; ++i) ref_canonicalise(sp, expect.data() + i * sp.itemsize);
    plan->canonicalise(canon.data(), n);
    CHECK(canon == expect, raw_plan ? "canonicalise (twice) differs from the reference" : "canonicalise is not idempotent");

    // A valid record stays valid once canonical (laid-out plans: the ranges never overlap a checked
    // field, as in the plans ringkernel.messages builds).
    if (want.empty() && !raw_plan) {
        try {
            plan->validate(canon.data(), n);
        } catch (const rk::MessageFormatError &e) {
            fail("a canonical copy of a valid record is invalid:", e.what());
        }
    }
    return 0;
}
