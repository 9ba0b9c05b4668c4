// cuda_backend.cpp — ring kernels on NVIDIA GPUs, resident (persistent) for their whole life.
//
// Memory. Every ring, control block, telemetry block, routes table and launch-parameter block lives in
// page-locked, device-mapped host memory (one address on both sides, unified addressing): the kernel
// polls its input ring across PCIe with system-scope atomics, the host polls local memory, and the host
// reads the control block and telemetry with plain loads, no CUDA call. Buffers (Runtime.buffer) are
// device memory, reached from the host through copies, DLPack or __cuda_array_interface__.
//
// Nothing here ever frees memory a kernel may still touch while kernels run: cudaFree and cudaFreeHost
// can synchronise the device, which would wait forever on a resident kernel. Mapped memory comes from a
// per-device pool that recycles blocks and is never handed back to CUDA; device buffers use the
// stream-ordered allocator (cudaMallocAsync/cudaFreeAsync), which does not synchronise the device.
//
// Kernels. Built-in handlers run the persistent kernels nvcc compiled into the library
// (cuda_kernels.cu); portable-source handlers are compiled by NVRTC (nvrtc.cpp) and loaded with
// cudaLibraryLoadData. Modules load eagerly (CUDA_MODULE_LOADING=EAGER unless the user set it): lazy
// loading may need a context synchronisation, which resident kernels would block forever. Each kernel
// is one launch of grid blocks on a non-blocking stream of its own, so the user's CUDA work (on the
// legacy default stream too) is never serialised behind it. A launch must fit beside the kernels
// already resident (counted per device for the process, from the occupancy calculator), and its blocks
// must all check in (blocks_started) within a few seconds; otherwise it is refused or told to leave,
// never left half-resident, which could deadlock.
//
// Clock. %globaltimer, offset onto the host's wall clock by a probe kernel when the device is opened
// (the best of 32 ping-pongs), so HLC stamps, TTLs and latencies agree with the host's.
//
// A device cannot wake host threads: a bridge thread per kernel turns ring progress into wake-ups
// (20 µs while messages flow, backing off to 1 ms), as in the OpenCL backend. Spinning receivers see
// replies without it.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "../device_common.hpp"
#include "cuda_kernels.hpp"
#include "nvrtc.hpp"
#include "ringkernel/clock.hpp"

namespace rk {
namespace {

std::string cuda_error(const std::string &what, cudaError_t e) {
    return what + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

void check(cudaError_t e, const std::string &what) {
    if (e != cudaSuccess) throw Error(cuda_error(what, e));
}

// Make `device` current on this thread (every thread that calls CUDA for a runtime does this first).
void use(int device) { check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")"); }

// Page-locked, device-mapped host memory, recycled by size and never given back to CUDA (see above).
class MappedPool {
public:
    explicit MappedPool(int device) : device_(device) {}
    MappedPool(const MappedPool &) = delete;
    MappedPool &operator=(const MappedPool &) = delete;

    void *allocate(std::size_t bytes, std::size_t align) {
        if (align > kGrain) throw std::bad_alloc();
        const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + kGrain - 1) / kGrain * kGrain;
        std::lock_guard<std::mutex> lock(mu_);
        void *p = nullptr;
        auto &list = free_[rounded];
        if (!list.empty()) {
            p = list.back();
            list.pop_back();
        } else if (rounded > kSlab / 4) {
            p = fresh(rounded);
        } else {
            if (slab_used_ + rounded > kSlab || !slab_) {
                slab_ = static_cast<char *>(fresh(kSlab));
                slab_used_ = 0;
            }
            p = slab_ + slab_used_;
            slab_used_ += rounded;
        }
        std::memset(p, 0, rounded);
        return p;
    }

