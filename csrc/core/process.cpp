// process.cpp — fork detection (see process.hpp).
#include "process.hpp"

#include <pthread.h>

#include <atomic>
#include <cstring>

namespace rk {
namespace {

std::atomic<std::uint32_t> generation{0};
// Bit 0: OpenCL started in this process, bit 1: CUDA; bits 8 and 9: started in an ancestor before a fork.
std::atomic<std::uint32_t> drivers{0};

std::uint32_t bit(const char *which) { return std::strcmp(which, "cuda") == 0 ? 2u : 1u; }

void in_child() {
    generation.fetch_add(1, std::memory_order_relaxed);
    const std::uint32_t d = drivers.load(std::memory_order_relaxed);
    drivers.store((d | (d << 8)) & ~3u, std::memory_order_relaxed);
}

struct Registration {
    Registration() { pthread_atfork(nullptr, nullptr, in_child); }
} registration;

}  // namespace

std::uint32_t process_generation() noexcept { return generation.load(std::memory_order_relaxed); }

void note_driver_started(const char *which) noexcept { drivers.fetch_or(bit(which), std::memory_order_relaxed); }

std::string driver_inherited_reason(const char *which) {
    if ((drivers.load(std::memory_order_relaxed) & (bit(which) << 8)) == 0) return {};
    return std::string(std::strcmp(which, "cuda") == 0 ? "CUDA" : "OpenCL") +
           " was started in a parent process before fork(), and its driver does not survive a fork: use it in a "
           "process that starts fresh (multiprocessing's 'spawn' or 'forkserver' start method), or fork before "
           "using it";
}

std::string forked_message(const std::string &what) {
    return what + " belongs to the process it was made in, and this process is a fork() of that one: the copy "
           "has none of the kernels' threads, so nothing it takes would ever be answered; create a new Runtime "
           "in this process";
}

}  // namespace rk
