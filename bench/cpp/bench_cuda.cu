// bench_cuda.cu — round trips host -> CUDA kernel -> host on one GPU, in one run (issue 6):
//   floor           a minimal resident kernel (1 thread) answering a host-written flag in page-locked,
//                   device-mapped host memory with system-scope acquire loads / release stores: the
//                   least a persistent round trip can cost on this machine (PCIe both ways)
//   launch          one cudaLaunchKernel + cudaStreamSynchronize per message: a tiny kernel copies one
//                   64-byte message from mapped memory into the mapped answer (what a non-resident
//                   design pays per message)
//   graph           the same one-message work captured once as a CUDA graph: cudaGraphLaunch +
//                   cudaStreamSynchronize per message
//   ringkernel      ringkernel's CUDA backend through the public C++ API: a resident "echo" kernel,
//                   64-byte records through its input and output queues, the host spinning on the reply
//   ringkernel_cpu  the same echo on the CPU backend, for reference
//   batched         messages/s of the CUDA echo kernel, batches of 1024 64-byte records (send_batch on a
//                   producer thread, receive_batch on this one), grid 1 and grid 4 (the CPU backend's
//                   grid 1 for reference)
//   telemetry       ns per Kernel::telemetry() call from the host while the kernel runs (idle, and
//                   under batched traffic), against a plain acquire load of one mapped word (idle: the
//                   floor kernel only reads it; busy: a kernel stores to it continuously)
//   k2k             a pipeline echo -> echo joined by Runtime::connect: the host sends to the first and
//                   receives from the second; per hop = its round trip minus the single echo's, both
//                   measured in the same runtime
// Prints one JSON object on stdout (bench/bench_cuda.py runs it, tabulates it and writes
// bench/results/); progress goes to stderr.
//
// Usage: ringkernel_bench_cuda [--quick] [--cpu-selftest]   (device: $RINGKERNEL_DEVICE, else 0)
// --cpu-selftest runs the ringkernel cases on the CPU backend (no CUDA at all), to check the harness here.
// Exit status: 0 with {"available": false, "reason": ...} when there is no usable GPU (no driver, no
// device): harmless in CI. 0 when the GPU measurements ran; a measurement that failed (for instance the
// ringkernel CUDA backend raising BackendUnavailableError) carries {"error": ...} in its place and the
// others still run. 2 on a bad command line or device index.
#include <cuda/atomic>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ringkernel/ringkernel.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using SysInt = cuda::atomic_ref<int, cuda::thread_scope_system>;
using SysU64 = cuda::atomic_ref<unsigned long long, cuda::thread_scope_system>;

constexpr std::size_t kRecord = 64;       // bytes per message everywhere
constexpr std::size_t kBatch = 1024;      // records per batch
constexpr double kReplyTimeoutS = 10.0;   // a reply that takes longer than this is a failure
constexpr double kExitTimeoutS = 5.0;     // a resident kernel must exit this soon after its stop flag

// ---- small helpers ------------------------------------------------------------------------------

double ns_since(Clock::time_point t0) { return std::chrono::duration<double, std::nano>(Clock::now() - t0).count(); }

std::string cuda_error_text(cudaError_t e) { return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e); }

void check(cudaError_t e, const char *what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cuda_error_text(e));
}
#define CK(call) check((call), #call)

std::string esc(const std::string &s) {
    std::string out;
    for (const char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
                out += buf;
            } else {
                out += c;
            }
        }
    }
    return out;
}

std::string num(double v, int prec = 3) {
    if (!std::isfinite(v)) return "null";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", prec, v);
    return buf;
}

// A JSON object built in order.
class Obj {
public:
    Obj &raw(const std::string &key, const std::string &value) {
        s_ += first_ ? "" : ", ";
        first_ = false;
        s_ += "\"" + esc(key) + "\": " + value;
        return *this;
    }
    Obj &str(const std::string &key, const std::string &v) { return raw(key, "\"" + esc(v) + "\""); }
    Obj &real(const std::string &key, double v, int prec = 3) { return raw(key, num(v, prec)); }
    Obj &integer(const std::string &key, long long v) { return raw(key, std::to_string(v)); }
    Obj &boolean(const std::string &key, bool v) { return raw(key, v ? "true" : "false"); }
    Obj &opt_real(const std::string &key, const std::optional<double> &v, int prec = 3) {
        return raw(key, v ? num(*v, prec) : "null");
    }
    Obj &opt_bool(const std::string &key, const std::optional<bool> &v) {
        return raw(key, v ? (*v ? "true" : "false") : "null");
    }
    std::string done() const { return "{" + s_ + "}"; }

private:
    std::string s_;
    bool first_ = true;
};

std::string error_json(const std::string &type, const std::string &what) {
    return Obj().str("error", what).str("error_type", type).done();
}

// Runs `fn` (which returns a JSON value); an exception becomes {"error": ..., "error_type": ...}.
template <class Fn>
std::string guarded(const char *what, Fn fn) {
    std::fprintf(stderr, "bench_cuda: %s ...\n", what);
    try {
        return fn();
    } catch (const rk::BackendUnavailableError &e) {
        std::fprintf(stderr, "bench_cuda: %s: BackendUnavailableError: %s\n", what, e.what());
        return error_json("BackendUnavailableError", e.what());
    } catch (const rk::Error &e) {
        std::fprintf(stderr, "bench_cuda: %s: rk::Error: %s\n", what, e.what());
        return error_json("rk::Error", e.what());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench_cuda: %s: %s\n", what, e.what());
        return error_json("std::exception", e.what());
    }
}

