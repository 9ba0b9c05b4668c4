// bind_queue.cpp — the Python surface of queues: Envelope, QueueStats and Queue, whose four I/O methods
// (send, receive, send_batch, receive_batch) are vectorcall methods parsing their own arguments (see
// vectorcall.hpp) and whose other methods are pybind11's.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>

#include "args.hpp"
#include "bindings.hpp"
#include "py_queue.hpp"
#include "vectorcall.hpp"

namespace rkpy {

using namespace pybind11::literals;

namespace {

PyObject *queue_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return guarded([&] {
        static const ArgSpec<5> spec{"send", {"record", "id", "priority", "timeout", "correlation_id"}, 1, 1};
        const auto a = parse_args(spec, args, nargs, kwnames);
        const bool ok = queue_of(self).send(
            arg(a[0], py::none()), arg(a[1], py::none()), arg(a[2], py::int_(0)), arg(a[3], py::none()),
            arg(a[4], py::int_(0)));
        return py::bool_(ok).release().ptr();
    });
}

PyObject *queue_receive(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return guarded([&] {
        static const ArgSpec<2> spec{"receive", {"timeout", "with_envelope"}, 1, 0};
        const auto a = parse_args(spec, args, nargs, kwnames);
        const bool env = a[1] && PyObject_IsTrue(a[1]);
        return queue_of(self).receive(arg(a[0], py::none()), env).release().ptr();
    });
}

PyObject *queue_send_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return guarded([&] {
        static const ArgSpec<4> spec{"send_batch", {"records", "timeout", "ids", "priority"}, 1, 1};
        const auto a = parse_args(spec, args, nargs, kwnames);
        const std::size_t n = queue_of(self)
                                  .send_batch(arg(a[0], py::none()), arg(a[1], py::none()), arg(a[2], py::none()),
                                              arg(a[3], py::int_(0)));
        return PyLong_FromSize_t(n);
    });
}

PyObject *queue_receive_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    return guarded([&] {
        static const ArgSpec<3> spec{"receive_batch", {"n", "timeout", "with_envelopes"}, 2, 1};
        const auto a = parse_args(spec, args, nargs, kwnames);
        const bool envs = a[2] && PyObject_IsTrue(a[2]);
        return queue_of(self).receive_batch(arg(a[0], py::none()), arg(a[1], py::none()), envs).release().ptr();
    });
}

PyMethodDef kQueueMethods[] = {
    {"send", RK_FASTCALL(queue_send), METH_FASTCALL | METH_KEYWORDS,
     "send($self, record, *, id=None, priority=0, timeout=None, correlation_id=0)\n--\n\n"
     "Send one record (a numpy record of the queue's dtype). True exactly when it entered the queue.\n"
     "id: message id for deduplication (default: the message's HLC stamp). priority: 0-255, needs\n"
     "priority=True. timeout: seconds a BLOCK queue may wait for space, None = forever."},
    {"receive", RK_FASTCALL(queue_receive), METH_FASTCALL | METH_KEYWORDS,
     "receive($self, timeout=None, *, with_envelope=False)\n--\n\n"
     "Receive one record (a message object for a message-type queue), waiting up to timeout seconds\n"
     "(None = forever, 0 = not at all). None on timeout. with_envelope=True returns (value, Envelope)."},
    {"send_batch", RK_FASTCALL(queue_send_batch), METH_FASTCALL | METH_KEYWORDS,
     "send_batch($self, records, *, timeout=None, ids=None, priority=0)\n--\n\n"
     "Send a 1-D array of records. Returns how many entered; the rest are accounted by the\n"
     "backpressure strategy (rejected, dropped or timed out). ids: one id per record."},
    {"receive_batch", RK_FASTCALL(queue_receive_batch), METH_FASTCALL | METH_KEYWORDS,
     "receive_batch($self, n, timeout=None, *, with_envelopes=False)\n--\n\n"
     "Receive up to n records as one numpy array of the queue's dtype (a typed queue's records too:\n"
     "no message object per record; T.from_records(array) makes objects), returning as soon as at\n"
     "least one is there. timeout: None (default) waits without limit, 0 tries once, > 0 waits up to\n"
     "that many seconds; an empty array on timeout or once the queue is closed and drained.\n"
     "with_envelopes=True returns (records, envelopes), the envelopes an array of\n"
     "ringkernel.layout.ENVELOPE_DTYPE."},
};

}  // namespace

