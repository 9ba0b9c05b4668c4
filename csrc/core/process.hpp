// process.hpp — internal: which process ringkernel objects belong to. A process forked from one with
// running ring kernels inherits their memory but none of their threads (nor the GPU or OpenCL driver's):
// queues of a runtime made before the fork would take messages that nobody ever answers. The generation
// changes in every fork child (pthread_atfork), so such use is detected with one relaxed load.
#pragma once

#include <cstdint>
#include <string>

namespace rk {

// 0 in the process that loaded ringkernel, then different in every process forked from it.
std::uint32_t process_generation() noexcept;
// Record that a device driver (OpenCL, CUDA) was initialised in this process: a fork child cannot use it.
void note_driver_started(const char *which) noexcept;
// In a fork child: "" when `which` was never started before the fork, else why it cannot run here.
std::string driver_inherited_reason(const char *which);
// The error text for an object made in another process (before a fork).
std::string forked_message(const std::string &what);

}  // namespace rk
