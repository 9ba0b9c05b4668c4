// wait.hpp — how a blocked sender or receiver waits: spin, then yield, then park.
//
// WaitSet is an event count. A waiter spins briefly (the other side is usually mid-operation),
// then yields its time slice, then parks on a condition variable, so a long wait costs no CPU.
// The notifier pays one fence and one relaxed load when nobody is parked. Lost wake-ups are ruled
// out Dekker-style: the waiter announces itself (waiters_++) and then re-checks the condition; the
// notifier changes the condition and then reads waiters_; a seq_cst fence on each side orders the
// two, and the notify itself happens under the mutex, so it cannot slip between the waiter's
// re-check and its sleep.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define RK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RK_TSAN 1
#endif
#endif

namespace rk {

// One pause of a spin-wait (x86 `pause`, ARM `yield`): the host atomics' rk_cpu_relax.
void cpu_relax() noexcept;

// How long a call may wait. timeout_ns < 0 waits forever, 0 does not wait. `interrupt`, if set, is
// called about every 100 ms of waiting and may throw to abandon the wait (Python checks signals).
struct Wait {
    std::int64_t timeout_ns = -1;
    const std::function<void()> *interrupt = nullptr;

    static Wait none() noexcept { return Wait{0, nullptr}; }
    static Wait for_ns(std::int64_t ns) noexcept { return Wait{ns < 0 ? 0 : ns, nullptr}; }
};

using Clock = std::chrono::steady_clock;

// A point in time to wait until; `infinite` when the Wait has no timeout.
struct Deadline {
    Clock::time_point at{};
    bool infinite = true;

    static Deadline from(const Wait &w) noexcept {
        Deadline d;
        if (w.timeout_ns >= 0) {
            d.infinite = false;
            d.at = Clock::now() + std::chrono::nanoseconds(w.timeout_ns);
        }
        return d;
    }
    bool passed() const noexcept { return !infinite && Clock::now() >= at; }
    std::int64_t remaining_ns() const noexcept {
        if (infinite) return -1;
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(at - Clock::now()).count();
        return left > 0 ? left : 0;
    }
};

// A Deadline computed on first use, so calls that never wait never read the clock for it.
class LazyDeadline {
public:
    explicit LazyDeadline(const Wait &w) noexcept : wait_(w) {}
    const Deadline &get() noexcept {
        if (!set_) {
            deadline_ = Deadline::from(wait_);
            set_ = true;
        }
        return deadline_;
    }

private:
    const Wait &wait_;
    Deadline deadline_;
    bool set_ = false;
};

class WaitSet {
public:
    static constexpr int kSpins = 128;
    static constexpr int kYields = 16;
    static constexpr auto kInterruptEvery = std::chrono::milliseconds(100);

    // Wait until ready() or the deadline. Returns ready() at the end. Exceptions from `interrupt`
    // propagate, with the waiter count restored.
    template <class Ready>
    bool wait(Ready ready, const Deadline &deadline, const std::function<void()> *interrupt) {
        for (int i = 0; i < kSpins; ++i) {
            if (ready()) return true;
            cpu_relax();
        }
        for (int i = 0; i < kYields; ++i) {
            if (ready()) return true;
            if (deadline.passed()) return false;
            std::this_thread::yield();
        }
        std::unique_lock<std::mutex> lock(mu_);
        Announce announce(waiters_);
        auto next_interrupt = Clock::now() + kInterruptEvery;
        for (;;) {
            if (ready()) return true;
            auto now = Clock::now();
            if (!deadline.infinite && now >= deadline.at) return false;
            if (interrupt && now >= next_interrupt) {
                lock.unlock();
                (*interrupt)();
                lock.lock();
                next_interrupt = Clock::now() + kInterruptEvery;
                continue;
            }
            // Without an interrupt the slice only bounds each sleep; the notifier wakes us.
            if (!interrupt && now >= next_interrupt) next_interrupt = now + kInterruptEvery;
            auto until = next_interrupt;
            if (!deadline.infinite && deadline.at < until) until = deadline.at;
            cv_.wait_until(lock, until);
        }
    }

    // Wake every parked waiter, if any; call after making the condition true.
    void notify() {
        full_fence();
        if (waiters_.load(std::memory_order_relaxed) != 0) {
            std::lock_guard<std::mutex> lock(mu_);
            cv_.notify_all();
            for (int fd : fds_) signal_fd(fd);
        }
    }

    // Whether a waiter may be parked (a hint, without the fence notify() pays).
    bool has_waiters() const noexcept { return waiters_.load(std::memory_order_relaxed) != 0; }

    // An event loop's waiter: every notify() also signals `fd` (an eventfd: one 8-byte write) until
    // unwatch_fd(). Registered like a parked waiter, so a notifier that changed the condition after
    // this call returns is sure to signal: the watcher re-checks the condition after watch_fd().
    void watch_fd(int fd) {
        std::lock_guard<std::mutex> lock(mu_);
        fds_.push_back(fd);
        waiters_.fetch_add(1, std::memory_order_relaxed);
        full_fence();
    }
    void unwatch_fd(int fd) {
        std::lock_guard<std::mutex> lock(mu_);
        for (std::size_t i = 0; i < fds_.size(); ++i) {
            if (fds_[i] != fd) continue;
            fds_.erase(fds_.begin() + static_cast<std::ptrdiff_t>(i));
            waiters_.fetch_sub(1, std::memory_order_relaxed);
            return;
        }
    }

private:
    struct Announce {
        explicit Announce(std::atomic<std::uint32_t> &w) : w_(w) {
            w_.fetch_add(1, std::memory_order_relaxed);
            full_fence(w_);
        }
        ~Announce() { w_.fetch_sub(1, std::memory_order_relaxed); }
        std::atomic<std::uint32_t> &w_;
    };

    // TSan does not model fences (GCC refuses them under -fsanitize=thread); it does model a
    // seq_cst read-modify-write, which is a full barrier on every target we build for.
    static void full_fence(std::atomic<std::uint32_t> &w) {
#if defined(RK_TSAN)
        w.fetch_add(0, std::memory_order_seq_cst);
#else
        (void)w;
        std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
    }
    void full_fence() { full_fence(waiters_); }

    static void signal_fd(int fd);

    alignas(64) std::atomic<std::uint32_t> waiters_{0};
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<int> fds_;  // watched event fds, guarded by mu_
};

}  // namespace rk
