// runtime.hpp — ring kernels: launch, lifecycle, named queues, buffers, K2K, topics, telemetry
// (DESIGN §6–7). The Runtime owns kernels and everything they use; a backend runs their blocks.
//
// Lifecycle: CREATED → LAUNCHED → ACTIVE ⇄ DEACTIVATED → TERMINATING → TERMINATED, or FAULTED when
// a kernel does not stop within terminate()'s timeout. Illegal calls throw LifecycleError naming the
// state and the calls allowed in it. Messages sent while LAUNCHED or DEACTIVATED wait in the input
// ring until the kernel is active.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "ringkernel/errors.hpp"
#include "ringkernel/layout.h"
#include "ringkernel/options.hpp"
#include "ringkernel/queue.hpp"
#include "ringkernel/rk_status.h"

// A block's view of its kernel (the device dialect's rk_ctx, rk_handler.h): opaque here. A C++ host
// handler that calls the handler API (rk_thread_rank, rk_request, rk_emit ...) includes "rk_kernel.h".
struct rk_ctx;

namespace rk {

enum class KernelState : int { Created, Launched, Active, Deactivated, Terminating, Terminated, Faulted };
const char *to_string(KernelState s) noexcept;

// Thrown by a host handler: not only this message failed, its kernel is at fault (the handler cannot go
// on as it is). The message fails with RK_ERR_FAULT and is dead-lettered, with the exception's text.
class KernelAtFault : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A handler run on the host (the CPU backend): C++ code, or the Python binding's callables.
class HostHandler {
public:
    virtual ~HostHandler() = default;
    // One message, as a device handler: write the reply into `out` (zeroed, output size) and return
    // RK_REPLY, RK_NO_REPLY or a negative error code. Exceptions are caught by the worker, recorded
    // as RK_ERR_HOST (with their text, see Kernel::last_error_message) and the kernel goes on.
    virtual int handle(rk_ctx *ctx, const void *in, void *out) = 0;
    // Batches: when batch_size() > 1 the worker takes up to that many waiting messages at once and
    // calls handle_batch() with them (n records, `stride` bytes apart). It writes replies into
    // `out` (n records of the output size) and returns how many replies it wrote (0..n); reply i
    // answers request i. Negative: an error code, no replies.
    virtual std::size_t batch_size() const { return 1; }
    virtual long handle_batch(rk_ctx *ctx, const void *in, std::size_t n, std::size_t stride, void *out) {
        (void)ctx; (void)in; (void)n; (void)stride; (void)out;
        return RK_ERR_HANDLER;
    }
    // Whether several blocks may call this handler at once (else calls are serialised).
    virtual bool concurrent() const { return true; }
};

// A handler compiled to native code outside the library (e.g. by Numba from Python, rk.jit): a C function
// with the device dialect's handler signature, run by the CPU backend's blocks directly (no host handler
// object, no lock, no GIL). `keepalive` holds whatever owns the code while a kernel may call it.
using NativeHandlerFn = int (*)(rk_ctx *ctx, const void *in, void *out);

struct Handler {
    enum class Kind { Builtin, Source, Host, Native, Image };
    Kind kind = Kind::Builtin;
    std::string name;                  // built-in name; a native handler's or an image's name (for messages)
    std::string code, entry;           // portable source and its entry function; an image and its kernel
    std::string target;                // an image: the backend it was built for ("cuda")
    std::shared_ptr<HostHandler> host;
    NativeHandlerFn native = nullptr;
    std::shared_ptr<const void> keepalive;

