/*
 * rk_ring.h — the ring protocol (DESIGN.md §3), written once for every target.
 *
 * A bounded multi-producer/multi-consumer ring after Dmitry Vyukov's design: every slot carries a
 * turn counter (`sequence`, the last field of its envelope). For the slot of position p:
 *   sequence == p          the slot is free for the producer that claims position p
 *   sequence == p + 1      the slot holds the message of position p, ready for its consumer
 *   sequence == p + cap    the consumer released it; free for the producer of lap p + cap
 * Producers claim positions by advancing `tail`, consumers by advancing `head`; the cursor CAS is
 * relaxed because the data hand-off is ordered by the release-store / acquire-load of `sequence`
 * alone. A producer therefore never writes a slot whose consumer has not released it, and a
 * consumer never reads a slot before its producer published it.
 *
 * The single-producer and single-consumer paths replace the cursor CAS with a plain store and are
 * otherwise the same protocol on the same layout, so a single-producer side interoperates with a
 * multi-consumer side and vice versa.
 *
 * Two-phase API (claim/publish, acquire/release) so callers write and read payloads in place; the
 * batch forms claim a run of consecutive positions with one cursor update.
 */
#ifndef RK_RING_H
#define RK_RING_H

#include "rk_atomic.h"

/* Payload bytes live right after the envelope. */
RK_FN RK_GLOBAL rk_u8 *rk_envelope_payload(RK_GLOBAL rk_envelope *e) {
    return (RK_GLOBAL rk_u8 *)e + sizeof(rk_envelope);
}

/* Slot `pos` given the ring's geometry (mask, slot_stride) -- read-only after initialisation, so a caller
 * that holds it (a device block keeps it in shared memory) need not read the header again; on a GPU that
 * read crosses PCIe again after every atomic, each a compiler barrier. */
RK_FN RK_GLOBAL rk_envelope *rk_ring_slot_at(RK_GLOBAL rk_ring_header *r, rk_u64 pos, rk_u32 mask, rk_u32 stride) {
    return (RK_GLOBAL rk_envelope *)((RK_GLOBAL rk_u8 *)r + sizeof(rk_ring_header) + (pos & (rk_u64)mask) * (rk_u64)stride);
}

RK_FN RK_GLOBAL rk_envelope *rk_ring_slot(RK_GLOBAL rk_ring_header *r, rk_u64 pos) {
    return rk_ring_slot_at(r, pos, r->mask, r->slot_stride);
}

/* Bytes one allocation needs for a ring of `capacity` slots of `slot_stride` bytes. */
RK_FN rk_u64 rk_ring_bytes(rk_u32 capacity, rk_u32 slot_stride) {
    return (rk_u64)sizeof(rk_ring_header) + (rk_u64)capacity * (rk_u64)slot_stride;
}

/* Slot stride for payloads of up to `max_payload` bytes: envelope plus payload, whole lines. */
RK_FN rk_u32 rk_ring_slot_stride(rk_u32 max_payload) {
    rk_u32 raw = (rk_u32)sizeof(rk_envelope) + max_payload;
    return (raw + RK_SLOT_ALIGN - 1u) & ~(RK_SLOT_ALIGN - 1u);
}

/* Initialise a zeroed allocation. Not concurrent with any other access. */
RK_FN void rk_ring_init(RK_GLOBAL rk_ring_header *r, rk_u32 capacity, rk_u32 slot_stride,
                        rk_u32 flags) {
    r->head = 0;
    r->expired = 0;
    r->tail = 0;
    r->rejected = 0;
    r->dropped_new = 0;
    r->evicted = 0;
    r->magic = RK_RING_MAGIC;
    r->version = RK_LAYOUT_VERSION;
    r->capacity = capacity;
    r->mask = capacity - 1u;
    r->slot_stride = slot_stride;
    r->max_payload = slot_stride - (rk_u32)sizeof(rk_envelope);
    r->flags = flags;
    r->supervised_upto = 0;
    for (rk_u64 i = 0; i < capacity; ++i) rk_ring_slot(r, i)->sequence = i;
}

/* ---- producer side ------------------------------------------------------------------------------ */

