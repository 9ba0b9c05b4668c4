#include "ringkernel/ring.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <stdexcept>

#include "ringkernel/options.hpp"

namespace rk {

Ring::Ring(std::uint32_t capacity, std::uint32_t max_payload, std::uint32_t flags) {
    validate_capacity("capacity", capacity);
    if (max_payload < 1 || max_payload > kMaxPayload) {
        std::ostringstream msg;
        msg << "max_payload must be in [1, " << kMaxPayload << "] bytes, got " << max_payload;
        throw std::invalid_argument(msg.str());
    }
    const std::uint32_t stride = rk_ring_slot_stride(max_payload);
    bytes_ = static_cast<std::size_t>(rk_ring_bytes(capacity, stride));
    // Rounded up to the alignment, as aligned_alloc requires.
    const std::size_t alloc = (bytes_ + RK_CACHE_LINE - 1) / RK_CACHE_LINE * RK_CACHE_LINE;
    void *mem = std::aligned_alloc(RK_CACHE_LINE, alloc);
    if (!mem) throw std::bad_alloc();
    std::memset(mem, 0, alloc);
    hdr_ = static_cast<rk_ring_header *>(mem);
    rk_ring_init(hdr_, capacity, stride, flags);
}

Ring::~Ring() { std::free(hdr_); }

}  // namespace rk