// ---- statistics ---------------------------------------------------------------------------------

struct Stats {
    double p50 = 0, p99 = 0, p999 = 0, mean = 0, min = 0, max = 0;  // ns
    std::size_t n = 0;
};

Stats stats(std::vector<double> ns) {
    std::sort(ns.begin(), ns.end());
    Stats s;
    s.n = ns.size();
    if (ns.empty()) return s;
    auto at = [&](double q) {
        return ns[std::min(ns.size() - 1, static_cast<std::size_t>(q * static_cast<double>(ns.size())))];
    };
    s.p50 = at(0.50);
    s.p99 = at(0.99);
    s.p999 = at(0.999);
    s.min = ns.front();
    s.max = ns.back();
    double sum = 0;
    for (const double v : ns) sum += v;
    s.mean = sum / static_cast<double>(ns.size());
    return s;
}

std::string stats_json(const Stats &s) {
    return Obj()
        .real("p50_us", s.p50 / 1e3)
        .real("p99_us", s.p99 / 1e3)
        .real("p999_us", s.p999 / 1e3)
        .real("mean_us", s.mean / 1e3)
        .real("min_us", s.min / 1e3)
        .real("max_us", s.max / 1e3)
        .integer("n", static_cast<long long>(s.n))
        .done();
}

// The run with the median p50 of several.
Stats median_run(std::vector<Stats> v) {
    std::sort(v.begin(), v.end(), [](const Stats &a, const Stats &b) { return a.p50 < b.p50; });
    return v[v.size() / 2];
}

// ---- CUDA resources -----------------------------------------------------------------------------

// Page-locked, device-mapped host memory: `host` for the CPU, `dev` for kernels. keep() leaks it, for a
// kernel that did not exit (freeing memory a running kernel uses would wait on it forever).
class Mapped {
public:
    explicit Mapped(std::size_t bytes) {
        CK(cudaHostAlloc(&host_, bytes, cudaHostAllocMapped));
        std::memset(host_, 0, bytes);
        CK(cudaHostGetDevicePointer(&dev_, host_, 0));
    }
    ~Mapped() {
        if (host_ && !keep_) cudaFreeHost(host_);
    }
    Mapped(const Mapped &) = delete;
    Mapped &operator=(const Mapped &) = delete;
    template <class T> T *host() const { return static_cast<T *>(host_); }
    template <class T> T *dev() const { return static_cast<T *>(dev_); }
    void keep() { keep_ = true; }

private:
    void *host_ = nullptr;
    void *dev_ = nullptr;
    bool keep_ = false;
};

