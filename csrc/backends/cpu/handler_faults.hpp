// handler_faults.hpp — internal: synchronous faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL) raised by a native
// (rk.Source) handler on a CPU backend worker become the kernel's fault instead of the process's end.
//
// How: the first worker that runs such a handler installs process-wide handlers for those signals (the
// previous ones are kept and called for any fault that is not ours). A worker arms its thread around each
// step of the handler; a fault while armed jumps back to the worker (from an alternate signal stack, so a
// stack overflow is caught too), which records it and leaves. The step it interrupted is lost: its run's
// messages were taken from the input ring and are never answered, which the fault says.
//
// Limits: only native handlers are armed (not Python callables nor C++ HostHandlers, whose state a jump
// would corrupt); a fault that corrupts memory without trapping is not seen; the handler's reply buffers
// end at a guard page (see GuardedBuffer), so a write running far enough past them traps instead of
// corrupting the heap. Under ASan or TSan the sanitizer's own handlers stay in charge.
#pragma once

#include <csetjmp>
#include <cstddef>
#include <string>

namespace rk {

struct HandlerFault {
    int signal = 0;
    void *address = nullptr;  // the faulting address (SIGSEGV/SIGBUS), else the instruction's
    std::string describe() const;
};

// Whether faults can be caught in this build (false under ASan/TSan).
bool handler_faults_catchable() noexcept;
// Once per process: the signal handlers. Once per worker thread: its alternate signal stack (given back
// by release_signal_stack).
void install_handler_fault_handlers();
void use_signal_stack();
void release_signal_stack() noexcept;

// Run `step(arg)` with faults caught; returns true when it completed, false (and `*fault`) when it faulted.
bool run_catching_faults(int (*step)(void *), void *arg, int *rc, HandlerFault *fault);

// Memory that ends at an inaccessible guard page: `bytes` usable bytes whose end is 64-byte aligned and at
// most 63 bytes before the guard, so that writes past it trap.
class GuardedBuffer {
public:
    explicit GuardedBuffer(std::size_t bytes);
    ~GuardedBuffer();
    GuardedBuffer(const GuardedBuffer &) = delete;
    GuardedBuffer &operator=(const GuardedBuffer &) = delete;
    unsigned char *data() const noexcept { return data_; }

private:
    void *map_ = nullptr;
    std::size_t map_bytes_ = 0;
    unsigned char *data_ = nullptr;
};

}  // namespace rk
