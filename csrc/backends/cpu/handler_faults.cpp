// handler_faults.cpp — see handler_faults.hpp.
#include "handler_faults.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RK_SANITIZED 1
#endif
#endif

namespace rk {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
struct sigaction previous[sizeof kSignals / sizeof kSignals[0]];

// Set while this thread runs an armed step: where a fault jumps to, and what it was.
thread_local sigjmp_buf *t_armed = nullptr;
thread_local HandlerFault t_fault;
thread_local void *t_alt_stack = nullptr;
constexpr std::size_t kAltStack = 64 * 1024;

void on_fault(int sig, siginfo_t *info, void *uctx) {
    if (sigjmp_buf *jb = t_armed) {
        t_armed = nullptr;
        t_fault.signal = sig;
        t_fault.address = info ? info->si_addr : nullptr;
        siglongjmp(*jb, 1);
    }
    // Not ours: whoever handled it before, else the default action (the fault repeats on return).
    for (std::size_t i = 0; i < sizeof kSignals / sizeof kSignals[0]; ++i) {
        if (kSignals[i] != sig) continue;
        const struct sigaction &old = previous[i];
        if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction) {
            old.sa_sigaction(sig, info, uctx);
            return;
        }
        if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN && old.sa_handler) {
            old.sa_handler(sig);
            return;
        }
        signal(sig, SIG_DFL);
        return;
    }
}

}  // namespace

std::string HandlerFault::describe() const {
    char where[64];
    std::snprintf(where, sizeof where, "%p", address);
    switch (signal) {
    case SIGSEGV: return std::string("SIGSEGV (invalid memory access at ") + where + ")";
    case SIGBUS: return std::string("SIGBUS (bus error at ") + where + ")";
    case SIGFPE: return std::string("SIGFPE (arithmetic fault, e.g. an integer division by zero, at ") + where + ")";
    case SIGILL: return std::string("SIGILL (illegal instruction at ") + where + ")";
    default: return "signal " + std::to_string(signal);
    }
}

bool handler_faults_catchable() noexcept {
#if defined(RK_SANITIZED)
    return false;
#else
    return true;
#endif
}

void install_handler_fault_handlers() {
    if (!handler_faults_catchable()) return;
    static std::once_flag once;
    std::call_once(once, [] {
        for (std::size_t i = 0; i < sizeof kSignals / sizeof kSignals[0]; ++i) {
            struct sigaction sa;
            std::memset(&sa, 0, sizeof sa);
            sa.sa_sigaction = on_fault;
            sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
            sigemptyset(&sa.sa_mask);
            sigaction(kSignals[i], &sa, &previous[i]);
        }
    });
}

void use_signal_stack() {
    if (!handler_faults_catchable() || t_alt_stack) return;
    void *mem = mmap(nullptr, kAltStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return;  // faults are still caught, stack overflows are not
    stack_t st;
    st.ss_sp = mem;
    st.ss_size = kAltStack;
    st.ss_flags = 0;
    if (sigaltstack(&st, nullptr) != 0) {
        munmap(mem, kAltStack);
        return;
    }
    t_alt_stack = mem;
}

void release_signal_stack() noexcept {
    if (!t_alt_stack) return;
    stack_t st;
    std::memset(&st, 0, sizeof st);
    st.ss_flags = SS_DISABLE;
    sigaltstack(&st, nullptr);
    munmap(t_alt_stack, kAltStack);
    t_alt_stack = nullptr;
}

bool run_catching_faults(int (*step)(void *), void *arg, int *rc, HandlerFault *fault) {
    if (!handler_faults_catchable()) {
        *rc = step(arg);
        return true;
    }
    // The signal mask is not saved per call (sigsetjmp(jb, 1) costs a system call per step, a third of a
    // compiled handler's round trip): the worker's mask is taken once and put back after a fault, whose
    // handler left the faulting signal blocked.
    thread_local sigset_t t_mask;
    thread_local bool t_mask_known = false;
    if (!t_mask_known) {
        pthread_sigmask(SIG_BLOCK, nullptr, &t_mask);
        t_mask_known = true;
    }
    sigjmp_buf jb;
    if (sigsetjmp(jb, 0) != 0) {  // came back from on_fault
        pthread_sigmask(SIG_SETMASK, &t_mask, nullptr);
        *fault = t_fault;
        return false;
    }
    t_armed = &jb;
    *rc = step(arg);
    t_armed = nullptr;
    return true;
}

GuardedBuffer::GuardedBuffer(std::size_t bytes) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    const std::size_t usable = (bytes + 63) / 64 * 64;
    const std::size_t body = (usable + page - 1) / page * page;
    map_bytes_ = body + page;
    map_ = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map_ == MAP_FAILED) {
        map_ = nullptr;
        throw std::bad_alloc();
    }
    mprotect(static_cast<unsigned char *>(map_) + body, page, PROT_NONE);
    data_ = static_cast<unsigned char *>(map_) + (body - usable);
}

GuardedBuffer::~GuardedBuffer() {
    if (map_) munmap(map_, map_bytes_);
}

}  // namespace rk