class Stream {
public:
    Stream() { CK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
    ~Stream() {
        if (s_ && !keep_) cudaStreamDestroy(s_);
    }
    Stream(const Stream &) = delete;
    Stream &operator=(const Stream &) = delete;
    cudaStream_t get() const { return s_; }
    void keep() { keep_ = true; }
    // Wait for the stream's work without blocking forever: false when it is still running at the
    // deadline.
    bool wait(double timeout_s) const {
        const auto t0 = Clock::now();
        for (;;) {
            const cudaError_t e = cudaStreamQuery(s_);
            if (e == cudaSuccess) return true;
            if (e != cudaErrorNotReady) check(e, "cudaStreamQuery");
            if (ns_since(t0) > timeout_s * 1e9) return false;
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }

private:
    cudaStream_t s_ = nullptr;
    bool keep_ = false;
};

// Spin until `done()`, checking the deadline every 1024 spins (so the check costs nothing measurable).
template <class Done>
void spin_until(Done done, Clock::time_point t0, const char *what) {
    for (unsigned spins = 1; !done(); ++spins) {
        if ((spins & 1023u) == 0 && ns_since(t0) > kReplyTimeoutS * 1e9)
            throw std::runtime_error(std::string(what) + ": no answer within " + num(kReplyTimeoutS, 0) + " s");
    }
}

// ---- kernels ------------------------------------------------------------------------------------

// Answers each host request on one flag: 2i+1 (host) -> 2i+2 (device); a negative value ends it.
__global__ void floor_pingpong(int *flag) {
    SysInt f(*flag);
    int expect = 1;
    for (;;) {
        const int v = f.load(cuda::std::memory_order_acquire);
        if (v < 0) return;
        if (v == expect) {
            f.store(v + 1, cuda::std::memory_order_release);
            expect += 2;
        }
    }
}

// Stores an increasing counter into one mapped word as fast as it can until *stop is set: the host's
// reads of that word then pay for a cache line the device keeps taking away.
__global__ void ticker(unsigned long long *word, int *stop) {
    SysU64 w(*word);
    SysInt s(*stop);
    unsigned long long i = 0;
    while (s.load(cuda::std::memory_order_relaxed) == 0) w.store(++i, cuda::std::memory_order_relaxed);
}

struct alignas(64) Msg {
    unsigned long long w[8];
};
static_assert(sizeof(Msg) == kRecord, "one message is 64 bytes");

// The per-message unit of work of a non-resident design: read one 64-byte message from mapped memory,
// write the answer (the echo) into mapped memory. 8 threads, one word each.
__global__ void echo_once(const Msg *in, Msg *out) {
    const unsigned t = threadIdx.x;
    if (t < 8) out->w[t] = in->w[t];
}

// ---- floor and mapped-word reads --------------------------------------------------------------

struct FloorResult {
    Stats rtt;
    double idle_read_ns = 0;  // one acquire load of the flag while the kernel spins on it
};

FloorResult floor_rtt(int n, int warm, std::size_t reads) {
    Mapped mem(128);  // the flag alone on its line
    int *flag = mem.host<int>();
    Stream s;
    floor_pingpong<<<1, 1, 0, s.get()>>>(mem.dev<int>());
    CK(cudaGetLastError());
    SysInt f(*flag);
    FloorResult r;
    auto stop = [&] {
        f.store(-1, cuda::std::memory_order_release);
        if (!s.wait(kExitTimeoutS)) {
            mem.keep();
            s.keep();
            throw std::runtime_error("floor kernel did not exit within 5 s of its stop flag");
        }
        CK(cudaGetLastError());
    };
    try {
        std::vector<double> ns;
        ns.reserve(static_cast<std::size_t>(n));
        for (int i = 0; i < n + warm; ++i) {
            const int req = 2 * i + 1;
            const auto t0 = Clock::now();
            f.store(req, cuda::std::memory_order_release);
            spin_until([&] { return f.load(cuda::std::memory_order_acquire) == req + 1; }, t0, "floor kernel");
            if (i >= warm) ns.push_back(ns_since(t0));
        }
        r.rtt = stats(ns);
        // The kernel is resident and spinning on the flag: what a plain host read of it costs.
        unsigned long long sink = 0;
        const auto t0 = Clock::now();
        for (std::size_t i = 0; i < reads; ++i) sink += static_cast<unsigned>(f.load(cuda::std::memory_order_acquire));
        r.idle_read_ns = ns_since(t0) / static_cast<double>(reads);
        if (sink == 1) std::fprintf(stderr, " ");  // keeps the loads
    } catch (...) {
        try {
            stop();
        } catch (...) {
        }
        throw;
    }
    stop();
    return r;
}

// ns per acquire load of a mapped word that a kernel stores to continuously.
double busy_mapped_read_ns(std::size_t reads) {
    Mapped mem(256);
    auto *word = mem.host<unsigned long long>();
    int *stop_flag = reinterpret_cast<int *>(mem.host<char>() + 128);
    Stream s;
    ticker<<<1, 1, 0, s.get()>>>(mem.dev<unsigned long long>(), reinterpret_cast<int *>(mem.dev<char>() + 128));
    CK(cudaGetLastError());
    SysU64 w(*word);
    SysInt st(*stop_flag);
    double ns = 0;
    std::string failure;
    try {
        const auto started = Clock::now();
        spin_until([&] { return w.load(cuda::std::memory_order_acquire) != 0; }, started, "ticker kernel");
        unsigned long long sink = 0;
        const auto t0 = Clock::now();
        for (std::size_t i = 0; i < reads; ++i) sink += w.load(cuda::std::memory_order_acquire);
        ns = ns_since(t0) / static_cast<double>(reads);
        if (sink == 1) std::fprintf(stderr, " ");
    } catch (const std::exception &e) {
        failure = e.what();
    }
    st.store(1, cuda::std::memory_order_release);
    if (!s.wait(kExitTimeoutS)) {
        mem.keep();
        s.keep();
        throw std::runtime_error("ticker kernel did not exit within 5 s of its stop flag");
    }
    CK(cudaGetLastError());
    if (!failure.empty()) throw std::runtime_error(failure);
    return ns;
}

// ---- one launch (or one graph launch) per message -----------------------------------------------

Stats launch_rtt(int n, int warm, bool graph) {
    Mapped mem(2 * sizeof(Msg));
    Msg *in = mem.host<Msg>(), *out = in + 1;
    Msg *din = mem.dev<Msg>(), *dout = din + 1;
    Stream s;
    void *args[] = {&din, &dout};
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    if (graph) {
        CK(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeThreadLocal));
        const cudaError_t launched =
            cudaLaunchKernel(reinterpret_cast<const void *>(echo_once), dim3(1), dim3(8), args, 0, s.get());
        const cudaError_t ended = cudaStreamEndCapture(s.get(), &g);
        check(launched, "cudaLaunchKernel (captured)");
        check(ended, "cudaStreamEndCapture");
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphUpload(ge, s.get()));
        CK(cudaStreamSynchronize(s.get()));
    }
    std::vector<double> ns;
    ns.reserve(static_cast<std::size_t>(n));
    std::string failure;
    try {
        for (int i = 0; i < n + warm; ++i) {
            const unsigned long long seq = static_cast<unsigned long long>(i) + 1;
            const auto t0 = Clock::now();
            in->w[0] = seq;
            if (graph)
                CK(cudaGraphLaunch(ge, s.get()));
            else
                CK(cudaLaunchKernel(reinterpret_cast<const void *>(echo_once), dim3(1), dim3(8), args, 0, s.get()));
            CK(cudaStreamSynchronize(s.get()));
            if (out->w[0] != seq)
                throw std::runtime_error("the one-message kernel answered " + std::to_string(out->w[0]) + " for " +
                                         std::to_string(seq));
            if (i >= warm) ns.push_back(ns_since(t0));
        }
    } catch (const std::exception &e) {
        failure = e.what();
    }
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    if (!failure.empty()) throw std::runtime_error(failure);
    return stats(ns);
}

