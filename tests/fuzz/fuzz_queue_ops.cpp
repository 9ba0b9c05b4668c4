// fuzz_queue_ops — differential fuzzing of rk::Queue (DESIGN §4) against a reference model.
//
// The input picks a queue configuration (capacity 16..256, backpressure, dedup window 0 or 16..64,
// priority on/off, record size, single producer/consumer promises; TTL off so the model is
// deterministic), then a sequence of operations on that one queue from one thread: send, try_send,
// receive, send_batch, receive_batch, wait_readable, close. After every operation the queue must agree
// with a plain model -- a list of messages in the order they entered, a window of the last W accepted
// ids -- on:
//   * every return value (send: true exactly when the message entered; try_send's Accepted / Refused /
//     Full; how many a batch moved) and every exception (priority on a FIFO queue, sends after close);
//   * what receive hands out: the record bytes, FIFO order (higher priority first, FIFO among equals),
//     the envelope (id, correlation, priority, flags, type, source, size; automatic ids unique and
//     increasing in send order; HLC stamps increasing per send event, one stamp per ring-path batch);
//   * QueueStats field by field (so sent == received + size + dropped + expired, with rejected,
//     duplicates and timed_out apart) and size().
// Buffers are exactly as large as the API needs, so ASan sees any access past them; the gaps between
// strided records must come back untouched.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringkernel/errors.hpp"
#include "ringkernel/queue.hpp"

namespace {

[[noreturn]] void fail(const char *what, unsigned long long a = 0, unsigned long long b = 0) {
    std::fprintf(stderr, "fuzz_queue_ops: MISMATCH: %s (%llu vs %llu)\n", what, a, b);
    std::abort();
}
#define CHECK(cond, ...)                                                                            \
    do {                                                                                            \
        if (!(cond)) fail(#cond, ##__VA_ARGS__);                                                    \
    } while (0)

constexpr std::uint64_t kAutoBit = 1ull << 63;  // automatic ids live at and above 2^63 (ids.hpp)
constexpr std::uint8_t kGap = 0xA5;             // filler between strided records

std::uint8_t pattern(std::uint64_t serial, std::size_t k) {
    return static_cast<std::uint8_t>((serial * 131u + k * 7u) ^ 0x5Au);
}
void make_record(std::uint8_t *dst, std::uint64_t serial, std::uint32_t size) {
    std::memcpy(dst, &serial, 8);
    for (std::uint32_t k = 8; k < size; ++k) dst[k] = pattern(serial, k);
}

struct Msg {
    std::uint64_t serial;      // payload identity, also the send order
    std::uint64_t id;          // explicit id (when !auto_id)
    bool auto_id;
    std::uint64_t corr;
    std::uint8_t prio;
    std::uint8_t flags;
    std::uint64_t event;       // send event: one clock read / one HLC stamp
    std::uint64_t batch = 0;   // ring-path batch with automatic ids: consecutive ids
    std::uint64_t batch_index = 0;
};

enum class Out { Accepted, Refused, Full };

struct Model {
    rk::QueueConfig cfg;
    std::vector<Msg> items;               // in the order they entered
    std::deque<std::uint64_t> window;     // last W accepted ids
    std::uint32_t w = 0;
    rk::QueueStats st;
    bool closed = false;
    std::string reason;

    bool dup(std::uint64_t id) const {
        for (std::uint64_t x : window)
            if (x == id) return true;
        return false;
    }
    void accept(const Msg &m) {
        items.push_back(m);
        st.sent++;
        if (w) {
            // An automatic id never repeats and never equals an explicit one (< 2^63): a unique token.
            window.push_back(m.auto_id ? (kAutoBit | m.serial) : m.id);
            if (window.size() > w) window.pop_front();
        }
    }
    // send_one(): the outcome of one message, counting as the queue does. probe: try_send.
    Out send(const Msg &m, bool probe) {
        if (w && !m.auto_id && dup(m.id)) {
            st.duplicates++;
            return Out::Refused;
        }
        if (items.size() < cfg.capacity) {
            accept(m);
            return Out::Accepted;
        }
        switch (cfg.backpressure) {
        case rk::Backpressure::Reject: st.rejected++; return Out::Refused;
        case rk::Backpressure::DropNew:
            st.sent++;
            st.dropped++;
            return Out::Refused;
        case rk::Backpressure::DropOldest:
            items.erase(items.begin());
            st.dropped++;
            accept(m);
            return Out::Accepted;
        case rk::Backpressure::Block:
            if (probe) return Out::Full;
            st.timed_out++;
            return Out::Refused;
        }
        fail("bad backpressure");
    }
    bool pop(Msg &out) {
        if (items.empty()) return false;
        std::size_t best = 0;
        if (cfg.priority)
            for (std::size_t i = 1; i < items.size(); ++i)
                if (items[i].prio > items[best].prio) best = i;
        out = items[best];
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(best));
        st.received++;
        return true;
    }
};

struct Harness {
    Model m;
    rk::Queue *q = nullptr;
    std::uint64_t next_serial = 1, next_event = 1, next_batch = 1;
    std::map<std::uint64_t, std::uint64_t> auto_ids;  // serial -> automatic id seen at receive
    std::map<std::uint64_t, std::uint64_t> stamps;    // event -> HLC stamp seen at receive
    std::map<std::uint64_t, std::uint64_t> batch_base; // batch -> id of its index 0

