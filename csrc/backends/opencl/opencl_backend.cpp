// opencl_backend.cpp — ring kernels on OpenCL devices, persistent and dispatch mode.
//
// Every kernel's rings, control block, telemetry, routes and buffers live in fine-grained SVM with
// atomics, so host and device share them while the kernel runs: the host sends and receives through
// the rings and reads the control block and telemetry without any OpenCL call. Each kernel is a
// program built from the device dialect (rk_kernel.h + rk_builtins.h, plus the user's source for
// rk.Source handlers) and launched once, grid work-groups of block work-items, on a command queue of
// its own; its blocks stay resident until told to terminate (RK_DEFINE_OPENCL_KERNEL).
//
// A device cannot wake host threads or read a wall clock, so a bridge thread per kernel publishes the
// clock into the control block and turns ring progress into host wake-ups (a parked receiver, a
// blocked sender, an asyncio eventfd): it polls every 20 µs while messages flow and backs off to 1 ms
// when idle. Spinning host receivers see replies directly, without the bridge.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

#include "../../core/backend_registry.hpp"
#include "../../core/source_cache.hpp"
#include "../device_common.hpp"
#include "cl_api.hpp"
#include "ringkernel/clock.hpp"
#include "rk_builtins.h"

namespace rk {
namespace {

struct Context {
    const opencl::Api *cl = nullptr;
    opencl::Device device;
    cl_context ctx = nullptr;
    std::mutex mu;                               // programs
    std::map<std::string, cl_program> programs;  // by source + options + dialect
    ~Context() {
        for (auto &kv : programs) cl->ReleaseProgram(kv.second);
        if (ctx) cl->ReleaseContext(ctx);
    }
};

// The compute units of each device, shared by every runtime and context of the process (they share its
// work-group threads): resident kernels hold one per work-group, dispatch-mode kernels need one kept free.
DeviceUnits &units_of(cl_device_id device) {
    static std::mutex mu;
    static auto *table = new std::map<cl_device_id, std::shared_ptr<DeviceUnits>>;  // abandoned kernels use it at exit
    std::lock_guard<std::mutex> lock(mu);
    auto &u = (*table)[device];
    if (!u) u = std::make_shared<DeviceUnits>();
    return *u;
}

using Reservation = DeviceUnits::Reservation;

class SvmMemory final : public MemoryResource {
public:
    explicit SvmMemory(std::shared_ptr<Context> c) : c_(std::move(c)) {}
    void *allocate(std::size_t bytes, std::size_t align) override {
        const std::size_t rounded = (bytes + align - 1) / align * align;
        void *p = c_->cl->SVMAlloc(c_->ctx, CL_MEM_READ_WRITE | CL_MEM_SVM_FINE_GRAIN_BUFFER | CL_MEM_SVM_ATOMICS,
                                   rounded, static_cast<cl_uint>(align < 128 ? 128 : align));
        if (!p) throw std::bad_alloc();
        std::memset(p, 0, rounded);
        return p;
    }
    void deallocate(void *p, std::size_t) noexcept override {
        if (p) c_->cl->SVMFree(c_->ctx, p);
    }
    const char *name() const noexcept override { return "opencl-svm"; }

private:
    std::shared_ptr<Context> c_;  // the context outlives every allocation made from it
};

std::string cl_error(const std::string &what, cl_int err) { return what + " failed (OpenCL error " + std::to_string(err) + ")"; }

constexpr std::uint32_t kRunLimit = 8;  // messages per run on devices (reply buffers in local memory)

// Tell OpenCL which SVM allocations the kernel reaches through pointers: control block, telemetry,
// routes, rings, the buffer table and every buffer. A resident kernel is told once, at launch (rings
// and buffers added later are reached through fine-grained SVM as PoCL's CPU device allows; devices
// that require the declaration should run in dispatch mode, which declares before every launch).
void declare_svm(const opencl::Api &cl, cl_kernel kernel, rk_kernel_params *params, KernelCore &core) {
    std::vector<void *> ptrs = {core.cb, core.tel, core.routes_word, params};
    if (core.state) ptrs.push_back(core.state);
    if (core.dead_letters) ptrs.push_back(core.dead_letters->header());
    if (core.buffers) {
        std::lock_guard<std::mutex> lock(core.buffers->mu);
        ptrs.push_back(core.buffers->table);
        ptrs.push_back(core.buffers->entries);
        for (void *m : core.buffers->memory)
            if (m) ptrs.push_back(m);
    }
    std::lock_guard<std::mutex> lock(core.routes_mu);
    const rk_routes &r = core.routes();
    ptrs.push_back(const_cast<rk_routes *>(&r));
    for (rk_u32 i = 0; i < r.n_inputs; ++i) ptrs.push_back(r.inputs[i].ring);
    for (rk_u32 c = 0; c < r.n_channels; ++c)
        for (rk_u32 i = 0; i < r.channels[c].count; ++i) ptrs.push_back(r.channels[c].targets[i].ring);
    cl.SetKernelExecInfo(kernel, CL_KERNEL_EXEC_INFO_SVM_PTRS, ptrs.size() * sizeof(void *), ptrs.data());
}

// Fill the launch parameters and declare the SVM the kernel reaches.
void prepare_launch(const opencl::Api &cl, cl_kernel kernel, rk_kernel_params *params, KernelCore &core) {
    rk_kernel_params &p = *params;
    p = kernel_params(core);
    p.control_block = reinterpret_cast<std::uintptr_t>(core.cb);
    p.telemetry = reinterpret_cast<std::uintptr_t>(core.tel);
    p.routes_word = reinterpret_cast<std::uintptr_t>(core.routes_word);
    p.buffers = core.buffers ? reinterpret_cast<std::uintptr_t>(core.buffers->table) : 0;
    set_state_params(p, core);
    __atomic_store_n(&core.cb->clock_ns, wall_ns(), __ATOMIC_RELEASE);
    declare_svm(cl, kernel, params, core);
    const cl_int err = cl.SetKernelArgSVMPointer(kernel, 0, params);
    if (err != CL_SUCCESS) throw Error(cl_error("clSetKernelArgSVMPointer", err));
}

class OpenClBlocks final : public ResidentRunner {
public:
    OpenClBlocks(std::shared_ptr<Context> c, cl_program prog, KernelCore &core, std::unique_ptr<Reservation> units)
        : ResidentRunner(core), c_(std::move(c)), units_(std::move(units)) {
        cl_int err;
        kernel_ = c_->cl->CreateKernel(prog, "rk_persistent", &err);
        if (err != CL_SUCCESS) throw Error(cl_error("clCreateKernel", err));
        queue_ = c_->cl->CreateCommandQueueWithProperties(c_->ctx, c_->device.device, nullptr, &err);
        if (err != CL_SUCCESS) throw Error(cl_error("clCreateCommandQueueWithProperties", err));
        params_ = static_cast<rk_kernel_params *>(core_.memory->allocate(sizeof(rk_kernel_params), 128));
    }

