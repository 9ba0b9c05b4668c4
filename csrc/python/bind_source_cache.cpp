// bind_source_cache.cpp — the handler cache and the device dialect's location (core/source_cache), for the
// Python side that compiles handlers itself (rk.jit): the same directories the C++ backends use.
#include <pybind11/stl.h>

#include "../core/source_cache.hpp"
#include "bindings.hpp"
#include "ringkernel/runtime.hpp"

namespace rkpy {

using namespace pybind11::literals;

void bind_source_cache(py::module_ &m) {
    m.def(
        "handler_cache_dir",
        [](const std::string &sub) {
            rk::RuntimeConfig cfg;
            std::string dir = rk::handler_cache_dir(cfg);
            if (!sub.empty()) dir += "/" + sub;
            rk::make_private_dir(dir);  // rk.Error when it cannot be made, or is not private
            return dir;
        },
        "sub"_a = "",
        "the compiled-handler cache ($RINGKERNEL_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache, /ringkernel), or its "
        "subdirectory `sub`, created private to this user");
    m.def(
        "dialect_include_dirs",
        [](const std::vector<std::string> &given) {
            rk::RuntimeConfig cfg;
            cfg.include_dirs = given;
            return rk::dialect_include_dirs(cfg);
        },
        "given"_a = std::vector<std::string>{},
        "where runtime-compiled handlers find the device dialect: `given`, else $RINGKERNEL_INCLUDE_DIR, else the "
        "installed or source headers of this build");
}

}  // namespace rkpy
