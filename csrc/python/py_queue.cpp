// py_queue.cpp — PyQueue (see py_queue.hpp): records in and out of an rk::Queue, checked against the
// queue's dtype (and, for a message type's queue, its message plan).
#include "py_queue.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "args.hpp"
#include "gil.hpp"
#include "layout_info.hpp"

namespace rkpy {

// The bytes of one record: an np.void (structured dtypes), another numpy scalar, a 0-d array,
// or any buffer exporter with a matching .dtype. The view holds the exporter's buffer until it
// is destroyed (under the GIL), so the bytes cannot move while a send waits without the GIL.
class PyQueue::RecordView {
public:
    RecordView() = default;
    RecordView(const RecordView &) = delete;
    RecordView &operator=(const RecordView &) = delete;
    ~RecordView() {
        if (held_) PyBuffer_Release(&view_);
    }
    const void *data = nullptr;

private:
    friend class PyQueue;
    Py_buffer view_{};
    bool held_ = false;
};

PyQueue::PyQueue(py::object record_type, const py::object &capacity, rk::Backpressure backpressure,
                 const py::object &dedup_window, bool priority, const py::object &ttl,
                 std::shared_ptr<rk::HlcClock> clock, bool single_producer, bool single_consumer)
    : record_type_(record_type) {
    dtype_ = resolve_dtype(record_type);
    codec_ = rkpy::codec_of(record_type.ptr());
    rk::QueueConfig cfg;
    cfg.capacity = int_in_range<std::uint32_t>(capacity, "capacity", 0, 0xFFFFFFFFull);
    cfg.dedup_window = int_in_range<std::uint32_t>(dedup_window, "dedup_window", 0, 0xFFFFFFFFull);
    cfg.payload_size = static_cast<std::uint32_t>(dtype_.itemsize());
    cfg.backpressure = backpressure;
    cfg.priority = priority;
    cfg.ttl_ns = ttl.is_none() ? 0 : rk::ttl_to_ns("ttl", ttl_seconds_arg(ttl));
    cfg.single_producer = single_producer;
    cfg.single_consumer = single_consumer;
    if (codec_) cfg.type_id = rkpy::codec_type_id(*codec_);
    q_ = std::make_shared<rk::Queue>(cfg, std::move(clock));
}

// A typed view of a queue that exists already (a kernel's, or one of a runtime's named queues).
PyQueue::PyQueue(std::shared_ptr<rk::Queue> q, py::object record_type) : record_type_(record_type), q_(std::move(q)) {
    dtype_ = resolve_dtype(record_type);
    codec_ = rkpy::codec_of(record_type.ptr());
    if (static_cast<std::uint32_t>(dtype_.itemsize()) != q_->config().payload_size)
        throw py::type_error("record type " + py::str(record_type).cast<std::string>() + " has " +
                             std::to_string(dtype_.itemsize()) + " bytes, the queue carries " +
                             std::to_string(q_->config().payload_size) + "-byte records");
}

// One record from Python (message object, numpy record, bytes-like) into `dst` (itemsize bytes).
void PyQueue::encode(const py::object &value, void *dst) const {
    RecordView view;
    record_bytes(value, view);
    std::memcpy(dst, view.data, static_cast<std::size_t>(dtype_.itemsize()));
}

// One record's bytes as what receive() returns (a message object or a numpy scalar).
py::object PyQueue::decode(const void *src) const {
    if (codec_) return rkpy::record_from_raw(*codec_, src);
    PyObject *scalar = PyArray_Scalar(const_cast<void *>(src), descr(), nullptr);
    if (!scalar) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(scalar);
}

bool PyQueue::send(const py::object &record, const py::object &id, const py::object &priority,
                   const py::object &timeout, const py::object &correlation_id) {
    RecordView view;  // declared before the GIL release below, so released after it is retaken
    record_bytes(record, view);
    const void *data = view.data;
    rk::SendOptions o = send_options(id, priority, correlation_id);
    const std::int64_t ns = timeout_ns(timeout);
    // Try once with the GIL held; release it only to wait.
    const auto attempt = q_->try_send(data, o);
    if (attempt != rk::Queue::Attempt::Full) return attempt == rk::Queue::Attempt::Accepted;
    // `record` stays alive (the caller holds it) while the GIL is released.
    return without_gil([&] { return q_->send(data, o, wait_for(ns)); });
}

int PyQueue::try_send(const py::object &record, const py::object &id, const py::object &priority,
                      const py::object &correlation_id) {
    RecordView view;
    record_bytes(record, view);
    switch (q_->try_send(view.data, send_options(id, priority, correlation_id))) {
    case rk::Queue::Attempt::Accepted: return 0;
    case rk::Queue::Attempt::Refused: return 1;
    default: return 2;
    }
}

py::object PyQueue::receive(const py::object &timeout, bool with_envelope) {
    const std::int64_t ns = timeout_ns(timeout);
    const std::size_t itemsize = static_cast<std::size_t>(dtype_.itemsize());
    std::uint8_t small[512];
    std::vector<std::uint8_t> large;
    void *dst = small;
    if (itemsize > sizeof small) {
        large.resize(itemsize);
        dst = large.data();
    }
    rk_envelope env{};
    rk_envelope *env_out = with_envelope ? &env : nullptr;
    bool ok = q_->receive(dst, env_out, rk::Wait::none());
    if (!ok && ns != 0) {
        ok = without_gil([&] { return q_->receive(dst, env_out, wait_for(ns)); });
    }
    if (!ok) return py::none();
    // A message object (validated, canonical), or a numpy scalar (np.void for structured dtypes) that
    // owns a copy of the bytes.
    py::object value = decode(dst);
    if (with_envelope) return py::make_tuple(value, env);
    return value;
}

std::size_t PyQueue::send_batch(const py::object &records, const py::object &timeout, const py::object &ids,
                                const py::object &priority) {
    py::array arr = batch_array(records);
    // Never enqueue a record that would not parse.
    if (codec_) rkpy::codec_plan(*codec_).validate(static_cast<const std::uint8_t *>(arr.data()),
                                                   static_cast<std::size_t>(arr.shape(0)));
    const std::size_t n = static_cast<std::size_t>(arr.shape(0));
    const std::uint8_t prio = int_in_range<std::uint8_t>(priority, "priority", 0, 255);
    py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast> id_arr;
    const std::uint64_t *id_ptr = nullptr;
    if (!ids.is_none()) {
        id_arr = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(ids);
        if (!id_arr || id_arr.ndim() != 1 || static_cast<std::size_t>(id_arr.shape(0)) != n) {
            std::ostringstream msg;
            msg << "ids must be a 1-D sequence of " << n << " unsigned 64-bit ids (one per record)";
            throw py::value_error(msg.str());
        }
        id_ptr = id_arr.data();
    }
    const std::int64_t ns = timeout_ns(timeout);
    const void *src = arr.data();
    const std::size_t stride = static_cast<std::size_t>(arr.strides(0));
    return without_gil([&] { return q_->send_batch(src, n, stride, id_ptr, prio, wait_for(ns)); });
}

py::object PyQueue::receive_batch(const py::object &n_obj, const py::object &timeout, bool with_envelopes) {
    const std::size_t n = int_in_range<std::size_t>(n_obj, "n", 0, 1ull << 40);
    const std::int64_t ns = timeout_ns(timeout);
    const std::size_t itemsize = static_cast<std::size_t>(dtype_.itemsize());
    const rk::Deadline deadline = rk::Deadline::from(rk::Wait{ns, nullptr});
    for (;;) {
        // Sized by what is waiting, so polling an empty queue or asking for a large n costs no
        // large buffer. size() also counts slots claimed but not yet published, so an attempt
        // can come back empty; then wait for the next published message and try again.
        const std::size_t ready = q_->size();
        const std::size_t alloc = std::min({n, ready, static_cast<std::size_t>(q_->capacity())});
        if (alloc > 0) {
            py::array out(dtype_, std::vector<py::ssize_t>{static_cast<py::ssize_t>(alloc)});
            py::array envs;
            rk_envelope *env_ptr = nullptr;
            if (with_envelopes) {
                envs = py::array(envelope_dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(alloc)});
                env_ptr = static_cast<rk_envelope *>(envs.mutable_data());
            }
            void *dst = out.mutable_data();
            std::size_t got;
            if (alloc <= 256) {  // a short copy is cheaper than releasing the GIL
                got = q_->receive_batch(dst, alloc, itemsize, env_ptr, rk::Wait::none());
            } else {
                got = without_gil([&] { return q_->receive_batch(dst, alloc, itemsize, env_ptr, rk::Wait::none()); });
            }
            if (got > 0) return batch_result(out, envs, got, alloc, with_envelopes);
        }
        if (n == 0 || ns == 0 || deadline.passed()) break;
        bool readable;
        {
            readable = without_gil([&] { return q_->wait_readable(wait_for(deadline.remaining_ns())); });
        }
        // Not readable: the deadline passed, the queue closed, or another receiver took what woke us
        // (then wait again for the rest of the time).
        if (!readable && (deadline.passed() || q_->closed())) break;
    }
    py::array none(dtype_, std::vector<py::ssize_t>{0});
    if (!with_envelopes) return std::move(none);
    return py::make_tuple(none, py::array(envelope_dtype(), std::vector<py::ssize_t>{0}));
}

