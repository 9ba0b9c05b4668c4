// kernel_core.hpp — internal: the memory a kernel's blocks work on, and the backend interface.
//
// A KernelCore is shared by the Kernel and by every block (worker) of it. A block that does not stop
// in time keeps its KernelCore alive, so the memory it may still touch (control block, routes, rings)
// stays valid until its handler returns, even after the Kernel and the Runtime are gone.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "ringkernel/memory.hpp"
#include "ringkernel/ring.hpp"
#include "ringkernel/runtime.hpp"
#include "ringkernel/wait.hpp"
#include "supervision.hpp"

namespace rk {

// The built-in `spec.handler.name` names (from the one table, RK_BUILTINS in rk_builtins.h), checked against
// the kernel's record sizes: its handler function's name, or invalid_argument saying what is wrong.
const char *check_builtin(const KernelSpec &spec);

class BlockRunner;  // a backend's blocks of one kernel
struct KernelCore;
// The kernel whose block runs on this thread (a CPU backend worker), else null.
extern thread_local const KernelCore *t_block_core;

struct BufferTableMem {
    // The table lives in `mem` (kernels read it); the buffers themselves in `data`.
    BufferTableMem(std::uint32_t capacity, std::shared_ptr<MemoryResource> mem, std::shared_ptr<MemoryResource> data);
    ~BufferTableMem();
    BufferTableMem(const BufferTableMem &) = delete;
    BufferTableMem &operator=(const BufferTableMem &) = delete;
    std::shared_ptr<MemoryResource> resource;
    std::shared_ptr<MemoryResource> data;
    rk_buffer_table *table = nullptr;     // in `resource`: what kernels read
    rk_buffer_entry *entries = nullptr;   // `count` entries, in `resource`
    std::uint32_t count = 0;
    std::vector<void *> memory;           // owned allocations, by index
    std::vector<std::size_t> sizes;
    std::mutex mu;
    std::uint32_t next_free = 0;
    std::mt19937_64 tags{std::random_device{}()};  // the random upper halves of handles (under mu)
};

struct KernelCore {
    // Control block, telemetry and routes live in the backend's memory (device-visible on devices).
    explicit KernelCore(std::shared_ptr<MemoryResource> mem);
    ~KernelCore();
    KernelCore(const KernelCore &) = delete;
    KernelCore &operator=(const KernelCore &) = delete;

    std::shared_ptr<MemoryResource> memory;
    rk_control_block *cb = nullptr;
    rk_telemetry *tel = nullptr;
    rk_u64 *routes_word = nullptr;       // address of the current rk_routes, read by blocks
    KernelSpec spec;
    std::shared_ptr<WaitSet> doorbell = std::make_shared<WaitSet>();
    std::shared_ptr<BufferTableMem> buffers;
    std::shared_ptr<const void> module;  // what keeps `step` loaded (a compiled handler's shared object)
    int (*step)(rk_ctx *) = nullptr;     // the block step of the handler
    bool uses_barrier = false;
    KernelMode mode = KernelMode::Persistent;  // how the backend runs it: Persistent or Dispatch
    std::uint64_t reply_id_base = 0;    // the kernel's reply ids: a block of 2^36 process-unique ids

    // Actor state (KernelSpec::state_size bytes, zeroed; null without state), in `memory`: blocks reach it.
    void *state = nullptr;
    // Dead letters: blocks push every request a handler failed into this ring (in `memory`; the envelope's
    // reserved0 carries the attempts, reserved1 the error code); the host moves them into `dead` when asked
    // (Kernel::dead_letters). What does not fit either is counted: the ring's `rejected`, dead_dropped.
    std::unique_ptr<Ring> dead_letters;
    std::uint64_t dead_position = 0;     // under dead_mu: the ring position of the next letter collected
    // A supervised device kernel (RestartPolicy on a backend whose blocks hand faults over, rk_finish_run): the
    // ring the supervisor redelivers through, the kernel's first input (blocks try it first). Null otherwise.
    std::unique_ptr<Ring> redelivery;
    std::mutex dead_mu;
    std::deque<DeadLetter> dead;         // under dead_mu, at most options.dead_letter_capacity()
    std::uint64_t dead_dropped = 0;      // under dead_mu
    std::uint64_t dead_taken = 0;        // under dead_mu: cleared by dead_letters(clear=true)
    // What host handlers said when they failed a message, by message id, until its dead letter is collected
    // (bounded: the oldest texts go first). Under err_mu.
    std::map<std::uint64_t, std::string> failure_texts;
    void note_failure(std::uint64_t message_id, const std::string &what);
    std::string failure_text(std::uint64_t message_id, std::int32_t code);
    // Move what the blocks dead-lettered into `dead` (caller holds dead_mu).
    void collect_dead_letters();