    static Handler builtin(std::string name);
    static Handler source(std::string code, std::string entry);
    static Handler on_host(std::shared_ptr<HostHandler> h);
    // invalid_argument for a null function.
    static Handler compiled(std::string name, NativeHandlerFn fn, std::shared_ptr<const void> keepalive);
    // A device image built outside the library for one backend: on "cuda", a cubin (or PTX) whose kernel
    // `entry` is a persistent ring kernel of the device dialect (RK_DEFINE_CUDA_KERNEL), e.g. an rk.jit
    // handler linked by nvJitLink. invalid_argument for an empty image or a target or entry that is not
    // a C identifier; a backend other than `target` refuses it at launch.
    static Handler image(std::string name, std::string target, std::string image, std::string entry);
    std::string describe() const;
};

// The names of the built-in catalog, and whether a name is in it.
std::vector<std::string> builtin_handlers();

// How a device backend runs a kernel's blocks (DESIGN §6). The CPU backend runs every kernel persistently
// (its workers park when idle).
enum class KernelMode : int {
    Auto,        // persistent when the device can keep the blocks resident, else dispatch
    Persistent,  // the blocks stay resident, polling their rings
    Dispatch,    // the blocks are launched when messages wait
};
const char *to_string(KernelMode m) noexcept;  // "auto", "persistent", "dispatch"
// The mode a name stands for; invalid_argument naming the valid names otherwise.
KernelMode kernel_mode_from_string(const std::string &name);

struct KernelSpec {
    std::string name;                  // [A-Za-z_][A-Za-z0-9_-]*, at most 64 characters
    Handler handler;
    std::uint32_t input_size = 64;     // bytes per input record
    std::uint32_t output_size = 64;    // bytes per output record
    std::uint16_t input_type = 0;      // type ids stamped into envelopes (0 = untyped)
    std::uint16_t output_type = 0;
    std::uint32_t grid = 1;            // blocks: worker threads on the CPU backend, [1, 256]
    std::uint32_t block = 1;           // threads per block, [1, 1024]
    LaunchOptions options;
    std::vector<std::string> channels; // named output channels, 1..7 in this order
    // How a device backend runs it; empty: the runtime's mode (RuntimeConfig::mode).
    std::optional<KernelMode> mode;
    // Actor state (DESIGN §11): one record of state_size bytes per kernel (0: none, at most kMaxStateBytes),
    // zeroed at launch, in memory its blocks reach (rk_state(ctx)); state_type is its type id (0 = untyped),
    // checked by restore().
    std::uint32_t state_size = 0;
    std::uint16_t state_type = 0;
    // Supervision (DESIGN §11): restart the kernel when its handler faults; none: a fault fails the message only
    // (a dead letter) and the kernel goes on. CPU backend.
    std::optional<RestartPolicy> restart;
};

constexpr std::uint32_t kMaxStateBytes = 1u << 20;

// A request a handler failed (DESIGN §11): kept by the kernel instead of being lost.
struct DeadLetter {
    rk_envelope envelope{};            // the request's envelope as it arrived (message_id, timestamp, ...)
    std::vector<std::uint8_t> record;  // its payload: input_size bytes
    std::int32_t code = 0;             // the handler's error code (RK_ERR_*, or what it returned)
    std::uint32_t attempts = 1;        // deliveries of it that failed
    std::string error;                 // what the handler said (a host handler's exception), else the code's meaning
};

struct DeadLetterCounts {
    std::uint64_t total = 0;    // requests failed since launch: held + taken + dropped
    std::uint64_t held = 0;     // kept now (dead_letters())
    std::uint64_t dropped = 0;  // failed while the store was full: counted, not kept
};

struct TelemetrySnapshot {
    std::uint64_t messages_processed = 0, messages_dropped = 0, last_processed_timestamp = 0;
    std::uint32_t queue_depth = 0, error_code = 0;
    std::uint64_t total_latency_ns = 0, min_latency_ns = 0, max_latency_ns = 0;
    // Supervision, kept by the host (not in the device's telemetry block): restarts, workers abandoned inside a
    // handler that did not return in time, and failed messages (dead letters held, taken or dropped).
    std::uint64_t restarts = 0, abandoned_workers = 0, dead_letters = 0;
    double avg_latency_ns() const noexcept {
        return messages_processed ? static_cast<double>(total_latency_ns) / static_cast<double>(messages_processed) : 0.0;
    }
};

class Runtime;
struct KernelCore;  // the memory blocks use (control block, telemetry, routes); outlives a faulted kernel
class Backend;

class Kernel : public std::enable_shared_from_this<Kernel> {
public:
    ~Kernel();
    Kernel(const Kernel &) = delete;
    Kernel &operator=(const Kernel &) = delete;

    const std::string &name() const noexcept { return spec_.name; }
    std::uint16_t id() const noexcept { return id_; }
    const KernelSpec &spec() const noexcept { return spec_; }
    // FAULTED also as soon as a block has faulted (a signal in a native handler, a device fault), before
    // terminate() completes the stop.
    KernelState state() const noexcept;

    void launch();    // CREATED → LAUNCHED: start the blocks (Runtime::launch does create + launch)
    void activate();
    void deactivate();
    // Stop every block within `timeout_ns` (< 0: a default of 5 s). Returns TERMINATED, or FAULTED
    // when a block did not stop in time: its thread is abandoned (it exits when its handler
    // returns), the kernel's queues are closed and unregistered, fault() says what happened.
    // Concurrent calls join one termination (the earliest deadline holds) and return its outcome. Called
    // from a handler of this kernel, it asks the blocks to stop and returns TERMINATING at once; the stop
    // completes (within `timeout_ns`) once that handler has returned.
    KernelState terminate(std::int64_t timeout_ns = -1);