    void check_stats() {
        const rk::QueueStats s = q->stats();
        CHECK(s.sent == m.st.sent, s.sent, m.st.sent);
        CHECK(s.received == m.st.received, s.received, m.st.received);
        CHECK(s.rejected == m.st.rejected, s.rejected, m.st.rejected);
        CHECK(s.dropped == m.st.dropped, s.dropped, m.st.dropped);
        CHECK(s.duplicates == m.st.duplicates, s.duplicates, m.st.duplicates);
        CHECK(s.expired == 0, s.expired, 0);
        CHECK(s.timed_out == m.st.timed_out, s.timed_out, m.st.timed_out);
        CHECK(q->size() == m.items.size(), q->size(), m.items.size());
        CHECK(s.sent == s.received + q->size() + s.dropped + s.expired, s.sent, s.received + q->size() + s.dropped);
        CHECK(q->closed() == m.closed);
    }

    // Insert key -> value into a map whose values must strictly increase with the key (equal keys: equal values).
    static void check_monotonic(std::map<std::uint64_t, std::uint64_t> &map, std::uint64_t key, std::uint64_t value,
                                const char *what) {
        auto it = map.find(key);
        if (it != map.end()) {
            if (it->second != value) fail(what, it->second, value);
            return;
        }
        it = map.emplace(key, value).first;
        if (it != map.begin() && std::prev(it)->second >= value) fail(what, std::prev(it)->second, value);
        if (std::next(it) != map.end() && std::next(it)->second <= value) fail(what, value, std::next(it)->second);
    }

    void check_received(const Msg &e, const std::uint8_t *rec, const rk_envelope *env) {
        std::uint64_t serial;
        std::memcpy(&serial, rec, 8);
        CHECK(serial == e.serial, serial, e.serial);
        for (std::uint32_t k = 8; k < m.cfg.payload_size; ++k) CHECK(rec[k] == pattern(serial, k), k, rec[k]);
        if (!env) return;
        if (e.auto_id) {
            CHECK(env->message_id >= kAutoBit, env->message_id, kAutoBit);
            check_monotonic(auto_ids, e.serial, env->message_id, "automatic ids increase in send order");
            if (e.batch) {
                auto it = batch_base.emplace(e.batch, env->message_id - e.batch_index).first;
                CHECK(it->second + e.batch_index == env->message_id, it->second + e.batch_index, env->message_id);
            }
        } else {
            CHECK(env->message_id == e.id, env->message_id, e.id);
        }
        CHECK(env->correlation_id == e.corr, env->correlation_id, e.corr);
        CHECK(env->priority == e.prio, env->priority, e.prio);
        CHECK(env->flags == e.flags, env->flags, e.flags);
        CHECK(env->payload_size == m.cfg.payload_size, env->payload_size, m.cfg.payload_size);
        CHECK(env->type_id == m.cfg.type_id, env->type_id, m.cfg.type_id);
        CHECK(env->source_kernel == m.cfg.source, env->source_kernel, m.cfg.source);
        CHECK(env->reserved0 == 0 && env->reserved1 == 0 && env->reserved2 == 0);
        check_monotonic(stamps, e.event, env->timestamp, "HLC stamps increase per send event");
    }