// The first `got` of `alloc` records (and envelopes): another receiver may have taken some,
// or they expired. A small result does not pin a large buffer.
py::object PyQueue::batch_result(py::array out, py::array envs, std::size_t got, std::size_t alloc,
                                  bool with_envs) {
    auto trim = [&](py::array a) -> py::object {
        if (got == alloc) return std::move(a);
        return a[py::slice(0, static_cast<py::ssize_t>(got), 1)].attr("copy")();
    };
    if (!with_envs) return trim(out);
    return py::make_tuple(trim(out), trim(envs));
}

py::object PyQueue::envelope_dtype() {
    return layout_dtype(&LayoutDtypes::envelope, "ENVELOPE_DTYPE");
}

py::dtype PyQueue::resolve_dtype(const py::object &record_type) {
    py::object dt;
    py::object np_dtype = numpy().attr("dtype");
    if (py::isinstance(record_type, np_dtype)) {
        dt = record_type;
    } else if (py::hasattr(record_type, "dtype") && py::isinstance(record_type.attr("dtype"), np_dtype)) {
        dt = record_type.attr("dtype");  // a message class (or anything that carries a dtype)
    } else {
        try {
            dt = np_dtype(record_type);
        } catch (py::error_already_set &) {
            throw py::type_error("record_type must be a numpy dtype (or a message class with a .dtype), got " +
                                 py::repr(record_type).cast<std::string>());
        }
    }
    py::dtype d = dt.cast<py::dtype>();
    if (dt.attr("hasobject").cast<bool>())
        throw py::type_error("record_type must be a fixed-size dtype without Python objects, got " +
                             py::str(dt).cast<std::string>());
    if (d.itemsize() < 1 || d.itemsize() > rk::kMaxPayload) {
        std::ostringstream msg;
        msg << "record size must be in [1, " << rk::kMaxPayload << "] bytes, got " << d.itemsize()
            << " (dtype " << py::str(dt).cast<std::string>() << ")";
        throw py::value_error(msg.str());
    }
    return d;
}