    ~OpenClBlocks() override {
        stop_bridge();
        if (event_) c_->cl->ReleaseEvent(event_);
        if (kernel_) c_->cl->ReleaseKernel(kernel_);
        if (queue_) c_->cl->ReleaseCommandQueue(queue_);
        core_.memory->deallocate(params_, sizeof(rk_kernel_params));
    }

    void stopped() override { units_->release(); }

    void start(const std::shared_ptr<KernelCore> &core) override {
        const KernelSpec &spec = core->spec;
        const opencl::Api &cl = *c_->cl;
        prepare_launch(cl, kernel_, params_, *core);
        cl_int err;
        const size_t local = spec.block, global = static_cast<size_t>(spec.grid) * spec.block;
        err = cl.EnqueueNDRangeKernel(queue_, kernel_, 1, nullptr, &global, &local, 0, nullptr, &event_);
        if (err != CL_SUCCESS) throw Error(cl_error("clEnqueueNDRangeKernel", err));
        cl.Flush(queue_);
        // The bridge also watches the launch: one that ends in an error (the device lost, a fault in
        // the kernel) makes the kernel FAULTED, recorded, instead of a kernel that quietly stops answering.
        // (The bridge is stopped before the event is released.)
        const opencl::Api *api = c_->cl;
        cl_event ev = event_;
        auto fault = fault_;
        const std::string where = "kernel '" + spec.name + "' on OpenCL device " + c_->device.name;
        start_bridge(core, [api, ev, fault, where](KernelCore &k) {
            const cl_int status = launch_status(*api, ev);
            if (status >= 0) return true;
            fault->record(k, cl_error(where, status));
            return false;
        });
    }

    std::string failure() const override { return fault_->why(); }

    bool wait_stopped(std::int64_t timeout_ns) override {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
        for (;;) {  // checked at least once, also with no time left
            const cl_int status = event_ ? launch_status(*c_->cl, event_) : CL_COMPLETE;
            if (status == CL_COMPLETE || status < 0) {
                stop_bridge();
                if (status < 0)
                    fault_->record(core_, cl_error("kernel '" + core_.spec.name + "' on OpenCL device " + c_->device.name,
                                                   status));
                return true;
            }
            if (std::chrono::steady_clock::now() >= deadline) return false;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }

private:
    static cl_int launch_status(const opencl::Api &cl, cl_event ev) {
        cl_int status = CL_QUEUED;
        cl.GetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, nullptr);
        return status;
    }

    std::shared_ptr<Context> c_;
    cl_kernel kernel_ = nullptr;
    cl_command_queue queue_ = nullptr;
    cl_event event_ = nullptr;
    rk_kernel_params *params_ = nullptr;
    std::unique_ptr<Reservation> units_;
    std::shared_ptr<DeviceFault> fault_ = std::make_shared<DeviceFault>();
};

// The runners of the dispatch modes: a host thread waits until the kernel may run (messages wait, it
// is active, ...), launches it, and goes on until the kernel is told to terminate. The thread holds a
// reference to the core whenever it touches the runner, so the runner (owned by the core) outlives
// each use; once the core is gone it returns at once.
class HostLaunched : public BlockRunner {
public:
    HostLaunched(std::shared_ptr<Context> c, cl_program prog, const char *kernel_name, KernelCore &core,
                 std::unique_ptr<Reservation> units)
        : c_(std::move(c)), core_(core), units_(std::move(units)) {
        cl_int err;
        kernel_ = c_->cl->CreateKernel(prog, kernel_name, &err);
        if (err != CL_SUCCESS) throw Error(cl_error("clCreateKernel", err));
        queue_ = c_->cl->CreateCommandQueueWithProperties(c_->ctx, c_->device.device, nullptr, &err);
        if (err != CL_SUCCESS) throw Error(cl_error("clCreateCommandQueueWithProperties", err));
    }

    ~HostLaunched() override {
        stop_thread();
        if (kernel_) c_->cl->ReleaseKernel(kernel_);
        if (queue_) c_->cl->ReleaseCommandQueue(queue_);
    }

    void start(const std::shared_ptr<KernelCore> &core) override {
        setup(*core);
        keepalive_ = core;
        std::weak_ptr<KernelCore> weak = core;
        auto stop = stop_;
        auto done = done_;
        thread_ = std::thread([this, weak, stop, done] { run(weak, stop, done); });
    }

    bool wait_stopped(std::int64_t timeout_ns) override {
        core_.wake();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
        std::unique_lock<std::mutex> lock(core_.exit_mu);
        if (!core_.exit_cv.wait_until(lock, deadline, [this] { return done_->load(); })) return false;
        lock.unlock();
        if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
        return true;
    }

    void abandon() override {
        // A launch that does not return cannot be stopped: keep the kernel's memory, let the thread go. A
        // launch that is running holds its compute units for good; one that never started will find the
        // kernel told to terminate and return at once.
        if (launch_state_->load() == CL_RUNNING) units_->hold_forever();
        if (thread_.joinable()) thread_.detach();
        leaked_ = new std::shared_ptr<KernelCore>(keepalive_.lock());
    }

    std::uint32_t alive() const override { return done_->load() ? 0u : core_.spec.grid; }

