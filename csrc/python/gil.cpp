// gil.cpp — the GIL helpers (see gil.hpp).
#include "gil.hpp"

#include <chrono>
#include <functional>
#include <thread>

namespace rkpy {

void park_forever() noexcept {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

namespace {

// Called about every 100 ms while a call waits with the GIL released: lets Ctrl-C interrupt it.
const std::function<void()> kCheckSignals = [] {
    if (interpreter_finalizing()) park_forever();
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
};

}  // namespace

rk::Wait wait_for(std::int64_t ns) { return rk::Wait{ns, ns != 0 ? &kCheckSignals : nullptr}; }

}  // namespace rkpy
