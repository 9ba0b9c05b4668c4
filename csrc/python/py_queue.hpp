// py_queue.hpp — PyQueue, the native side of ringkernel.Queue: a typed view of an rk::Queue that turns
// Python records (message objects, numpy records, bytes-like objects of the queue's dtype) into the
// queue's fixed-size records and back. Its Python methods are bound in bind_queue.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "codec.hpp"
#include "numpy_api.hpp"
#include "ringkernel/ringkernel.hpp"

namespace rkpy {

namespace py = pybind11;

class PyQueue {
public:
    PyQueue(py::object record_type, const py::object &capacity, rk::Backpressure backpressure,
            const py::object &dedup_window, bool priority, const py::object &ttl,
            std::shared_ptr<rk::HlcClock> clock, bool single_producer, bool single_consumer);

    // A typed view of a queue that exists already (a kernel's, or one of a runtime's named queues).
    PyQueue(std::shared_ptr<rk::Queue> q, py::object record_type);

    // One record from Python (message object, numpy record, bytes-like) into `dst` (itemsize bytes).
    void encode(const py::object &value, void *dst) const;

    // One record's bytes as what receive() returns (a message object or a numpy scalar).
    py::object decode(const void *src) const;


    bool send(const py::object &record, const py::object &id, const py::object &priority,
              const py::object &timeout, const py::object &correlation_id);

    int try_send(const py::object &record, const py::object &id, const py::object &priority,
                 const py::object &correlation_id);

    py::object receive(const py::object &timeout, bool with_envelope);

    std::size_t send_batch(const py::object &records, const py::object &timeout, const py::object &ids,
                           const py::object &priority);

    py::object receive_batch(const py::object &n_obj, const py::object &timeout, bool with_envelopes);

    // The first `got` of `alloc` records (and envelopes): another receiver may have taken some,
    // or they expired. A small result does not pin a large buffer.
    static py::object batch_result(py::array out, py::array envs, std::size_t got, std::size_t alloc, bool with_envs);

    static py::object envelope_dtype();

    std::size_t size() const { return q_->size(); }
    rk::Queue &core() { return *q_; }
    const py::dtype &dtype() const { return dtype_; }
    PyArray_Descr *descr() const { return reinterpret_cast<PyArray_Descr *>(dtype_.ptr()); }
    const py::object &record_type() const { return record_type_; }

private:
    static py::dtype resolve_dtype(const py::object &record_type);

    void check_dtype(const py::handle &obj, const char *what) const;

    // The bytes of one record (defined in py_queue.cpp).
    class RecordView;

    void record_bytes(const py::object &record, RecordView &out) const;

    // A raw record sent to a message queue must parse as that message (objects are valid already).
    void validate_raw(const void *data) const;

    py::array batch_array(const py::object &records) const;

    static rk::SendOptions send_options(const py::object &id, const py::object &priority,
                                        const py::object &correlation_id);

    py::object record_type_;
    const Codec *codec_ = nullptr;  // the message type's codec when the queue carries message objects
    py::dtype dtype_;
    std::shared_ptr<rk::Queue> q_;
};

// The Queue behind `self`; TypeError for an instance whose __init__ never ran (Queue.__new__).
PyQueue &queue_of(PyObject *self);

// A new Python Queue object viewing `q` with `record_type`.
py::object wrap_queue(std::shared_ptr<rk::Queue> q, const py::object &record_type);

}  // namespace rkpy
