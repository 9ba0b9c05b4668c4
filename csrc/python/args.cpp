// args.cpp — argument conversion for the bindings (see args.hpp).
#include "args.hpp"

#include <algorithm>
#include <cmath>

#include "ringkernel/options.hpp"

namespace rkpy {

double seconds(const py::object &value, const char *name, const char *valid) {
    if (PyFloat_CheckExact(value.ptr())) return PyFloat_AS_DOUBLE(value.ptr());
    if (py::isinstance<py::bool_>(value) || !(PyLong_Check(value.ptr()) || PyFloat_Check(value.ptr())))
        throw py::type_error(std::string(name) + " must be " + valid + ", got " +
                             py::str(py::type::of(value).attr("__name__")).cast<std::string>());
    const double s = PyFloat_AsDouble(value.ptr());
    if (s == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return s;
}

double ttl_seconds_arg(const py::object &ttl) { return seconds(ttl, "ttl", "None or a number of seconds"); }

std::uint64_t idle_backoff_ns(double seconds_value) {
    if (!(seconds_value >= 0.0) || seconds_value > static_cast<double>(rk::kMaxIdleBackoffNs) / 1e9)
        throw py::value_error("idle_backoff must be in [0, " + std::to_string(static_cast<double>(rk::kMaxIdleBackoffNs) / 1e9) +
                              "] seconds, got " + std::to_string(seconds_value));
    return static_cast<std::uint64_t>(seconds_value * 1e9 + 0.5);
}

std::uint64_t handler_timeout_ns(const py::object &value) {
    if (value.is_none()) return 0;
    const double s = seconds(value, "handler_timeout", "None (no watchdog) or a number of seconds");
    const double lo = static_cast<double>(rk::kMinHandlerTimeoutNs) / 1e9, hi = static_cast<double>(rk::kMaxHandlerTimeoutNs) / 1e9;
    if (!(s >= lo && s <= hi)) {
        std::ostringstream msg;
        msg << "handler_timeout must be None or in [" << lo << ", " << hi << "] seconds, got " << s;
        throw py::value_error(msg.str());
    }
    return static_cast<std::uint64_t>(s * 1e9 + 0.5);
}

std::int64_t timeout_ns(const py::object &timeout, const char *name) {
    if (timeout.is_none()) return -1;
    const double s = seconds(timeout, name, "None (wait forever) or a number of seconds >= 0");
    if (!(s >= 0.0) || !std::isfinite(s)) {
        std::ostringstream msg;
        msg << name << " must be None (wait forever) or a number of seconds >= 0, got " << s;
        throw py::value_error(msg.str());
    }
    return static_cast<std::int64_t>(std::min(s * 1e9, 9.0e18));
}

py::object ttl_seconds(std::uint64_t ns) {
    if (ns == 0) return py::none();
    return py::float_(static_cast<double>(ns) / 1e9);
}

py::object numpy() {
    static PyObject *np = py::module_::import("numpy").release().ptr();  // leaked: a static py::object would be released at process exit, after the interpreter is gone
    return py::reinterpret_borrow<py::object>(np);
}

std::string type_name(const py::handle &obj) {
    return py::str(py::type::of(obj).attr("__qualname__")).cast<std::string>();
}

}  // namespace rkpy