// ---- ringkernel through its C++ API --------------------------------------------------------------

rk::RuntimeConfig runtime_config(const std::string &backend, int device) {
    rk::RuntimeConfig cfg;
    if (backend == "cuda") cfg.device = device;
    return cfg;
}

rk::KernelSpec echo_spec(const std::string &name, std::uint32_t grid, std::uint32_t capacity) {
    rk::KernelSpec s;
    s.name = name;
    s.handler = rk::Handler::builtin("echo");
    s.input_size = s.output_size = static_cast<std::uint32_t>(kRecord);
    s.grid = grid;
    s.block = 1;  // echo needs no cooperating threads
    s.options.set_queue_capacity(capacity).set_dedup_window(0);
    return s;
}

// Per-message round trips: send one record on `in`, spin on `out` until the reply is there (receive
// with Wait::none() in a loop: no yield, no park), check it echoes the sequence number.
Stats rk_round_trips(rk::Queue &in, rk::Queue &out, int n, int warm, const char *what) {
    unsigned char rec[kRecord] = {}, back[kRecord] = {};
    std::vector<double> ns;
    ns.reserve(static_cast<std::size_t>(n));
    const rk::Wait none = rk::Wait::none();
    for (int i = 0; i < n + warm; ++i) {
        const std::uint64_t seq = static_cast<std::uint64_t>(i) + 1;
        std::memcpy(rec, &seq, sizeof seq);
        const auto t0 = Clock::now();
        if (!in.send(rec, {}, rk::Wait::for_ns(static_cast<std::int64_t>(kReplyTimeoutS * 1e9))))
            throw std::runtime_error(std::string(what) + ": send refused (input queue full)");
        spin_until([&] { return out.receive(back, nullptr, none); }, t0, what);
        if (i >= warm) ns.push_back(ns_since(t0));
        std::uint64_t got = 0;
        std::memcpy(&got, back, sizeof got);
        if (got != seq)
            throw std::runtime_error(std::string(what) + ": reply " + std::to_string(got) + " to message " +
                                     std::to_string(seq));
    }
    return stats(ns);
}

std::string terminate_note(rk::Kernel &k) {
    const rk::KernelState st = k.terminate(static_cast<std::int64_t>(kExitTimeoutS * 1e9));
    if (st == rk::KernelState::Terminated) return "";
    return std::string(k.name()) + " " + rk::to_string(st) + ": " + k.fault();
}

// One echo kernel's round trips on `backend`.
Stats rk_latency(const std::string &backend, int device, int n, int warm) {
    rk::Runtime rt(backend, runtime_config(backend, device));
    auto k = rt.launch(echo_spec("echo", 1, 4096));
    k->activate();
    const Stats s = rk_round_trips(*k->input(), *k->output(), n, warm, ("ringkernel " + backend + " echo").c_str());
    const std::string note = terminate_note(*k);
    if (!note.empty()) throw std::runtime_error("round trips done, but terminate: " + note);
    return s;
}

struct Traffic {
    std::uint64_t messages = 0;
    double seconds = 0;
    std::string error;
};

// Batches of 1024 through `k` for about `seconds`: a producer thread sends (send_batch), this thread
// receives (receive_batch); then the producer stops and the rest drains. Messages/s over all of them
// (from the first send of the timed part to the last reply). `during`, if set, runs on a third thread
// while traffic flows (the telemetry poll), and traffic lasts until it returns.
template <class During>
Traffic batched_traffic(rk::Kernel &k, double seconds, During during) {
    std::vector<unsigned char> batch(kRecord * kBatch, 0), sink(kRecord * kBatch);
    rk::Queue &in = *k.input(), &out = *k.output();
    const auto step = rk::Wait::for_ns(100'000'000);
    // Warm-up: one batch through.
    for (std::size_t sent = 0; sent < kBatch;) sent += in.send_batch(batch.data() + sent * kRecord, kBatch - sent, kRecord, nullptr, 0, step);
    for (std::size_t got = 0, idle = 0; got < kBatch;) {
        const std::size_t m = out.receive_batch(sink.data(), kBatch, kRecord, nullptr, step);
        got += m;
        if (m == 0 && ++idle > static_cast<std::size_t>(kReplyTimeoutS * 10)) throw std::runtime_error("batched: warm-up batch not answered");
    }
    std::atomic<bool> stop{false}, producer_done{false};
    std::atomic<std::uint64_t> sent_total{0};
    std::string producer_error;
    const auto t0 = Clock::now();
    std::thread producer([&] {
        try {
            while (!stop.load(std::memory_order_acquire)) {
                const std::size_t m = in.send_batch(batch.data(), kBatch, kRecord, nullptr, 0, step);
                sent_total.fetch_add(m, std::memory_order_relaxed);
            }
        } catch (const std::exception &e) {
            producer_error = e.what();
        }
        producer_done.store(true, std::memory_order_release);
    });
    std::atomic<bool> during_done{false};
    std::thread side([&] {
        during();
        during_done.store(true, std::memory_order_release);
    });
    Traffic t;
    std::uint64_t got = 0;
    auto last = Clock::now();
    double stalled_s = 0;
    for (;;) {
        const auto before = Clock::now();
        const std::size_t m = out.receive_batch(sink.data(), kBatch, kRecord, nullptr, step);
        if (m) {
            got += m;
            last = Clock::now();
            stalled_s = 0;
        } else {
            stalled_s += ns_since(before) / 1e9;
        }
        if (!stop.load(std::memory_order_relaxed) && ns_since(t0) >= seconds * 1e9 &&
            during_done.load(std::memory_order_acquire))
            stop.store(true, std::memory_order_release);
        if (stop.load(std::memory_order_relaxed) && producer_done.load(std::memory_order_acquire) &&
            got >= sent_total.load(std::memory_order_relaxed))
            break;
        if (stalled_s > kReplyTimeoutS) {
            t.error = "batched: no reply for " + num(kReplyTimeoutS, 0) + " s (" + std::to_string(got) + " of " +
                      std::to_string(sent_total.load()) + " received)";
            stop.store(true, std::memory_order_release);
            break;
        }
    }
    producer.join();
    side.join();
    if (!producer_error.empty() && t.error.empty()) t.error = "batched producer: " + producer_error;
    t.messages = got;
    t.seconds = std::chrono::duration<double>(last - t0).count();
    return t;
}

