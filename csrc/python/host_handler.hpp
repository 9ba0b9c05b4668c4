// host_handler.hpp — Python callables as handlers of CPU-backend kernels: per message, or per batch.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ringkernel/ringkernel.hpp"

namespace rkpy {

namespace py = pybind11;

// A host handler calling `fn` (see host_handler.cpp). in_q/out_q: Python Queue views of the kernel's
// input and output types, to decode requests and encode replies; channels: the kernel's declared
// channels, by which a reply dict may answer. state_dtype: the numpy dtype of the kernel's state record, or
// None; with one, fn is called as fn(request, state) (fn(records, state) for batches), state a writable
// numpy record (np.record: fields by name or attribute) over the kernel's live state.
std::shared_ptr<rk::HostHandler> make_host_handler(py::object fn, py::object in_q, py::object out_q,
                                                   std::size_t max_batch, std::vector<std::string> channels,
                                                   py::object state_dtype);

}  // namespace rkpy
