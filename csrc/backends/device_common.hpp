// device_common.hpp — internal: what the device backends (OpenCL, CUDA) share on the host side.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "../core/kernel_core.hpp"
#include "rk_kernel.h"

namespace rk {

// Check that `spec` names a handler a device backend can run and that a built-in's record types fit it
// (invalid_argument naming what is wrong); returns the entry point (the built-in's, or the source's).
std::string device_handler_entry(const KernelSpec &spec, const char *backend);

// The launch parameters every device backend shares (addresses are left 0: each backend sets its own).
rk_kernel_params kernel_params(const KernelCore &core);
// The addresses of the kernel's state record and dead-letter ring, for a launch whose blocks reach the
// kernel's memory (SVM, mapped host memory).
void set_state_params(rk_kernel_params &p, const KernelCore &core);

// Why a device kernel cannot go on -- a launch the device refused, an error that ended its blocks --
// recorded once (the first reason counts) and everywhere a user looks: the runner's failure(), the
// kernel's fault (FAULTED, its other blocks told to leave, its queues closed) and the control block's
// last_error (`code`). Shared with the threads (a bridge) that may record into it after the runner is gone.
class DeviceFault {
public:
    // Returns whether this call recorded it. `first` runs once, with `why`, before the kernel reads
    // FAULTED (the CUDA backend marks the device unusable there, so no launch slips in after the fault).
    bool record(KernelCore &core, const std::string &why, rk_i32 code = RK_ERR_FAULT,
                const std::function<void(const std::string &)> &first = {});
    std::string why() const;

private:
    mutable std::mutex mu_;
    std::string why_;
};

// What a device's compute units are committed to, for the whole process (every runtime and context on
// the device shares them): the blocks of resident kernels, in the backend's unit (OpenCL: work-groups,
// one per compute unit; CUDA: the fraction of the GPU's block slots), and the number of dispatch-mode
// kernels (which need a unit no resident block holds for their launches).
class DeviceUnits : public std::enable_shared_from_this<DeviceUnits> {
public:
    struct Held {
        double resident = 0;
        std::uint32_t dispatch = 0;
    };
    // What a launch asks for: `units` for its blocks, held while it lives (resident), or only while a
    // launch runs (dispatch: counted as one dispatch kernel instead).
    struct Claim {
        double units = 0;
        bool dispatch = false;
    };

    // One kernel's claim, given back once (at TERMINATED, or when it is destroyed).
    class Reservation {
    public:
        Reservation(std::shared_ptr<DeviceUnits> units, Claim claim) : units_(std::move(units)), claim_(claim) {}
        Reservation(const Reservation &) = delete;
        Reservation &operator=(const Reservation &) = delete;
        ~Reservation() { release(); }
        void release();
        // An abandoned kernel whose blocks may never return: they hold their units for the rest of the
        // process, and later launches are counted (refused, or placed) knowing it.
        void hold_forever();

    private:
        std::shared_ptr<DeviceUnits> units_;
        Claim claim_;
        bool held_ = true;
        bool forever_ = false;
    };

    Held held() const {
        std::lock_guard<std::mutex> lock(mu_);
        return held_;
    }

    // Count a launch under the lock that decides it: `decide(held)` returns the claim, or throws to
    // refuse (nothing is counted then). The reservation gives it back exactly once.
    template <class Decide>
    std::unique_ptr<Reservation> claim(Decide &&decide) {
        std::lock_guard<std::mutex> lock(mu_);
        const Claim c = decide(static_cast<const Held &>(held_));
        if (c.dispatch) held_.dispatch += 1;
        else held_.resident += c.units;
        return std::make_unique<Reservation>(shared_from_this(), c);
    }

private:
    mutable std::mutex mu_;
    Held held_;
};

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

    bool quiesce(std::int64_t timeout_ns) override { return wait_blocks_paused(core_, timeout_ns); }

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
