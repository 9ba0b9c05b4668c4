// bind_backends.cpp — the backends and build facts: BackendInfo and backends() (which backends can run
// here, and why not), cuda_module_loading(), build_info() and the ring's size limits. Three bind_*
// functions, because the module registers these at three places (an order kept as it always was).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "../backends/cuda/cuda_probe.hpp"
#include "bindings.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

using namespace pybind11::literals;

namespace {

struct BackendInfo {
    std::string name;
    bool available;
    std::string detail;
};

std::vector<BackendInfo> backends() {
    std::vector<BackendInfo> out;
    for (const auto &s : rk::backend_statuses()) out.push_back({s.name, s.available, s.detail});
    return out;
}

}  // namespace

void bind_backend_info(py::module_ &m) {
    py::class_<BackendInfo>(m, "BackendInfo", "Whether a backend can run here, and why not.")
        .def_readonly("name", &BackendInfo::name)
        .def_readonly("available", &BackendInfo::available)
        .def_readonly("detail", &BackendInfo::detail)
        .def("__repr__", [](const BackendInfo &b) {
            return "BackendInfo(name='" + b.name + "', available=" + (b.available ? "True" : "False") + ", detail='" +
                   b.detail + "')";
        });
}

void bind_backends(py::module_ &m) {
    m.def("backends", &backends, "every backend this build knows, with availability and the reason; never raises");
    m.def("cuda_module_loading", &rk::cuda_module_loading_mode,
          "how the CUDA driver loads modules in this process: 'eager', 'lazy', or 'unknown' (CUDA not started)");
}

void bind_build_info(py::module_ &m) {
    m.def("build_info", [] {
        return py::dict("version"_a = RINGKERNEL_VERSION, "cuda_compiled"_a = bool(RINGKERNEL_HAS_CUDA_COMPILER),
                        "compiler"_a = __VERSION__);
    });
    m.attr("RING_MIN_CAPACITY") = rk::kMinCapacity;
    m.attr("RING_MAX_CAPACITY") = rk::kMaxCapacity;
    m.attr("MAX_RECORD_SIZE") = rk::kMaxPayload;
}

}  // namespace rkpy