    // Routes are replaced, never edited: every table stays alive until the core goes away.
    std::mutex routes_mu;
    std::vector<rk_routes *> route_history;  // allocated from `memory`, freed with the core
    std::vector<std::shared_ptr<Queue>> held;  // every queue a route names, kept alive here

    // Faults of the handler, restarts, messages held for redelivery (every kernel has one; see supervision.hpp).
    std::unique_ptr<Supervision> supervision;

    std::mutex host_mu;                 // serialises a non-concurrent host handler
    mutable std::mutex err_mu;
    std::string last_error_message;
    // A block faulted (a signal in a native handler, a device fault): the kernel is FAULTED from then on.
    std::atomic<bool> faulted{false};
    std::string fault_message;          // under err_mu
    // Record a fault (the first one counts): the kernel reads FAULTED, its blocks are told to leave, and
    // its queues close with `why` (senders and receivers return at once).
    void fault(const std::string &why);
    std::string fault_text() const;
    // What the last failed message's handler said (Kernel::last_error_message), under err_mu.
    void set_last_error_message(std::string what) {
        std::lock_guard<std::mutex> lock(err_mu);
        last_error_message = std::move(what);
    }

    std::mutex exit_mu;
    std::condition_variable exit_cv;
    std::unique_ptr<BlockRunner> runner;

    const rk_routes &routes() const noexcept { return *reinterpret_cast<const rk_routes *>(*routes_word); }
    // Whether the calling thread is one of this kernel's blocks (inside its handler, say).
    bool runs_on_this_thread() const noexcept { return t_block_core == this; }
    // Publish a new routes table made from the current one by `edit`, keeping `keep` alive.
    void publish_routes(const rk_routes &next, std::vector<std::shared_ptr<Queue>> keep);
    void wake() { doorbell->notify(); }
};

class BlockRunner {
public:
    virtual ~BlockRunner() = default;
    // Start the blocks: they run the persistent loop, idle while the kernel is inactive.
    virtual void start(const std::shared_ptr<KernelCore> &core) = 0;
    // After should_terminate: wait up to timeout_ns for every block to leave the loop.
    virtual bool wait_stopped(std::int64_t timeout_ns) = 0;
    // Let go of blocks that did not stop (they exit on their own when their handler returns).
    virtual void abandon() = 0;
    // Blocks still alive (threads on the CPU backend).
    virtual std::uint32_t alive() const = 0;
    // What keeps the kernel from stopping, for the FAULTED message (after a wait_stopped that failed).
    virtual std::string stuck() const;
    // After the host cleared is_active: wait up to timeout_ns until no block is inside a run and none
    // will take one until is_active is set again (every block has seen the kernel inactive). False on
    // timeout (a handler still running).
    virtual bool quiesce(std::int64_t timeout_ns) = 0;
    // The kernel reached TERMINATED (its blocks stopped, or never started): give back what the
    // backend reserved for it (device compute units).
    virtual void stopped() {}
    // Why the blocks ended other than by terminate (a device fault), or empty. Asked once they stopped.
    virtual std::string failure() const { return {}; }
};

// Resident blocks (the CPU workers, persistent device kernels) count themselves paused in the control block
// (rk_note_active): wait until all `grid` are.
bool wait_blocks_paused(const KernelCore &core, std::int64_t timeout_ns);

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char *name() const noexcept = 0;
    // Where the kernels' rings, control blocks, routes and buffers live.
    virtual std::shared_ptr<MemoryResource> memory() { return host_memory(); }
    // Where buffers (Runtime::buffer) live: memory() unless the backend has device memory for them.
    virtual std::shared_ptr<MemoryResource> buffer_memory() { return memory(); }
    // Whether the host and the kernels may both do read-modify-writes on one ring word (producers of one
    // ring on both sides, eviction on one side while the other consumes). Empty: yes; else why not.
    virtual std::string mixed_atomics_refusal() const { return {}; }
    // Where rings between two of the backend's kernels live when not in memory(): device memory on CUDA.
    virtual std::shared_ptr<MemoryResource> k2k_memory() { return nullptr; }
    // The code target of the device, for handlers compiled outside the library (Handler::image): "sm_90"
    // on CUDA; empty where the backend loads no prebuilt images.
    virtual std::string device_target() const { return {}; }
    // Whether the backend runs the watchdog (LaunchOptions::handler_timeout) and restarts (KernelSpec::restart).
    virtual bool supervises() const { return false; }
    // Whether it restarts kernels under a RestartPolicy (devices: their blocks hand a fault to the host's
    // supervisor, which redelivers through KernelCore::redelivery) -- without the watchdog, unless supervises().
    virtual bool restarts() const { return supervises(); }
    // Choose the step function for `spec` (throws for an unknown built-in, CompileError for bad
    // source, invalid_argument for a combination the backend cannot run) and make its blocks.
    virtual void prepare(KernelCore &core, const RuntimeConfig &cfg) = 0;
};

}  // namespace rk
