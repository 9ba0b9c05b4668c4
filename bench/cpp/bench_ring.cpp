// bench_ring.cpp — what a message costs on our ring and queue, next to established lock-free queues.
//
// Names are <question>/<queue>; each question is stated above its benchmark. Every figure counts
// messages in items_processed, so ns per message is 1e9 / items_per_second. All queues hold 4096
// 64-byte messages (adapters.hpp). The threaded questions spawn their threads per iteration, pin
// them round-robin over the allowed CPUs and time only the transfer. With fewer CPUs than threads
// (2x2 on two cores) they oversubscribe; the output's context records allowed_cpus.
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "adapters.hpp"
#include "registry.hpp"
#include "rk_ring.h"

namespace rkbench {
namespace {

// ---- Q1: single-thread enqueue + dequeue ---------------------------------------------------------
// What does one message cost when nothing contends: push one, pop one, repeated on one thread.
template <class Q>
void push_pop(benchmark::State &state) {
    Q q(kCapacity);
    auto prod = q.producer();
    auto cons = q.consumer();
    Msg in = make_msg(0);
    Msg out{};
    for (auto _ : state) {
        ++in.w[0];
        if (!prod.push(in) || !cons.pop(out)) {
            state.SkipWithError("push or pop failed on a queue that is never full nor empty");
            break;
        }
        benchmark::DoNotOptimize(out);
    }
    if (out.w[0] != in.w[0]) state.SkipWithError("popped a different message than was pushed");
    state.SetItemsProcessed(state.iterations());
}

// ---- Q2: threaded throughput ---------------------------------------------------------------------
constexpr std::uint64_t kStreamMessages = 1u << 20;
constexpr std::size_t kBatch = 64;

// Waits for the start signal without starving the thread that will give it.
inline void await(const std::atomic<bool> &go) {
    while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
}

// Moves `total` messages from `producers` threads to `consumers` threads through q, Batch at a time
// (1: push/pop, else push_n/pop_n). Returns the seconds from the start signal to the last join and
// checks that every sequence number arrived exactly once (by sum).
template <std::size_t Batch, class Q>
double stream(Q &q, unsigned producers, unsigned consumers, std::uint64_t total, bool &ok) {
    std::atomic<bool> go{false};
    std::atomic<std::uint64_t> consumed{0};
    std::atomic<std::uint64_t> checksum{0};
    std::vector<std::thread> threads;
    for (unsigned p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            pin_to_nth_cpu(p);
            auto h = q.producer();
            Msg buf[Batch];
            await(go);
            // Producer p sends the sequence numbers p, p + producers, ...
            for (std::uint64_t next = p; next < total;) {
                std::size_t n = 0;
                for (; n < Batch && next < total; ++n, next += producers) buf[n] = make_msg(next);
                Backoff backoff;
                if constexpr (Batch == 1) {
                    while (!h.push(buf[0])) backoff();
                } else {
                    for (std::size_t sent = 0; sent < n;) {
                        const std::size_t k = h.push_n(buf + sent, n - sent);
                        sent += k;
                        if (k == 0) backoff();
                    }
                }
            }
        });
    }
    for (unsigned c = 0; c < consumers; ++c) {
        threads.emplace_back([&, c] {
            pin_to_nth_cpu(c + 1);
            auto h = q.consumer();
            Msg buf[Batch];
            std::uint64_t local = 0;  // popped, not yet added to `consumed`
            std::uint64_t sum = 0;
            Backoff backoff;
            await(go);
            for (;;) {
                std::size_t k;
                if constexpr (Batch == 1)
                    k = h.pop(buf[0]) ? 1 : 0;
                else
                    k = h.pop_n(buf, Batch);
                if (k != 0) {
                    for (std::size_t i = 0; i < k; ++i) sum += buf[i].w[0];
                    local += k;
                    backoff.reset();
                    continue;
                }
                // Empty: publish our count (one shared add per empty spell, not per message) and
                // stop once every message has been taken by someone.
                if (local) consumed.fetch_add(local, std::memory_order_relaxed);
                local = 0;
                if (consumed.load(std::memory_order_relaxed) == total) break;
                backoff();
            }
            checksum.fetch_add(sum, std::memory_order_relaxed);
        });
    }
    const auto t0 = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto &t : threads) t.join();
    const auto t1 = std::chrono::steady_clock::now();
    ok = checksum.load() == total * (total - 1) / 2;
    return std::chrono::duration<double>(t1 - t0).count();
}