/* Claim the next position. Returns its slot (position in *pos) or RK_NULL when the ring is full. */
RK_FN RK_GLOBAL rk_envelope *rk_ring_claim(RK_GLOBAL rk_ring_header *r, rk_u64 *pos,
                                           int single_producer, int scope) {
    rk_u64 p = rk_atomic_load_u64(&r->tail, RK_RELAXED, scope);
    for (;;) {
        RK_GLOBAL rk_envelope *slot = rk_ring_slot(r, p);
        rk_u64 seq = rk_atomic_load_u64(&slot->sequence, RK_ACQUIRE, scope);
        rk_i64 dif = (rk_i64)(seq - p);
        if (dif == 0) {
            if (single_producer) {
                rk_atomic_store_u64(&r->tail, p + 1, RK_RELAXED, scope);
                *pos = p;
                return slot;
            }
            if (rk_atomic_cas_u64(&r->tail, &p, p + 1, RK_RELAXED, RK_RELAXED, scope)) {
                *pos = p;
                return slot;
            }
        } else if (dif < 0) {
            return RK_NULL; /* the consumer of the previous lap has not released this slot */
        } else {
            /* Another producer took p: the cursor has moved (its update precedes the publish we saw).
             * A cursor that has not moved means a corrupted turn counter: report full, never spin. */
            rk_u64 q = rk_atomic_load_u64(&r->tail, RK_RELAXED, scope);
            if (q == p) return RK_NULL;
            p = q;
        }
    }
}

/* Hand a claimed slot to the consumers. */
RK_FN void rk_ring_publish(RK_GLOBAL rk_envelope *slot, rk_u64 pos, int scope) {
    rk_atomic_store_u64(&slot->sequence, pos + 1, RK_RELEASE, scope);
}

/* Claim up to `n` consecutive positions with one cursor update. Returns how many were claimed
 * (0 when full); the first is *first. Each must then be published. */
RK_FN rk_u32 rk_ring_claim_n(RK_GLOBAL rk_ring_header *r, rk_u32 n, rk_u64 *first,
                             int single_producer, int scope) {
    if (n == 0) return 0;
    rk_u64 p = rk_atomic_load_u64(&r->tail, RK_RELAXED, scope);
    for (;;) {
        rk_u32 k = 0;
        rk_i64 dif = 0;
        while (k < n) {
            rk_u64 seq = rk_atomic_load_u64(&rk_ring_slot(r, p + k)->sequence, RK_ACQUIRE, scope);
            dif = (rk_i64)(seq - (p + k));
            if (dif != 0) break;
            ++k;
        }
        if (k == 0) {
            if (dif < 0) return 0;
            rk_u64 q = rk_atomic_load_u64(&r->tail, RK_RELAXED, scope);
            if (q == p) return 0; /* a corrupted turn counter (see rk_ring_claim) */
            p = q;
            continue;
        }
        if (single_producer) {
            rk_atomic_store_u64(&r->tail, p + k, RK_RELAXED, scope);
            *first = p;
            return k;
        }
        if (rk_atomic_cas_u64(&r->tail, &p, p + k, RK_RELAXED, RK_RELAXED, scope)) {
            *first = p;
            return k;
        }
    }
}

/* True when the next claim would find a free slot (a hint: it can change at once). */
RK_FN int rk_ring_can_claim(RK_GLOBAL rk_ring_header *r, int scope) {
    rk_u64 p = rk_atomic_load_u64(&r->tail, RK_RELAXED, scope);
    rk_u64 seq = rk_atomic_load_u64(&rk_ring_slot(r, p)->sequence, RK_ACQUIRE, scope);
    rk_i64 dif = (rk_i64)(seq - p);
    /* Ahead: another producer took p, so the cursor moved -- unless the turn counter is corrupted. */
    return dif == 0 || (dif > 0 && rk_atomic_load_u64(&r->tail, RK_RELAXED, scope) != p);
}

/* ---- consumer side ------------------------------------------------------------------------------ */

/* Take the next ready message. Returns its slot (position in *pos) or RK_NULL when empty. */
RK_FN RK_GLOBAL rk_envelope *rk_ring_acquire(RK_GLOBAL rk_ring_header *r, rk_u64 *pos,
                                             int single_consumer, int scope) {
    rk_u64 p = rk_atomic_load_u64(&r->head, RK_RELAXED, scope);
    for (;;) {
        RK_GLOBAL rk_envelope *slot = rk_ring_slot(r, p);
        rk_u64 seq = rk_atomic_load_u64(&slot->sequence, RK_ACQUIRE, scope);
        rk_i64 dif = (rk_i64)(seq - (p + 1));
        if (dif == 0) {
            if (single_consumer) {
                rk_atomic_store_u64(&r->head, p + 1, RK_RELAXED, scope);
                *pos = p;
                return slot;
            }
            if (rk_atomic_cas_u64(&r->head, &p, p + 1, RK_RELAXED, RK_RELAXED, scope)) {
                *pos = p;
                return slot;
            }
        } else if (dif < 0) {
            return RK_NULL; /* nothing published at this position yet */
        } else {
            /* Another consumer took p (see rk_ring_claim): a cursor that has not moved means a corrupted
             * turn counter; report empty, never spin. */
            rk_u64 q = rk_atomic_load_u64(&r->head, RK_RELAXED, scope);
            if (q == p) return RK_NULL;
            p = q;
        }
    }
}

