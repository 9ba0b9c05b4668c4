// bindings.hpp — one bind_* function per area of ringkernel._core. module.cpp calls them in the order the
// module has always registered its names (a signature names the Python type of an argument only when
// that type is bound already). The message codec's bind_codec is in codec.hpp.
#pragma once

#include <pybind11/pybind11.h>

namespace rkpy {

namespace py = pybind11;

struct PyRuntime;

void bind_errors(py::module_ &m);               // bind_errors.cpp: RingKernelError and its subclasses
// rk.KernelFault: what a Python handler raises when its kernel is at fault, not only the message (bind_errors).
PyObject *kernel_fault_type();
void bind_options(py::module_ &m);              // bind_options.cpp: Backpressure, LaunchOptions
void bind_clock(py::module_ &m);                // bind_clock.cpp: HlcTimestamp, HlcClock
void bind_queue(py::module_ &m);                // bind_queue.cpp: Envelope, QueueStats, Queue
void bind_backend_info(py::module_ &m);         // bind_backends.cpp: BackendInfo
void bind_message_plan(py::module_ &m);         // bind_message_plan.cpp: MessagePlan
void bind_runtime(py::module_ &m);              // bind_runtime.cpp: KernelState, Telemetry, _Kernel, _Runtime
void bind_buffers(py::class_<PyRuntime> &runtime);  // bind_buffers.cpp: _Runtime's buffer methods
void bind_builtins(py::module_ &m);             // bind_builtins.cpp: builtin_handlers, builtin_layouts, ERR_*
void bind_backends(py::module_ &m);             // bind_backends.cpp: backends(), cuda_module_loading()
void bind_layout(py::module_ &m);               // layout_info.cpp: _set_layout_dtypes, layout_info
void bind_build_info(py::module_ &m);           // bind_backends.cpp: build_info(), the ring's size limits
void bind_source_cache(py::module_ &m);         // bind_source_cache.cpp: handler_cache_dir, dialect_include_dirs

}  // namespace rkpy
