// host_compiler.hpp — internal to the CPU backend: rk.Source handlers compiled by the host C compiler.
#pragma once

#include <memory>
#include <string>

#include "ringkernel/runtime.hpp"
#include "rk_kernel.h"

namespace rk {

// A handler compiled at run time (a shared object with the persistent-loop step).
struct HostModule {
    void *dl = nullptr;
    int (*step)(rk_ctx *) = nullptr;
    bool uses_barrier = false;
    std::string path;
    ~HostModule();
};

// Compile (or find in the cache) a portable-source handler for the CPU backend.
std::shared_ptr<HostModule> compile_host_source(const std::string &code, const std::string &entry,
                                               const RuntimeConfig &cfg);

}  // namespace rk