/* Give an acquired slot back to the producers of the next lap (the ring's capacity in hand). */
RK_FN void rk_ring_release_at(RK_GLOBAL rk_envelope *slot, rk_u64 pos, rk_u32 capacity, int scope) {
    rk_atomic_store_u64(&slot->sequence, pos + (rk_u64)capacity, RK_RELEASE, scope);
}

RK_FN void rk_ring_release(RK_GLOBAL rk_ring_header *r, RK_GLOBAL rk_envelope *slot, rk_u64 pos,
                           int scope) {
    rk_ring_release_at(slot, pos, r->capacity, scope);
}

/* Take up to `n` consecutive ready messages with one cursor update; release each afterwards. The
 * ring's geometry (mask, slot_stride) in hand, as for rk_ring_slot_at. */
RK_FN rk_u32 rk_ring_acquire_n_at(RK_GLOBAL rk_ring_header *r, rk_u32 mask, rk_u32 stride, rk_u32 n, rk_u64 *first,
                                  int single_consumer, int scope) {
    if (n == 0) return 0;
    rk_u64 p = rk_atomic_load_u64(&r->head, RK_RELAXED, scope);
    for (;;) {
        rk_u32 k = 0;
        rk_i64 dif = 0;
        while (k < n) {
            rk_u64 seq = rk_atomic_load_u64(&rk_ring_slot_at(r, p + k, mask, stride)->sequence, RK_ACQUIRE, scope);
            dif = (rk_i64)(seq - (p + k + 1));
            if (dif != 0) break;
            ++k;
        }
        if (k == 0) {
            if (dif < 0) return 0;
            rk_u64 q = rk_atomic_load_u64(&r->head, RK_RELAXED, scope);
            if (q == p) return 0; /* a corrupted turn counter (see rk_ring_acquire) */
            p = q;
            continue;
        }
        if (single_consumer) {
            rk_atomic_store_u64(&r->head, p + k, RK_RELAXED, scope);
            *first = p;
            return k;
        }
        if (rk_atomic_cas_u64(&r->head, &p, p + k, RK_RELAXED, RK_RELAXED, scope)) {
            *first = p;
            return k;
        }
    }
}

RK_FN rk_u32 rk_ring_acquire_n(RK_GLOBAL rk_ring_header *r, rk_u32 n, rk_u64 *first,
                               int single_consumer, int scope) {
    return rk_ring_acquire_n_at(r, r->mask, r->slot_stride, n, first, single_consumer, scope);
}

/* True when the next acquire would find a message (a hint). */
RK_FN int rk_ring_can_acquire(RK_GLOBAL rk_ring_header *r, int scope) {
    rk_u64 p = rk_atomic_load_u64(&r->head, RK_RELAXED, scope);
    rk_u64 seq = rk_atomic_load_u64(&rk_ring_slot(r, p)->sequence, RK_ACQUIRE, scope);
    rk_i64 dif = (rk_i64)(seq - (p + 1));
    /* Ahead: another consumer took p, so the cursor moved -- unless the turn counter is corrupted. */
    return dif == 0 || (dif > 0 && rk_atomic_load_u64(&r->head, RK_RELAXED, scope) != p);
}

/* Messages between the cursors, clamped to [0, capacity] (exact only when quiescent). */
RK_FN rk_u64 rk_ring_size(RK_GLOBAL rk_ring_header *r, int scope) {
    rk_u64 h = rk_atomic_load_u64(&r->head, RK_ACQUIRE, scope);
    rk_u64 t = rk_atomic_load_u64(&r->tail, RK_ACQUIRE, scope);
    if ((rk_i64)(t - h) <= 0) return 0;
    return (t - h) > r->capacity ? r->capacity : (t - h);
}

/* ---- whole messages ------------------------------------------------------------------------------ */

/* Copy the travelling part of an envelope (everything but the ring-owned sequence). */
RK_FN void rk_envelope_copy(RK_GLOBAL rk_envelope *dst, RK_GLOBAL const rk_envelope *src) {
#if defined(RK_TARGET_HOST)
    __builtin_memcpy(dst, src, RK_ENVELOPE_MESSAGE_BYTES);
#else
    dst->message_id = src->message_id;
    dst->correlation_id = src->correlation_id;
    dst->timestamp = src->timestamp;
    dst->enqueue_ns = src->enqueue_ns;
    dst->payload_size = src->payload_size;
    dst->type_id = src->type_id;
    dst->source_kernel = src->source_kernel;
    dst->priority = src->priority;
    dst->flags = src->flags;
    dst->reserved0 = src->reserved0;
    dst->reserved1 = src->reserved1;
    dst->reserved2 = src->reserved2;
#endif
}

RK_FN void rk_copy_bytes(RK_GLOBAL rk_u8 *dst, RK_GLOBAL const rk_u8 *src, rk_u32 n) {
#if defined(RK_TARGET_HOST)
    __builtin_memcpy(dst, src, n);
#else
    for (rk_u32 i = 0; i < n; ++i) dst[i] = src[i];
#endif
}

