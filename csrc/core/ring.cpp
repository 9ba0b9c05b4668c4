#include "ringkernel/ring.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "ringkernel/options.hpp"
#include "rk_ring.h"

namespace rk {

namespace {
class HostMemory final : public MemoryResource {
public:
    void *allocate(std::size_t bytes, std::size_t align) override {
        const std::size_t rounded = (bytes + align - 1) / align * align;  // as aligned_alloc requires
        void *p = std::aligned_alloc(align, rounded);
        if (!p) throw std::bad_alloc();
        std::memset(p, 0, rounded);
        return p;
    }
    void deallocate(void *p, std::size_t) noexcept override { std::free(p); }
    const char *name() const noexcept override { return "host"; }
};
}  // namespace

std::shared_ptr<MemoryResource> host_memory() {
    static const std::shared_ptr<MemoryResource> host = std::make_shared<HostMemory>();
    return host;
}

Ring::Ring(std::uint32_t capacity, std::uint32_t max_payload, std::uint32_t flags,
           std::shared_ptr<MemoryResource> memory)
    : memory_(memory ? std::move(memory) : host_memory()) {
    validate_capacity("capacity", capacity);
    if (max_payload < 1 || max_payload > kMaxPayload) {
        std::ostringstream msg;
        msg << "max_payload must be in [1, " << kMaxPayload << "] bytes, got " << max_payload;
        throw std::invalid_argument(msg.str());
    }
    const std::uint32_t stride = rk_ring_slot_stride(max_payload);
    bytes_ = static_cast<std::size_t>(rk_ring_bytes(capacity, stride));
    alloc_ = bytes_;
    hdr_ = static_cast<rk_ring_header *>(memory_->allocate(alloc_, RK_CACHE_LINE));
    if (memory_->device() < 0) {
        rk_ring_init(hdr_, capacity, stride, flags);
    } else {
        // Device memory: initialise an image on the host and copy it in.
        std::vector<std::uint8_t> image(alloc_, 0);
        rk_ring_init(reinterpret_cast<rk_ring_header *>(image.data()), capacity, stride, flags | RK_RING_FLAG_DEVICE_LOCAL);
        memory_->copy_in(hdr_, image.data(), alloc_);
    }
}

Ring::~Ring() { memory_->deallocate(hdr_, alloc_); }

// ---- the operations: the ring protocol of rk_ring.h with system-scope host atomics -------------------

bool Ring::try_push(const rk_envelope &env, const void *payload) noexcept {
    return rk_ring_try_push(hdr_, &env, static_cast<const rk_u8 *>(payload), 0, RK_SCOPE_SYSTEM);
}
bool Ring::try_push_single(const rk_envelope &env, const void *payload) noexcept {
    return rk_ring_try_push(hdr_, &env, static_cast<const rk_u8 *>(payload), 1, RK_SCOPE_SYSTEM);
}
bool Ring::try_pop(rk_envelope &env, void *payload, std::uint32_t cap) noexcept {
    return rk_ring_try_pop(hdr_, &env, static_cast<rk_u8 *>(payload), cap, 0, RK_SCOPE_SYSTEM);
}
bool Ring::try_pop_single(rk_envelope &env, void *payload, std::uint32_t cap) noexcept {
    return rk_ring_try_pop(hdr_, &env, static_cast<rk_u8 *>(payload), cap, 1, RK_SCOPE_SYSTEM);
}
rk_envelope *Ring::claim(std::uint64_t &pos, bool single) noexcept {
    return rk_ring_claim(hdr_, &pos, single, RK_SCOPE_SYSTEM);
}
std::uint32_t Ring::claim_n(std::uint32_t n, std::uint64_t &first, bool single) noexcept {
    return rk_ring_claim_n(hdr_, n, &first, single, RK_SCOPE_SYSTEM);
}
void Ring::publish(rk_envelope *slot, std::uint64_t pos) noexcept { rk_ring_publish(slot, pos, RK_SCOPE_SYSTEM); }
rk_envelope *Ring::acquire(std::uint64_t &pos, bool single) noexcept {
    return rk_ring_acquire(hdr_, &pos, single, RK_SCOPE_SYSTEM);
}
std::uint32_t Ring::acquire_n(std::uint32_t n, std::uint64_t &first, bool single) noexcept {
    return rk_ring_acquire_n(hdr_, n, &first, single, RK_SCOPE_SYSTEM);
}
void Ring::release(rk_envelope *slot, std::uint64_t pos) noexcept { rk_ring_release(hdr_, slot, pos, RK_SCOPE_SYSTEM); }
rk_envelope *Ring::slot(std::uint64_t pos) noexcept { return rk_ring_slot(hdr_, pos); }
bool Ring::can_push() noexcept { return rk_ring_can_claim(hdr_, RK_SCOPE_SYSTEM); }
bool Ring::can_pop() noexcept { return rk_ring_can_acquire(hdr_, RK_SCOPE_SYSTEM); }
std::size_t Ring::size() noexcept { return static_cast<std::size_t>(rk_ring_size(hdr_, RK_SCOPE_SYSTEM)); }

}  // namespace rk