    void deallocate(void *p, std::size_t bytes) noexcept {
        if (!p) return;
        const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + kGrain - 1) / kGrain * kGrain;
        std::lock_guard<std::mutex> lock(mu_);
        try {
            free_[rounded].push_back(p);
        } catch (...) {
            // Out of memory for the free list: the block is lost to the pool, which is harmless.
        }
    }

private:
    static constexpr std::size_t kGrain = 128;
    // Pinning memory may synchronise with running kernels (the programming guide lists page-locked
    // allocations among the operations that serialise streams): large slabs, so it happens rarely.
    static constexpr std::size_t kSlab = 16u << 20;

    void *fresh(std::size_t bytes) {
        use(device_);
        void *p = nullptr;
        const cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
        if (e != cudaSuccess) {
            cudaGetLastError();
            throw std::bad_alloc();
        }
        void *dev = nullptr;
        if (cudaHostGetDevicePointer(&dev, p, 0) != cudaSuccess || dev != p)
            throw Error("mapped host memory has a different address on the device (no unified addressing); the "
                        "CUDA backend needs a 64-bit platform with unified addressing");
        return p;
    }

    int device_;
    std::mutex mu_;
    std::map<std::size_t, std::vector<void *>> free_;
    char *slab_ = nullptr;
    std::size_t slab_used_ = 0;
};

// What the process knows about one GPU, shared by every runtime on it.
struct DeviceState {
    int index = 0;
    std::string name;
    int cc = 0;                    // compute capability, major * 10 + minor
    int sms = 0;
    int max_threads = 0;
    std::size_t smem_optin = 0;    // dynamic shared memory a block may opt in to
    bool host_atomics = false;     // CPU and GPU atomics on one word in mapped memory are atomic together
    std::uint64_t clock_offset = 0;  // wall clock minus %globaltimer (mod 2^64)
    std::uint64_t clock_error_ns = 0;  // half the best probe round trip
    cudaStream_t copies = nullptr;  // buffers: allocation, zeroing, copies (non-blocking)
    MappedPool pool;

    std::mutex mu;                 // everything below
    double resident = 0;           // fraction of the GPU's block slots held by resident kernels
    std::string broken;            // a device fault killed the context: why (the device is unusable)
    std::map<std::string, cudaKernel_t> sources;  // loaded NVRTC images, by cache path
    std::map<const void *, int> smem_set;         // dynamic shared memory each kernel was allowed

    explicit DeviceState(int i) : index(i), pool(i) {}
    std::string describe() const {
        return "GPU " + std::to_string(index) + " (" + name + ", sm_" + std::to_string(cc) + ", " +
               std::to_string(sms) + " SMs)";
    }
};

