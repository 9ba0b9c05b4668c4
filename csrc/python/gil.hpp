// gil.hpp — the GIL for the bindings: released around every wait (without_gil), taken by kernel
// worker threads that run Python handlers (AcquireGil), both safe at interpreter exit; and the wait
// that lets Ctrl-C interrupt a call waiting without the GIL (wait_for).
#pragma once

#include <pybind11/pybind11.h>

#include <cxxabi.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "ringkernel/wait.hpp"

namespace rkpy {

namespace py = pybind11;

// ---- the GIL at interpreter exit ------------------------------------------------------------------------
// While the interpreter finalizes, CPython (3.11-3.13) ends any other thread that takes the GIL with
// pthread_exit. Its forced unwind through our frames (a noexcept destructor that retakes the GIL, a
// thread state torn down under finalization) aborts the process. So a thread that comes back to Python
// during finalization -- a daemon thread blocked in receive(), a kernel worker running a Python
// handler -- parks instead, touching nothing of Python's, until the process ends (CPython 3.14 does
// the same with its own threads).

inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
}

[[noreturn]] void park_forever() noexcept;

// py::gil_scoped_release that parks instead of retaking the GIL during finalization. If finalization
// begins while it waits for the GIL, CPython ends the thread from inside PyEval_RestoreThread with a
// forced unwind, which must be free to leave this destructor (hence noexcept(false), and without_gil
// below, so that no other exception is unwinding at that moment).
class ReleaseGil {
public:
    ReleaseGil() : state_(PyEval_SaveThread()) {}
    ~ReleaseGil() noexcept(false) {
        if (interpreter_finalizing()) park_forever();
        PyEval_RestoreThread(state_);
    }
    ReleaseGil(const ReleaseGil &) = delete;
    ReleaseGil &operator=(const ReleaseGil &) = delete;

private:
    PyThreadState *state_;
};

// Run `f` without the GIL. What it throws is carried out of the GIL-less region and rethrown with the
// GIL back, so the GIL is never retaken while an exception unwinds (see ReleaseGil).
template <typename F>
auto without_gil(F &&f) -> decltype(f()) {
    using R = decltype(f());
    std::exception_ptr error;
    if constexpr (std::is_void_v<R>) {
        {
            ReleaseGil nogil;
            try {
                f();
            } catch (abi::__forced_unwind &) {
                throw;  // thread cancellation must unwind
            } catch (...) {
                error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
    } else {
        std::optional<R> result;
        {
            ReleaseGil nogil;
            try {
                result.emplace(f());
            } catch (abi::__forced_unwind &) {
                throw;
            } catch (...) {
                error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
        return std::move(*result);
    }
}

// py::gil_scoped_acquire for threads that are not Python's (kernel workers): parks instead of taking
// the GIL during finalization, and when the scope is left during finalization (CPython's forced
// unwind: the GIL is not held then) it parks instead of touching the thread state.
class AcquireGil {
public:
    AcquireGil() {
        if (interpreter_finalizing()) park_forever();
        gil_.emplace();
    }
    ~AcquireGil() {
        if (interpreter_finalizing()) park_forever();
    }
    AcquireGil(const AcquireGil &) = delete;
    AcquireGil &operator=(const AcquireGil &) = delete;

private:
    std::optional<py::gil_scoped_acquire> gil_;
};

// A wait of `ns` nanoseconds (-1 = forever) that checks for signals about every 100 ms, so Ctrl-C
// interrupts a call waiting with the GIL released.
rk::Wait wait_for(std::int64_t ns);

}  // namespace rkpy