    Msg draw_msg(FuzzedDataProvider &in, bool *bad_prio) {
        Msg e{};
        e.serial = next_serial++;
        e.event = next_event++;
        const std::uint8_t how = in.ConsumeIntegral<std::uint8_t>();
        e.auto_id = (how & 3) == 0;
        if (!e.auto_id)
            e.id = (how & 3) == 3 ? (in.ConsumeIntegral<std::uint64_t>() & ~kAutoBit) : (how >> 2) % 48;
        e.corr = e.serial * 3;
        e.flags = static_cast<std::uint8_t>(how ^ 0x3C);
        const std::uint8_t p = in.ConsumeIntegral<std::uint8_t>();
        if (m.cfg.priority)
            e.prio = static_cast<std::uint8_t>(p % 5 == 0 ? p : p % 4);  // few levels: ties are common
        else
            e.prio = static_cast<std::uint8_t>(p % 16 == 15 ? 1 + p / 16 : 0);  // sometimes refused
        *bad_prio = e.prio != 0 && !m.cfg.priority;
        return e;
    }

    rk::SendOptions opts_of(const Msg &e) {
        rk::SendOptions o;
        o.has_id = !e.auto_id;
        o.id = e.id;
        o.correlation_id = e.corr;
        o.priority = e.prio;
        o.flags = e.flags;
        return o;
    }

    // Run `call`; it must throw exactly what the model expects (nothing, invalid_argument or
    // LifecycleError with the close reason). Returns true when it did not throw.
    template <class F>
    bool expect_throw(bool bad_prio, F &&call) {
        try {
            call();
        } catch (const rk::LifecycleError &err) {
            CHECK(!bad_prio && m.closed);
            CHECK(m.reason == err.what());
            return false;
        } catch (const std::invalid_argument &) {
            CHECK(bad_prio);
            return false;
        }
        CHECK(!bad_prio && !m.closed);
        return true;
    }

    void op_send(FuzzedDataProvider &in, bool probe) {
        bool bad_prio;
        Msg e = draw_msg(in, &bad_prio);
        std::vector<std::uint8_t> rec(m.cfg.payload_size);
        make_record(rec.data(), e.serial, m.cfg.payload_size);
        const rk::SendOptions o = opts_of(e);
        if (probe) {
            rk::Queue::Attempt got = rk::Queue::Attempt::Refused;
            if (!expect_throw(bad_prio, [&] { got = q->try_send(rec.data(), o); })) return;
            const Out want = m.send(e, true);
            const rk::Queue::Attempt w = want == Out::Accepted ? rk::Queue::Attempt::Accepted
                                         : want == Out::Full   ? rk::Queue::Attempt::Full
                                                               : rk::Queue::Attempt::Refused;
            CHECK(got == w, static_cast<unsigned>(got), static_cast<unsigned>(w));
        } else {
            bool got = false;
            if (!expect_throw(bad_prio, [&] { got = q->send(rec.data(), o, rk::Wait::none()); })) return;
            const bool want = m.send(e, false) == Out::Accepted;
            CHECK(got == want, got, want);
        }
    }