std::optional<double> batched_mps(const std::string &backend, int device, std::uint32_t grid, double seconds,
                                  std::string *json) {
    rk::Runtime rt(backend, runtime_config(backend, device));
    auto k = rt.launch(echo_spec("batched", grid, 16384));
    k->activate();
    const Traffic t = batched_traffic(*k, seconds, [] {});
    const std::string note = terminate_note(*k);
    if (!t.error.empty()) throw std::runtime_error(t.error);
    const double mps = static_cast<double>(t.messages) / t.seconds;
    *json = Obj()
                .real("msgs_per_s", mps, 0)
                .integer("messages", static_cast<long long>(t.messages))
                .real("seconds", t.seconds)
                .integer("grid", grid)
                .integer("batch", static_cast<long long>(kBatch))
                .integer("record_bytes", static_cast<long long>(kRecord))
                .str("terminate", note.empty() ? "TERMINATED" : note)
                .done();
    return mps;
}

// Telemetry reads while the echo kernel is active: idle, then under batched traffic.
std::string telemetry_poll(const std::string &backend, int device, std::size_t calls, double traffic_s,
                           std::optional<double> *idle_out) {
    rk::Runtime rt(backend, runtime_config(backend, device));
    auto k = rt.launch(echo_spec("telemetry", 1, 16384));
    k->enable_telemetry();
    k->activate();
    // A few messages through first, so the snapshot has something in it.
    {
        const Stats warm = rk_round_trips(*k->input(), *k->output(), 100, 0, "telemetry warm-up");
        (void)warm;
    }
    std::uint64_t sink = 0;
    auto t0 = Clock::now();
    for (std::size_t i = 0; i < calls; ++i) sink += k->telemetry().messages_processed;
    const double idle_ns = ns_since(t0) / static_cast<double>(calls);
    // The zero-copy view: one acquire load of the live struct's counter.
    const rk_telemetry *view = k->telemetry_block();
    t0 = Clock::now();
    for (std::size_t i = 0; i < calls; ++i) sink += __atomic_load_n(&view->messages_processed, __ATOMIC_ACQUIRE);
    const double view_ns = ns_since(t0) / static_cast<double>(calls);
    // Under traffic: the poll runs on its own thread for as long as batches flow (`traffic_s`).
    double busy_ns = 0;
    std::uint64_t first = 0, last = 0, busy_calls = 0;
    const Traffic t = batched_traffic(*k, traffic_s, [&] {
        first = k->telemetry().messages_processed;
        const auto b0 = Clock::now();
        double elapsed = 0;
        do {
            for (int i = 0; i < 1024; ++i) last = k->telemetry().messages_processed;
            busy_calls += 1024;
            elapsed = ns_since(b0);
        } while (elapsed < traffic_s * 1e9);
        busy_ns = elapsed / static_cast<double>(busy_calls);
    });
    const rk::TelemetrySnapshot snap = k->telemetry();
    const std::string note = terminate_note(*k);
    if (!t.error.empty()) throw std::runtime_error(t.error);
    if (sink == 1) std::fprintf(stderr, " ");
    *idle_out = idle_ns;
    return Obj()
        .real("idle_ns_per_call", idle_ns, 1)
        .real("busy_ns_per_call", busy_ns, 1)
        .real("view_load_idle_ns_per_call", view_ns, 1)
        .integer("idle_calls", static_cast<long long>(calls))
        .integer("busy_calls", static_cast<long long>(busy_calls))
        .real("busy_traffic_msgs_per_s", static_cast<double>(t.messages) / t.seconds, 0)
        .boolean("live_during_traffic", last > first)
        .integer("messages_processed", static_cast<long long>(snap.messages_processed))
        .real("avg_latency_ns", snap.avg_latency_ns(), 0)
        .str("terminate", note.empty() ? "TERMINATED" : note)
        .done();
}