    std::shared_ptr<Queue> input() const { return input_; }
    std::shared_ptr<Queue> output() const { return output_; }
    // The host queue of a named channel (0 = the default output); replies stop arriving there once
    // the channel is connected to another kernel or a topic (see connected()).
    std::shared_ptr<Queue> channel_queue(std::uint32_t index) const { return channel_queues_.at(index); }
    bool connected(std::uint32_t index) const { return !channel_to_host_.at(index) || bridged_.at(index); }
    // Why the kernel is FAULTED (empty otherwise).
    std::string fault() const;

    // Live memory, for zero-copy views. Valid as long as this Kernel exists.
    const rk_control_block *control_block() const noexcept;
    const rk_telemetry *telemetry_block() const noexcept;

    void enable_telemetry();          // LifecycleError before launch or after terminate
    void disable_telemetry();
    bool telemetry_enabled() const noexcept;
    void reset_telemetry();           // zeroes the counters (enabled or not)
    TelemetrySnapshot telemetry() const;  // TelemetryNotEnabledError when disabled

    std::uint64_t messages_processed() const noexcept;
    std::int32_t errors() const noexcept;
    std::int32_t last_error() const noexcept;
    std::string last_error_message() const;  // the text of the last host-handler exception
    std::uint64_t messages_dropped() const noexcept;
    // Every block has left the persistent loop (also true, later, for an abandoned FAULTED kernel).
    bool stopped() const noexcept;
    // The kernel's HLC state (packed), read live.
    std::uint64_t hlc() const noexcept;

    // How the backend runs this kernel: KernelMode::Persistent or KernelMode::Dispatch.
    KernelMode mode() const noexcept;

    // Named output channels: index 1..7 of `name`; std::out_of_range if the kernel has none such.
    std::uint32_t channel_index(const std::string &name) const;

    // ---- actor state, checkpoints, dead letters (DESIGN §11) ----
    // A consistent copy of the state record (the kernel is paused for the copy: no block is inside a run; a
    // TERMINATED or FAULTED kernel's is read as its blocks left it). invalid_argument for a kernel launched
    // without state, LifecycleError while TERMINATING, KernelFaultError when a handler does not let the
    // kernel pause within `timeout_ns` (< 0: 5 s).
    std::vector<std::uint8_t> actor_state(std::int64_t timeout_ns = -1);
    // State and accepted-but-unprocessed input, consistent (paused for the copy, resumed at once), in the
    // versioned checkpoint format with a checksum (core/checkpoint.cpp). Allowed while LAUNCHED, ACTIVE or
    // DEACTIVATED; KernelFaultError as actor_state(); LifecycleError in other states.
    std::string checkpoint(std::int64_t timeout_ns = -1);
    // Load a checkpoint into this kernel (LAUNCHED, ACTIVE or DEACTIVATED, of the same record and state types
    // and sizes): its state replaces this kernel's, its messages enter the input ahead of nothing else
    // (after what waits there already), with their ids and stamps. MessageFormatError for a blob that is
    // corrupt, of another format version or of other types, or whose messages do not fit in the input
    // queue now -- and nothing is changed then.
    void restore(const std::string &blob, std::int64_t timeout_ns = -1);
    // A stopped kernel's (TERMINATED or FAULTED) accepted but unprocessed input, taken out of it: first the
    // messages the supervisor held for redelivery (a faulted handler's message, the rest of its run), then each
    // input ring's, oldest first -- what a checkpoint would have carried. LifecycleError while it runs.
    std::vector<DeadLetter> drain();
    // The failed requests held so far (oldest first); clear: remove them, making room for new ones.
    std::vector<DeadLetter> dead_letters(bool clear = false);
    DeadLetterCounts dead_letter_counts();
    // How often the supervisor restarted the kernel (RestartPolicy), and how many of its workers it abandoned
    // in a handler that ran past LaunchOptions::handler_timeout (a thread that cannot be preempted: its late
    // result is discarded when it returns).
    std::uint64_t restarts() const noexcept;
    std::uint64_t abandoned_workers() const noexcept;

private:
    friend class Runtime;
    Kernel(Runtime &rt, KernelSpec spec, std::uint16_t id);
    void require(std::initializer_list<KernelState> allowed, const char *call, const char *allowed_calls) const;
    void release_queues(const std::string &why);
    void end_termination(bool stopped);
    KernelState raw_state() const noexcept { return state_.load(std::memory_order_acquire); }
    void check_process(const char *call) const;  // LifecycleError in a process forked from the kernel's
    // Pause the blocks (caller holds mu_): clear is_active and wait until none is inside a run; KernelFaultError
    // on timeout (is_active restored). Returns whether the kernel was active (resume() restores that).
    bool pause(const char *call, std::int64_t timeout_ns);
    void resume(bool was_active);