/* Copies between a ring slot (global memory: on a GPU host memory across PCIe, where every access is a
 * bus transaction) and a block's local memory, in the widest words both ends are aligned for: 16 bytes
 * on CUDA, 8 elsewhere, then bytes. RK_COPY_WORDS is the body; the address spaces differ per copy. */
#if defined(RK_TARGET_CUDA)
struct alignas(16) rk_u128 {
    rk_u64 lo, hi;
};
#define RK_COPY_WIDE(DST_AS, SRC_AS, d, s, i, n)                                                         \
    if (((((rk_uptr)(d)) | ((rk_uptr)(s))) & 15u) == 0u)                                               \
        for (; (i) + 16u <= (n); (i) += 16u)                                                           \
            *(DST_AS struct rk_u128 *)((d) + (i)) = *(SRC_AS const struct rk_u128 *)((s) + (i));
#else
#define RK_COPY_WIDE(DST_AS, SRC_AS, d, s, i, n)
#endif
#if defined(RK_TARGET_HOST)
#define RK_COPY_WORDS(DST_AS, SRC_AS, d, s, n) __builtin_memcpy((d), (s), (n))
#else
#define RK_COPY_WORDS(DST_AS, SRC_AS, d, s, n)                                                           \
    do {                                                                                               \
        rk_u32 i_ = 0;                                                                                 \
        RK_COPY_WIDE(DST_AS, SRC_AS, d, s, i_, n)                                                      \
        if (((((rk_uptr)(d)) | ((rk_uptr)(s))) & 7u) == 0u)                                            \
            for (; i_ + 8u <= (n); i_ += 8u) *(DST_AS rk_u64 *)((d) + i_) = *(SRC_AS const rk_u64 *)((s) + i_); \
        for (; i_ < (n); ++i_) (d)[i_] = (s)[i_];                                                      \
    } while (0)
#endif
#define RK_DEFINE_COPY(name, DST_AS, SRC_AS)                                                             \
    RK_FN void name(DST_AS rk_u8 *dst, SRC_AS const rk_u8 *src, rk_u32 n) { RK_COPY_WORDS(DST_AS, SRC_AS, dst, src, n); }
RK_DEFINE_COPY(rk_copy_to_local, RK_LOCAL, RK_GLOBAL)
RK_DEFINE_COPY(rk_copy_from_local, RK_GLOBAL, RK_LOCAL)

RK_FN void rk_zero_local(RK_LOCAL rk_u8 *dst, rk_u32 n) {
#if defined(RK_TARGET_HOST)
    __builtin_memset(dst, 0, n);
#else
    rk_u32 i = 0;
    if ((((rk_uptr)dst) & 7u) == 0u)
        for (; i + 8u <= n; i += 8u) *(RK_LOCAL rk_u64 *)(dst + i) = 0;
    for (; i < n; ++i) dst[i] = 0;
#endif
}

/* Push one message (envelope fields from *env, payload_size bytes from payload). Returns 1 when it
 * entered the ring, 0 when the ring is full or the payload exceeds the slot. */
RK_FN int rk_ring_try_push(RK_GLOBAL rk_ring_header *r, RK_GLOBAL const rk_envelope *env,
                           RK_GLOBAL const rk_u8 *payload, int single_producer, int scope) {
    if (env->payload_size > r->max_payload) return 0;
    rk_u64 pos;
    RK_GLOBAL rk_envelope *slot = rk_ring_claim(r, &pos, single_producer, scope);
    if (slot == RK_NULL) return 0;
    rk_envelope_copy(slot, env);
    rk_copy_bytes(rk_envelope_payload(slot), payload, env->payload_size);
    rk_ring_publish(slot, pos, scope);
    return 1;
}

/* Pop one message into *env and up to `cap` payload bytes. Returns 1 on success, 0 when empty. */
RK_FN int rk_ring_try_pop(RK_GLOBAL rk_ring_header *r, RK_GLOBAL rk_envelope *env,
                          RK_GLOBAL rk_u8 *payload, rk_u32 cap, int single_consumer, int scope) {
    rk_u64 pos;
    RK_GLOBAL rk_envelope *slot = rk_ring_acquire(r, &pos, single_consumer, scope);
    if (slot == RK_NULL) return 0;
    rk_envelope_copy(env, slot);
    /* Never past the slot, whatever payload_size claims (a corrupted envelope), nor past `cap`. */
    rk_u32 n = slot->payload_size < cap ? slot->payload_size : cap;
    if (n > r->max_payload) n = r->max_payload;
    rk_copy_bytes(payload, rk_envelope_payload(slot), n);
    rk_ring_release(r, slot, pos, scope);
    return 1;
}

#endif /* RK_RING_H */