struct K2kResult {
    Stats single, pipeline;
};

// A single echo, then echo -> echo (Runtime::connect), in the same runtime.
K2kResult k2k(const std::string &backend, int device, int n, int warm) {
    rk::Runtime rt(backend, runtime_config(backend, device));
    K2kResult r;
    {
        auto k = rt.launch(echo_spec("single", 1, 4096));
        k->activate();
        r.single = rk_round_trips(*k->input(), *k->output(), n, warm, "k2k single echo");
        const std::string note = terminate_note(*k);
        if (!note.empty()) throw std::runtime_error("single echo terminate: " + note);
    }
    auto a = rt.launch(echo_spec("hop_a", 1, 4096));
    auto b = rt.launch(echo_spec("hop_b", 1, 4096));
    rt.connect(*a, *b);
    a->activate();
    b->activate();
    r.pipeline = rk_round_trips(*a->input(), *b->output(), n, warm, "k2k pipeline echo->echo");
    std::string note = terminate_note(*a);
    const std::string note_b = terminate_note(*b);
    if (!note_b.empty()) note += (note.empty() ? "" : "; ") + note_b;
    if (!note.empty()) throw std::runtime_error("pipeline terminate: " + note);
    return r;
}

// ---- device description -------------------------------------------------------------------------

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

int attr(cudaDeviceAttr a, int dev) {
    int v = -1;
    if (cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1;
    }
    return v;
}

std::string device_json(int dev, std::string *name_out) {
    cudaDeviceProp p{};
    CK(cudaGetDeviceProperties(&p, dev));
    int driver = 0, runtime = 0;
    CK(cudaDriverGetVersion(&driver));
    CK(cudaRuntimeGetVersion(&runtime));
    char bus[64] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, dev) != cudaSuccess) (void)cudaGetLastError();
    *name_out = p.name;
    const int major = attr(cudaDevAttrComputeCapabilityMajor, dev);
    const int minor = attr(cudaDevAttrComputeCapabilityMinor, dev);
    return Obj()
        .integer("index", dev)
        .str("name", p.name)
        .str("pci_bus_id", bus)
        .integer("driver_version", driver)
        .str("driver_version_text", version_text(driver))
        .integer("runtime_version", runtime)
        .str("runtime_version_text", version_text(runtime))
        .str("compute_capability", std::to_string(major) + "." + std::to_string(minor))
        .integer("sm_count", attr(cudaDevAttrMultiProcessorCount, dev))
        .integer("total_memory_bytes", static_cast<long long>(p.totalGlobalMem))
        .integer("can_map_host_memory", attr(cudaDevAttrCanMapHostMemory, dev))
        .integer("unified_addressing", attr(cudaDevAttrUnifiedAddressing, dev))
        .integer("host_native_atomic_supported", attr(cudaDevAttrHostNativeAtomicSupported, dev))
        .integer("pageable_memory_access", attr(cudaDevAttrPageableMemoryAccess, dev))
        .integer("concurrent_managed_access", attr(cudaDevAttrConcurrentManagedAccess, dev))
        .done();
}

std::optional<double> ratio(const std::optional<double> &a, const std::optional<double> &b) {
    if (!a || !b || *b <= 0) return std::nullopt;
    return *a / *b;
}

std::string aim_json(const char *what, const char *target, const std::optional<double> &value, double bound,
                     bool at_most) {
    std::optional<bool> met;
    if (value) met = at_most ? *value <= bound : *value >= bound;
    return Obj().str("aim", what).str("target", target).opt_real("value", value).opt_bool("met", met).done();
}

std::string cuda_backend_status() {
    try {
        for (const rk::BackendStatus &b : rk::backend_statuses())
            if (b.name == "cuda") return std::string(b.available ? "available: " : "unavailable: ") + b.detail;
    } catch (const std::exception &e) {
        return std::string("rk::backend_statuses() failed: ") + e.what();
    }
    return "this build of ringkernel lists no CUDA backend";
}

void usage(const char *argv0, FILE *to) {
    std::fprintf(to,
                 "usage: %s [--quick] [--cpu-selftest]\n"
                 "  --quick         10,000 round trips per case instead of 100,000, 0.5 s batched runs instead of 2 s\n"
                 "  --cpu-selftest  no GPU needed: run the ringkernel cases (round trips, batched, telemetry, k2k)\n"
                 "                  on the CPU backend, to check this harness on any machine\n"
                 "device: $RINGKERNEL_DEVICE, else 0. Exit 0 (also with {\"available\": false} when there is no GPU);\n"
                 "2 on a bad command line or device index.\n",
                 argv0);
}

}  // namespace

