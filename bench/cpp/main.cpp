// main.cpp — the ringkernel_bench entry point: registers every benchmark and records in the output's
// context what a reader needs to judge the threaded figures (cores vs threads, message size).
#include <string>

#include <benchmark/benchmark.h>

#include "adapters.hpp"
#include "registry.hpp"

int main(int argc, char **argv) {
    rkbench::register_ring_benchmarks();
    rkbench::register_hlc_benchmarks();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

    const auto cores = rkbench::allowed_cpus().size();
    benchmark::AddCustomContext("allowed_cpus", std::to_string(cores));
    benchmark::AddCustomContext("message_bytes", std::to_string(sizeof(rkbench::Msg)));
    benchmark::AddCustomContext("queue_capacity", std::to_string(rkbench::kCapacity));
    if (cores < 4)
        benchmark::AddCustomContext("note", "fewer than 4 cores: the 2x2 MPMC runs oversubscribe the "
                                            "machine and measure scheduling as much as the queues");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
