// bind_options.cpp — the options of queues and kernel launches: Backpressure and LaunchOptions, every
// set validated with the argument named.
#include <pybind11/native_enum.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "args.hpp"
#include "bindings.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

using namespace pybind11::literals;

void bind_options(py::module_ &m) {
    py::native_enum<rk::Backpressure>(m, "Backpressure", "enum.IntEnum",
                                      "What a full queue does with a new message.")
        .value("BLOCK", rk::Backpressure::Block, "wait for space or the timeout; False on timeout")
        .value("REJECT", rk::Backpressure::Reject, "False at once, counted rejected")
        .value("DROP_OLDEST", rk::Backpressure::DropOldest, "evict the oldest (counted dropped), accept the new")
        .value("DROP_NEW", rk::Backpressure::DropNew, "discard the new (counted dropped), False")
        .finalize();

    py::class_<rk::LaunchOptions>(m, "LaunchOptions", "Options of a kernel launch (validated on every set).")
        .def(py::init([](const py::object &queue_capacity, const py::object &dedup_window, rk::Backpressure bp,
                         bool priority, const py::object &ttl, double idle_backoff,
                         const py::object &dead_letter_capacity, const py::object &handler_timeout) {
                 rk::LaunchOptions o;
                 o.set_queue_capacity(int_in_range<std::uint64_t>(queue_capacity, "queue_capacity", 0, ~0ull));
                 o.set_dedup_window(int_in_range<std::uint64_t>(dedup_window, "dedup_window", 0, ~0ull));
                 o.set_backpressure(bp).set_priority(priority);
                 o.set_ttl_ns(ttl.is_none() ? 0 : rk::ttl_to_ns("ttl", ttl_seconds_arg(ttl)));
                 o.set_idle_backoff_ns(idle_backoff_ns(idle_backoff));
                 o.set_dead_letter_capacity(
                     int_in_range<std::uint64_t>(dead_letter_capacity, "dead_letter_capacity", 0, ~0ull));
                 o.set_handler_timeout_ns(handler_timeout_ns(handler_timeout));
                 return o;
             }),
             "queue_capacity"_a = 4096, "dedup_window"_a = 1024, "backpressure"_a = rk::Backpressure::Block,
             "priority"_a = false, "ttl"_a = py::none(), "idle_backoff"_a = 1e-6, "dead_letter_capacity"_a = 1024,
             "handler_timeout"_a = py::none())
        .def_static("production", &rk::LaunchOptions::production, "4096 slots, BLOCK, dedup window 1024")
        .def_static("low_latency", &rk::LaunchOptions::low_latency, "256 slots, REJECT, no dedup")
        .def_static("high_throughput", &rk::LaunchOptions::high_throughput, "16384 slots, BLOCK, no dedup")
        .def_property(
            "queue_capacity", &rk::LaunchOptions::queue_capacity,
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_queue_capacity(int_in_range<std::uint64_t>(v, "queue_capacity", 0, ~0ull));
            })
        .def_property(
            "dedup_window", &rk::LaunchOptions::dedup_window,
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_dedup_window(int_in_range<std::uint64_t>(v, "dedup_window", 0, ~0ull));
            },
            "the window in force: the requested one clamped to queue_capacity")
        .def_property("backpressure", &rk::LaunchOptions::backpressure, &rk::LaunchOptions::set_backpressure)
        .def_property("priority", &rk::LaunchOptions::priority, &rk::LaunchOptions::set_priority)
        .def_property(
            "ttl", [](const rk::LaunchOptions &o) { return ttl_seconds(o.ttl_ns()); },
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_ttl_ns(v.is_none() ? 0 : rk::ttl_to_ns("ttl", ttl_seconds_arg(v)));
            },
            "message time-to-live in seconds, or None")
        .def_property(
            "idle_backoff", [](const rk::LaunchOptions &o) { return static_cast<double>(o.idle_backoff_ns()) / 1e9; },
            [](rk::LaunchOptions &o, double v) { o.set_idle_backoff_ns(idle_backoff_ns(v)); },
            "CUDA: the longest an idle block sleeps between polls of its inputs, in seconds")
        .def_property(
            "dead_letter_capacity", &rk::LaunchOptions::dead_letter_capacity,
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_dead_letter_capacity(int_in_range<std::uint64_t>(v, "dead_letter_capacity", 0, ~0ull));
            },
            "how many failed messages the kernel keeps for dead_letters(); more are counted, not kept")
        .def_property(
            "handler_timeout",
            [](const rk::LaunchOptions &o) -> py::object {
                if (!o.handler_timeout_ns()) return py::none();
                return py::float_(static_cast<double>(o.handler_timeout_ns()) / 1e9);
            },
            [](rk::LaunchOptions &o, const py::object &v) { o.set_handler_timeout_ns(handler_timeout_ns(v)); },
            "the watchdog: seconds a handler may run on one message before that is a fault of the kernel "
            "(None: no watchdog; cpu backend)")
        .def("__repr__", &rk::LaunchOptions::to_string)
        .def("__eq__", [](const rk::LaunchOptions &a, const rk::LaunchOptions &b) {
            return a.queue_capacity() == b.queue_capacity() && a.dedup_window() == b.dedup_window() &&
                   a.backpressure() == b.backpressure() && a.priority() == b.priority() && a.ttl_ns() == b.ttl_ns() &&
                   a.idle_backoff_ns() == b.idle_backoff_ns() && a.dead_letter_capacity() == b.dead_letter_capacity() &&
                   a.handler_timeout_ns() == b.handler_timeout_ns();
        })
        .def("__copy__", [](const rk::LaunchOptions &o) { return o; })
        .attr("__hash__") = py::none();

    py::class_<rk::RestartPolicy>(
        m, "RestartPolicy",
        "How the supervisor restarts a kernel whose handler faulted (a handler_timeout, a trap, rk_fault(), "
        "rk.KernelFault): the message in flight is delivered again, at most max_attempts times in all, then it is a "
        "dead letter; a restart waits `backoff` seconds (doubled for each further restart within `within`, at most "
        "1 s or backoff if longer); the max_restarts+1st fault within `within` seconds makes the kernel FAULTED, and "
        "drain() returns its unprocessed input.")
        .def(py::init([](const py::object &max_restarts, double within, const py::object &max_attempts, double backoff) {
                 rk::RestartPolicy p;
                 p.max_restarts = static_cast<std::uint32_t>(
                     int_in_range<std::uint64_t>(max_restarts, "RestartPolicy.max_restarts", 0, 1000000));
                 p.within = within;
                 p.max_attempts = static_cast<std::uint32_t>(
                     int_in_range<std::uint64_t>(max_attempts, "RestartPolicy.max_attempts", 1, 65535));
                 p.backoff = backoff;
                 p.validate();
                 return p;
             }),
             "max_restarts"_a = 3, "within"_a = 60.0, "max_attempts"_a = 2, "backoff"_a = 0.0)
        .def_readonly("max_restarts", &rk::RestartPolicy::max_restarts)
        .def_readonly("within", &rk::RestartPolicy::within)
        .def_readonly("max_attempts", &rk::RestartPolicy::max_attempts)
        .def_readonly("backoff", &rk::RestartPolicy::backoff)
        .def("__repr__", &rk::RestartPolicy::to_string)
        .def("__eq__", [](const rk::RestartPolicy &a, const rk::RestartPolicy &b) {
            return a.max_restarts == b.max_restarts && a.within == b.within && a.max_attempts == b.max_attempts &&
                   a.backoff == b.backoff;
        })
        .attr("__hash__") = py::none();
}

}  // namespace rkpy