void bind_queue(py::module_ &m) {
    py::class_<rk_envelope>(m, "Envelope", "The envelope a received message travelled with.")
        .def_property_readonly("message_id", [](const rk_envelope &e) { return e.message_id; })
        .def_property_readonly("correlation_id", [](const rk_envelope &e) { return e.correlation_id; })
        .def_property_readonly("timestamp",
                               [](const rk_envelope &e) { return rk::HlcTimestamp::unpack(e.timestamp, e.source_kernel); },
                               "the sender's HLC stamp (node = source)")
        .def_property_readonly("enqueue_ns", [](const rk_envelope &e) { return e.enqueue_ns; },
                               "wall-clock ns since the Unix epoch when it was enqueued")
        .def_property_readonly("type_id", [](const rk_envelope &e) { return e.type_id; })
        .def_property_readonly("source", [](const rk_envelope &e) { return e.source_kernel; })
        .def_property_readonly("priority", [](const rk_envelope &e) { return e.priority; })
        .def_property_readonly("flags", [](const rk_envelope &e) { return e.flags; })
        .def_property_readonly("payload_size", [](const rk_envelope &e) { return e.payload_size; })
        .def("__repr__", [](const rk_envelope &e) {
            std::ostringstream o;
            o << "Envelope(message_id=" << e.message_id << ", correlation_id=" << e.correlation_id
              << ", timestamp=" << rk::HlcTimestamp::unpack(e.timestamp, e.source_kernel).to_string()
              << ", type_id=" << e.type_id << ", priority=" << unsigned(e.priority) << ")";
            return o.str();
        });

    py::class_<rk::QueueStats>(m, "QueueStats", "A snapshot of a queue's counters.")
        .def_readonly("sent", &rk::QueueStats::sent, "entered the queue, or discarded by DROP_NEW")
        .def_readonly("received", &rk::QueueStats::received)
        .def_readonly("rejected", &rk::QueueStats::rejected)
        .def_readonly("dropped", &rk::QueueStats::dropped)
        .def_readonly("duplicates", &rk::QueueStats::duplicates)
        .def_readonly("expired", &rk::QueueStats::expired)
        .def_readonly("timed_out", &rk::QueueStats::timed_out)
        .def("as_dict", [](const rk::QueueStats &s) {
            return py::dict("sent"_a = s.sent, "received"_a = s.received, "rejected"_a = s.rejected,
                            "dropped"_a = s.dropped, "duplicates"_a = s.duplicates, "expired"_a = s.expired,
                            "timed_out"_a = s.timed_out);
        })
        .def("__repr__", [](const rk::QueueStats &s) {
            std::ostringstream o;
            o << "QueueStats(sent=" << s.sent << ", received=" << s.received << ", rejected=" << s.rejected
              << ", dropped=" << s.dropped << ", duplicates=" << s.duplicates << ", expired=" << s.expired
              << ", timed_out=" << s.timed_out << ")";
            return o.str();
        });

    py::class_<PyQueue> queue_class(m, "Queue", "A bounded lock-free queue of fixed-size records.");
    for (PyMethodDef &def : kQueueMethods) {
        PyObject *method = PyDescr_NewMethod(reinterpret_cast<PyTypeObject *>(queue_class.ptr()), &def);
        if (!method) throw py::error_already_set();
        queue_class.attr(def.ml_name) = py::reinterpret_steal<py::object>(method);
    }
    queue_class
        .def(py::init<py::object, py::object, rk::Backpressure, py::object, bool, py::object,
                      std::shared_ptr<rk::HlcClock>, bool, bool>(),
             "record_type"_a, "capacity"_a = 1024, "backpressure"_a = rk::Backpressure::Block,
             "dedup_window"_a = 0, "priority"_a = false, "ttl"_a = py::none(), py::kw_only(),
             "clock"_a = nullptr, "single_producer"_a = false, "single_consumer"_a = false)
        // Every accessor goes through queue_of(), so an instance whose __init__ never ran raises.
        .def("__len__", [](py::handle self) { return queue_of(self.ptr()).size(); })
        .def_property_readonly("capacity", [](py::handle self) { return queue_of(self.ptr()).core().capacity(); })
        .def_property_readonly("dtype", [](py::handle self) { return queue_of(self.ptr()).dtype(); })
        .def_property_readonly("record_type", [](py::handle self) { return queue_of(self.ptr()).record_type(); })
        .def_property_readonly("backpressure",
                               [](py::handle self) { return queue_of(self.ptr()).core().config().backpressure; })
        .def_property_readonly("dedup_window",
                               [](py::handle self) { return queue_of(self.ptr()).core().config().dedup_window; })
        .def_property_readonly("priority", [](py::handle self) { return queue_of(self.ptr()).core().config().priority; })
        .def_property_readonly("ttl",
                               [](py::handle self) { return ttl_seconds(queue_of(self.ptr()).core().config().ttl_ns); })
        .def_property_readonly("stats", [](py::handle self) { return queue_of(self.ptr()).core().stats(); })
        .def_property_readonly("closed", [](py::handle self) { return queue_of(self.ptr()).core().closed(); })
        .def(
            "_try_send",
            [](py::handle self, const py::object &record, const py::object &id, const py::object &priority,
               const py::object &correlation_id) {
                return queue_of(self.ptr()).try_send(record, id, priority, correlation_id);
            },
            "record"_a, py::kw_only(), "id"_a = py::none(), "priority"_a = 0, "correlation_id"_a = 0,
            "one attempt that never waits: 0 accepted, 1 refused (and counted), 2 full (BLOCK; nothing counted)")
        .def("_watch_readable", [](py::handle self) { return queue_of(self.ptr()).core().watch_readable(); },
             "an eventfd signalled whenever a message may be received (give it back with _unwatch)")
        .def("_watch_writable", [](py::handle self) { return queue_of(self.ptr()).core().watch_writable(); },
             "an eventfd signalled whenever a slot is freed (give it back with _unwatch)")
        .def("_unwatch", [](py::handle self, int fd) { queue_of(self.ptr()).core().unwatch(fd); }, "fd"_a)
        .def("__repr__", [](py::handle self) {
            PyQueue &q = queue_of(self.ptr());
            std::ostringstream o;
            o << "Queue(" << py::str(q.dtype()).cast<std::string>() << ", capacity=" << q.core().capacity()
              << ", backpressure=" << rk::to_string(q.core().config().backpressure) << ", len=" << q.size() << ")";
            return o.str();
        });
}

}  // namespace rkpy
