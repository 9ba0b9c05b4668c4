// ids.hpp — message ids for messages sent without one.
#pragma once

#include <cstdint>

namespace rk {

// The first of n consecutive message ids, unique within the process. Each thread takes ids from a
// block of its own (refilled from one shared counter), so concurrent senders do not contend.
// Explicit ids share the same 64-bit space; a user who mixes both keeps explicit ids below 2^63,
// where automatic ids never go.
std::uint64_t next_message_ids(std::uint64_t n) noexcept;

}  // namespace rk