void PyQueue::check_dtype(const py::handle &obj, const char *what) const {
    if (!py::hasattr(obj, "dtype"))
        throw py::type_error(std::string(what) + " must be a numpy record of dtype " +
                             py::str(dtype_).cast<std::string>() + ", got " + type_name(obj));
    py::object d = obj.attr("dtype");
    if (!d.is(dtype_) && !d.equal(dtype_))
        throw py::type_error(std::string(what) + " has dtype " + py::str(d).cast<std::string>() +
                             ", but this queue carries " + py::str(dtype_).cast<std::string>());
}

void PyQueue::record_bytes(const py::object &record, RecordView &out) const {
    PyObject *o = record.ptr();
    if (codec_) {
        if (reinterpret_cast<PyObject *>(Py_TYPE(o)) == rkpy::codec_class(*codec_)) {
            out.data = rkpy::record_data(o);  // the object's own bytes, valid and canonical already
            return;
        }
        if (rkpy::codec_of_object(o))
            throw py::type_error("this queue carries " +
                                 std::string(reinterpret_cast<PyTypeObject *>(rkpy::codec_class(*codec_))->tp_name) +
                                 " messages, got a " + type_name(record));
    }
    if (PyArray_IsScalar(o, Void)) {  // the common case: one record of a structured dtype
        auto *v = reinterpret_cast<PyVoidScalarObject *>(o);
        if (v->descr == descr() || PyArray_EquivTypes(v->descr, descr())) {
            out.data = v->obval;  // owned by (or viewing an array kept alive by) `record`
            validate_raw(out.data);
            return;
        }
    }
    check_dtype(record, "record");
    if (py::isinstance<py::array>(record)) {
        py::array a = record.cast<py::array>();
        if (a.ndim() != 0)
            throw py::type_error("send() takes one record; use send_batch() for an array of shape " +
                                 py::str(a.attr("shape")).cast<std::string>());
        out.data = a.data();
        validate_raw(out.data);
        return;
    }
    if (PyObject_GetBuffer(o, &out.view_, PyBUF_SIMPLE) != 0) {
        PyErr_Clear();
        throw py::type_error("record of type " + type_name(record) + " does not expose its bytes");
    }
    out.held_ = true;
    if (out.view_.len != dtype_.itemsize())
        throw py::type_error("record has " + std::to_string(out.view_.len) + " bytes, the queue's dtype " +
                             std::to_string(dtype_.itemsize()));
    out.data = out.view_.buf;
    validate_raw(out.data);
}

