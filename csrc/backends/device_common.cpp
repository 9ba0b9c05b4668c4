// device_common.cpp — host-side pieces the device backends share (see device_common.hpp).
#include "device_common.hpp"

#include <stdexcept>

#include "../core/supervision.hpp"
#include "ringkernel/clock.hpp"
#include "ringkernel/queue.hpp"
#include "rk_builtins.h"

namespace rk {

std::string device_handler_entry(const KernelSpec &spec, const char *backend) {
    const Handler &h = spec.handler;
    switch (h.kind) {
    case Handler::Kind::Builtin:
        return check_builtin(spec);
    case Handler::Kind::Source:
        return h.entry;
    case Handler::Kind::Host:
        break;
    case Handler::Kind::Native:
        throw std::invalid_argument("compiled handler '" + h.name + "' is host code, which runs on the CPU backend; on " +
                                    backend + " use a built-in handler or an rk.Source in the device dialect");
    case Handler::Kind::Image:
        return h.entry;  // Runtime::create let it through: built for this backend, which loads images
    }
    throw std::invalid_argument(std::string("host (Python or C++) handlers run on the CPU backend only; on ") + backend +
                                " use a built-in handler or an rk.Source in the device dialect");
}

rk_kernel_params kernel_params(const KernelCore &core) {
    const KernelSpec &spec = core.spec;
    rk_kernel_params p{};
    p.ttl_ns = spec.options.ttl_ns();
    p.reply_id_base = core.reply_id_base;
    p.in_size = spec.input_size;
    p.out_size = spec.output_size;
    p.backpressure = static_cast<rk_u32>(spec.options.backpressure());
    p.out_type = spec.output_type;
    p.node = static_cast<rk_u16>(core.cb->node);
    p.supervised = core.redelivery ? 1u : 0u;
    return p;
}

void set_state_params(rk_kernel_params &p, const KernelCore &core) {
    p.state = reinterpret_cast<std::uintptr_t>(core.state);
    p.state_size = core.state ? core.spec.state_size : 0;
    p.dead_letters = core.dead_letters ? reinterpret_cast<std::uintptr_t>(core.dead_letters->header()) : 0;
}

bool DeviceFault::record(KernelCore &core, const std::string &why, rk_i32 code,
                         const std::function<void(const std::string &)> &first) {
    const std::string text = why.empty() ? std::string("the device reported an error") : why;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (!why_.empty()) return false;
        why_ = text;
    }
    if (first) first(text);
    core.fault(text);  // FAULTED from now on, the other blocks told to leave, the queues closed
    if (code != RK_ERR_FAULT) rk_atomic_store_i32(&core.cb->last_error, code, RK_RELAXED, RK_SCOPE_SYSTEM);
    return true;
}

std::string DeviceFault::why() const {
    std::lock_guard<std::mutex> lock(mu_);
    return why_;
}

void DeviceUnits::Reservation::release() {
    std::lock_guard<std::mutex> lock(units_->mu_);
    if (!held_ || forever_) return;
    held_ = false;
    if (claim_.dispatch) units_->held_.dispatch -= 1;
    else units_->held_.resident -= claim_.units;
    // Fractions (CUDA's shares) do not always sum back to exactly 0: "nothing resident" must read as 0.
    if (units_->held_.resident < 1e-9) units_->held_.resident = 0;
}

void DeviceUnits::Reservation::hold_forever() {
    std::lock_guard<std::mutex> lock(units_->mu_);
    if (!held_ || forever_) return;
    forever_ = true;
    if (claim_.dispatch) {
        // A dispatch launch that never returns holds the units it runs on: counted as resident from now on.
        units_->held_.dispatch -= 1;
        units_->held_.resident += claim_.units;
    }
}

bool notify_progress(const KernelCore &core, RingCursors &seen) {
    bool moved = false;
    const rk_routes &r = core.routes();
    auto check = [&](const rk_route &route, bool input) {
        auto *q = reinterpret_cast<Queue *>(static_cast<std::uintptr_t>(route.cookie));
        if (q && q->device_resident()) return;  // between kernels in device memory: no host waits on it
        const std::uint64_t head = __atomic_load_n(&route.ring->head, __ATOMIC_ACQUIRE);
        const std::uint64_t tail = __atomic_load_n(&route.ring->tail, __ATOMIC_ACQUIRE);
        auto &last = seen[route.ring];
        if (input && head != last.first) {
            if (q) q->notify_space();
            moved = true;
        }
        if (!input && tail != last.second) {
            if (q) q->notify_readable();
            moved = true;
        }
        last = {head, tail};
    };
    for (rk_u32 i = 0; i < r.n_inputs; ++i) check(r.inputs[i], true);
    for (rk_u32 c = 0; c < r.n_channels; ++c)
        for (rk_u32 i = 0; i < r.channels[c].count; ++i) check(r.channels[c].targets[i], false);
    return moved;
}

void ResidentRunner::start_bridge(const std::shared_ptr<KernelCore> &core, std::function<bool(KernelCore &)> check) {
    keepalive_ = core;
    std::weak_ptr<KernelCore> weak = core;
    auto stop = stop_;
    // `stop` is shared: when this thread drops the last reference to the core, the runner is destroyed
    // under it (stop_bridge detaches this thread and sets stop), and the loop must not touch `this` again.
    bridge_ = std::thread([weak, stop, check = std::move(check)] {
        RingCursors seen;
        auto interval = std::chrono::microseconds(20);
        while (!stop->load()) {
            auto c = weak.lock();
            if (!c) return;
            interval = bridge_round(*c, seen, interval);
            if (check && !check(*c)) return;
            c.reset();
            std::this_thread::sleep_for(interval);
        }
    });
}

void ResidentRunner::stop_bridge() {
    stop_->store(true);
    if (!bridge_.joinable()) return;
    if (bridge_.get_id() == std::this_thread::get_id()) bridge_.detach();  // the bridge dropped the last core
    else bridge_.join();
}

std::chrono::microseconds bridge_round(KernelCore &core, RingCursors &seen, std::chrono::microseconds last) {
    __atomic_store_n(&core.cb->clock_ns, wall_ns(), __ATOMIC_RELAXED);
    // Faults the blocks handed over (rk_finish_run): a block waits for the decision, so poll fast meanwhile.
    const bool serving = core.redelivery && core.supervision->serve_device(core);
    if (notify_progress(core, seen) || serving) return std::chrono::microseconds(20);
    return std::min(last * 2, std::chrono::microseconds(1000));
}

}  // namespace rk
