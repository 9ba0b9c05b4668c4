// py_kernel.hpp — the native sides of ringkernel.Kernel and ringkernel.Runtime: an rk::Kernel with its
// record types and Python Queue views, and an rk::Runtime with the record type of each named queue.
#pragma once

#include <pybind11/pybind11.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gil.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

namespace py = pybind11;

struct PyKernel {
    std::shared_ptr<rk::Kernel> k;
    py::object in_type, out_type;
    py::object state_type;  // the state record's type (None: no state)
    py::object in_q, out_q;
    std::vector<py::object> channel_qs;
};

struct PyRuntime {
    std::unique_ptr<rk::Runtime> rt;
    std::map<std::string, py::object> types;  // queue name → record type

    PyRuntime() = default;
    PyRuntime(PyRuntime &&) = default;
    ~PyRuntime() {
        // Closing waits for kernels whose Python handlers need the GIL to finish.
        if (rt && Py_IsInitialized() && PyGILState_Check()) {
            without_gil([&] { rt.reset(); });
        }
    }
};

}  // namespace rkpy