    std::string stuck() const override {
        const cl_int s = launch_state_->load();
        if (s == CL_QUEUED || s == CL_SUBMITTED)
            return "its launch has not started on device " + c_->device.name + ": every compute unit is busy (" +
                   std::to_string(static_cast<std::uint32_t>(units_of(c_->device.device).held().resident)) + " of " +
                   std::to_string(c_->device.compute_units) + " held by resident or abandoned kernels)";
        if (s == CL_RUNNING)
            return "a launch of " + std::to_string(core_.spec.grid) + " work-group(s) is still inside the handler";
        return "its launch thread has not come back from the OpenCL runtime";
    }
    void stopped() override { units_->release(); }
    std::string failure() const override { return fault_->why(); }

    // No block runs between launches, and the thread launches only while the kernel is active: wait until it
    // is outside a launch (it says so before it checks, see run()).
    bool quiesce(std::int64_t timeout_ns) override {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
        while (launching_->load(std::memory_order_seq_cst)) {
            if (std::chrono::steady_clock::now() >= deadline) return false;
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
        return true;
    }

protected:
    // Stop the thread before the derived runner releases what a launch uses.
    void stop_thread() {
        stop_->store(true);
        if (!thread_.joinable()) return;
        if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
        else thread_.join();
    }

    virtual void setup(KernelCore &core) = 0;
    virtual bool ready(const KernelCore &core) = 0;
    // One launch; false when the kernel cannot run (after fail()).
    virtual bool launch(KernelCore &core) = 0;
    virtual void on_exit(KernelCore &) {}

    static bool terminating(const KernelCore &core) {
        return rk_atomic_load_i32(&core.cb->should_terminate, RK_ACQUIRE, RK_SCOPE_SYSTEM) != 0;
    }

    // The kernel cannot run: say so everywhere a user looks, and stop taking messages.
    bool fail(KernelCore &core, const std::string &why) {
        fault_->record(core, "it cannot run on the device: " + why, RK_ERR_LAUNCH);  // FAULTED, its queues closed
        return false;
    }

    std::shared_ptr<Context> c_;
    KernelCore &core_;
    cl_kernel kernel_ = nullptr;
    cl_command_queue queue_ = nullptr;

private:
    void run(std::weak_ptr<KernelCore> weak, std::shared_ptr<std::atomic<bool>> stop,
             std::shared_ptr<std::atomic<bool>> done) {
        for (;;) {
            auto core = weak.lock();
            if (!core || stop->load()) return;
            if (terminating(*core)) break;
            // Dekker's pattern with quiesce(): say "launching" before reading is_active (in ready()), so a
            // pause that cleared is_active either sees this or is seen by ready().
            launching_->store(true, std::memory_order_seq_cst);
            if (!ready(*core)) {
                launching_->store(false, std::memory_order_seq_cst);
                // Host senders and receivers ring the doorbell; rings moved by device kernels are seen
                // within 1 ms.
                core->doorbell->wait([&] { return terminating(*core) || ready(*core); },
                                     Deadline::from(Wait::for_ns(1'000'000)), nullptr);
                continue;
            }
            const bool go_on = launch(*core);
            launching_->store(false, std::memory_order_seq_cst);
            if (!go_on) break;
        }
        launching_->store(false, std::memory_order_seq_cst);
        auto core = weak.lock();
        if (!core) return;
        on_exit(*core);
        rk_atomic_store_i32(&core->cb->blocks_exited, static_cast<rk_i32>(core->spec.grid), RK_RELEASE,
                            RK_SCOPE_SYSTEM);
        rk_atomic_store_i32(&core->cb->has_terminated, 1, RK_RELEASE, RK_SCOPE_SYSTEM);
        std::lock_guard<std::mutex> lock(core->exit_mu);
        done->store(true);
        core->exit_cv.notify_all();
    }

    std::unique_ptr<Reservation> units_;
    std::shared_ptr<DeviceFault> fault_ = std::make_shared<DeviceFault>();
    std::weak_ptr<KernelCore> keepalive_;
    std::thread thread_;
    std::shared_ptr<std::atomic<bool>> stop_ = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<std::atomic<bool>> done_ = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<std::atomic<bool>> launching_ = std::make_shared<std::atomic<bool>>(false);
    std::shared_ptr<KernelCore> *leaked_ = nullptr;

protected:
    // Wait for the launch `ev` (released here), calling `while_running` between polls, and keep launch_state_
    // saying how it goes: a launch stuck behind busy compute units is not a handler that does not return.
    // Returns CL_SUCCESS or the launch's error.
    template <class F>
    cl_int await_launch(cl_event ev, F &&while_running) {
        cl_int status = CL_QUEUED;
        for (int polls = 0;; ++polls) {
            c_->cl->GetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, nullptr);
            launch_state_->store(status);
            if (status == CL_COMPLETE || status < 0) break;
            while_running();
            // Most launches end within tens of µs: yield first, sleep only in a long one.
            if (polls < 256) std::this_thread::yield();
            else std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
        c_->cl->ReleaseEvent(ev);
        launch_state_->store(CL_COMPLETE);
        return status < 0 ? status : CL_SUCCESS;
    }

    // The execution status of the launch in flight (CL_QUEUED ... CL_RUNNING), CL_COMPLETE between launches.
    std::shared_ptr<std::atomic<cl_int>> launch_state_ = std::make_shared<std::atomic<cl_int>>(CL_COMPLETE);
};

// Dispatch mode: launches whenever messages wait and the outputs have room; each launch handles what
// is there and returns. Nothing stays resident, so any number of kernels can share the device. While a
// launch runs, the thread publishes the clock and wakes host waiters as the rings move, as the
// persistent mode's bridge does.
class OpenClDispatch final : public HostLaunched {
public:
    OpenClDispatch(std::shared_ptr<Context> c, cl_program prog, KernelCore &core, std::unique_ptr<Reservation> units)
        : HostLaunched(std::move(c), prog, "rk_dispatch", core, std::move(units)) {
        params_ = static_cast<rk_kernel_params *>(core_.memory->allocate(sizeof(rk_kernel_params), 128));
    }

    ~OpenClDispatch() override {
        stop_thread();
        core_.memory->deallocate(params_, sizeof(rk_kernel_params));
    }

private:
    void setup(KernelCore &core) override { prepare_launch(*c_->cl, kernel_, params_, core); }