    void op_receive(FuzzedDataProvider &in) {
        const bool with_env = in.ConsumeBool();
        std::vector<std::uint8_t> rec(m.cfg.payload_size, kGap);
        rk_envelope env;
        std::memset(&env, 0xEE, sizeof env);
        const bool got = q->receive(rec.data(), with_env ? &env : nullptr, rk::Wait::none());
        Msg e;
        const bool want = m.pop(e);
        CHECK(got == want, got, want);
        if (got) check_received(e, rec.data(), with_env ? &env : nullptr);
    }

    void op_send_batch(FuzzedDataProvider &in) {
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 2 * m.cfg.capacity + 3);
        const std::size_t stride = m.cfg.payload_size + in.ConsumeIntegralInRange<std::size_t>(0, 9);
        const std::uint8_t how = in.ConsumeIntegral<std::uint8_t>();
        const bool with_ids = how & 1;
        std::uint8_t prio = 0;
        if (m.cfg.priority)
            prio = static_cast<std::uint8_t>((how >> 1) % 4);
        else if ((how >> 1) % 16 == 15)
            prio = 7;  // refused on a FIFO queue
        const bool bad_prio = prio != 0 && !m.cfg.priority;
        const bool ring_path = !m.cfg.priority && m.cfg.dedup_window == 0;
        // Exactly the bytes the call may read: n - 1 strides and one record.
        std::vector<std::uint8_t> buf(n ? (n - 1) * stride + m.cfg.payload_size : 0, kGap);
        std::vector<std::uint64_t> ids(n);
        std::vector<Msg> msgs(n);
        const std::uint64_t batch = next_batch++;
        std::uint64_t event = ring_path ? next_event++ : 0;
        for (std::size_t i = 0; i < n; ++i) {
            Msg &e = msgs[i];
            e.serial = next_serial++;
            e.auto_id = !with_ids;
            e.id = with_ids ? in.ConsumeIntegralInRange<std::uint64_t>(0, 40) : 0;
            ids[i] = e.id;
            e.corr = 0;
            e.flags = 0;
            e.prio = prio;
            e.event = ring_path ? event : next_event++;
            if (ring_path && !with_ids) {
                e.batch = batch;
                e.batch_index = i;
            }
            make_record(buf.data() + i * stride, e.serial, m.cfg.payload_size);
        }
        std::size_t got = 0;
        if (!expect_throw(bad_prio, [&] {
                got = q->send_batch(n ? buf.data() : nullptr, n, stride, with_ids ? ids.data() : nullptr, prio,
                                    rk::Wait::none());
            }))
            return;
        std::size_t want = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t timed_out_before = m.st.timed_out;
            if (m.send(msgs[i], false) == Out::Accepted) {
                ++want;
            } else if (m.st.timed_out != timed_out_before) {
                m.st.timed_out += n - i - 1;  // the deadline passed: the rest of the batch times out with it
                break;
            }
        }
        CHECK(got == want, got, want);
    }

    void op_receive_batch(FuzzedDataProvider &in) {
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 2 * m.cfg.capacity + 3);
        const std::size_t stride = m.cfg.payload_size + in.ConsumeIntegralInRange<std::size_t>(0, 9);
        const bool with_env = in.ConsumeBool();
        std::vector<std::uint8_t> buf(n ? (n - 1) * stride + m.cfg.payload_size : 0, kGap);
        std::vector<rk_envelope> envs(with_env ? n : 0);
        if (with_env && n) std::memset(envs.data(), 0xEE, n * sizeof(rk_envelope));
        const std::size_t got = q->receive_batch(n ? buf.data() : nullptr, n, stride, with_env ? envs.data() : nullptr,
                                                 rk::Wait::none());
        std::size_t want = 0;
        Msg e;
        while (want < n && m.pop(e)) {
            CHECK(want < got, want, got);
            check_received(e, buf.data() + want * stride, with_env ? &envs[want] : nullptr);
            if (with_env) CHECK(envs[want].sequence == 0, envs[want].sequence, 0);
            ++want;
        }
        CHECK(got == want, got, want);
        // Gaps between records and everything past the last one written are untouched.
        for (std::size_t i = 0; i < buf.size(); ++i) {
            const std::size_t rec = i / stride, at = i % stride;
            if (rec < got && at < m.cfg.payload_size) continue;
            CHECK(buf[i] == kGap, i, buf[i]);
        }
        for (std::size_t i = got; i < envs.size(); ++i) CHECK(envs[i].message_id == 0xEEEEEEEEEEEEEEEEull, i, got);
    }

    void op_close(FuzzedDataProvider &in) {
        const std::string reason = "closed by the fuzzer #" + std::to_string(in.ConsumeIntegral<std::uint8_t>());
        q->close(reason);
        if (!m.closed) {
            m.closed = true;
            m.reason = reason;  // idempotent: the first reason stays
        }
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    Harness h;
    rk::QueueConfig &c = h.m.cfg;
    c.capacity = 16u << in.ConsumeIntegralInRange<unsigned>(0, 4);
    c.backpressure = static_cast<rk::Backpressure>(in.ConsumeIntegralInRange<unsigned>(0, 3));
    const std::uint8_t dedup = in.ConsumeIntegral<std::uint8_t>();
    c.dedup_window = (dedup & 1) ? 16 + (dedup >> 1) % 49 : 0;
    const std::uint8_t flags = in.ConsumeIntegral<std::uint8_t>();
    c.priority = flags & 1;
    c.single_producer = flags & 2;
    c.single_consumer = flags & 4;
    c.payload_size = 8 + in.ConsumeIntegralInRange<std::uint32_t>(0, 56);  // 8..64 bytes: room for the serial
    c.type_id = static_cast<std::uint16_t>(0x100 + dedup);
    c.source = static_cast<std::uint16_t>(flags);
    c.ttl_ns = 0;

    const bool invalid = c.backpressure == rk::Backpressure::DropOldest && c.single_consumer && !c.priority;
    std::unique_ptr<rk::Queue> q;
    try {
        q = std::make_unique<rk::Queue>(c);
    } catch (const std::invalid_argument &) {
        CHECK(invalid);
        return 0;
    }
    CHECK(!invalid);
    CHECK(q->capacity() == c.capacity);
    c.dedup_window = c.dedup_window < c.capacity ? c.dedup_window : c.capacity;  // clamped
    CHECK(q->config().dedup_window == c.dedup_window, q->config().dedup_window, c.dedup_window);
    h.m.w = c.dedup_window;
    h.q = q.get();

    for (int step = 0; step < 4096 && in.remaining_bytes() > 0; ++step) {
        switch (in.ConsumeIntegralInRange<unsigned>(0, 15)) {
        case 0: case 1: case 2: case 3: h.op_send(in, false); break;
        case 4: case 5: h.op_send(in, true); break;
        case 6: case 7: case 8: h.op_receive(in); break;
        case 9: case 10: h.op_send_batch(in); break;
        case 11: case 12: h.op_receive_batch(in); break;
        case 13: CHECK(q->wait_readable(rk::Wait::none()) == !h.m.items.empty()); break;
        case 14: if (in.ConsumeIntegralInRange<unsigned>(0, 7) == 0) h.op_close(in); break;
        case 15: break;  // stats only
        }
        h.check_stats();
    }
    // Drain: whatever is left comes out in model order, closed or not.
    std::vector<std::uint8_t> rec(c.payload_size);
    rk_envelope env;
    Msg e;
    while (h.m.pop(e)) {
        CHECK(q->receive(rec.data(), &env, rk::Wait::none()));
        h.check_received(e, rec.data(), &env);
    }
    CHECK(!q->receive(rec.data(), &env, rk::Wait::none()));
    h.check_stats();
    return 0;
}
