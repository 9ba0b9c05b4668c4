// device_common.hpp — internal: what the device backends (OpenCL, CUDA) share on the host side.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <string>
#include <utility>

#include "../core/kernel_core.hpp"
#include "rk_kernel.h"

namespace rk {

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

// The part of a resident (persistent) device kernel's runner every device backend shares: the bridge
// thread, and what happens to blocks that do not stop (they keep the kernel's memory for good).
class ResidentRunner : public BlockRunner {
public:
    explicit ResidentRunner(KernelCore &core) : core_(core) {}
    ~ResidentRunner() override { stop_bridge(); }

    void abandon() override {
        // A resident kernel cannot be killed: it keeps its memory (the core stays alive on purpose) and
        // its compute units; the bridge stops.
        stop_bridge();
        keep_forever(keepalive_.lock());
    }

    std::uint32_t alive() const override {
        const rk_i32 exited = __atomic_load_n(&core_.cb->blocks_exited, __ATOMIC_ACQUIRE);
        return core_.spec.grid - static_cast<std::uint32_t>(exited);
    }

protected:
    // Start the bridge thread once the blocks run: every round does bridge_round, then `check` (if any),
    // which returns false to end the bridge (a device fault it has recorded).
    void start_bridge(const std::shared_ptr<KernelCore> &core, std::function<bool(KernelCore &)> check = {});
    // Stop and join it (a derived runner does this first, before releasing what `check` uses).
    void stop_bridge();
    // Keep `core` alive until the process ends: blocks that may still run (abandoned or withdrawn) use it.
    void keep_forever(std::shared_ptr<KernelCore> core) { kept_ = new std::shared_ptr<KernelCore>(std::move(core)); }

    KernelCore &core_;

private:
    std::weak_ptr<KernelCore> keepalive_;
    std::thread bridge_;
    std::shared_ptr<std::atomic<bool>> stop_ = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<KernelCore> *kept_ = nullptr;  // deliberately leaked
};

}  // namespace rk
