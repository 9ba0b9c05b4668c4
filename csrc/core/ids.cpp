#include "ringkernel/ids.hpp"

#include <atomic>

namespace rk {

namespace {
constexpr std::uint64_t kFirstAutoId = 1ull << 63;
constexpr std::uint64_t kBlock = 4096;
std::atomic<std::uint64_t> g_next_block{kFirstAutoId};
}  // namespace

std::uint64_t next_message_ids(std::uint64_t n) noexcept {
    thread_local std::uint64_t next = 0, end = 0;
    if (end - next < n) {
        const std::uint64_t take = n > kBlock ? n : kBlock;
        next = g_next_block.fetch_add(take, std::memory_order_relaxed);
        end = next + take;
    }
    const std::uint64_t first = next;
    next += n;
    return first;
}

}  // namespace rk