// Q2a: how many messages per second pass from one producer thread to one consumer thread.
// Q2b: how many with two producers and two consumers on one queue.
template <class Q, std::size_t Batch = 1>
void throughput(benchmark::State &state, unsigned producers, unsigned consumers) {
    Q q(kCapacity);
    for (auto _ : state) {
        bool ok = false;
        state.SetIterationTime(stream<Batch>(q, producers, consumers, kStreamMessages, ok));
        if (!ok) {
            state.SkipWithError("messages lost or duplicated");
            break;
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kStreamMessages));
    state.counters["threads"] = producers + consumers;
}

// ---- Q3: round-trip latency ----------------------------------------------------------------------
// How long does a message take to reach another thread and come back: ping-pong over two queues,
// one each way; one iteration is one round trip.
template <class Q>
void ping_pong(benchmark::State &state) {
    constexpr std::uint64_t kStop = ~0ull;
    Q there(kCapacity);
    Q back(kCapacity);
    const cpu_set_t affinity = pin_to_nth_cpu(0);
    std::thread echo([&] {
        pin_to_nth_cpu(1);
        auto in = there.consumer();
        auto out = back.producer();
        Msg m;
        Backoff backoff;
        for (;;) {
            if (!in.pop(m)) {
                backoff();
                continue;
            }
            backoff.reset();
            if (m.w[0] == kStop) return;
            Backoff full;
            while (!out.push(m)) full();
        }
    });
    auto out = there.producer();
    auto in = back.consumer();
    Msg ping = make_msg(0);
    Msg pong{};
    for (auto _ : state) {
        ++ping.w[0];
        Backoff full;
        while (!out.push(ping)) full();
        Backoff empty;
        while (!in.pop(pong)) empty();
    }
    const bool ok = pong.w[0] == ping.w[0];
    ping.w[0] = kStop;
    Backoff full;
    while (!out.push(ping)) full();
    echo.join();
    restore_affinity(affinity);
    if (!ok) state.SkipWithError("the echo returned a different message");
    state.SetItemsProcessed(state.iterations());
}

// ---- Q4: batches on one thread -------------------------------------------------------------------
// What does a message cost when moved 64 at a time: enqueue a batch of 64, dequeue it, repeated.

