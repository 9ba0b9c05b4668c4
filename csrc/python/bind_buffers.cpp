// bind_buffers.cpp — the runtime's buffers as Python sees them: _Runtime's buffer methods (allocate, with a
// numpy view of host memory; info, write, read, release; stream ordering) and DLPack export of a buffer
// (DlpackHolder, dlpack_type, buffer_dlpack).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "dlpack_abi.hpp"
#include "gil.hpp"
#include "py_kernel.hpp"

namespace rkpy {

using namespace pybind11::literals;

namespace {

// DLPack export of a buffer. The managed tensor owns a reference to the runtime's buffer memory, so the
// consumer's view stays valid after the runtime closes (as the numpy view does).
using rkdl::DLDataType;
using rkdl::DLDevice;
using rkdl::DLManagedTensor;
using rkdl::DLTensor;

struct DlpackHolder {
    DLManagedTensor tensor{};
    std::vector<std::int64_t> shape;
    std::shared_ptr<const void> keep;
};

// numpy typestr ("<f4", "|u1", ...) -> DLPack type; ValueError for what DLPack cannot describe.
DLDataType dlpack_type(const std::string &typestr) {
    if (typestr.size() < 3 || (typestr[0] != '<' && typestr[0] != '|' && typestr[0] != '='))
        throw py::value_error("DLPack export needs a little-endian numeric dtype, got '" + typestr + "'");
    const char kind = typestr[1];
    const int bytes = std::atoi(typestr.c_str() + 2);
    DLDataType t{};
    t.lanes = 1;
    t.bits = static_cast<std::uint8_t>(bytes * 8);
    switch (kind) {
    case 'i': t.code = rkdl::kDLInt; break;
    case 'u': t.code = rkdl::kDLUInt; break;
    case 'f': t.code = rkdl::kDLFloat; break;
    case 'b': t.code = rkdl::kDLBool; break;
    case 'c': t.code = rkdl::kDLComplex; break;
    default:
        throw py::value_error("DLPack export supports bool, integer, float and complex dtypes, got '" + typestr + "'");
    }
    if (bytes < 1 || bytes > 16) throw py::value_error("unsupported item size in dtype '" + typestr + "'");
    return t;
}

py::capsule buffer_dlpack(rk::Runtime &rt, std::uint64_t handle, const std::string &typestr,
                          const std::vector<std::int64_t> &shape) {
    const rk::Buffer b = rt.resolve(handle);
    const DLDataType type = dlpack_type(typestr);
    std::int64_t count = 1;
    for (auto d : shape) {
        if (d < 0) throw py::value_error("shape entries must be >= 0");
        count *= d;
    }
    if (static_cast<std::uint64_t>(count) * (type.bits / 8) > b.bytes)
        throw py::value_error("a view of shape and dtype '" + typestr + "' needs " +
                              std::to_string(static_cast<std::uint64_t>(count) * (type.bits / 8)) +
                              " bytes; the buffer has " + std::to_string(b.bytes));
    auto *h = new DlpackHolder;
    h->shape = shape;
    h->keep = rt.buffer_keepalive();
    DLTensor &t = h->tensor.dl_tensor;
    t.data = b.data;
    t.device = b.device >= 0 ? DLDevice{rkdl::kDLCUDA, b.device} : DLDevice{rkdl::kDLCPU, 0};
    t.ndim = static_cast<std::int32_t>(h->shape.size());
    t.dtype = type;
    t.shape = h->shape.data();
    t.strides = nullptr;  // C-contiguous
    t.byte_offset = 0;
    h->tensor.manager_ctx = h;
    h->tensor.deleter = [](DLManagedTensor *self) { delete static_cast<DlpackHolder *>(self->manager_ctx); };
    // A capsule the consumer never took (still named "dltensor") frees the tensor itself.
    return py::capsule(&h->tensor, "dltensor", [](PyObject *cap) {
        if (!PyCapsule_IsValid(cap, "dltensor")) return;
        auto *m = static_cast<DLManagedTensor *>(PyCapsule_GetPointer(cap, "dltensor"));
        if (m && m->deleter) m->deleter(m);
    });
}

}  // namespace

void bind_buffers(py::class_<PyRuntime> &runtime) {
    runtime
        .def("buffer", [](PyRuntime &r, std::size_t nbytes) {
            rk::Buffer b = r.rt->buffer(nbytes);
            if (b.device >= 0) return py::object(py::make_tuple(b.handle, py::none()));  // device memory: no host view
            // The view owns a reference to the runtime's buffer memory, so it stays valid after close.
            auto *keep = new std::shared_ptr<const void>(r.rt->buffer_keepalive());
            py::capsule owner(keep, [](void *p) { delete static_cast<std::shared_ptr<const void> *>(p); });
            py::array view(py::dtype("u1"), {static_cast<py::ssize_t>(b.bytes)}, {1}, b.data, owner);
            return py::object(py::make_tuple(b.handle, view));
        })
        .def("buffer_info", [](PyRuntime &r, std::uint64_t handle) {
            const rk::Buffer b = r.rt->resolve(handle);
            return py::make_tuple(reinterpret_cast<std::uintptr_t>(b.data), b.bytes, b.device);
        }, "(address, nbytes, device) of a live buffer; device -1 means host memory")
        .def("write_buffer", [](PyRuntime &r, std::uint64_t handle, std::size_t offset, const py::buffer &data) {
            py::buffer_info info = data.request();
            py::ssize_t expect = info.itemsize;
            for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
                if (info.shape[d] > 1 && info.strides[d] != expect)
                    throw py::value_error("write_buffer() needs C-contiguous data");
                expect *= info.shape[d];
            }
            const std::size_t n = static_cast<std::size_t>(info.size * info.itemsize);
            without_gil([&] { r.rt->write_buffer(handle, offset, info.ptr, n); });
        }, "handle"_a, "offset"_a, "data"_a)
        .def("read_buffer", [](PyRuntime &r, std::uint64_t handle, std::size_t offset, std::size_t nbytes) {
            // The range first: a size no array can have gets the range error, not numpy's.
            const rk::Buffer b = r.rt->resolve(handle);
            if (offset > b.bytes || nbytes > b.bytes - offset)
                throw std::invalid_argument("bytes [" + std::to_string(offset) + ", " + std::to_string(offset) + " + " +
                                            std::to_string(nbytes) + ") are outside the buffer, whose range is [0, " +
                                            std::to_string(b.bytes) + ")");
            py::array_t<std::uint8_t> out(static_cast<py::ssize_t>(nbytes));
            void *dst = out.mutable_data();
            {
                without_gil([&] { r.rt->read_buffer(handle, offset, dst, nbytes); });
            }
            return out;
        }, "handle"_a, "offset"_a, "nbytes"_a)
        .def("buffer_dlpack", [](PyRuntime &r, std::uint64_t handle, const std::string &typestr,
                                 const std::vector<std::int64_t> &shape) { return buffer_dlpack(*r.rt, handle, typestr, shape); },
             "handle"_a, "typestr"_a, "shape"_a,
             "a DLPack capsule (legacy 'dltensor') viewing the buffer as `shape` of numpy type `typestr`")
        .def("order_buffers_before", [](PyRuntime &r, std::intptr_t stream) {
            without_gil([&] { r.rt->order_buffers_before(stream); });
        }, "stream"_a, "order the buffer copies issued so far before work queued next on `stream` (DLPack's convention)")
        .def("release_buffer", [](PyRuntime &r, std::uint64_t handle) { r.rt->release_buffer(handle); });
}

}  // namespace rkpy
