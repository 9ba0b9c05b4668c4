// fuzz_envelope — what the host does with envelopes it reads out of a ring (layout.h rk_envelope,
// rk_ring.h), when the slots hold whatever a producer on the other side wrote.
//
// A ring (an rk::Ring, or the ring behind a FIFO rk::Queue) is filled with well-formed messages at a
// fuzz-chosen position of its laps, then slots are overwritten from the input: payload_size (biased
// to the edges: 0, the record size, the slot's capacity, past it, 2^32-1), any travelling envelope
// bytes, payload bytes, and the ring-owned `sequence` turn counter. Then the input drives the host
// readers -- Ring::try_pop / try_pop_single / rk_ring_try_pop with a fuzz-chosen destination size,
// Queue::receive and Queue::receive_batch -- and more sends. Checked:
//   * nothing is read or written outside the ring allocation or the destination (ASan: every buffer
//     is exactly as large as the call is told), and nothing past the slot the message is in;
//   * a pop succeeds exactly when the slot at the consumer cursor is published for that position;
//     the envelope handed out is the slot's travelling part, the payload its first
//     min(payload_size, cap) bytes; the destination past that is untouched;
//   * the queue's accounting stays exact while sequences are intact.
//
// Known issues in csrc/ (see README.md, "Findings"), checked only when built with
// -DRK_FUZZ_STRICT=1 (cmake -DRK_FUZZ_STRICT=ON, run.sh --strict; one by one with -DRK_FUZZ_K<n>=0/1);
// otherwise the inputs that reach them are steered around so the rest is still fuzzed:
//   K1  rk_ring_try_pop copies min(payload_size, cap) bytes without bounding them by the slot
//       (r->max_payload): a malformed payload_size reads past the slot, past the allocation for the
//       last slot.
//   K2  a consumer that forwards a popped envelope as it is (the OpenCL backend's deliver(): pop into
//       output_size bytes, rk_ring_try_push(route, &env, payload)) copies env.payload_size bytes out
//       of a smaller buffer. op_forward() below is that consumer: keep it in step with deliver().
//   K3  a `sequence` ahead of the cursor (a corrupted slot) makes acquire/claim spin forever, whatever
//       the caller's timeout. Strict: the call is made, and libFuzzer's -timeout reports the hang.
//   K4  Queue::receive hands out an envelope whose `sequence` was never written (stack bytes); the
//       batch form zeroes it.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "ringkernel/errors.hpp"
#include "ringkernel/queue.hpp"
#include "ringkernel/ring.hpp"
#include "rk_ring.h"

#ifndef RK_FUZZ_STRICT
#define RK_FUZZ_STRICT 0
#endif
// Each known issue on its own (all follow RK_FUZZ_STRICT unless set), e.g. -DRK_FUZZ_K3=0.
#ifndef RK_FUZZ_K1
#define RK_FUZZ_K1 RK_FUZZ_STRICT
#endif
#ifndef RK_FUZZ_K2
#define RK_FUZZ_K2 RK_FUZZ_STRICT
#endif
#ifndef RK_FUZZ_K3
#define RK_FUZZ_K3 RK_FUZZ_STRICT
#endif
#ifndef RK_FUZZ_K4
#define RK_FUZZ_K4 RK_FUZZ_STRICT
#endif

