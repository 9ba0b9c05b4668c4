// device_common.hpp — internal: what the device backends (OpenCL, CUDA) share on the host side.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "../core/kernel_core.hpp"
#include "rk_kernel.h"

namespace rk {

// The handler entry point of a built-in ("rk_builtin_echo", ...), or nullptr for an unknown name.
const char *builtin_entry(const std::string &name);

// Check that `spec` names a handler a device backend can run and that a built-in's record types fit it
// (invalid_argument naming what is wrong); returns the entry point (the built-in's, or the source's).
std::string device_handler_entry(const KernelSpec &spec, const char *backend);

// The launch parameters every device backend shares (addresses are left 0: each backend sets its own).
rk_kernel_params kernel_params(const KernelCore &core);

// Ring cursors (head, tail) seen by the last notify_progress call, per ring.
using RingCursors = std::map<const rk_ring_header *, std::pair<std::uint64_t, std::uint64_t>>;

// Wake host threads waiting on the kernel's rings: receivers of every output that moved since the last
// call, senders of every input that moved. Returns whether anything moved.
bool notify_progress(const KernelCore &core, RingCursors &seen);

// One round of a device kernel's bridge thread: publish the host clock into the control block and wake
// the host waiters of rings that moved. Returns how long to sleep before the next round: 20 µs while
// messages flow, doubling from `last` to 1 ms while they do not.
std::chrono::microseconds bridge_round(KernelCore &core, RingCursors &seen, std::chrono::microseconds last);

}  // namespace rk
