// bench_hlc.cpp — Q5: what an HLC stamp costs (DESIGN §5). The floor it is compared with is what
// every stamp must do anyway: read the physical clock (one CLOCK_REALTIME read) and, under
// contention, win one contended read-modify-write of a shared word.
#include <atomic>
#include <cstdint>

#include <benchmark/benchmark.h>

#include "registry.hpp"
#include "ringkernel/clock.hpp"
#include "ringkernel/hlc.hpp"

namespace rkbench {
namespace {

// What does a local/send event cost on one thread: HlcClock::now_packed().
void hlc_now_packed(benchmark::State &state) {
    rk::HlcClock clock(1);
    for (auto _ : state) benchmark::DoNotOptimize(clock.now_packed());
    state.SetItemsProcessed(state.iterations());
}

// What does a receive event cost on one thread: update_packed() with a recent remote stamp
// (within max_offset, so the skew check passes as it does in normal operation).
void hlc_update_packed(benchmark::State &state) {
    rk::HlcClock clock(1);
    rk::HlcClock remote(2);
    const std::uint64_t stamp = remote.now_packed();
    for (auto _ : state) benchmark::DoNotOptimize(clock.update_packed(stamp));
    state.SetItemsProcessed(state.iterations());
}

// The floor of both: reading the physical clock the HLC is built on.
void wall_clock_read(benchmark::State &state) {
    for (auto _ : state) benchmark::DoNotOptimize(rk::wall_ms());
    state.SetItemsProcessed(state.iterations());
}

// What does now() cost when two threads stamp on one clock at once. Figures are per call across
// both threads (aggregate throughput), so contention shows as a higher ns per call.
rk::HlcClock &shared_clock() {
    static rk::HlcClock clock(1);
    return clock;
}
void hlc_now_contended(benchmark::State &state) {
    rk::HlcClock &clock = shared_clock();
    for (auto _ : state) benchmark::DoNotOptimize(clock.now());
    state.SetItemsProcessed(state.iterations());
}

// The floor under contention: a physical-clock read plus one contended fetch_add on a shared line.
std::atomic<std::uint64_t> g_counter{0};
void contended_fetch_add(benchmark::State &state) {
    for (auto _ : state) {
        benchmark::DoNotOptimize(rk::wall_ms());
        benchmark::DoNotOptimize(g_counter.fetch_add(1, std::memory_order_acq_rel));
    }
    state.SetItemsProcessed(state.iterations());
}

}  // namespace

void register_hlc_benchmarks() {
    benchmark::RegisterBenchmark("q5_hlc_1thread/rk_hlc_now_packed", hlc_now_packed);
    benchmark::RegisterBenchmark("q5_hlc_1thread/rk_hlc_update_packed", hlc_update_packed);
    benchmark::RegisterBenchmark("q5_hlc_1thread/clock_gettime_realtime", wall_clock_read);
    benchmark::RegisterBenchmark("q5_hlc_2threads/rk_hlc_now", hlc_now_contended)->Threads(2)->UseRealTime();
    benchmark::RegisterBenchmark("q5_hlc_2threads/clock_read_plus_fetch_add", contended_fetch_add)
        ->Threads(2)
        ->UseRealTime();
}

}  // namespace rkbench