int main(int argc, char **argv) {
    bool quick = false, selftest = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") {
            quick = true;
        } else if (a == "--cpu-selftest") {
            selftest = true;
        } else if (a == "-h" || a == "--help") {
            usage(argv[0], stdout);
            return 0;
        } else {
            usage(argv[0], stderr);
            return 2;
        }
    }

    const int n = quick ? 10000 : 100000;
    const int warm = std::min(1000, n / 10);
    const int reps = quick ? 1 : 3;
    const double batch_s = quick ? 0.5 : 2.0;
    const std::size_t polls = quick ? 100000 : 1000000;
    // The backend under test: "cuda", or "cpu" in the self-test.
    const std::string gpu = selftest ? "cpu" : "cuda";
    const std::string skipped = error_json("skipped", "skipped: --cpu-selftest runs no CUDA");

    int dev = 0;
    std::string device_name, device, setup_note;
    if (selftest) {
        device_name = "none (--cpu-selftest)";
        device = Obj().str("name", device_name).str("ringkernel_cuda_backend", cuda_backend_status()).done();
    } else {
        int count = 0;
        const cudaError_t e = cudaGetDeviceCount(&count);
        if (e != cudaSuccess || count == 0) {
            const std::string reason = e != cudaSuccess ? "cudaGetDeviceCount: " + cuda_error_text(e)
                                                        : std::string("cudaGetDeviceCount: no CUDA device");
            std::printf("%s\n", Obj()
                                    .boolean("available", false)
                                    .str("reason", reason)
                                    .str("ringkernel_cuda_backend", cuda_backend_status())
                                    .done()
                                    .c_str());
            return 0;
        }
        if (const char *env = std::getenv("RINGKERNEL_DEVICE"); env && *env) {
            char *end = nullptr;
            const long v = std::strtol(env, &end, 10);
            if (*end != '\0' || v < 0 || v >= count) {
                std::printf("%s\n", Obj()
                                        .boolean("available", false)
                                        .str("reason", "RINGKERNEL_DEVICE=" + std::string(env) +
                                                           " is not a device index (" + std::to_string(count) +
                                                           " CUDA devices)")
                                        .done()
                                        .c_str());
                return 2;
            }
            dev = static_cast<int>(v);
        }
        try {
            CK(cudaSetDevice(dev));
            // Spin while synchronising: the launch and graph cases get their fastest wake-up.
            if (const cudaError_t f = cudaSetDeviceFlags(cudaDeviceScheduleSpin | cudaDeviceMapHost);
                f != cudaSuccess) {
                setup_note = "cudaSetDeviceFlags(ScheduleSpin|MapHost): " + cuda_error_text(f);
                (void)cudaGetLastError();
            }
            device = device_json(dev, &device_name);
            CK(cudaFree(nullptr));  // create the context now, outside every timing
        } catch (const std::exception &ex) {
            std::printf("%s\n", Obj()
                                    .boolean("available", false)
                                    .str("reason", ex.what())
                                    .str("ringkernel_cuda_backend", cuda_backend_status())
                                    .done()
                                    .c_str());
            return 0;
        }
    }
    std::fprintf(stderr, "bench_cuda: device %d: %s; %d round trips per case%s\n", dev, device_name.c_str(), n,
                 quick ? " (--quick)" : "");

    // Floor and ringkernel alternate `reps` times (drift hits both alike); each keeps its median run by
    // p50. A case that fails stops repeating; its error is reported unless an earlier run succeeded.
    std::vector<Stats> floors, rks;
    std::vector<double> idle_reads;
    std::string floor_json = selftest ? skipped : "", rk_json;
    for (int rep = 0; rep < reps; ++rep) {
        if (floor_json.empty())
            floor_json = guarded("floor (resident ping-pong on one mapped flag)", [&] {
                const FloorResult f = floor_rtt(n, warm, polls);
                floors.push_back(f.rtt);
                idle_reads.push_back(f.idle_read_ns);
                return std::string();  // empty: no error, go on
            });
        if (rk_json.empty())
            rk_json = guarded(("ringkernel " + gpu + " echo round trips").c_str(), [&] {
                rks.push_back(rk_latency(gpu, dev, n, warm));
                return std::string();
            });
    }
    std::optional<double> floor_p50, floor_p99, rk_p50, rk_p99, launch_p50, launch_p99, graph_p50, graph_p99;
    if (!floors.empty()) {
        const Stats f = median_run(floors);
        floor_json = stats_json(f);
        floor_p50 = f.p50;
        floor_p99 = f.p99;
    }
    if (!rks.empty()) {
        const Stats r = median_run(rks);
        rk_json = stats_json(r);
        rk_p50 = r.p50;
        rk_p99 = r.p99;
    }

    const std::string launch_json =
        selftest ? skipped : guarded("launch (cudaLaunchKernel + cudaStreamSynchronize per message)", [&] {
            const Stats s = launch_rtt(n, warm, false);
            launch_p50 = s.p50;
            launch_p99 = s.p99;
            return stats_json(s);
        });
    const std::string graph_json =
        selftest ? skipped : guarded("graph (cudaGraphLaunch + cudaStreamSynchronize per message)", [&] {
            const Stats s = launch_rtt(n, warm, true);
            graph_p50 = s.p50;
            graph_p99 = s.p99;
            return stats_json(s);
        });

    std::optional<double> idle_read;
    if (!idle_reads.empty()) {
        std::sort(idle_reads.begin(), idle_reads.end());
        idle_read = idle_reads[idle_reads.size() / 2];
    }
    const std::string mapped_json = selftest ? skipped : guarded("mapped-word reads", [&] {
        const double busy = busy_mapped_read_ns(polls);
        return Obj()
            .opt_real("idle_ns_per_call", idle_read, 1)
            .real("busy_ns_per_call", busy, 1)
            .integer("calls", static_cast<long long>(polls))
            .done();
    });

    std::optional<double> tel_idle;
    const std::string telemetry_json =
        guarded("telemetry poll", [&] { return telemetry_poll(gpu, dev, polls, batch_s, &tel_idle); });

    std::optional<double> hop_p50, k2k_single_p50;
    const std::string k2k_json = guarded("k2k echo -> echo", [&] {
        const K2kResult r = k2k(gpu, dev, n, warm);
        hop_p50 = r.pipeline.p50 - r.single.p50;
        k2k_single_p50 = r.single.p50;
        return Obj()
            .raw("single", stats_json(r.single))
            .raw("pipeline", stats_json(r.pipeline))
            .real("hop_p50_us", (r.pipeline.p50 - r.single.p50) / 1e3)
            .real("hop_p99_us", (r.pipeline.p99 - r.single.p99) / 1e3)
            .done();
    });

    std::optional<double> mps1, mps4;
    const std::string b1_json = guarded("batched, grid 1", [&] {
        std::string j;
        mps1 = batched_mps(gpu, dev, 1, batch_s, &j);
        return j;
    });
    const std::string b4_json = guarded("batched, grid 4", [&] {
        std::string j;
        mps4 = batched_mps(gpu, dev, 4, batch_s, &j);
        return j;
    });
    const std::string cpu_b_json = guarded("batched, cpu backend, grid 1", [&] {
        std::string j;
        batched_mps("cpu", dev, 1, batch_s, &j);
        return j;
    });

    const std::string cpu_json =
        guarded("ringkernel cpu echo round trips", [&] { return stats_json(rk_latency("cpu", dev, n, warm)); });

    std::optional<double> best_mps;
    if (mps1 || mps4) best_mps = std::max(mps1.value_or(0.0), mps4.value_or(0.0));
    const std::optional<double> rk_over_floor = ratio(rk_p50, floor_p50);
    const std::optional<double> launch_over_rk = ratio(launch_p50, rk_p50);

    Obj out;
    out.boolean("available", true);
    if (selftest) out.boolean("selftest", true).str("backend_under_test", gpu);
    out.raw("device", device)
        .boolean("quick", quick)
        .integer("round_trips", n)
        .integer("warmup", warm)
        .integer("reps", reps)
        .str("method",
             "per-message steady_clock round trips after a warm-up, percentiles over all samples; floor and "
             "ringkernel alternate `reps` times and keep their median run by p50; the host spins on every reply "
             "(ringkernel: Queue::receive with Wait::none() in a loop); context flags ScheduleSpin|MapHost; "
             "launch/graph: echo_once<<<1,8>>> on a non-blocking stream, messages in mapped host memory; "
             "batched: a producer thread send_batch(1024), the main thread receive_batch(1024), 64-byte records, "
             "queue capacity 16384; telemetry: Kernel::telemetry() in a loop, idle and on a third thread while "
             "batched traffic flows; mapped word: acquire loads of one mapped word, idle while the floor kernel "
             "spins on it, busy while a kernel stores to it continuously")
        .raw("floor", floor_json)
        .raw("ringkernel", rk_json)
        .raw("launch", launch_json)
        .raw("graph", graph_json)
        .raw("ringkernel_cpu", cpu_json)
        .raw("batched", Obj().raw("grid1", b1_json).raw("grid4", b4_json).raw("cpu_grid1", cpu_b_json).done())
        .raw("telemetry", telemetry_json)
        .raw("mapped_word_read", mapped_json)
        .raw("k2k", k2k_json)
        .raw("ratios", Obj()
                           .opt_real("ringkernel_over_floor_p50", rk_over_floor)
                           .opt_real("ringkernel_over_floor_p99", ratio(rk_p99, floor_p99))
                           .opt_real("launch_over_ringkernel_p50", launch_over_rk)
                           .opt_real("launch_over_ringkernel_p99", ratio(launch_p99, rk_p99))
                           .opt_real("graph_over_ringkernel_p50", ratio(graph_p50, rk_p50))
                           .opt_real("graph_over_ringkernel_p99", ratio(graph_p99, rk_p99))
                           .opt_real("telemetry_idle_over_mapped_read_idle", ratio(tel_idle, idle_read))
                           .opt_real("k2k_hop_over_single_p50", ratio(hop_p50, k2k_single_p50))
                           .done())
        .raw("aims", Obj()
                         .raw("round_trip_within_1_5x_floor",
                              aim_json("ringkernel round trip within 1.5x of the floor (p50)", "<= 1.5x",
                                       rk_over_floor, 1.5, true))
                         .raw("faster_than_launch_3x",
                              aim_json("ringkernel >= 3x faster than one launch per message (p50)", ">= 3x",
                                       launch_over_rk, 3.0, false))
                         .raw("batched_10M_msgs_per_s",
                              aim_json("batched 64-byte messages >= 10 M msg/s (best of grid 1 and 4)",
                                       ">= 10 M msg/s", best_mps, 10e6, false))
                         .done());
    if (!setup_note.empty()) out.str("note", setup_note);
    std::printf("%s\n", out.done().c_str());
    return 0;
}