// Wait for the work on stream `s` with a deadline, so that an operation stalled behind a resident kernel
// is an error instead of a hang.
void finish(cudaStream_t s, const std::string &what, std::chrono::seconds limit = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (int polls = 0;; ++polls) {
        const cudaError_t q = cudaStreamQuery(s);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) throw Error(cuda_error(what, q));
        if (std::chrono::steady_clock::now() > deadline)
            throw Error(what + " did not complete within " + std::to_string(limit.count()) +
                        " s (something on the GPU is holding it up)");
        if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

// Every ring kernel asks for the same shared-memory carveout, so blocks of different kernels can share
// an SM (the co-residency arithmetic assumes they can).
void prepare_function(const void *func, const std::string &what) {
    check(cudaFuncSetAttribute(func, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared),
          "cudaFuncSetAttribute(PreferredSharedMemoryCarveout) for " + what);
    cudaFuncAttributes attr{};
    check(cudaFuncGetAttributes(&attr, func), "cudaFuncGetAttributes for " + what);  // loads it now
}

// %globaltimer against the host's wall clock: a resident probe answers pings with its clock; the ping
// with the shortest round trip gives the offset, within half that round trip.
void calibrate(DeviceState &d) {
    auto *box = static_cast<rk_u64 *>(d.pool.allocate(3 * sizeof(rk_u64), 64));
    cudaStream_t s = nullptr;
    check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    void *args[] = {&box};
    const cudaError_t e = cudaLaunchKernel(cuda_clock_probe_kernel(), dim3(1), dim3(1), args, 0, s);
    if (e != cudaSuccess) {
        cudaStreamDestroy(s);
        throw BackendUnavailableError(cuda_error("launching the clock probe on " + d.describe(), e));
    }
    std::uint64_t best = ~0ull;
    bool answered = true;
    for (rk_u64 ping = 1; ping <= 32 && answered; ++ping) {
        const std::uint64_t t0 = wall_ns();
        __atomic_store_n(&box[0], ping, __ATOMIC_RELEASE);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(ping == 1 ? 10 : 1);
        while (__atomic_load_n(&box[2], __ATOMIC_ACQUIRE) != ping) {
            if (std::chrono::steady_clock::now() > deadline) {
                answered = false;
                break;
            }
        }
        const std::uint64_t t1 = wall_ns();
        if (answered && t1 - t0 < best) {
            best = t1 - t0;
            d.clock_offset = t0 + (t1 - t0) / 2 - __atomic_load_n(&box[1], __ATOMIC_RELAXED);
            d.clock_error_ns = best / 2;
        }
    }
    __atomic_store_n(&box[0], ~0ull, __ATOMIC_RELEASE);  // the probe leaves (or never starts its loop)
    // Wait for it to leave before the mailbox goes back to the pool (a probe that never answered keeps it).
    bool left = false;
    for (int i = 0; i < 1000 && !left; ++i) {
        left = cudaStreamQuery(s) != cudaErrorNotReady;
        if (!left) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    cudaStreamDestroy(s);
    if (left) d.pool.deallocate(box, 3 * sizeof(rk_u64));
    if (!answered)
        throw BackendUnavailableError("the clock probe kernel did not run on " + d.describe() +
                                      " within 10 s (is the GPU busy with other work, or in exclusive mode?)");
}

std::shared_ptr<DeviceState> open_device(int index) {
    static std::mutex mu;
    static std::map<int, std::shared_ptr<DeviceState>> devices;
    std::lock_guard<std::mutex> lock(mu);
    auto &slot = devices[index];
    if (slot) {
        std::lock_guard<std::mutex> dl(slot->mu);
        if (!slot->broken.empty())
            throw BackendUnavailableError("backend 'cuda' is unavailable: GPU " + std::to_string(index) +
                                          " faulted earlier in this process and cannot be used again: " + slot->broken);
        return slot;
    }
    use(index);
    auto d = std::make_shared<DeviceState>(index);
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
    d->name = prop.name;
    d->cc = prop.major * 10 + prop.minor;
    d->sms = prop.multiProcessorCount;
    d->max_threads = prop.maxThreadsPerBlock;
    d->smem_optin = prop.sharedMemPerBlockOptin;
    if (d->cc < 75)
        throw BackendUnavailableError(d->describe() + " is older than compute capability 7.5, the oldest this build "
                                      "has device code for");
    if (!prop.unifiedAddressing || !prop.canMapHostMemory)
        throw BackendUnavailableError(d->describe() + " cannot map host memory with unified addressing");
    int watchdog = 0;
    cudaDeviceGetAttribute(&watchdog, cudaDevAttrKernelExecTimeout, index);
    if (watchdog)
        throw BackendUnavailableError(d->describe() + " has the display watchdog on (it drives a display), which kills "
                                      "any kernel that runs for more than a few seconds; resident ring kernels need "
                                      "a GPU without it");
    int native = 0;
    cudaDeviceGetAttribute(&native, cudaDevAttrHostNativeAtomicSupported, index);
    d->host_atomics = native != 0;
    // Load every kernel of the library now, before any is resident: loading one later (lazy loading) may
    // need a context synchronisation, which a resident kernel would block forever.
    for (const char *name : {"echo", "vector_add", "count"}) prepare_function(cuda_builtin_kernel(name), name);
    prepare_function(cuda_clock_probe_kernel(), "the clock probe");
    check(cudaStreamCreateWithFlags(&d->copies, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    calibrate(*d);
    slot = d;
    return d;
}

// Device memory for buffers, from the stream-ordered allocator (no device synchronisation).
class DeviceMemory final : public MemoryResource {
public:
    explicit DeviceMemory(std::shared_ptr<DeviceState> d) : d_(std::move(d)) {}
    void *allocate(std::size_t bytes, std::size_t) override {
        use(d_->index);
        void *p = nullptr;
        if (cudaMallocAsync(&p, bytes, d_->copies) != cudaSuccess) {
            cudaGetLastError();
            throw std::bad_alloc();
        }
        check(cudaMemsetAsync(p, 0, bytes, d_->copies), "cudaMemsetAsync");
        finish(d_->copies, "zeroing a new buffer");
        return p;
    }
    void deallocate(void *p, std::size_t) noexcept override {
        if (!p || cudaSetDevice(d_->index) != cudaSuccess) return;
        cudaFreeAsync(p, d_->copies);
    }
    const char *name() const noexcept override { return "cuda-device"; }
    int device() const noexcept override { return d_->index; }
    void copy_in(void *dst, const void *src, std::size_t n) override { copy(dst, src, n, cudaMemcpyHostToDevice); }
    void copy_out(void *dst, const void *src, std::size_t n) override { copy(dst, src, n, cudaMemcpyDeviceToHost); }

private:
    void copy(void *dst, const void *src, std::size_t n, cudaMemcpyKind kind) {
        use(d_->index);
        check(cudaMemcpyAsync(dst, src, n, kind, d_->copies), "cudaMemcpyAsync");
        finish(d_->copies, kind == cudaMemcpyHostToDevice ? "copying into a buffer" : "copying out of a buffer");
    }
    std::shared_ptr<DeviceState> d_;
};

class MappedMemory final : public MemoryResource {
public:
    explicit MappedMemory(std::shared_ptr<DeviceState> d) : d_(std::move(d)) {}
    void *allocate(std::size_t bytes, std::size_t align) override { return d_->pool.allocate(bytes, align); }
    void deallocate(void *p, std::size_t bytes) noexcept override { d_->pool.deallocate(p, bytes); }
    const char *name() const noexcept override { return "cuda-mapped"; }

private:
    std::shared_ptr<DeviceState> d_;
};

// A resident kernel's claim on the GPU's block slots, given back once (at TERMINATED).
class Reservation {
public:
    Reservation(std::shared_ptr<DeviceState> d, double share) : d_(std::move(d)), share_(share) {}
    Reservation(const Reservation &) = delete;
    Reservation &operator=(const Reservation &) = delete;
    ~Reservation() { release(); }
    void release() {
        std::lock_guard<std::mutex> lock(d_->mu);
        if (!held_) return;
        held_ = false;
        d_->resident -= share_;
    }

private:
    std::shared_ptr<DeviceState> d_;
    double share_;
    bool held_ = true;
};

// How long the blocks of a launch have to check in before it is called not co-resident.
std::chrono::milliseconds start_timeout() {
    const char *env = std::getenv("RINGKERNEL_CUDA_START_TIMEOUT_MS");
    const long ms = env && *env ? std::atol(env) : 5000;
    return std::chrono::milliseconds(ms > 0 ? ms : 5000);
}

// A device fault seen by the bridge or by terminate: the kernel's context is gone.
struct Failure {
    std::mutex mu;
    std::string why;
};

// Record a device fault: the kernel says why everywhere a user looks, its queues close (senders and
// receivers return at once instead of waiting for a kernel that is gone), and the device is marked
// unusable for the rest of the process (a fault kills the CUDA context).
void record_fault(KernelCore &core, DeviceState &d, Failure &f, const std::string &why) {
    {
        std::lock_guard<std::mutex> lock(f.mu);
        if (!f.why.empty()) return;
        f.why = why;
    }
    {
        std::lock_guard<std::mutex> lock(d.mu);
        if (d.broken.empty()) d.broken = why;
    }
    rk_atomic_store_i32(&core.cb->last_error, RK_ERR_LAUNCH, RK_RELAXED, RK_SCOPE_SYSTEM);
    rk_atomic_fetch_add_i32(&core.cb->errors_encountered, 1, RK_RELAXED, RK_SCOPE_SYSTEM);
    {
        std::lock_guard<std::mutex> lock(core.err_mu);
        core.last_error_message = why;
    }
    std::vector<std::shared_ptr<Queue>> queues;
    {
        std::lock_guard<std::mutex> lock(core.routes_mu);
        queues = core.held;
    }
    for (auto &q : queues) q->close("kernel '" + core.spec.name + "' faulted on the GPU: " + why);
}

class CudaBlocks final : public ResidentRunner {
public:
    CudaBlocks(std::shared_ptr<DeviceState> d, const void *func, std::uint32_t smem, std::uint32_t run_limit,
               KernelCore &core, std::unique_ptr<Reservation> units)
        : ResidentRunner(core), d_(std::move(d)), func_(func), smem_(smem), run_limit_(run_limit),
          units_(std::move(units)) {
        params_ = static_cast<rk_kernel_params *>(core_.memory->allocate(sizeof(rk_kernel_params), 128));
    }

    ~CudaBlocks() override {
        stop_bridge();
        if (stream_ && cudaSetDevice(d_->index) == cudaSuccess) cudaStreamDestroy(stream_);  // freed once idle
        core_.memory->deallocate(params_, sizeof(rk_kernel_params));
    }

    void stopped() override { units_->release(); }

    void start(const std::shared_ptr<KernelCore> &core) override {
        use(d_->index);
        rk_kernel_params &p = *params_;
        p = kernel_params(*core);
        p.control_block = reinterpret_cast<std::uintptr_t>(core->cb);
        p.telemetry = reinterpret_cast<std::uintptr_t>(core->tel);
        p.routes_word = reinterpret_cast<std::uintptr_t>(core->routes_word);
        p.buffers = core->buffers ? reinterpret_cast<std::uintptr_t>(core->buffers->table) : 0;
        p.clock_offset_ns = d_->clock_offset;
        p.run_limit = run_limit_;
        p.idle_backoff_ns = static_cast<rk_u32>(core->spec.options.idle_backoff_ns());
        __atomic_store_n(&core->cb->clock_ns, wall_ns(), __ATOMIC_RELEASE);
        check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        const KernelSpec &spec = core->spec;
        void *args[] = {&params_};
        const cudaError_t e = cudaLaunchKernel(func_, dim3(spec.grid), dim3(spec.block), args, smem_, stream_);
        if (e != cudaSuccess) {
            cudaGetLastError();
            throw Error(cuda_error("launching kernel '" + spec.name + "' (" + std::to_string(spec.grid) + " x " +
                                       std::to_string(spec.block) + ", " + std::to_string(smem_) +
                                       " bytes of dynamic shared memory) on " + d_->describe(),
                                   e));
        }
        // Every block must be resident at once: wait for all of them to check in.
        const auto deadline = std::chrono::steady_clock::now() + start_timeout();
        for (;;) {
            const rk_i32 in = __atomic_load_n(&core->cb->blocks_started, __ATOMIC_ACQUIRE);
            if (in >= static_cast<rk_i32>(spec.grid)) break;
            const cudaError_t q = cudaStreamQuery(stream_);
            if (q != cudaErrorNotReady && q != cudaSuccess) {
                const std::string why = cuda_error("kernel '" + spec.name + "' failed as it started on " + d_->describe(), q);
                record_fault(*core, *d_, *failure_, why);
                throw Error(why);
            }
            if (std::chrono::steady_clock::now() > deadline) {
                // Tell the blocks that did start to leave; the others leave as soon as they start. The
                // kernel's memory stays (the core is kept) since they may start at any time.
                __atomic_store_n(&core->cb->should_terminate, 1, __ATOMIC_RELEASE);
                keep_forever(core);
                throw Error("kernel '" + spec.name + "': only " + std::to_string(in) + " of its " +
                            std::to_string(spec.grid) + " blocks became resident on " + d_->describe() + " within " +
                            std::to_string(start_timeout().count()) +
                            " ms (other work on the GPU -- another process, or kernels outside this runtime -- holds the "
                            "rest); the launch was withdrawn. Lower grid, or free the GPU");
            }
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        // The bridge also watches the stream: a device fault ends it, recorded.
        auto failure = failure_;
        auto d = d_;
        cudaStream_t stream = stream_;
        start_bridge(core, [failure, d, stream](KernelCore &c) {
            cudaSetDevice(d->index);  // the bridge thread's device (cheap: a thread-local setting)
            const cudaError_t q = cudaStreamQuery(stream);
            if (q == cudaErrorNotReady || q == cudaSuccess) return true;
            record_fault(c, *d, *failure, cuda_error("kernel '" + c.spec.name + "' on " + d->describe(), q));
            return false;
        });
    }

    std::string failure() const override {
        std::lock_guard<std::mutex> lock(failure_->mu);
        return failure_->why;
    }

    bool wait_stopped(std::int64_t timeout_ns) override {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
        cudaSetDevice(d_->index);  // terminate may come from any thread
        for (;;) {
            const cudaError_t q = cudaStreamQuery(stream_);
            if (q != cudaErrorNotReady) {
                stop_bridge();
                if (q != cudaSuccess)
                    record_fault(core_, *d_, *failure_, cuda_error("kernel '" + core_.spec.name + "' on " + d_->describe(), q));
                return true;
            }
            if (std::chrono::steady_clock::now() >= deadline) return false;
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }

private:
    std::shared_ptr<DeviceState> d_;
    const void *func_;
    std::uint32_t smem_, run_limit_;
    std::unique_ptr<Reservation> units_;
    rk_kernel_params *params_ = nullptr;
    cudaStream_t stream_ = nullptr;
    std::shared_ptr<Failure> failure_ = std::make_shared<Failure>();
};

constexpr std::uint32_t kRunLimit = 8;  // messages per run (reply buffers in shared memory)

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(std::shared_ptr<DeviceState> d)
        : d_(std::move(d)), mapped_(std::make_shared<MappedMemory>(d_)), device_(std::make_shared<DeviceMemory>(d_)) {}

    const char *name() const noexcept override { return "cuda"; }
    std::shared_ptr<MemoryResource> memory() override { return mapped_; }
    std::shared_ptr<MemoryResource> buffer_memory() override { return device_; }
    // Rings between two kernels on this GPU: device memory, device-scope atomics (RK_RING_FLAG_DEVICE_LOCAL).
    std::shared_ptr<MemoryResource> k2k_memory() override { return device_; }

    void prepare(KernelCore &core, const RuntimeConfig &cfg) override {
        const KernelSpec &spec = core.spec;
        const std::string entry = device_handler_entry(spec, "cuda");
        const std::string wanted = spec.mode.empty() ? (cfg.mode.empty() ? "auto" : cfg.mode) : spec.mode;
        if (wanted == "dispatch")
            throw std::invalid_argument("the CUDA backend runs ring kernels resident (mode 'persistent' or 'auto'); "
                                        "'dispatch' is a mode of the OpenCL backend");
        if (spec.options.backpressure() == Backpressure::DropOldest && !d_->host_atomics)
            throw std::invalid_argument("backpressure DROP_OLDEST evicts from a ring while the other side (host or GPU) "
                                        "takes from it, which needs CPU and GPU atomics on one word; " +
                                        mixed_atomics_refusal() + ": use BLOCK, REJECT or DROP_NEW");
        {
            std::lock_guard<std::mutex> lock(d_->mu);
            if (!d_->broken.empty())
                throw BackendUnavailableError("GPU " + std::to_string(d_->index) + " faulted earlier in this process: " +
                                              d_->broken);
        }
        use(d_->index);
        const void *func = spec.handler.kind == Handler::Kind::Builtin ? cuda_builtin_kernel(spec.handler.name.c_str())
                                                                       : load_source(spec.handler.code, entry, cfg);
        cudaFuncAttributes attr{};
        check(cudaFuncGetAttributes(&attr, func), "cudaFuncGetAttributes");
        // Per-thread local memory (stack): growing the device's reservation can synchronise the context,
        // which resident kernels would block. Grow it only while none is resident.
        std::size_t stack = 0;
        check(cudaDeviceGetLimit(&stack, cudaLimitStackSize), "cudaDeviceGetLimit(StackSize)");
        if (attr.localSizeBytes > stack) {
            std::lock_guard<std::mutex> lock(d_->mu);
            if (d_->resident > 0)
                throw std::invalid_argument(
                    "the handler needs " + std::to_string(attr.localSizeBytes) + " bytes of local memory per thread; " +
                    d_->describe() + " reserves " + std::to_string(stack) +
                    " and cannot grow the reservation while ring kernels are resident: launch this kernel first, "
                    "or use less local memory (smaller arrays in the handler)");
            check(cudaDeviceSetLimit(cudaLimitStackSize, (attr.localSizeBytes + 1023) / 1024 * 1024),
                  "cudaDeviceSetLimit(StackSize)");
        }
        if (spec.block > static_cast<std::uint32_t>(attr.maxThreadsPerBlock))
            throw std::invalid_argument("block must be in [1, " + std::to_string(attr.maxThreadsPerBlock) +
                                        "] threads for this handler on " + d_->describe() + " (its registers limit it), got " +
                                        std::to_string(spec.block));
        // Reply buffers for a run and rk_shared in dynamic shared memory: shorten the run to fit.
        const std::size_t limit = d_->smem_optin > attr.sharedSizeBytes ? d_->smem_optin - attr.sharedSizeBytes : 0;
        std::uint32_t run_limit = kRunLimit;
        while (run_limit > 1 && rk_cuda_dynamic_smem(spec.output_size, run_limit) > limit) --run_limit;
        const std::uint32_t smem = rk_cuda_dynamic_smem(spec.output_size, run_limit);
        if (smem > limit)
            throw std::invalid_argument("output records of " + std::to_string(spec.output_size) + " bytes need " +
                                        std::to_string(smem) + " bytes of shared memory per block; " + d_->describe() +
                                        " allows " + std::to_string(limit));
        std::unique_ptr<Reservation> units;
        {
            std::lock_guard<std::mutex> lock(d_->mu);
            int &allowed = d_->smem_set[func];
            if (smem > 48u * 1024u && static_cast<int>(smem) > allowed) {
                check(cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                      "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
                allowed = static_cast<int>(smem);
            }
            int per_sm = 0;
            check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, func, static_cast<int>(spec.block), smem),
                  "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
            if (per_sm == 0)
                throw std::invalid_argument("a block of " + std::to_string(spec.block) + " threads with " +
                                            std::to_string(smem) + " bytes of shared memory cannot run on " +
                                            d_->describe());
            // Resident kernels must all fit at once, with one SM's worth left for other work.
            const double capacity = static_cast<double>(per_sm) * d_->sms;
            const double share = spec.grid / capacity;
            const double room = 1.0 - 1.0 / d_->sms;
            if (d_->resident + share > room + 1e-9)
                throw std::invalid_argument(
                    "kernel '" + spec.name + "' needs " + std::to_string(spec.grid) + " resident blocks; " +
                    d_->describe() + " holds " + std::to_string(static_cast<long>(capacity)) +
                    " such blocks at once and resident kernels already use " +
                    std::to_string(static_cast<int>(d_->resident * 100 + 0.5)) +
                    "% of it (one SM is kept free): terminate a kernel or lower grid");
            d_->resident += share;
            units = std::make_unique<Reservation>(d_, share);
        }
        core.runner = std::make_unique<CudaBlocks>(d_, func, smem, run_limit, core, std::move(units));
        core.mode = "persistent";
        core.uses_barrier = true;
    }

    std::string mixed_atomics_refusal() const override {
        if (d_->host_atomics) return {};
        return d_->describe() + " and this host have no native CPU-GPU atomics (cudaDevAttrHostNativeAtomicSupported "
                                "is 0, as on PCIe x86 machines)";
    }

private:
    // A portable-source handler: NVRTC (cached on disk), loaded once per process and device.
    const void *load_source(const std::string &code, const std::string &entry, const RuntimeConfig &cfg) {
        CudaImage img = compile_cuda_source(code, entry, d_->cc, cfg);
        std::lock_guard<std::mutex> lock(d_->mu);
        auto it = d_->sources.find(img.path);
        if (it != d_->sources.end()) return reinterpret_cast<const void *>(it->second);
        cudaLibrary_t lib = nullptr;
        cudaError_t e = cudaLibraryLoadData(&lib, img.data.c_str(), nullptr, nullptr, 0, nullptr, nullptr, 0);
        if (e == cudaErrorInvalidKernelImage || e == cudaErrorInvalidPtx || e == cudaErrorInvalidSource) {
            // A damaged cache entry: compile again, once.
            cudaGetLastError();
            std::remove(img.path.c_str());
            img = compile_cuda_source(code, entry, d_->cc, cfg);
            e = cudaLibraryLoadData(&lib, img.data.c_str(), nullptr, nullptr, 0, nullptr, nullptr, 0);
        }
        if (e != cudaSuccess) {
            cudaGetLastError();
            throw CompileError(cuda_error("loading the compiled handler (" + img.arch + ", " + img.path + ")", e), "");
        }
        cudaKernel_t k = nullptr;
        e = cudaLibraryGetKernel(&k, lib, kCudaSourceKernel);
        if (e != cudaSuccess) throw CompileError(cuda_error("finding the handler's kernel", e), "");
        prepare_function(reinterpret_cast<const void *>(k), "the handler's kernel");
        d_->sources[img.path] = k;  // loaded for the life of the process (kernels may outlive runtimes)
        return reinterpret_cast<const void *>(k);
    }

    std::shared_ptr<DeviceState> d_;
    std::shared_ptr<MemoryResource> mapped_, device_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const RuntimeConfig &cfg) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        throw BackendUnavailableError("backend 'cuda' is unavailable: " +
                                      (e != cudaSuccess ? cuda_error("cudaGetDeviceCount", e) : std::string("no GPU")));
    }
    int index = cfg.device;
    if (index < 0) {
        const char *env = std::getenv("RINGKERNEL_DEVICE");
        index = env && *env ? std::atoi(env) : 0;
    }
    if (index < 0 || index >= n)
        throw std::invalid_argument("device must be in [0, " + std::to_string(n - 1) + "] (CUDA devices found: " +
                                    std::to_string(n) + "), got " + std::to_string(index));
    return std::make_unique<CudaBackend>(open_device(index));
}

std::string cuda_runtime_detail(bool *available) {
    *available = false;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return "CUDA backend unavailable: " + cuda_error("cudaGetDeviceCount", e);
    }
    if (n == 0) return "CUDA backend unavailable: the CUDA runtime sees no GPU";
    cudaDeviceProp prop{};
    std::string first = "device 0";
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        first = std::string(prop.name) + ", sm_" + std::to_string(prop.major * 10 + prop.minor);
    // Whether this build has device code the GPU can run (SASS for it, or PTX it can compile).
    cudaFuncAttributes attr{};
    if (const cudaError_t fe = cudaFuncGetAttributes(&attr, cuda_clock_probe_kernel()); fe != cudaSuccess) {
        cudaGetLastError();
        return "CUDA backend unavailable: this build has no device code for " + first + " (" +
               cuda_error("cudaFuncGetAttributes", fe) + ")";
    }
    int driver = 0;
    cudaDriverGetVersion(&driver);
    *available = true;
    return "ring kernels on " + std::to_string(n) + " GPU(s) (" + first + "; driver CUDA " +
           std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10) + ")";
}

}  // namespace rk
