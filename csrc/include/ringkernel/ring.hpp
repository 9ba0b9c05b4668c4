// ring.hpp — an owning host ring: one aligned allocation laid out as rk_ring_header + slots (layout.h),
// driven by the ring protocol of the device dialect (rk_ring.h, in ring.cpp) through the host atomics.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringkernel/layout.h"
#include "ringkernel/memory.hpp"

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
    bool try_push(const rk_envelope &env, const void *payload) noexcept;
    bool try_push_single(const rk_envelope &env, const void *payload) noexcept;
    bool try_pop(rk_envelope &env, void *payload, std::uint32_t cap) noexcept;
    bool try_pop_single(rk_envelope &env, void *payload, std::uint32_t cap) noexcept;

    // Two-phase forms (write or read in place): claim a slot (or a run of n), fill it, publish it;
    // acquire a message (or a run), read it in place, release it. nullptr / 0 when none is free.
    rk_envelope *claim(std::uint64_t &pos, bool single) noexcept;
    std::uint32_t claim_n(std::uint32_t n, std::uint64_t &first, bool single) noexcept;
    void publish(rk_envelope *slot, std::uint64_t pos) noexcept;
    rk_envelope *acquire(std::uint64_t &pos, bool single) noexcept;
    std::uint32_t acquire_n(std::uint32_t n, std::uint64_t &first, bool single) noexcept;
    void release(rk_envelope *slot, std::uint64_t pos) noexcept;
    rk_envelope *slot(std::uint64_t pos) noexcept;
    // A slot's payload: the bytes right after its envelope.
    static std::uint8_t *payload(rk_envelope *slot) noexcept { return reinterpret_cast<std::uint8_t *>(slot + 1); }

    bool can_push() noexcept;
    bool can_pop() noexcept;
    std::size_t size() noexcept;
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
