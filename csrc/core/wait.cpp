// wait.cpp — the out-of-line parts of wait.hpp: a spin-wait's pause and an event fd's signal.
#include "ringkernel/wait.hpp"

#include <unistd.h>

#include "rk_atomic.h"

namespace rk {

void cpu_relax() noexcept { rk_cpu_relax(); }

void WaitSet::signal_fd(int fd) {
    const std::uint64_t one = 1;
    // EAGAIN (counter at its maximum) still leaves the fd readable: nothing to do.
    if (::write(fd, &one, sizeof one) < 0) return;
}

}  // namespace rk