    bool ready(const KernelCore &core) override {
        if (!rk_atomic_load_i32(&core.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM)) return false;
        const rk_routes &r = core.routes();
        for (rk_u32 c = 0; c < r.n_channels; ++c)
            for (rk_u32 i = 0; i < r.channels[c].count; ++i)
                if (!rk_ring_can_claim(r.channels[c].targets[i].ring, RK_SCOPE_SYSTEM)) return false;
        for (rk_u32 i = 0; i < r.n_inputs; ++i)
            if (rk_ring_can_acquire(r.inputs[i].ring, RK_SCOPE_SYSTEM)) return true;
        return false;
    }

    bool launch(KernelCore &core) override {
        const opencl::Api &cl = *c_->cl;
        const size_t local = core.spec.block, global = static_cast<size_t>(core.spec.grid) * core.spec.block;
        __atomic_store_n(&core.cb->clock_ns, wall_ns(), __ATOMIC_RELAXED);
        declare_svm(cl, kernel_, params_, core);  // rings and buffers added since the last launch
        cl_event ev = nullptr;
        launch_state_->store(CL_QUEUED);
        cl_int err = cl.EnqueueNDRangeKernel(queue_, kernel_, 1, nullptr, &global, &local, 0, nullptr, &ev);
        if (err == CL_SUCCESS) {
            cl.Flush(queue_);
            // While it runs: the clock, and wake-ups as the rings move.
            err = await_launch(ev, [&] {
                __atomic_store_n(&core.cb->clock_ns, wall_ns(), __ATOMIC_RELAXED);
                notify_progress(core, seen_);
            });
        } else {
            launch_state_->store(CL_COMPLETE);
        }
        notify_progress(core, seen_);
        return err == CL_SUCCESS || fail(core, cl_error("launching the kernel", err));
    }

    void on_exit(KernelCore &core) override { notify_progress(core, seen_); }

    rk_kernel_params *params_ = nullptr;
    RingCursors seen_;
};

// Dispatch mode with copies, for devices that cannot share memory with the host while a kernel runs
// (no fine-grained SVM): the kernel's rings stay in host memory; for each batch the thread copies up
// to kBatch waiting requests into a ring in device memory (and every live buffer into an arena),
// launches the kernel, copies the replies, the counters and the buffers back, and delivers the
// replies to the kernel's outputs on the host.
class OpenClCopyDispatch final : public HostLaunched {
public:
    static constexpr std::uint32_t kBatch = 256;

    OpenClCopyDispatch(std::shared_ptr<Context> c, cl_program prog, KernelCore &core, std::unique_ptr<Reservation> units)
        : HostLaunched(std::move(c), prog, "rk_copy", core, std::move(units)) {
        const opencl::Api &cl = *c_->cl;
        cl_int err;
        const KernelSpec &spec = core_.spec;
        in_stride_ = rk_ring_slot_stride(spec.input_size);
        out_stride_ = rk_ring_slot_stride(spec.output_size);
        in_img_.assign(rk_ring_bytes(kBatch, in_stride_), 0);
        out_img_.assign(rk_ring_bytes(kBatch, out_stride_), 0);
        dead_img_.assign(rk_ring_bytes(kBatch, in_stride_), 0);
        const std::size_t sizes[] = {sizeof(rk_kernel_params), sizeof(rk_control_block), sizeof(rk_telemetry),
                                     sizeof(rk_routes), sizeof(rk_u64), in_img_.size(), out_img_.size(),
                                     dead_img_.size()};
        for (std::size_t i = 0; i < 8; ++i) {
            mem_[i] = cl.CreateBuffer(c_->ctx, CL_MEM_READ_WRITE, sizes[i], nullptr, &err);
            if (err != CL_SUCCESS) throw Error(cl_error("clCreateBuffer", err));
        }
    }

    ~OpenClCopyDispatch() override {
        stop_thread();
        for (cl_mem m : mem_)
            if (m) c_->cl->ReleaseMemObject(m);
        for (cl_mem m : {table_, arena_})
            if (m) c_->cl->ReleaseMemObject(m);
    }

private:
    void setup(KernelCore &core) override {
        rk_kernel_params p = kernel_params(core);  // no addresses: the kernel takes its memory as arguments
        p.ttl_ns = 0;  // messages are dequeued when copied in: the TTL is applied then, here (launch())
        const opencl::Api &cl = *c_->cl;
        cl_int err = cl.EnqueueWriteBuffer(queue_, mem_[0], CL_TRUE, 0, sizeof p, &p, 0, nullptr, nullptr);
        for (cl_uint i = 0; i < 7 && err == CL_SUCCESS; ++i) err = cl.SetKernelArg(kernel_, i, sizeof(cl_mem), &mem_[i]);
        if (err == CL_SUCCESS) err = cl.SetKernelArg(kernel_, 9, sizeof(cl_mem), &mem_[7]);  // after the buffers' two
        if (err == CL_SUCCESS) err = stage_buffers(core, false) ? CL_SUCCESS : CL_OUT_OF_RESOURCES;
        if (err != CL_SUCCESS) throw Error(cl_error("setting up the kernel's device memory", err));
    }

    bool ready(const KernelCore &core) override {
        if (!rk_atomic_load_i32(&core.cb->is_active, RK_ACQUIRE, RK_SCOPE_SYSTEM)) return false;
        const rk_routes &r = core.routes();
        for (rk_u32 i = 0; i < r.n_inputs; ++i)
            if (rk_ring_can_acquire(r.inputs[i].ring, RK_SCOPE_SYSTEM)) return true;
        return false;
    }

