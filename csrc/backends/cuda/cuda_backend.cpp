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
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "../../core/process.hpp"
#include "../../core/source_cache.hpp"
#include "../device_common.hpp"
#include "cuda_kernels.hpp"
#include "cuda_probe.hpp"
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

// Every deadline of this backend stretches by $RINGKERNEL_CUDA_TIMEOUT_SCALE (at least 1): under
// compute-sanitizer, instrumented kernels run many times slower (scripts/gpu_check.sh sets it there).
std::chrono::milliseconds scaled(std::chrono::milliseconds ms) {
    static const double scale = [] {
        const char *env = std::getenv("RINGKERNEL_CUDA_TIMEOUT_SCALE");
        const double v = env && *env ? std::atof(env) : 1.0;
        return v >= 1.0 && v <= 1000.0 ? v : 1.0;
    }();
    return std::chrono::milliseconds(static_cast<std::int64_t>(static_cast<double>(ms.count()) * scale));
}

// Run `fn`, a CUDA call that can stall behind resident kernels (pinning memory, loading a module), on a
// helper thread and wait for it at most `limit`: a call that does not return in time becomes an Error
// naming `what` instead of a hang. The helper is then left to finish (or stall) on its own, and what it
// returns is dropped; `fn` must therefore own everything it touches (capture by value).
template <class T>
T within_deadline(int device, const std::string &what, std::chrono::milliseconds limit, std::function<T()> fn) {
    struct Shared {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        T value{};
    };
    auto shared = std::make_shared<Shared>();
    std::thread([shared, device, fn = std::move(fn)] {
        cudaSetDevice(device);
        T v = fn();
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->value = std::move(v);
        shared->done = true;
        shared->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> lock(shared->mu);
    if (!shared->cv.wait_for(lock, limit, [&] { return shared->done; }))
        throw Error(what + " did not return within " + std::to_string(limit.count()) +
                    " ms (it may be waiting for the resident ring kernels, which never finish); nothing was changed");
    return std::move(shared->value);
}

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
    // allocations among the operations that serialise streams): large slabs, so it happens rarely (the
    // first is taken when the device opens, before any kernel is resident), and each under a deadline.
    static constexpr std::size_t kSlab = 16u << 20;

    void *fresh(std::size_t bytes) {
        using Result = std::pair<cudaError_t, void *>;
        const Result r = within_deadline<Result>(device_, "cudaHostAlloc of " + std::to_string(bytes >> 10) + " KiB",
                                                 scaled(std::chrono::seconds(10)), [bytes] {
                                                     void *p = nullptr;
                                                     const cudaError_t e = cudaHostAlloc(
                                                         &p, bytes, cudaHostAllocMapped | cudaHostAllocPortable);
                                                     if (e != cudaSuccess) cudaGetLastError();
                                                     return Result{e, p};
                                                 });
        if (r.first != cudaSuccess) throw std::bad_alloc();
        use(device_);
        void *dev = nullptr;
        if (cudaHostGetDevicePointer(&dev, r.second, 0) != cudaSuccess || dev != r.second)
            throw Error("mapped host memory has a different address on the device (no unified addressing); the "
                        "CUDA backend needs a 64-bit platform with unified addressing");
        return r.second;
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
    bool lazy_loading = false;     // CUDA was initialised (by another library first) with lazy module loading
    cudaStream_t copies = nullptr;  // buffers: allocation, zeroing, copies (ordered after the legacy stream)
    MappedPool pool;

    // The device clock on the host's wall clock: wall clock minus %globaltimer (mod 2^64), measured when the
    // device opens and again from the bridge threads every few seconds (the two clocks drift apart), and
    // published to the kernels through their control blocks.
    std::atomic<std::uint64_t> clock_offset{0};
    std::atomic<std::uint64_t> clock_error_ns{0};  // half the best probe round trip
    std::mutex calibration;        // one calibration at a time; guards the three below
    cudaStream_t probe_stream = nullptr;
    rk_u64 *mailbox = nullptr;     // the probe's (nullptr while a probe that never answered may still start)
    std::chrono::steady_clock::time_point calibrated;

    // The fraction of the GPU's block slots held by resident kernels (claimed under `mu`, so that a check
    // of "no kernel is resident" below it holds while `mu` is held).
    std::shared_ptr<DeviceUnits> units = std::make_shared<DeviceUnits>();
    std::mutex mu;                 // everything below
    std::string broken;            // a device fault killed the context: why (the device is unusable)
    std::map<std::string, cudaKernel_t> sources;  // loaded modules: NVRTC images by cache path, handler images by hash
    std::map<const void *, int> smem_set;         // dynamic shared memory each kernel was allowed

    explicit DeviceState(int i) : index(i), pool(i) {}
    std::string describe() const {
        return "GPU " + std::to_string(index) + " (" + name + ", sm_" + std::to_string(cc) + ", " +
               std::to_string(sms) + " SMs)";
    }
};

// Wait for the work on stream `s` with a deadline, so that an operation stalled behind a resident kernel
// is an error instead of a hang.
void finish(cudaStream_t s, const std::string &what, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    limit = scaled(limit);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (int polls = 0;; ++polls) {
        const cudaError_t q = cudaStreamQuery(s);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) throw Error(cuda_error(what, q));
        if (std::chrono::steady_clock::now() > deadline)
            throw Error(what + " did not complete within " + std::to_string(limit.count()) +
                        " ms (something on the GPU is holding it up)");
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

// %globaltimer against the host's wall clock: a probe kernel (one thread) answers `pings` pings with its
// clock; the ping with the shortest round trip gives the offset, within half that round trip. Returns
// false when the probe did not answer within `first` (the GPU is full), keeping the old offset; waits at
// most `leave` for the probe to exit afterwards (one that has not keeps its mailbox, and the next
// calibration waits until the probe stream is idle). A new offset replaces the old one only when it is
// about as precise (within twice its error, or 10 µs), so a round trip slowed by bus traffic cannot move
// the clock by its own error. Called with d.calibration held.
bool calibrate(DeviceState &d, int pings, std::chrono::milliseconds first, std::chrono::milliseconds leave) {
    if (!d.mailbox) d.mailbox = static_cast<rk_u64 *>(d.pool.allocate(3 * sizeof(rk_u64), 64));
    rk_u64 *box = d.mailbox;
    __atomic_store_n(&box[0], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&box[2], 0, __ATOMIC_RELEASE);
    void *args[] = {&box};
    const cudaError_t e = cudaLaunchKernel(cuda_clock_probe_kernel(), dim3(1), dim3(1), args, 0, d.probe_stream);
    if (e != cudaSuccess) {
        cudaGetLastError();
        throw BackendUnavailableError(cuda_error("launching the clock probe on " + d.describe(), e));
    }
    std::uint64_t best = ~0ull, offset = 0;
    bool answered = true;
    for (rk_u64 ping = 1; ping <= static_cast<rk_u64>(pings) && answered; ++ping) {
        const std::uint64_t t0 = wall_ns();
        __atomic_store_n(&box[0], ping, __ATOMIC_RELEASE);
        const auto deadline = std::chrono::steady_clock::now() + (ping == 1 ? first : scaled(std::chrono::seconds(1)));
        while (__atomic_load_n(&box[2], __ATOMIC_ACQUIRE) != ping) {
            if (std::chrono::steady_clock::now() > deadline) {
                answered = false;
                break;
            }
        }
        const std::uint64_t t1 = wall_ns();
        if (answered && t1 - t0 < best) {
            best = t1 - t0;
            offset = t0 + (t1 - t0) / 2 - __atomic_load_n(&box[1], __ATOMIC_RELAXED);
        }
    }
    __atomic_store_n(&box[0], ~0ull, __ATOMIC_RELEASE);  // the probe leaves (or never starts its loop)
    const auto until = std::chrono::steady_clock::now() + leave;
    bool left = false;
    while (!(left = cudaStreamQuery(d.probe_stream) != cudaErrorNotReady) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (!left) d.mailbox = nullptr;  // the probe may still start and read it: it keeps it
    d.calibrated = std::chrono::steady_clock::now();
    if (best == ~0ull) return false;
    const std::uint64_t error = best / 2, old = d.clock_error_ns.load(std::memory_order_relaxed);
    if (old != 0 && error > std::max<std::uint64_t>(2 * old, 10'000)) return false;
    d.clock_offset.store(offset, std::memory_order_relaxed);
    d.clock_error_ns.store(error, std::memory_order_relaxed);
    return true;
}

// Measure the clock offset again when the last measurement is older than $RINGKERNEL_CUDA_RECALIBRATE_MS
// (default 2000; 0 turns it off). Bridge threads call this every round; one of them does the work, the
// others go on. A probe that cannot start (the GPU full with other work) costs that bridge round its first
// ping's wait (200 ms, scaled), and the previous offset stays; while that probe has not run, no other is
// queued behind it.
void recalibrate_if_due(DeviceState &d) {
    static const long interval_ms = [] {
        const char *env = std::getenv("RINGKERNEL_CUDA_RECALIBRATE_MS");
        const long v = env && *env ? std::atol(env) : 2000;
        return v >= 0 ? v : 2000;
    }();
    if (interval_ms == 0) return;
    std::unique_lock<std::mutex> lock(d.calibration, std::try_to_lock);
    if (!lock.owns_lock() || std::chrono::steady_clock::now() - d.calibrated < std::chrono::milliseconds(interval_ms))
        return;
    if (cudaStreamQuery(d.probe_stream) == cudaErrorNotReady) {  // the last probe never ran: try again later
        d.calibrated = std::chrono::steady_clock::now();
        return;
    }
    try {
        calibrate(d, 16, scaled(std::chrono::milliseconds(200)), std::chrono::milliseconds(2));
    } catch (const std::exception &) {
        d.calibrated = std::chrono::steady_clock::now();  // a launch that failed: the bridge sees the fault itself
    }
}

// Every GPU this process has opened, for the life of the process (kernels may outlive runtimes).
struct Devices {
    std::mutex mu;
    std::map<int, std::shared_ptr<DeviceState>> by_index;
};
Devices &devices() {
    static Devices *all = new Devices;  // never destroyed: bridge threads may use it during exit
    return *all;
}

// Why GPU `index` cannot be used again (a device fault killed its context), or "".
std::string broken_reason(int index) {
    Devices &all = devices();
    std::lock_guard<std::mutex> lock(all.mu);
    auto it = all.by_index.find(index);
    if (it == all.by_index.end()) return {};
    std::lock_guard<std::mutex> dl(it->second->mu);
    return it->second->broken;
}

std::shared_ptr<DeviceState> open_device(int index) {
    Devices &all = devices();
    std::lock_guard<std::mutex> lock(all.mu);
    auto &slot = all.by_index[index];
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
        throw BackendUnavailableError(d->describe() + " is older than compute capability 7.5, the oldest the CUDA "
                                      "backend supports");
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
    d->lazy_loading = cuda_module_loading() == CudaModuleLoading::Lazy;
    // Load every kernel of the library now, before any is resident: loading one later (lazy loading) may
    // need a context synchronisation, which a resident kernel would block forever.
    for (const std::string &name : builtin_handlers()) prepare_function(cuda_builtin_kernel(name.c_str()), name.c_str());
    prepare_function(cuda_clock_probe_kernel(), "the clock probe");
    check(cudaStreamCreateWithFlags(&d->copies, cudaStreamDefault), "cudaStreamCreateWithFlags");
    check(cudaStreamCreateWithFlags(&d->probe_stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    {
        std::lock_guard<std::mutex> cl(d->calibration);
        if (!calibrate(*d, 32, scaled(std::chrono::seconds(10)), std::chrono::seconds(1)))
            throw BackendUnavailableError("the clock probe kernel did not run on " + d->describe() +
                                          " within 10 s (is the GPU busy with other work, or in exclusive mode?)");
    }
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
    // DLPack's producer side: the consumer's stream waits for everything queued on `copies` so far.
    void order_before(std::intptr_t stream) override {
        use(d_->index);
        const cudaStream_t consumer = stream == 1   ? cudaStreamLegacy
                                      : stream == 2 ? cudaStreamPerThread
                                                    : reinterpret_cast<cudaStream_t>(stream);
        cudaEvent_t ev = nullptr;
        check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        cudaError_t e = cudaEventRecord(ev, d_->copies);
        if (e == cudaSuccess) e = cudaStreamWaitEvent(consumer, ev, 0);
        cudaEventDestroy(ev);  // released once the wait has been satisfied
        check(e, "ordering the buffer's copies before the consumer's stream " + std::to_string(stream));
    }

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

using Reservation = DeviceUnits::Reservation;  // a resident kernel's share of the GPU's block slots

// How long the blocks of a launch have to check in before it is called not co-resident.
std::chrono::milliseconds start_timeout() {
    const char *env = std::getenv("RINGKERNEL_CUDA_START_TIMEOUT_MS");
    const long ms = env && *env ? std::atol(env) : 5000;
    return scaled(std::chrono::milliseconds(ms > 0 ? ms : 5000));
}

// Record a device fault (the first one counts): the kernel says why everywhere a user looks, its queues
// close (senders and receivers return at once instead of waiting for a kernel that is gone), and the
// device is marked unusable for the rest of the process first (a fault kills the CUDA context).
void record_fault(KernelCore &core, DeviceState &d, DeviceFault &f, const std::string &why) {
    f.record(core, why, RK_ERR_FAULT, [&d](const std::string &w) {
        std::lock_guard<std::mutex> lock(d.mu);
        if (d.broken.empty()) d.broken = w;
    });
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
        set_state_params(p, *core);  // mapped host memory, like the control block
        p.clock_offset_ns = d_->clock_offset.load(std::memory_order_relaxed);
        __atomic_store_n(&core->cb->clock_offset_ns, p.clock_offset_ns, __ATOMIC_RELAXED);
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
            if (q == cudaErrorNotReady || q == cudaSuccess) {
                recalibrate_if_due(*d);
                __atomic_store_n(&c.cb->clock_offset_ns, d->clock_offset.load(std::memory_order_relaxed),
                                 __ATOMIC_RELAXED);
                return true;
            }
            record_fault(c, *d, *failure, cuda_error("kernel '" + c.spec.name + "' on " + d->describe(), q));
            return false;
        });
    }

    std::string failure() const override { return failure_->why(); }

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
    std::shared_ptr<DeviceFault> failure_ = std::make_shared<DeviceFault>();
};

constexpr std::uint32_t kRunLimit = 8;  // messages per run (reply buffers in shared memory)

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(std::shared_ptr<DeviceState> d)
        : d_(std::move(d)), mapped_(std::make_shared<MappedMemory>(d_)), device_(std::make_shared<DeviceMemory>(d_)) {}

    const char *name() const noexcept override { return "cuda"; }
    bool restarts() const override { return true; }  // persistent: the bridge serves faults (rk_finish_run)
    std::shared_ptr<MemoryResource> memory() override { return mapped_; }
    std::shared_ptr<MemoryResource> buffer_memory() override { return device_; }
    // Rings between two kernels on this GPU: device memory, device-scope atomics (RK_RING_FLAG_DEVICE_LOCAL).
    std::shared_ptr<MemoryResource> k2k_memory() override { return device_; }

    void prepare(KernelCore &core, const RuntimeConfig &cfg) override {
        const KernelSpec &spec = core.spec;
        const std::string entry = device_handler_entry(spec, "cuda");
        if (spec.mode.value_or(cfg.mode) == KernelMode::Dispatch)
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
                           : spec.handler.kind == Handler::Kind::Image ? load_image(spec.handler)
                                                                       : load_source(spec.handler.code, entry, cfg);
        cudaFuncAttributes attr{};
        check(cudaFuncGetAttributes(&attr, func), "cudaFuncGetAttributes");
        // Per-thread local memory (stack): growing the device's reservation can synchronise the context,
        // which resident kernels would block. Grow it only while none is resident.
        std::size_t stack = 0;
        check(cudaDeviceGetLimit(&stack, cudaLimitStackSize), "cudaDeviceGetLimit(StackSize)");
        if (attr.localSizeBytes > stack) {
            std::lock_guard<std::mutex> lock(d_->mu);
            if (d_->units->held().resident > 0)
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
            units = d_->units->claim([&](const DeviceUnits::Held &held) {
                if (held.resident + share > room + 1e-9)
                    throw std::invalid_argument(
                        "kernel '" + spec.name + "' needs " + std::to_string(spec.grid) + " resident blocks; " +
                        d_->describe() + " holds " + std::to_string(static_cast<long>(capacity)) +
                        " such blocks at once and resident kernels already use " +
                        std::to_string(static_cast<int>(held.resident * 100 + 0.5)) +
                        "% of it (one SM is kept free): terminate a kernel or lower grid");
                return DeviceUnits::Claim{share, false};
            });
        }
        core.runner = std::make_unique<CudaBlocks>(d_, func, smem, run_limit, core, std::move(units));
        core.mode = KernelMode::Persistent;
        core.uses_barrier = true;
    }

    std::string device_target() const override { return "sm_" + std::to_string(d_->cc); }

    std::string mixed_atomics_refusal() const override {
        if (d_->host_atomics) return {};
        return d_->describe() + " and this host have no native CPU-GPU atomics (cudaDevAttrHostNativeAtomicSupported "
                                "is 0, as on PCIe x86 machines)";
    }

private:
    // A portable-source handler: NVRTC (cached on disk), loaded once per process and device (load_module).
    const void *load_source(const std::string &code, const std::string &entry, const RuntimeConfig &cfg) {
        CudaImage img = compile_cuda_source(code, entry, d_->cc, cfg);
        Loaded r = load_module(img.path, img.data, kCudaSourceKernel);
        if (r.error == cudaErrorInvalidKernelImage || r.error == cudaErrorInvalidPtx || r.error == cudaErrorInvalidSource) {
            // A damaged cache entry: compile again, once.
            std::remove(img.path.c_str());
            img = compile_cuda_source(code, entry, d_->cc, cfg);
            r = load_module(img.path, img.data, kCudaSourceKernel);
        }
        if (r.error != cudaSuccess)
            throw CompileError(cuda_error("loading the compiled handler (" + img.arch + ", " + img.path + ")", r.error),
                               "");
        return r.kernel;
    }

    // A handler image built outside the library (Handler::image: an rk.jit handler linked by nvJitLink).
    const void *load_image(const Handler &h) {
        const std::string key = "image:" + fnv1a_hex(h.code + '\0' + h.entry);
        Loaded r = load_module(key, h.code, h.entry.c_str());
        if (r.error == cudaErrorInvalidKernelImage || r.error == cudaErrorNoKernelImageForDevice ||
            r.error == cudaErrorInvalidPtx || r.error == cudaErrorUnsupportedPtxVersion)
            throw CompileError(cuda_error("handler image '" + h.name + "' does not load on " + d_->describe() +
                                              ": build it for this device (arch='" + device_target() + "')",
                                          r.error),
                               "");
        if (r.error == cudaErrorSymbolNotFound || r.error == cudaErrorInvalidDeviceFunction)
            throw CompileError(cuda_error("handler image '" + h.name + "' has no kernel '" + h.entry + "'", r.error), "");
        if (r.error != cudaSuccess)
            throw CompileError(cuda_error("loading handler image '" + h.name + "'", r.error), "");
        return r.kernel;
    }

    struct Loaded {
        cudaError_t error = cudaSuccess;
        const void *kernel = nullptr;
    };

    // Loads a module (cubin or PTX) once per process and device, under `key`, and finds its kernel `entry`.
    // Loading a module while kernels are resident may wait for them (always under lazy loading, which then
    // needs a context synchronisation): refused up front under lazy loading, and under a deadline otherwise.
    Loaded load_module(const std::string &key, const std::string &data, const char *entry) {
        {
            std::lock_guard<std::mutex> lock(d_->mu);
            auto it = d_->sources.find(key);
            if (it != d_->sources.end()) return {cudaSuccess, reinterpret_cast<const void *>(it->second)};
            if (d_->lazy_loading && d_->units->held().resident > 0)
                throw Error("CUDA in this process loads modules lazily (another library initialised CUDA before "
                        "ringkernel, without CUDA_MODULE_LOADING=EAGER), and loading this handler's module while ring "
                        "kernels are resident could wait for them forever: set CUDA_MODULE_LOADING=EAGER in the "
                        "environment before CUDA starts, or launch rk.Source and rk.jit kernels before the others");
        }
        // Loaded without the device's lock (a load may take up to its deadline; faults and other launches
        // must not wait for it).
        using Result = std::pair<cudaError_t, cudaKernel_t>;
        auto image = std::make_shared<std::string>(data);
        auto name = std::make_shared<std::string>(entry);
        Result r = within_deadline<Result>(d_->index, "loading the compiled handler (cudaLibraryLoadData)",
                                           scaled(std::chrono::seconds(10)), [image, name] {
            cudaLibrary_t lib = nullptr;
            cudaError_t e = cudaLibraryLoadData(&lib, image->c_str(), nullptr, nullptr, 0, nullptr, nullptr, 0);
            cudaKernel_t k = nullptr;
            if (e == cudaSuccess) e = cudaLibraryGetKernel(&k, lib, name->c_str());
            if (e == cudaSuccess) {
                cudaFuncAttributes attr{};
                e = cudaFuncGetAttributes(&attr, reinterpret_cast<const void *>(k));  // loads it now
            }
            if (e != cudaSuccess) {
                cudaGetLastError();
                if (lib) cudaLibraryUnload(lib);
            }
            return Result{e, k};
        });
        if (r.first != cudaSuccess) return {r.first, nullptr};
        prepare_function(reinterpret_cast<const void *>(r.second), "the handler's kernel");
        std::lock_guard<std::mutex> lock(d_->mu);
        // Loaded for the life of the process (kernels may outlive runtimes); when another thread loaded the
        // same image meanwhile, its copy serves both (this one stays loaded, unused).
        return {cudaSuccess, reinterpret_cast<const void *>(d_->sources.emplace(key, r.second).first->second)};
    }

    std::shared_ptr<DeviceState> d_;
    std::shared_ptr<MemoryResource> mapped_, device_;
};

}  // namespace

namespace {

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

// cudaGetDeviceCount's failure in words; an old driver gets the versions and what to do.
std::string device_count_error(cudaError_t e) {
    if (e == cudaErrorInsufficientDriver) {
        int driver = 0, runtime = 0;
        cudaDriverGetVersion(&driver);
        cudaRuntimeGetVersion(&runtime);
        return "the NVIDIA driver supports CUDA " + version_text(driver) + ", older than the CUDA " +
               version_text(runtime) + " runtime this build links statically" +
               (runtime >= 13000 ? " (CUDA 13 needs driver 580 or later)" : "") +
               ": update the driver, or build ringkernel with an older CUDA toolkit";
    }
    return cuda_error("cudaGetDeviceCount", e);
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const RuntimeConfig &cfg) {
    if (std::string inherited = driver_inherited_reason("cuda"); !inherited.empty())
        throw BackendUnavailableError("backend 'cuda' is unavailable: " + inherited);
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        throw BackendUnavailableError("backend 'cuda' is unavailable: " +
                                      (e != cudaSuccess ? device_count_error(e) : std::string("no GPU")));
    }
    int index = cfg.device;
    if (index < 0) {
        const char *env = std::getenv("RINGKERNEL_DEVICE");
        index = env && *env ? std::atoi(env) : 0;
    }
    if (index < 0 || index >= n)
        throw std::invalid_argument("device must be in [0, " + std::to_string(n - 1) + "] (CUDA devices found: " +
                                    std::to_string(n) + "), got " + std::to_string(index));
    try {
        return std::make_unique<CudaBackend>(open_device(index));
    } catch (const BackendUnavailableError &) {
        throw;
    } catch (const std::exception &failure) {
        // Whatever stops the device from opening makes the backend unavailable here ("auto" goes on).
        throw BackendUnavailableError("backend 'cuda' is unavailable: opening GPU " + std::to_string(index) +
                                      " failed: " + failure.what());
    }
}

std::string cuda_runtime_detail(bool *available) {
    *available = false;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return "CUDA backend unavailable: " + device_count_error(e);
    }
    if (n == 0) return "CUDA backend unavailable: the CUDA runtime sees no GPU";
    // A GPU whose context a device fault killed stays unusable for the rest of the process.
    int usable = 0;
    std::string broken;
    for (int i = 0; i < n; ++i) {
        const std::string why = broken_reason(i);
        if (why.empty()) ++usable;
        else if (broken.empty()) broken = "GPU " + std::to_string(i) + " faulted earlier in this process: " + why;
    }
    if (usable == 0) return "CUDA backend unavailable: " + broken;
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
    std::string detail = "ring kernels on " + std::to_string(usable) + " GPU(s) (" + first + "; driver CUDA " +
                         version_text(driver) + ")";
    if (!broken.empty()) detail += "; " + broken;
    if (cuda_module_loading() == CudaModuleLoading::Lazy)
        detail += "; CUDA loads modules lazily in this process (initialised before ringkernel without "
                  "CUDA_MODULE_LOADING=EAGER): rk.Source kernels must be launched before others are resident";
    return detail;
}

}  // namespace rk
