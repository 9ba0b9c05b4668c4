// registry.hpp — each benchmark file registers its benchmarks from main, in a fixed order.
#pragma once

namespace rkbench {

void register_ring_benchmarks();  // bench_ring.cpp: Q1-Q4, queues
void register_hlc_benchmarks();   // bench_hlc.cpp:  Q5, the hybrid logical clock

}  // namespace rkbench