    bool launch(KernelCore &core) override {
        // 1. Up to kBatch waiting requests (round robin over the inputs) into the device ring's image.
        auto *img = reinterpret_cast<rk_ring_header *>(in_img_.data());
        std::memset(in_img_.data(), 0, in_img_.size());
        rk_ring_init(img, kBatch, in_stride_, 0);
        const rk_routes &r = core.routes();
        const std::uint64_t ttl = core.spec.options.ttl_ns(), now = ttl ? wall_ns() : 0;
        std::uint32_t taken = 0;
        for (rk_u32 i = 0; i < r.n_inputs && taken < kBatch; ++i) {
            rk_ring_header *ring = r.inputs[i].ring;
            std::uint64_t first, expired = 0;
            const std::uint32_t got = rk_ring_acquire_n(ring, kBatch - taken, &first, 0, RK_SCOPE_SYSTEM);
            for (std::uint32_t j = 0; j < got; ++j) {
                rk_envelope *slot = rk_ring_slot(ring, first + j);
                if (ttl && now > slot->enqueue_ns && now - slot->enqueue_ns > ttl) ++expired;
                else rk_ring_try_push(img, slot, rk_envelope_payload(slot), 1, RK_SCOPE_SYSTEM);
                rk_ring_release(ring, slot, first + j, RK_SCOPE_SYSTEM);
            }
            if (expired) {  // counted as a kernel's expiry (after the cursor moved)
                rk_atomic_fetch_add_u64(&core.cb->messages_dropped, expired, RK_RELAXED, RK_SCOPE_SYSTEM);
                rk_atomic_fetch_add_u64(&ring->expired, expired, RK_RELAXED, RK_SCOPE_SYSTEM);
            }
            if (got) {
                if (auto *q = reinterpret_cast<Queue *>(static_cast<std::uintptr_t>(r.inputs[i].cookie))) q->notify_space();
            }
            taken += got;
        }
        if (taken == 0) return true;
        auto *out = reinterpret_cast<rk_ring_header *>(out_img_.data());
        std::memset(out_img_.data(), 0, out_img_.size());
        rk_ring_init(out, kBatch, out_stride_, 0);
        // 2. Device memory in, launch, results out.
        rk_control_block cb;
        std::memcpy(&cb, core.cb, sizeof cb);
        cb.clock_ns = wall_ns();
        const opencl::Api &cl = *c_->cl;
        const KernelSpec &spec = core.spec;
        const size_t local = spec.block, global = static_cast<size_t>(spec.grid) * spec.block;
        cl_int err = cl.EnqueueWriteBuffer(queue_, mem_[1], CL_FALSE, 0, sizeof cb, &cb, 0, nullptr, nullptr);
        if (err == CL_SUCCESS)
            err = cl.EnqueueWriteBuffer(queue_, mem_[2], CL_FALSE, 0, sizeof(rk_telemetry), core.tel, 0, nullptr, nullptr);
        if (err == CL_SUCCESS)
            err = cl.EnqueueWriteBuffer(queue_, mem_[5], CL_FALSE, 0, in_img_.size(), in_img_.data(), 0, nullptr, nullptr);
        if (err == CL_SUCCESS)
            err = cl.EnqueueWriteBuffer(queue_, mem_[6], CL_FALSE, 0, out_img_.size(), out_img_.data(), 0, nullptr, nullptr);
        auto *dead = reinterpret_cast<rk_ring_header *>(dead_img_.data());
        std::memset(dead_img_.data(), 0, dead_img_.size());
        rk_ring_init(dead, kBatch, in_stride_, 0);
        if (err == CL_SUCCESS)
            err = cl.EnqueueWriteBuffer(queue_, mem_[7], CL_FALSE, 0, dead_img_.size(), dead_img_.data(), 0, nullptr, nullptr);
        if (err == CL_SUCCESS && !stage_buffers(core, true)) err = CL_OUT_OF_RESOURCES;
        cl_event ev = nullptr;
        launch_state_->store(CL_QUEUED);
        if (err == CL_SUCCESS) err = cl.EnqueueNDRangeKernel(queue_, kernel_, 1, nullptr, &global, &local, 0, nullptr, &ev);
        if (err == CL_SUCCESS && !arena_img_.empty())
            err = cl.EnqueueReadBuffer(queue_, arena_, CL_FALSE, 0, arena_img_.size(), arena_img_.data(), 0, nullptr, nullptr);
        rk_control_block after;
        rk_telemetry tel;
        if (err == CL_SUCCESS)
            err = cl.EnqueueReadBuffer(queue_, mem_[6], CL_FALSE, 0, out_img_.size(), out_img_.data(), 0, nullptr, nullptr);
        if (err == CL_SUCCESS) err = cl.EnqueueReadBuffer(queue_, mem_[1], CL_FALSE, 0, sizeof after, &after, 0, nullptr, nullptr);
        if (err == CL_SUCCESS) err = cl.EnqueueReadBuffer(queue_, mem_[2], CL_FALSE, 0, sizeof tel, &tel, 0, nullptr, nullptr);
        if (err == CL_SUCCESS)
            err = cl.EnqueueReadBuffer(queue_, mem_[7], CL_FALSE, 0, dead_img_.size(), dead_img_.data(), 0, nullptr, nullptr);
        if (err == CL_SUCCESS) err = cl.Flush(queue_);
        // The launch, then the copies back.
        if (err == CL_SUCCESS && ev) {
            err = await_launch(ev, [] {});
        } else {
            if (ev) cl.ReleaseEvent(ev);
            launch_state_->store(CL_COMPLETE);
        }
        if (err == CL_SUCCESS) err = cl.Finish(queue_);
        if (err != CL_SUCCESS) return fail(core, cl_error("running the kernel", err));
        // 3. Counters first (whoever sees a reply sees them), then the replies.
        rk_atomic_store_u64(reinterpret_cast<rk_u64 *>(&core.cb->messages_processed),
                            static_cast<rk_u64>(after.messages_processed), RK_RELEASE, RK_SCOPE_SYSTEM);
        rk_atomic_store_i32(&core.cb->errors_encountered, after.errors_encountered, RK_RELAXED, RK_SCOPE_SYSTEM);
        rk_atomic_store_i32(&core.cb->last_error, after.last_error, RK_RELAXED, RK_SCOPE_SYSTEM);
        rk_atomic_store_u64(&core.cb->hlc, after.hlc, RK_RELAXED, RK_SCOPE_SYSTEM);
        rk_atomic_store_u64(&core.cb->next_reply_id, after.next_reply_id, RK_RELAXED, RK_SCOPE_SYSTEM);
        rk_atomic_store_u64(&core.cb->messages_dropped, after.messages_dropped, RK_RELAXED, RK_SCOPE_SYSTEM);
        rk_atomic_store_u64(reinterpret_cast<rk_u64 *>(&core.cb->last_activity_ns), wall_ns(), RK_RELAXED, RK_SCOPE_SYSTEM);
        if (cb.telemetry_enabled) std::memcpy(core.tel, &tel, sizeof tel);
        // The requests the handler failed, into the kernel's dead-letter ring (a full one counts them).
        rk_envelope env;
        std::vector<std::uint8_t> payload(spec.input_size);
        while (rk_ring_try_pop(dead, &env, payload.data(), spec.input_size, 1, RK_SCOPE_SYSTEM))
            if (!core.dead_letters || !core.dead_letters->try_push(env, payload.data()))
                if (core.dead_letters) __atomic_fetch_add(&core.dead_letters->header()->rejected, 1, __ATOMIC_RELAXED);
        unstage_buffers(core);
        deliver(core, out);
        return true;
    }