// A raw record sent to a message queue must parse as that message (objects are valid already).
void PyQueue::validate_raw(const void *data) const {
    if (codec_) rkpy::codec_plan(*codec_).validate(static_cast<const std::uint8_t *>(data), 1);
}

py::array PyQueue::batch_array(const py::object &records) const {
    if (!py::isinstance<py::array>(records))
        throw py::type_error("send_batch() takes a numpy array of dtype " + py::str(dtype_).cast<std::string>() +
                             ", got " + type_name(records));
    check_dtype(records, "records");
    py::array arr = records.cast<py::array>();
    if (arr.ndim() != 1)
        throw py::value_error("send_batch() takes a 1-D array of records, got shape " +
                              py::str(arr.attr("shape")).cast<std::string>());
    if (!(arr.flags() & py::array::c_style)) arr = numpy().attr("ascontiguousarray")(arr).cast<py::array>();
    return arr;
}

rk::SendOptions PyQueue::send_options(const py::object &id, const py::object &priority,
                                      const py::object &correlation_id) {
    rk::SendOptions o;
    if (!id.is_none()) {
        o.has_id = true;
        o.id = int_in_range<std::uint64_t>(id, "id", 0, std::numeric_limits<std::uint64_t>::max());
    }
    o.priority = int_in_range<std::uint8_t>(priority, "priority", 0, 255);
    o.correlation_id =
        int_in_range<std::uint64_t>(correlation_id, "correlation_id", 0, std::numeric_limits<std::uint64_t>::max());
    return o;
}

// The Queue behind `self`; TypeError for an instance whose __init__ never ran (Queue.__new__).
PyQueue &queue_of(PyObject *self) {
    static py::detail::type_info *info = py::detail::get_type_info(typeid(PyQueue));
    auto vh = reinterpret_cast<py::detail::instance *>(self)->get_value_and_holder(info);
    if (!vh.holder_constructed()) throw py::type_error("Queue.__init__() was not called on this instance");
    return *static_cast<PyQueue *>(vh.value_ptr());
}

// A new Python Queue object viewing `q` with `record_type`.
py::object wrap_queue(std::shared_ptr<rk::Queue> q, const py::object &record_type) {
    return py::cast(PyQueue(std::move(q), record_type), py::return_value_policy::move);
}

}  // namespace rkpy
