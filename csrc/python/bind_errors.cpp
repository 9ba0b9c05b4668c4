// bind_errors.cpp — the exceptions: one Python class per C++ error class (RingKernelError and its
// subclasses), CompileError with its log, TypeMismatch as TypeError.
#include <pybind11/pybind11.h>

#include <exception>

#include "bindings.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

namespace {
PyObject *kernel_fault = nullptr;  // a new reference, kept for the life of the process
}  // namespace

PyObject *kernel_fault_type() { return kernel_fault; }

void bind_errors(py::module_ &m) {
    // One Python class per C++ class, base first so derived translators win.
    // Exception types live as long as the module; the translators keep borrowed pointers.
    auto &base = py::register_exception<rk::Error>(m, "RingKernelError", PyExc_Exception);
    py::register_exception<rk::BackendUnavailableError>(m, "BackendUnavailableError", base.ptr());
    py::register_exception<rk::LifecycleError>(m, "LifecycleError", base.ptr());
    py::register_exception<rk::MessageFormatError>(m, "MessageFormatError", base.ptr());
    py::register_exception<rk::TelemetryNotEnabledError>(m, "TelemetryNotEnabledError", base.ptr());
    py::register_exception<rk::KernelFaultError>(m, "KernelFaultError", base.ptr());
    py::register_exception<rk::ClockSkewError>(m, "ClockSkewError", base.ptr());
    static PyObject *compile_error = py::register_exception<rk::CompileError>(m, "CompileError", base.ptr()).ptr();
    kernel_fault = PyErr_NewExceptionWithDoc(
        "ringkernel._core.KernelFault",
        "Raised by a handler (not by the library): its kernel is at fault, not only this message. The message fails "
        "with ERR_FAULT and goes to dead_letters() with the exception's text.",
        base.ptr(), nullptr);
    if (!kernel_fault) throw py::error_already_set();
    m.attr("KernelFault") = py::reinterpret_borrow<py::object>(kernel_fault);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const rk::CompileError &e) {
            py::object exc = py::reinterpret_borrow<py::object>(compile_error)(e.what());
            exc.attr("log") = e.log();
            PyErr_SetObject(compile_error, exc.ptr());
        } catch (const rk::TypeMismatch &e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        }
    });
}

}  // namespace rkpy