    // The live buffers into the arena image and the table image (entry.reserved = arena offset), then
    // to the device (`upload`), setting the kernel's last two arguments.
    bool stage_buffers(KernelCore &core, bool upload) {
        const opencl::Api &cl = *c_->cl;
        staged_.clear();
        std::vector<std::uint8_t> table(sizeof(rk_buffer_table));
        std::size_t arena_bytes = 0;
        if (core.buffers) {
            BufferTableMem &t = *core.buffers;
            std::lock_guard<std::mutex> lock(t.mu);
            table.resize(sizeof(rk_buffer_table) + sizeof(rk_buffer_entry) * t.next_free);
            auto *hdr = reinterpret_cast<rk_buffer_table *>(table.data());
            hdr->capacity = t.next_free;
            auto *entries = reinterpret_cast<rk_buffer_entry *>(hdr + 1);
            for (std::uint32_t i = 0; i < t.next_free; ++i) {
                entries[i] = t.entries[i];
                if (!entries[i].live) continue;
                entries[i].reserved = arena_bytes;
                staged_.push_back({t.memory[i], arena_bytes, static_cast<std::size_t>(t.entries[i].bytes)});
                arena_bytes += (t.entries[i].bytes + 63) & ~std::uint64_t(63);
            }
        }
        arena_img_.assign(arena_bytes, 0);
        for (const auto &b : staged_) std::memcpy(arena_img_.data() + b.offset, b.host, b.bytes);
        cl_int err = CL_SUCCESS;
        if (table.size() > table_bytes_ || !table_) {
            if (table_) cl.ReleaseMemObject(table_);
            table_bytes_ = std::max<std::size_t>(table.size(), 4096);
            table_ = cl.CreateBuffer(c_->ctx, CL_MEM_READ_WRITE, table_bytes_, nullptr, &err);
            if (err != CL_SUCCESS) return false;
        }
        if (arena_bytes > arena_bytes_ || !arena_) {
            if (arena_) cl.ReleaseMemObject(arena_);
            arena_bytes_ = std::max<std::size_t>(arena_bytes, 4096);
            arena_ = cl.CreateBuffer(c_->ctx, CL_MEM_READ_WRITE, arena_bytes_, nullptr, &err);
            if (err != CL_SUCCESS) return false;
        }
        table_img_ = std::move(table);
        if (upload) {
            err = cl.EnqueueWriteBuffer(queue_, table_, CL_FALSE, 0, table_img_.size(), table_img_.data(), 0, nullptr, nullptr);
            if (err == CL_SUCCESS && !arena_img_.empty())
                err = cl.EnqueueWriteBuffer(queue_, arena_, CL_FALSE, 0, arena_img_.size(), arena_img_.data(), 0, nullptr,
                                            nullptr);
        }
        if (err == CL_SUCCESS) err = cl.SetKernelArg(kernel_, 7, sizeof(cl_mem), &table_);
        if (err == CL_SUCCESS) err = cl.SetKernelArg(kernel_, 8, sizeof(cl_mem), &arena_);
        return err == CL_SUCCESS;
    }

    // What the kernel wrote into the buffers, back to their host memory.
    void unstage_buffers(KernelCore &core) {
        if (!core.buffers) return;
        std::lock_guard<std::mutex> lock(core.buffers->mu);
        for (const auto &b : staged_) std::memcpy(b.host, arena_img_.data() + b.offset, b.bytes);
    }

    struct Staged {
        void *host;
        std::size_t offset, bytes;
    };
    std::vector<Staged> staged_;
    std::vector<std::uint8_t> table_img_, arena_img_;
    cl_mem table_ = nullptr, arena_ = nullptr;
    std::size_t table_bytes_ = 0, arena_bytes_ = 0;