namespace {

[[noreturn]] void fail(const char *what, unsigned long long a = 0, unsigned long long b = 0) {
    std::fprintf(stderr, "fuzz_envelope: FAILED: %s (%llu vs %llu)\n", what, a, b);
    std::abort();
}
#define CHECK(cond, ...)                                                                            \
    do {                                                                                            \
        if (!(cond)) fail(#cond, ##__VA_ARGS__);                                                    \
    } while (0)

constexpr std::uint8_t kSentinel = 0xA5;

struct Fixture {
    std::unique_ptr<rk::Queue> queue;  // queue mode: the ring is the queue's
    std::unique_ptr<rk::Ring> own;     // ring mode
    rk::Ring *ring = nullptr;
    rk_ring_header *hdr = nullptr;
    std::uint32_t rec = 0;             // the record size the ring was made for
    bool seq_touched = false;          // a sequence was overwritten: the cursors no longer account
    std::uint64_t serial = 1;

    std::uint64_t head() const { return __atomic_load_n(&hdr->head, __ATOMIC_ACQUIRE); }
    std::uint64_t tail() const { return __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE); }
    rk_envelope *slot(std::uint64_t pos) { return rk_ring_slot(hdr, pos); }
    std::uint8_t *slot_end(std::uint64_t pos) { return reinterpret_cast<std::uint8_t *>(slot(pos)) + hdr->slot_stride; }
    std::int64_t ahead(std::uint64_t pos, std::uint64_t want) { return static_cast<std::int64_t>(slot(pos)->sequence - want); }

    // K3: rk_ring_acquire/claim spin while the slot's turn is ahead of the cursor, which never ends
    // in one thread. Returns whether to make the call: not unless strict.
    bool acquire_terminates() {
        if (ahead(head(), head() + 1) <= 0) return true;
        return RK_FUZZ_K3;  // strict: call it, and let libFuzzer's -timeout report the hang
    }
    bool claim_terminates() {
        if (ahead(tail(), tail()) <= 0) return true;
        return RK_FUZZ_K3;
    }

    void fill_record(std::uint8_t *dst, std::uint32_t n) {
        for (std::uint32_t k = 0; k < n; ++k) dst[k] = static_cast<std::uint8_t>(serial * 29u + k);
        ++serial;
    }

    // A well-formed message through the public producer API.
    bool push_legit() {
        if (!claim_terminates()) return false;
        std::vector<std::uint8_t> payload(rec);
        fill_record(payload.data(), rec);
        if (queue) {
            try {
                return queue->send(payload.data(), {}, rk::Wait::none());
            } catch (const rk::LifecycleError &) {
                fail("queue closed unexpectedly");
            }
        }
        rk_envelope env{};
        env.message_id = serial;
        env.correlation_id = serial ^ 0xFFFF;
        env.payload_size = rec;
        env.type_id = 7;
        return ring->try_push(env, payload.data());
    }

    void check_accounting() {
        if (!queue || seq_touched) return;
        const rk::QueueStats s = queue->stats();
        CHECK(s.sent == s.received + queue->size() + s.dropped + s.expired, s.sent, s.received + queue->size());
        CHECK(queue->size() == tail() - head(), queue->size(), tail() - head());
    }
};

std::uint32_t interesting_size(FuzzedDataProvider &in, const rk_ring_header *h, std::uint32_t rec) {
    switch (in.ConsumeIntegralInRange<unsigned>(0, 11)) {
    case 0: return 0;
    case 1: return rec - 1;
    case 2: return rec;
    case 3: return rec + 1;
    case 4: return h->max_payload;
    case 5: return h->max_payload + 1;
    case 6: return h->slot_stride;
    case 7: return h->slot_stride * 2 + 1;
    case 8: return 65536;
    case 9: return 0x7FFFFFFFu;
    case 10: return 0xFFFFFFFFu;
    default: return in.ConsumeIntegral<std::uint32_t>();
    }
}

void corrupt(Fixture &f, FuzzedDataProvider &in) {
    const std::uint64_t pos = f.head() + in.ConsumeIntegralInRange<std::uint32_t>(0, f.hdr->capacity - 1);
    rk_envelope *s = f.slot(pos);
    switch (in.ConsumeIntegralInRange<unsigned>(0, 4)) {
    case 0:
    case 1: s->payload_size = interesting_size(in, f.hdr, f.rec); break;
    case 2: {  // any of the travelling bytes
        const std::vector<std::uint8_t> b = in.ConsumeBytes<std::uint8_t>(RK_ENVELOPE_MESSAGE_BYTES);
        if (!b.empty()) std::memcpy(s, b.data(), b.size());
        break;
    }
    case 3: {  // payload bytes
        const std::uint32_t at = in.ConsumeIntegralInRange<std::uint32_t>(0, f.hdr->max_payload - 1);
        const std::vector<std::uint8_t> b = in.ConsumeBytes<std::uint8_t>(f.hdr->max_payload - at);
        if (!b.empty()) std::memcpy(rk_envelope_payload(s) + at, b.data(), b.size());
        break;
    }
    case 4: {  // the turn counter: near the protocol's values, or anything
        const std::int64_t cap = f.hdr->capacity;
        const std::uint64_t v = in.ConsumeBool() ? pos + static_cast<std::uint64_t>(in.ConsumeIntegralInRange<std::int64_t>(-cap - 2, cap + 2))
                                                 : in.ConsumeIntegral<std::uint64_t>();
        __atomic_store_n(&s->sequence, v, __ATOMIC_RELEASE);
        f.seq_touched = true;
        break;
    }
    }
}

// One pop through rk_ring_try_pop (the Ring methods are thin wrappers over it).
void op_pop(Fixture &f, FuzzedDataProvider &in) {
    if (!f.acquire_terminates()) return;
    std::uint32_t cap;
    switch (in.ConsumeIntegralInRange<unsigned>(0, 3)) {
    case 0: cap = f.rec; break;
    case 1: cap = f.hdr->max_payload; break;
    case 2: cap = 0; break;
    default: cap = in.ConsumeIntegralInRange<std::uint32_t>(0, 2 * f.hdr->slot_stride); break;
    }
    const unsigned how = in.ConsumeIntegralInRange<unsigned>(0, 2);
    const std::uint64_t p = f.head();
    rk_envelope *s = f.slot(p);
    const bool ready = s->sequence == p + 1;
    // What the slot holds now: the envelope and the bytes from the payload to the end of the slot.
    std::vector<std::uint8_t> before(reinterpret_cast<std::uint8_t *>(s), f.slot_end(p));
    const std::uint32_t size_field = s->payload_size;
    const std::uint32_t n = size_field < cap ? size_field : cap;
    if (ready && n > f.hdr->max_payload && !RK_FUZZ_K1) return;  // K1
    std::vector<std::uint8_t> buf(cap, kSentinel);  // exactly cap bytes: ASan guards the rest
    rk_envelope env;
    std::memset(&env, 0xEE, sizeof env);
    bool got;
    std::uint8_t *dst = cap ? buf.data() : nullptr;
    if (how == 0)
        got = f.ring->try_pop(env, dst, cap);
    else if (how == 1)
        got = f.ring->try_pop_single(env, dst, cap);
    else
        got = rk_ring_try_pop(f.hdr, &env, dst, cap, 0, RK_SCOPE_SYSTEM);
    CHECK(got == ready, got, ready);
    if (!got) {
        CHECK(f.head() == p, f.head(), p);
        for (std::uint32_t k = 0; k < cap; ++k) CHECK(buf[k] == kSentinel, k, buf[k]);
        return;
    }
    CHECK(f.head() == p + 1, f.head(), p + 1);
    CHECK(std::memcmp(&env, before.data(), RK_ENVELOPE_MESSAGE_BYTES) == 0);
    for (std::uint32_t k = 0; k < cap; ++k) {
        if (k >= f.hdr->max_payload) {
            if (buf[k] != kSentinel) fail("K1: rk_ring_try_pop copied bytes from past the end of the slot", k, f.hdr->max_payload);
        } else if (k < n)
            CHECK(buf[k] == before[sizeof(rk_envelope) + k], k, buf[k]);
        else
            CHECK(buf[k] == kSentinel, k, buf[k]);
    }
    CHECK(s->sequence == p + f.hdr->capacity, s->sequence, p + f.hdr->capacity);
}

// K2: the OpenCL backend's reply delivery -- pop into an output_size buffer, push the envelope as it
// came to the route's ring (which may take larger payloads than the record: a wider slot).
void op_forward(Fixture &f, FuzzedDataProvider &in, rk::Ring &route) {
    if (!f.acquire_terminates()) return;
    const std::uint64_t p = f.head();
    const rk_envelope *s = f.slot(p);
    const bool ready = s->sequence == p + 1;
    const std::uint32_t size_field = s->payload_size;
    if (ready && (size_field < f.rec ? size_field : f.rec) > f.hdr->max_payload && !RK_FUZZ_K1) return;  // K1
    if (ready && size_field > f.rec && size_field <= route.max_payload() && !RK_FUZZ_K2) return;  // K2
    std::vector<std::uint8_t> payload(f.rec);
    rk_envelope env;
    if (!rk_ring_try_pop(f.hdr, &env, payload.data(), f.rec, 1, RK_SCOPE_SYSTEM)) return;
    if (env.payload_size != f.rec) return;  // deliver() drops (and counts) a reply that is not one record
    const bool pushed = rk_ring_try_push(route.header(), &env, payload.data(), 0, RK_SCOPE_SYSTEM);
    if (pushed) {  // keep the route ring from filling up
        rk_envelope back;
        std::vector<std::uint8_t> out(route.max_payload());
        CHECK(route.try_pop(back, out.data(), route.max_payload()));
        CHECK(back.payload_size == env.payload_size);
    }
    (void)in;
}

void op_receive(Fixture &f, FuzzedDataProvider &in) {
    if (!f.acquire_terminates()) return;
    const bool with_env = in.ConsumeBool();
    const std::uint64_t p = f.head();
    rk_envelope *s = f.slot(p);
    const bool ready = s->sequence == p + 1;
    std::vector<std::uint8_t> before(reinterpret_cast<std::uint8_t *>(s), f.slot_end(p));
    const std::uint32_t size_field = s->payload_size;
    const std::uint32_t n = size_field < f.rec ? size_field : f.rec;
    std::vector<std::uint8_t> rec(f.rec, kSentinel);
    rk_envelope env;
    std::memset(&env, 0xEE, sizeof env);
    const bool got = f.queue->receive(rec.data(), with_env ? &env : nullptr, rk::Wait::none());
    CHECK(got == ready, got, ready);
    if (!got) return;
    for (std::uint32_t k = 0; k < f.rec; ++k) {
        if (k < n)
            CHECK(rec[k] == before[sizeof(rk_envelope) + k], k, rec[k]);
        else  // a short payload_size leaves the rest of the record as it was
            CHECK(rec[k] == kSentinel, k, rec[k]);
    }
    if (with_env) {
        CHECK(std::memcmp(&env, before.data(), RK_ENVELOPE_MESSAGE_BYTES) == 0);
        if (RK_FUZZ_K4 && env.sequence != 0) fail("K4: Queue::receive hands out an unwritten envelope sequence", env.sequence, 0);
    }
}

void op_receive_batch(Fixture &f, FuzzedDataProvider &in) {
    if (!f.acquire_terminates()) return;
    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(1, f.hdr->capacity + 2);
    const std::size_t stride = f.rec + in.ConsumeIntegralInRange<std::size_t>(0, 5);
    const bool with_env = in.ConsumeBool();
    // The run the batch will take: consecutive slots published for their positions.
    const std::uint64_t p = f.head();
    std::size_t ready = 0;
    std::vector<std::vector<std::uint8_t>> before;
    while (ready < n && f.slot(p + ready)->sequence == p + ready + 1) {
        before.emplace_back(reinterpret_cast<std::uint8_t *>(f.slot(p + ready)), f.slot_end(p + ready));
        ++ready;
    }
    // Short of n, it asks again at the first slot that was not ready (K3 there too).
    if (ready < n && f.ahead(p + ready, p + ready + 1) > 0 && !RK_FUZZ_K3) return;
    std::vector<std::uint8_t> buf((n - 1) * stride + f.rec, kSentinel);
    std::vector<rk_envelope> envs(with_env ? n : 0);
    const std::size_t got = f.queue->receive_batch(buf.data(), n, stride, with_env ? envs.data() : nullptr, rk::Wait::none());
    CHECK(got == ready, got, ready);
    for (std::size_t i = 0; i < buf.size(); ++i) {
        const std::size_t r = i / stride, at = i % stride;
        if (r < got && at < f.rec)  // the whole record, whatever payload_size says
            CHECK(buf[i] == before[r][sizeof(rk_envelope) + at], i, buf[i]);
        else
            CHECK(buf[i] == kSentinel, i, buf[i]);
    }
    for (std::size_t r = 0; r < got && with_env; ++r) {
        CHECK(std::memcmp(&envs[r], before[r].data(), RK_ENVELOPE_MESSAGE_BYTES) == 0, r);
        CHECK(envs[r].sequence == 0, envs[r].sequence);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    Fixture f;
    const bool queue_mode = in.ConsumeBool();
    const std::uint32_t capacity = 16u << in.ConsumeIntegralInRange<unsigned>(0, 2);
    f.rec = in.ConsumeIntegralInRange<std::uint32_t>(1, 300);
    if (queue_mode) {
        rk::QueueConfig c;
        c.capacity = capacity;
        c.payload_size = f.rec;
        c.backpressure = in.ConsumeBool() ? rk::Backpressure::Reject : rk::Backpressure::DropNew;
        c.single_consumer = in.ConsumeBool();
        f.queue = std::make_unique<rk::Queue>(c);
        f.ring = f.queue->ring();
    } else {
        f.own = std::make_unique<rk::Ring>(capacity, f.rec, in.ConsumeBool() ? RK_RING_FLAG_SINGLE_CONSUMER : 0u);
        f.ring = f.own.get();
    }
    f.hdr = f.ring->header();
    CHECK(f.hdr->max_payload >= f.rec && f.hdr->slot_stride == f.hdr->max_payload + sizeof(rk_envelope));
    rk::Ring route(16, 4096);

    // Rotate the cursors to a fuzz-chosen position of the laps, then fill.
    const std::uint32_t rotate = in.ConsumeIntegralInRange<std::uint32_t>(0, 2 * capacity);
    std::vector<std::uint8_t> sink(f.hdr->max_payload);
    for (std::uint32_t i = 0; i < rotate; ++i) {
        CHECK(f.push_legit());
        rk_envelope e;
        CHECK(f.ring->try_pop(e, sink.data(), f.hdr->max_payload));
    }
    const std::uint32_t fill = in.ConsumeIntegralInRange<std::uint32_t>(0, capacity);
    for (std::uint32_t i = 0; i < fill; ++i) CHECK(f.push_legit());
    f.check_accounting();

    const unsigned corruptions = in.ConsumeIntegralInRange<unsigned>(0, 6);
    for (unsigned i = 0; i < corruptions; ++i) corrupt(f, in);

    for (int step = 0; step < 256 && in.remaining_bytes() > 0; ++step) {
        switch (in.ConsumeIntegralInRange<unsigned>(0, 7)) {
        case 0: case 1: case 2:
            if (f.queue) op_receive(f, in);
            else op_pop(f, in);
            break;
        case 3: case 4:
            if (f.queue) op_receive_batch(f, in);
            else op_pop(f, in);
            break;
        case 5: f.push_legit(); break;
        case 6: op_forward(f, in, route); break;
        case 7: corrupt(f, in); break;
        }
        f.check_accounting();
    }
    return 0;
}