    std::atomic<Runtime *> rt_;  // null once the runtime is closed
    KernelSpec spec_;
    std::uint16_t id_;
    std::atomic<KernelState> state_{KernelState::Created};
    mutable std::mutex mu_;  // lifecycle transitions
    std::mutex wait_mu_;     // one terminate() at a time waits on the blocks
    std::condition_variable ended_cv_;  // TERMINATING has ended
    std::chrono::steady_clock::time_point stopping_since_, stop_by_;  // while TERMINATING
    bool never_started_ = false;
    std::shared_ptr<HostHandler> dropped_handler_;  // released by terminate(), unlocked
    std::uint32_t process_;  // the process generation it was made in (see core/process.hpp)
    std::shared_ptr<KernelCore> core_;
    std::shared_ptr<Queue> input_, output_;
    std::string fault_;
    std::vector<std::shared_ptr<Queue>> channel_queues_;  // host queue per channel
    std::vector<bool> channel_to_host_;                   // channel still feeds its host queue
    std::vector<bool> bridged_;                           // its host queue is drained by a bridge
};

// A buffer kernels can reach by handle.
struct Buffer {
    std::uint64_t handle = 0;
    void *data = nullptr;
    std::size_t bytes = 0;
    int device = -1;  // -1: host memory (data is a host pointer); else the CUDA device whose memory it is
};

// A topic: publish once, every subscriber's input gets a copy.
struct TopicInfo {
    std::string name;
    std::uint32_t record_size = 0;
    std::uint16_t type_id = 0;
    std::vector<std::string> subscribers;
};

struct RuntimeConfig {
    // Where runtime-compiled handlers find the device dialect (rk_kernel.h and ringkernel/layout.h).
    // Empty: $RINGKERNEL_INCLUDE_DIR, else the directories this library was built from.
    std::vector<std::string> include_dirs;
    std::string cache_dir;   // empty: $RINGKERNEL_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache, /ringkernel
    std::string compiler;    // empty: $CC, else the first of cc, gcc, clang on PATH
    std::uint32_t max_buffers = 4096;
    // Device backends: which device (an index into the backend's device list); -1: $RINGKERNEL_DEVICE,
    // else the first that can run ring kernels.
    int device = -1;
    KernelMode mode = KernelMode::Auto;  // the kernels' default mode (see KernelSpec::mode)
};

// Which backends this build knows, whether each can run here and why not.
struct BackendStatus {
    std::string name;
    bool available = false;
    std::string detail;
};
std::vector<BackendStatus> backend_statuses();

class Runtime {
public:
    // backend: "auto" (the best available, see backend()), "cpu", "cuda", "opencl", "metal".
    // BackendUnavailableError with the reason when it cannot run here; invalid_argument for a name
    // that is none of these.
    explicit Runtime(const std::string &backend = "auto", RuntimeConfig cfg = {});
    ~Runtime();  // close()
    Runtime(const Runtime &) = delete;
    Runtime &operator=(const Runtime &) = delete;

    const std::string &backend() const noexcept { return backend_name_; }
    const RuntimeConfig &config() const noexcept { return cfg_; }
    // What code a handler image (Handler::image) must be built for to run on this runtime's device:
    // "sm_90" for an H100 on CUDA; empty where the backend loads no prebuilt images (cpu, opencl).
    std::string device_target() const;

    // A CREATED kernel: handler prepared (a source handler is compiled here), queues registered.
    std::shared_ptr<Kernel> create(const KernelSpec &spec);
    // A LAUNCHED kernel: its rings and blocks exist, it consumes nothing until activate().
    std::shared_ptr<Kernel> launch(const KernelSpec &spec);
    std::vector<std::shared_ptr<Kernel>> kernels() const;
    std::shared_ptr<Kernel> kernel(const std::string &name) const;  // std::out_of_range

    // Named queues.
    std::vector<std::string> queue_names() const;
    std::shared_ptr<Queue> queue(const std::string &name) const;  // std::out_of_range
    std::shared_ptr<Queue> create_queue(const std::string &name, const QueueConfig &cfg);
    void destroy_queue(const std::string &name);  // closes it; a kernel's own queues cannot be