    // The batch's replies to channel 0's rings, under the kernel's backpressure.
    void deliver(KernelCore &core, rk_ring_header *out) {
        std::vector<std::uint8_t> payload(core.spec.output_size);
        rk_envelope env;
        while (rk_ring_try_pop(out, &env, payload.data(), static_cast<rk_u32>(payload.size()), 1, RK_SCOPE_SYSTEM)) {
            const rk_routes &r = core.routes();
            // A reply whose envelope does not say the kernel's record size was corrupted on the device:
            // drop it (counted) rather than push bytes the buffer does not have.
            if (r.n_channels == 0 || r.channels[0].count == 0 || env.payload_size != core.spec.output_size) {
                rk_atomic_fetch_add_u64(&core.cb->messages_dropped, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
                continue;
            }
            for (rk_u32 i = 0; i < r.channels[0].count; ++i) {
                const rk_route &route = r.channels[0].targets[i];
                auto *q = reinterpret_cast<Queue *>(static_cast<std::uintptr_t>(route.cookie));
                const auto bp = core.spec.options.backpressure();
                rk_ring_header *ring = route.ring;
                bool ok = rk_ring_try_push(ring, &env, payload.data(), 0, RK_SCOPE_SYSTEM);
                for (int attempt = 0; !ok && !terminating(core); ++attempt) {
                    if (bp == Backpressure::DropOldest) {
                        // As a kernel does (rk_push_route): evict only from a ring that is really full.
                        const std::uint64_t head = __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE);
                        const std::uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
                        std::uint64_t pos;
                        rk_envelope *old = tail - head >= ring->capacity ? rk_ring_acquire(ring, &pos, 0, RK_SCOPE_SYSTEM)
                                                                         : nullptr;
                        if (old) {
                            rk_ring_release(ring, old, pos, RK_SCOPE_SYSTEM);
                            rk_atomic_fetch_add_u64(&core.cb->messages_dropped, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
                            rk_atomic_fetch_add_u64(&ring->evicted, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
                            if (q) q->notify_space();
                        }
                    } else if (bp != Backpressure::Block) {
                        break;
                    } else {
                        if (q) q->notify_readable();
                        std::this_thread::sleep_for(std::chrono::microseconds(attempt < 10 ? 10 : 200));
                    }
                    ok = rk_ring_try_push(ring, &env, payload.data(), 0, RK_SCOPE_SYSTEM);
                }
                if (!ok) {  // refused (REJECT), discarded (DROP_NEW), or the kernel is stopping
                    rk_atomic_fetch_add_u64(&core.cb->messages_dropped, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
                    rk_atomic_fetch_add_u64(bp == Backpressure::Reject ? &ring->rejected : &ring->dropped_new, 1,
                                            RK_RELAXED, RK_SCOPE_SYSTEM);
                } else if (q) {
                    q->notify_readable();
                }
            }
        }
    }

    cl_mem mem_[8] = {};  // params, control block, telemetry, routes, routes word, input, output, dead-letter rings
    std::uint32_t in_stride_ = 0, out_stride_ = 0;
    std::vector<std::uint8_t> in_img_, out_img_, dead_img_;
};

class OpenClBackend final : public Backend {
public:
    explicit OpenClBackend(std::shared_ptr<Context> c)
        : c_(std::move(c)),
          memory_(c_->device.shares_memory() ? std::shared_ptr<MemoryResource>(std::make_shared<SvmMemory>(c_))
                                             : host_memory()) {}

    const char *name() const noexcept override { return "opencl"; }
    bool restarts() const override { return true; }  // persistent mode: the bridge serves faults (rk_finish_run)
    std::shared_ptr<MemoryResource> memory() override { return memory_; }

    void prepare(KernelCore &core, const RuntimeConfig &cfg) override {
        const KernelSpec &spec = core.spec;
        const std::string entry = device_handler_entry(spec, "opencl");
        const std::string code = spec.handler.kind == Handler::Kind::Source ? spec.handler.code : std::string();
        const opencl::Device &dev = c_->device;
        if (dev.max_work_group && spec.block > dev.max_work_group)
            throw std::invalid_argument("block must be in [1, " + std::to_string(dev.max_work_group) +
                                        "] work-items on OpenCL device " + dev.name + ", got " +
                                        std::to_string(spec.block));
        // Local memory per block: reply buffers for a run, rk_shared, run bookkeeping.
        const std::uint64_t local_need = static_cast<std::uint64_t>(spec.output_size) * kRunLimit + RK_SHARED_BYTES + 1024;
        if (dev.local_mem && local_need > dev.local_mem)
            throw std::invalid_argument("output records of " + std::to_string(spec.output_size) + " bytes need " +
                                        std::to_string(local_need) + " bytes of local memory per block; OpenCL device " +
                                        dev.name + " has " + std::to_string(dev.local_mem));
        cl_program prog = build(code, entry, spec.output_size, cfg);
        const KernelMode wanted = spec.mode.value_or(cfg.mode);
        const bool shared = dev.shares_memory();
        if (!shared) {
            if (wanted == KernelMode::Persistent)
                throw std::invalid_argument("persistent mode needs memory the host and the device share while the "
                                            "kernel runs (fine-grained SVM with atomics); OpenCL device " + dev.name +
                                            " runs ring kernels in dispatch mode, with copies");
            if (spec.state_size)
                throw std::invalid_argument("state= needs memory the host and the device share while the kernel runs "
                                            "(fine-grained SVM); OpenCL device " + dev.name +
                                            " runs ring kernels in dispatch mode with copies, where a kernel has no "
                                            "state: keep the state in the messages, or run on the cpu backend");
            if (!spec.channels.empty())
                throw std::invalid_argument("named channels need shared memory (fine-grained SVM); OpenCL device " +
                                            dev.name + " runs ring kernels with copies of one input and one output");
        }
        bool persistent = wanted != KernelMode::Dispatch && shared;
        // Resident blocks must all run at once, and dispatch launches need a compute unit no resident
        // block holds: refuse what the device cannot run instead of hanging. Counted per device for
        // the whole process.
        std::unique_ptr<Reservation> units = units_of(dev.device).claim([&](const DeviceUnits::Held &held) {
            const std::uint32_t compute = dev.compute_units;
            const auto resident = static_cast<std::uint32_t>(held.resident);
            const std::uint32_t keep = held.dispatch > 0 || wanted == KernelMode::Auto ? 1u : 0u;
            const bool fits = resident + spec.grid + keep <= compute;
            if (wanted == KernelMode::Persistent && !fits)
                throw std::invalid_argument(
                    "kernel '" + spec.name + "' needs " + std::to_string(spec.grid) +
                    " resident work-group(s) but the device has " + std::to_string(compute) + " compute units, " +
                    std::to_string(resident) + " taken by running kernels" +
                    (keep ? " and 1 kept for dispatch launches" : "") +
                    ": terminate one, lower grid, launch with mode='dispatch', or (PoCL) raise "
                    "POCL_MAX_PTHREAD_COUNT before the process starts");
            if (wanted == KernelMode::Auto && !fits) persistent = false;
            if (!persistent && resident >= compute)
                throw std::invalid_argument("kernel '" + spec.name + "' cannot be dispatched: resident kernels hold all " +
                                            std::to_string(compute) + " compute units of the device");
            return DeviceUnits::Claim{static_cast<double>(spec.grid), !persistent};
        });
        if (core.redelivery && !persistent)
            throw std::invalid_argument(
                "kernel '" + spec.name + "': restart= (a RestartPolicy) on OpenCL needs persistent mode, whose bridge "
                "thread serves the faults its blocks hand over; " +
                (shared ? std::string("this one would be dispatched (mode='persistent', or a smaller grid)")
                        : "device " + dev.name + " shares no memory with the host while a kernel runs"));
        if (persistent) core.runner = std::make_unique<OpenClBlocks>(c_, prog, core, std::move(units));
        else if (shared) core.runner = std::make_unique<OpenClDispatch>(c_, prog, core, std::move(units));
        else core.runner = std::make_unique<OpenClCopyDispatch>(c_, prog, core, std::move(units));
        core.mode = persistent ? KernelMode::Persistent : KernelMode::Dispatch;
        core.uses_barrier = true;
    }

private:
    cl_program build(const std::string &code, const std::string &entry, std::uint32_t out_size,
                     const RuntimeConfig &cfg) {
        std::ostringstream src;
        src << "#include \"rk_builtins.h\"\n";
        if (!code.empty()) src << "#line 1 \"handler\"\n" << code << "\n#line 1 \"ringkernel-step\"\n";
        src << "RK_DEFINE_BLOCK_STEP(rk_step, " << entry << ")\n"
            << "RK_DEFINE_OPENCL_KERNEL(rk_persistent, rk_step, " << out_size << ", " << kRunLimit << ")\n"
            << "RK_DEFINE_OPENCL_DISPATCH_KERNEL(rk_dispatch, rk_step, " << out_size << ", " << kRunLimit << ")\n"
            << "RK_DEFINE_OPENCL_COPY_KERNEL(rk_copy, rk_step, " << out_size << ", " << kRunLimit << ")\n";
        const std::string source = src.str();
        std::string options = c_->device.version.rfind("OpenCL 3.", 0) == 0   ? "-cl-std=CL3.0"
                              : c_->device.version.rfind("OpenCL 2.", 0) == 0 ? "-cl-std=CL2.0"
                                                                              : "-cl-std=CL1.2";
        const std::vector<std::string> incs = dialect_include_dirs(cfg);
        for (const auto &d : incs) options += " -I " + d;
        const std::string headers = dialect_identity(incs);  // a changed dialect is a different program
        const std::string key = source + '\0' + options + '\0' + headers;
        std::lock_guard<std::mutex> lock(c_->mu);
        auto it = c_->programs.find(key);
        if (it != c_->programs.end()) return it->second;
        const opencl::Api &cl = *c_->cl;
        const char *text = source.c_str();
        cl_int err;
        cl_program prog = cl.CreateProgramWithSource(c_->ctx, 1, &text, nullptr, &err);
        if (err != CL_SUCCESS) throw Error(cl_error("clCreateProgramWithSource", err));
        err = cl.BuildProgram(prog, 1, &c_->device.device, options.c_str(), nullptr, nullptr);
        if (err != CL_SUCCESS) {
            size_t size = 0;
            cl.GetProgramBuildInfo(prog, c_->device.device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size);
            std::string log(size, '\0');
            cl.GetProgramBuildInfo(prog, c_->device.device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
            while (!log.empty() && log.back() == '\0') log.pop_back();
            cl.ReleaseProgram(prog);
            throw CompileError("the handler did not build for OpenCL device " + c_->device.name + " (" + options +
                                   "):\n" + log,
                               log);
        }
        c_->programs[key] = prog;
        return prog;
    }

    std::shared_ptr<Context> c_;
    std::shared_ptr<MemoryResource> memory_;
};

}  // namespace

namespace {
std::unique_ptr<Backend> make_opencl_backend(const RuntimeConfig &cfg) {
    std::string why;
    auto devs = opencl::devices(&why);
    if (devs.empty()) throw BackendUnavailableError("backend 'opencl' is unavailable: " + why);
    int index = cfg.device;
    if (index < 0) {
        const char *env = std::getenv("RINGKERNEL_DEVICE");
        if (env && *env) index = std::atoi(env);
    }
    if (index >= static_cast<int>(devs.size()))
        throw std::invalid_argument("device must be in [0, " + std::to_string(devs.size() - 1) + "] (OpenCL devices " +
                                    "found: " + std::to_string(devs.size()) + "), got " + std::to_string(index));
    const opencl::Device *chosen = nullptr;
    if (index >= 0) {
        chosen = &devs[static_cast<std::size_t>(index)];
    } else {
        for (const auto &d : devs)
            if (!chosen && d.can_run_ring_kernels()) chosen = &d;
        if (!chosen) chosen = &devs[0];
    }
    if (!chosen->compiler)
        throw BackendUnavailableError("OpenCL device " + chosen->describe() + " has no compiler available");
    auto c = std::make_shared<Context>();
    c->cl = opencl::api(nullptr);
    c->device = *chosen;
    cl_int err;
    c->ctx = c->cl->CreateContext(nullptr, 1, &c->device.device, nullptr, nullptr, &err);
    if (err != CL_SUCCESS) throw BackendUnavailableError(cl_error("clCreateContext", err));
    return std::make_unique<OpenClBackend>(std::move(c));
}

}  // namespace

void register_opencl_backend(BackendRegistry &r) {
    BackendEntry e;
    e.name = "opencl";
    e.auto_rank = 1;
    e.status = [] {
        std::string why;
        const auto devs = opencl::devices(&why);
        if (devs.empty()) return BackendStatus{"opencl", false, why};
        for (const auto &d : devs)
            if (d.can_run_ring_kernels())
                return BackendStatus{"opencl", true,
                                     "ring kernels on " + d.describe() +
                                         (devs.size() > 1 ? " (" + std::to_string(devs.size()) + " devices)" : std::string())};
        return BackendStatus{"opencl", false, "no OpenCL device has a compiler available: " + devs[0].describe()};
    };
    // "auto" prefers a device backend only where it beats the CPU backend: an OpenCL CPU device (PoCL) runs
    // on the same cores, so it is chosen only by name.
    e.auto_candidate = [] {
        for (const auto &d : opencl::devices(nullptr))
            if (d.can_run_ring_kernels() && !d.is_cpu()) return true;
        return false;
    };
    e.make = make_opencl_backend;
    r.add(std::move(e));
}

}  // namespace rk
