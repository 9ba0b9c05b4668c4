// ring.hpp — an owning host ring: one aligned allocation laid out as rk_ring_header + slots, driven
// by the device-dialect protocol of rk_ring.h through the host atomics.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringkernel/layout.h"
#include "ringkernel/memory.hpp"
#include "rk_ring.h"

namespace rk {

class Ring {
public:
    // capacity: power of two in [16, 1048576]; max_payload: bytes in [1, 65536]. `memory`: where the
    // ring lives (default: the host heap). In device memory (memory->device() >= 0) the ring is
    // initialised through copy_in, flagged RK_RING_FLAG_DEVICE_LOCAL, and only header() may be used
    // (by kernels): none of the host-side operations below.
    Ring(std::uint32_t capacity, std::uint32_t max_payload, std::uint32_t flags = 0,
         std::shared_ptr<MemoryResource> memory = nullptr);
    ~Ring();
    Ring(const Ring &) = delete;
    Ring &operator=(const Ring &) = delete;

    rk_ring_header *header() noexcept { return hdr_; }
    const rk_ring_header *header() const noexcept { return hdr_; }
    std::uint32_t capacity() const noexcept { return hdr_->capacity; }
    std::uint32_t max_payload() const noexcept { return hdr_->max_payload; }
    std::uint32_t slot_stride() const noexcept { return hdr_->slot_stride; }
    std::size_t bytes() const noexcept { return bytes_; }

    // Whole messages. Multi-producer/multi-consumer unless the *_single form is used, which the
    // caller may use only while it is the sole producer (or consumer).
    bool try_push(const rk_envelope &env, const void *payload) noexcept {
        return rk_ring_try_push(hdr_, &env, static_cast<const rk_u8 *>(payload), 0, RK_SCOPE_SYSTEM);
    }
    bool try_push_single(const rk_envelope &env, const void *payload) noexcept {
        return rk_ring_try_push(hdr_, &env, static_cast<const rk_u8 *>(payload), 1, RK_SCOPE_SYSTEM);
    }
    bool try_pop(rk_envelope &env, void *payload, std::uint32_t cap) noexcept {
        return rk_ring_try_pop(hdr_, &env, static_cast<rk_u8 *>(payload), cap, 0, RK_SCOPE_SYSTEM);
    }
    bool try_pop_single(rk_envelope &env, void *payload, std::uint32_t cap) noexcept {
        return rk_ring_try_pop(hdr_, &env, static_cast<rk_u8 *>(payload), cap, 1, RK_SCOPE_SYSTEM);
    }

    // Two-phase forms (write or read in place), see rk_ring.h.
    rk_envelope *claim(std::uint64_t &pos, bool single) noexcept {
        return rk_ring_claim(hdr_, &pos, single, RK_SCOPE_SYSTEM);
    }
    std::uint32_t claim_n(std::uint32_t n, std::uint64_t &first, bool single) noexcept {
        return rk_ring_claim_n(hdr_, n, &first, single, RK_SCOPE_SYSTEM);
    }
    void publish(rk_envelope *slot, std::uint64_t pos) noexcept { rk_ring_publish(slot, pos, RK_SCOPE_SYSTEM); }
    rk_envelope *acquire(std::uint64_t &pos, bool single) noexcept {
        return rk_ring_acquire(hdr_, &pos, single, RK_SCOPE_SYSTEM);
    }
    std::uint32_t acquire_n(std::uint32_t n, std::uint64_t &first, bool single) noexcept {
        return rk_ring_acquire_n(hdr_, n, &first, single, RK_SCOPE_SYSTEM);
    }
    void release(rk_envelope *slot, std::uint64_t pos) noexcept { rk_ring_release(hdr_, slot, pos, RK_SCOPE_SYSTEM); }
    rk_envelope *slot(std::uint64_t pos) noexcept { return rk_ring_slot(hdr_, pos); }
    static std::uint8_t *payload(rk_envelope *slot) noexcept { return rk_envelope_payload(slot); }

    bool can_push() noexcept { return rk_ring_can_claim(hdr_, RK_SCOPE_SYSTEM); }
    bool can_pop() noexcept { return rk_ring_can_acquire(hdr_, RK_SCOPE_SYSTEM); }
    std::size_t size() noexcept { return static_cast<std::size_t>(rk_ring_size(hdr_, RK_SCOPE_SYSTEM)); }
    // Cursor totals since creation: every claimed and every acquired position.
    std::uint64_t pushed() const noexcept { return __atomic_load_n(&hdr_->tail, __ATOMIC_ACQUIRE); }
    std::uint64_t popped() const noexcept { return __atomic_load_n(&hdr_->head, __ATOMIC_ACQUIRE); }

private:
    std::shared_ptr<MemoryResource> memory_;
    rk_ring_header *hdr_ = nullptr;
    std::size_t bytes_ = 0;
    std::size_t alloc_ = 0;
};

}  // namespace rk