    // K2K: src's replies on `channel` ("" = default output) go to dst's input through a ring named
    // "<src>-><dst>" (or "<src>.<channel>-><dst>"). Several dst on one channel: each gets a copy.
    // Returns the ring's name.
    std::string connect(Kernel &src, Kernel &dst, const std::string &channel = "");

    // Cross-backend K2K: src (a kernel of this runtime) feeds dst (a kernel of any runtime, on any
    // backend) through a host bridge thread that moves src's replies on `channel` into dst's input,
    // advancing the HLC past every stamp it forwards. Stops when either kernel stops or this runtime
    // closes. Returns a description of the bridge.
    std::string bridge(Kernel &src, Kernel &dst, const std::string &channel = "");

    // Topics.
    void create_topic(const std::string &name, std::uint32_t record_size, std::uint16_t type_id);
    void subscribe(const std::string &topic, Kernel &k);   // ring "<topic>=><kernel>"
    void connect_topic(Kernel &src, const std::string &topic, const std::string &channel = "");
    // Send one record to every subscriber; returns how many took it.
    std::size_t publish(const std::string &topic, const void *record, const SendOptions &opts = {},
                        const Wait &wait = {});
    TopicInfo topic(const std::string &name) const;

    // Buffers: zeroed memory of `bytes`, reachable by handle from every kernel of this runtime.
    Buffer buffer(std::size_t bytes);
    void release_buffer(std::uint64_t handle);  // invalid_argument for an unknown handle
    Buffer resolve(std::uint64_t handle) const;  // invalid_argument for an unknown handle
    // Copy between host memory and bytes [offset, offset + n) of a buffer: the way into device memory
    // (CUDA) from the host; plain copies elsewhere. invalid_argument for an unknown handle or a range
    // outside the buffer.
    void write_buffer(std::uint64_t handle, std::size_t offset, const void *src, std::size_t n);
    void read_buffer(std::uint64_t handle, std::size_t offset, void *dst, std::size_t n) const;
    // Order the buffer copies issued so far before work another library queues next on `stream` (see
    // MemoryResource::order_before): what Buffer.__dlpack__(stream=...) asks of a producer.
    void order_buffers_before(std::intptr_t stream) const;
    // Owns the memory of every buffer: hold it to keep a view valid after the runtime closes.
    std::shared_ptr<const void> buffer_keepalive() const;

    // Terminate every kernel (each within `timeout_ns`; one that does not stop is FAULTED), release queues,
    // topics and buffers. Idempotent; a concurrent call returns once the first has finished. From a handler
    // of one of its kernels, that kernel's stop completes once the handler returns (see Kernel::terminate).
    void close(std::int64_t timeout_ns = -1);
    bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

private:
    friend class Kernel;
    struct Topic;
    void check_open(const char *call) const;
    void register_queue(const std::string &name, std::shared_ptr<Queue> q, const std::string &owner);
    void unregister_kernel(Kernel &k);
    static void check_name(const std::string &what, const std::string &name);
    void add_input(Kernel &dst, const std::shared_ptr<Queue> &ring);
    void add_output(Kernel &src, std::uint32_t channel, const std::vector<std::shared_ptr<Queue>> &rings);
    Topic &topic_ref(const std::string &name);

    std::string backend_name_;
    RuntimeConfig cfg_;
    std::unique_ptr<Backend> backend_;
    mutable std::mutex mu_;
    std::vector<std::shared_ptr<Kernel>> kernels_;
    std::map<std::string, std::shared_ptr<Queue>> queues_;
    std::map<std::string, std::string> queue_owner_;  // queue name → kernel name ("" = runtime)
    struct Topic {
        TopicInfo info;
        std::vector<std::shared_ptr<Queue>> rings;
        std::vector<std::pair<std::weak_ptr<Kernel>, std::uint32_t>> publishers;  // kernels connected to it
        bool host_published = false;  // the host has published into it
    };
    std::map<std::string, Topic> topics_;
    struct BufferTable;
    std::shared_ptr<BufferTable> buffers_;
    struct Bridge;
    std::vector<std::unique_ptr<Bridge>> bridges_;
    std::uint16_t next_kernel_id_ = 1;
    std::atomic<bool> closed_{false};
    std::mutex close_mu_;  // held for the whole of close()
    std::uint32_t process_;  // the process generation it was made in (see core/process.hpp)
};

}  // namespace rk
