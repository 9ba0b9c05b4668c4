// layout_info.hpp — the numpy dtypes of layout.h's structs (envelope, telemetry, control block), which
// ringkernel.layout passes down when it is imported (_set_layout_dtypes); the bindings that return
// envelopes or views of a kernel's blocks take them from here. layout_info.cpp also holds
// layout_info(), the C layout the Python-side dtype checks compare against.
#pragma once

#include <pybind11/pybind11.h>

namespace rkpy {

namespace py = pybind11;

// The numpy dtypes of layout.h's structs, given by ringkernel.layout when it is imported (the package does
// so first): the bindings never import the package's Python modules. Leaked on purpose, as numpy() is: a
// static reference would be released at process exit, after the interpreter is gone.
struct LayoutDtypes {
    PyObject *envelope = nullptr, *telemetry = nullptr, *control_block = nullptr;
};
LayoutDtypes &layout_dtypes();
// One of them; std::logic_error naming it (`name`) when ringkernel.layout has not registered it yet.
py::object layout_dtype(PyObject *const LayoutDtypes::*which, const char *name);

}  // namespace rkpy
