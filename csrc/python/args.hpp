// args.hpp — argument conversion for the bindings: numbers of seconds, timeouts, ints checked against
// their range, with TypeError/ValueError messages that name the argument in Python terms; and the
// small Python helpers every binding file uses (the numpy module, an object's type name).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>

namespace rkpy {

namespace py = pybind11;

// A number of seconds (int or float); TypeError naming the argument for anything else.
double seconds(const py::object &value, const char *name, const char *valid);

double ttl_seconds_arg(const py::object &ttl);

// idle_backoff in seconds -> ns, refusing what is outside [0, 1 ms] (NaN included) with the range.
std::uint64_t idle_backoff_ns(double seconds_value);
// LaunchOptions(handler_timeout=): None (0, no watchdog) or seconds in [0.001, 86400]; ValueError/TypeError else.
std::uint64_t handler_timeout_ns(const py::object &value);

// Python timeout (None or seconds >= 0) to nanoseconds (-1 = forever).
std::int64_t timeout_ns(const py::object &timeout, const char *name = "timeout");

template <typename T>
T int_in_range(const py::object &value, const char *name, long long lo, unsigned long long hi) {
    // Fast path: a plain int that fits, compared in C.
    if (PyLong_CheckExact(value.ptr())) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
        if (overflow == 0 && v >= lo && (v < 0 || static_cast<unsigned long long>(v) <= hi)) return static_cast<T>(v);
        if (overflow > 0) {
            const unsigned long long u = PyLong_AsUnsignedLongLong(value.ptr());
            if (!PyErr_Occurred() && u <= hi) return static_cast<T>(u);
            PyErr_Clear();
        }
    }
    if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value)) {
        std::ostringstream msg;
        msg << name << " must be an int in [" << lo << ", " << hi << "], got "
            << py::str(py::type::of(value).attr("__name__")).cast<std::string>();
        throw py::type_error(msg.str());
    }
    // Compare as Python ints so huge values do not overflow on the way in.
    if (value < py::int_(lo) || value > py::int_(hi)) {
        std::ostringstream msg;
        msg << name << " must be in [" << lo << ", " << hi << "], got " << py::str(value).cast<std::string>();
        throw py::value_error(msg.str());
    }
    return value.cast<T>();
}

// A time-to-live in ns as Python sees it: seconds, or None for none (0).
py::object ttl_seconds(std::uint64_t ns);

// The numpy module (imported once, kept for the life of the process).
py::object numpy();

std::string type_name(const py::handle &obj);

}  // namespace rkpy