// Our ring's two-phase batch API: claim_n + write in place + publish each, then acquire_n + read in
// place + release each. The envelope is written and read with every message, as the ring's own
// try_push / try_pop do.
template <bool Single>
void ring_batch(benchmark::State &state) {
    rk::Ring ring(kCapacity, sizeof(Msg));
    const rk_envelope env = make_envelope();
    Msg in[kBatch];
    Msg out[kBatch];
    rk_envelope envs[kBatch];
    for (std::size_t i = 0; i < kBatch; ++i) in[i] = make_msg(i);
    for (auto _ : state) {
        std::uint64_t first = 0;
        std::uint32_t k = ring.claim_n(kBatch, first, Single);
        for (std::uint32_t i = 0; i < k; ++i) {
            rk_envelope *slot = ring.slot(first + i);
            rk_envelope_copy(slot, &env);
            std::memcpy(rk::Ring::payload(slot), &in[i], sizeof(Msg));
            ring.publish(slot, first + i);
        }
        const std::uint32_t got = ring.acquire_n(kBatch, first, Single);
        for (std::uint32_t i = 0; i < got; ++i) {
            rk_envelope *slot = ring.slot(first + i);
            rk_envelope_copy(&envs[i], slot);
            std::memcpy(&out[i], rk::Ring::payload(slot), sizeof(Msg));
            ring.release(slot, first + i);
        }
        if (k != kBatch || got != kBatch) {
            state.SkipWithError("a batch did not fit an empty ring");
            break;
        }
        benchmark::DoNotOptimize(out);
        benchmark::DoNotOptimize(envs);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
}

// The same through a queue's own bulk API (push_n / pop_n).
template <class Q>
void queue_batch(benchmark::State &state) {
    Q q(kCapacity);
    auto prod = q.producer();
    auto cons = q.consumer();
    Msg in[kBatch];
    Msg out[kBatch];
    for (std::size_t i = 0; i < kBatch; ++i) in[i] = make_msg(i);
    for (auto _ : state) {
        const std::size_t k = prod.push_n(in, kBatch);
        const std::size_t got = cons.pop_n(out, kBatch);
        if (k != kBatch || got != kBatch) {
            state.SkipWithError("a batch did not fit an empty queue");
            break;
        }
        benchmark::DoNotOptimize(out);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
}

// ---- registration --------------------------------------------------------------------------------

std::string name(const char *question, const char *queue) { return std::string(question) + "/" + queue; }

template <class Q>
void add_push_pop() {
    benchmark::RegisterBenchmark(name("q1_push_pop_1thread", Q::kName).c_str(), push_pop<Q>);
}
template <class Q, std::size_t Batch = 1>
void add_throughput(const char *question, const char *queue, unsigned producers, unsigned consumers) {
    benchmark::RegisterBenchmark(name(question, queue).c_str(), throughput<Q, Batch>, producers, consumers)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}
template <class Q>
void add_ping_pong() {
    benchmark::RegisterBenchmark(name("q3_pingpong_rtt", Q::kName).c_str(), ping_pong<Q>)->UseRealTime();
}

}  // namespace

void register_ring_benchmarks() {
    add_push_pop<RkRing<true>>();
    add_push_pop<RkRing<false>>();
    add_push_pop<RkQueue>();
    add_push_pop<BoostSpsc>();
    add_push_pop<BoostQueue>();
    add_push_pop<MoodyRwq>();
    add_push_pop<MoodyCq>();

    add_throughput<RkRing<true>>("q2_spsc_throughput", RkRing<true>::kName, 1, 1);
    add_throughput<RkRing<false>>("q2_spsc_throughput", RkRing<false>::kName, 1, 1);
    add_throughput<RkQueue>("q2_spsc_throughput", RkQueue::kName, 1, 1);
    add_throughput<BoostSpsc>("q2_spsc_throughput", BoostSpsc::kName, 1, 1);
    add_throughput<MoodyRwq>("q2_spsc_throughput", MoodyRwq::kName, 1, 1);

    add_throughput<RkRing<false>>("q2_mpmc_2x2_throughput", RkRing<false>::kName, 2, 2);
    add_throughput<RkQueue>("q2_mpmc_2x2_throughput", RkQueue::kName, 2, 2);
    add_throughput<RkQueue, kBatch>("q2_mpmc_2x2_throughput", "rk_queue_batch64", 2, 2);
    add_throughput<BoostQueue>("q2_mpmc_2x2_throughput", BoostQueue::kName, 2, 2);
    add_throughput<MoodyCq>("q2_mpmc_2x2_throughput", MoodyCq::kName, 2, 2);
    add_throughput<MoodyCq, kBatch>("q2_mpmc_2x2_throughput", "moodycamel_cq_bulk64", 2, 2);

    add_ping_pong<RkRing<true>>();
    add_ping_pong<RkQueue>();
    add_ping_pong<BoostSpsc>();
    add_ping_pong<MoodyRwq>();

    benchmark::RegisterBenchmark("q4_batch64_1thread/rk_ring_spsc", ring_batch<true>);
    benchmark::RegisterBenchmark("q4_batch64_1thread/rk_ring_mpmc", ring_batch<false>);
    benchmark::RegisterBenchmark("q4_batch64_1thread/rk_queue", queue_batch<RkQueue>);
    benchmark::RegisterBenchmark("q4_batch64_1thread/boost_spsc_queue", queue_batch<BoostSpsc>);
    benchmark::RegisterBenchmark("q4_batch64_1thread/moodycamel_cq", queue_batch<MoodyCq>);
}

}  // namespace rkbench
