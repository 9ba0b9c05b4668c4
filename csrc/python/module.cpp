// ringkernel._core — pybind11 bindings of the C++ core. Bindings only: argument conversion,
// validation messages in Python terms, GIL handling. Every per-message loop stays in C++.
//
// The files of the extension, by concept:
//   args.hpp/.cpp          argument conversion (seconds, timeouts, ints in range) and small Python helpers
//   gil.hpp/.cpp           the GIL: released around waits, taken by kernel workers, safe at interpreter exit
//   vectorcall.hpp         argument parsing for the METH_FASTCALL methods of the per-call paths
//   layout_info.hpp/.cpp   the layout dtypes passed down from Python; layout_info()
//   codec.hpp/.cpp         the native message codec (_core.Record)
//   py_queue.hpp/.cpp      PyQueue, records in and out of an rk::Queue
//   host_handler.hpp/.cpp  Python callables as kernel handlers
//   py_kernel.hpp          PyKernel, PyRuntime
//   bindings.hpp           the bind_* functions, one per area (bind_*.cpp), called below in order
//   numpy_api.hpp, dlpack_abi.hpp  the numpy C API and the DLPack ABI
#include <pybind11/pybind11.h>

// The numpy C API, for the per-record paths: reading an np.void's bytes and making one without
// going through Python attribute lookups. This file imports it for the extension's other files.
#define RINGKERNEL_IMPORTS_NUMPY 1
#include "numpy_api.hpp"

#include "bindings.hpp"
#include "codec.hpp"
#include "ringkernel/version.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    if (_import_array() < 0) throw py::error_already_set();
    m.doc() = "ringkernel native core (private; import ringkernel instead)";
    m.attr("__version__") = RINGKERNEL_VERSION;

    rkpy::bind_errors(m);
    rkpy::bind_options(m);
    rkpy::bind_clock(m);
    rkpy::bind_queue(m);
    rkpy::bind_backend_info(m);
    rkpy::bind_message_plan(m);
    rkpy::bind_codec(m);
    rkpy::bind_runtime(m);
    rkpy::bind_builtins(m);
    rkpy::bind_backends(m);
    rkpy::bind_layout(m);
    rkpy::bind_build_info(m);
    rkpy::bind_source_cache(m);
}
