// vectorcall.hpp — vectorcall methods for the per-call paths: an argument parser for
// METH_FASTCALL|METH_KEYWORDS methods (ArgSpec, parse_args, arg) and guarded(), which turns C++
// exceptions into Python ones for a method body.
//
// pybind11's dispatcher spends 200-700 ns matching keyword arguments. send/receive run once per
// message, so the Queue's four I/O methods are METH_FASTCALL|METH_KEYWORDS methods that parse their
// own arguments (nullptr = argument not given, the default applies).
#pragma once

#include <pybind11/pybind11.h>

#include <cxxabi.h>

#include <array>
#include <cstddef>
#include <sstream>
#include <string>
#include <utility>

namespace rkpy {

namespace py = pybind11;

template <std::size_t N>
struct ArgSpec {
    const char *fname;
    std::array<const char *, N> names;
    std::size_t positional;  // how many may be given by position
    std::size_t required;    // the first `required` names must be given
    // Interned copies of `names`: keywords at call sites are interned too, so the usual match is
    // one pointer comparison. Filled on first use, under the GIL.
    mutable std::array<PyObject *, N> interned{};
};

template <std::size_t N>
std::array<PyObject *, N> parse_args(const ArgSpec<N> &spec, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
    std::array<PyObject *, N> out{};
    if (static_cast<std::size_t>(nargs) > spec.positional) {
        std::ostringstream msg;
        msg << spec.fname << "() takes at most " << spec.positional << " positional argument"
            << (spec.positional == 1 ? "" : "s") << " (" << nargs << " given)";
        throw py::type_error(msg.str());
    }
    for (Py_ssize_t i = 0; i < nargs; ++i) out[static_cast<std::size_t>(i)] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; ++j) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        if (!spec.interned[0])
            for (std::size_t i = 0; i < N; ++i) spec.interned[i] = PyUnicode_InternFromString(spec.names[i]);
        std::size_t k = 0;
        while (k < N && name != spec.interned[k]) ++k;
        if (k == N) {
            k = 0;
            while (k < N && PyUnicode_CompareWithASCIIString(name, spec.names[k]) != 0) ++k;
        }
        if (k == N)
            throw py::type_error(std::string(spec.fname) + "() got an unexpected keyword argument '" +
                                 py::str(name).cast<std::string>() + "'");
        if (out[k])
            throw py::type_error(std::string(spec.fname) + "() got multiple values for argument '" + spec.names[k] + "'");
        out[k] = args[nargs + j];
    }
    for (std::size_t k = 0; k < spec.required; ++k)
        if (!out[k])
            throw py::type_error(std::string(spec.fname) + "() missing required argument '" + spec.names[k] + "'");
    return out;
}

inline py::object arg(PyObject *given, py::object fallback) {
    return given ? py::reinterpret_borrow<py::object>(given) : std::move(fallback);
}

// Run a method body, turning C++ exceptions into Python ones with pybind11's registered translators.
template <class Body>
PyObject *guarded(Body &&body) {
    try {
        return body();
    } catch (abi::__forced_unwind &) {
        throw;  // CPython ending this thread at exit: let it unwind
    } catch (...) {
        py::detail::try_translate_exceptions();
        return nullptr;
    }
}

// A METH_FASTCALL|METH_KEYWORDS function as the PyCFunction a PyMethodDef holds.
#define RK_FASTCALL(fn) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fn))

}  // namespace rkpy
