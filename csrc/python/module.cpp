// ringkernel._core — pybind11 bindings of the C++ core. Bindings only: argument conversion,
// validation messages in Python terms, GIL handling. Every per-message loop stays in C++.
#include <pybind11/numpy.h>
#include <pybind11/native_enum.h>
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cxxabi.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include "../backends/cuda/cuda_probe.hpp"
#include "dlpack_abi.hpp"
#include "ringkernel/ringkernel.hpp"
#include "rk_builtins.h"

// The numpy C API, for the per-record paths: reading an np.void's bytes and making one without
// going through Python attribute lookups. This file imports it for the extension's other files.
#define RINGKERNEL_IMPORTS_NUMPY 1
#include "numpy_api.hpp"
#include "codec.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

// ---- argument helpers ------------------------------------------------------------------------------

// A number of seconds (int or float); TypeError naming the argument for anything else.
double seconds(const py::object &value, const char *name, const char *valid) {
    if (PyFloat_CheckExact(value.ptr())) return PyFloat_AS_DOUBLE(value.ptr());
    if (py::isinstance<py::bool_>(value) || !(PyLong_Check(value.ptr()) || PyFloat_Check(value.ptr())))
        throw py::type_error(std::string(name) + " must be " + valid + ", got " +
                             py::str(py::type::of(value).attr("__name__")).cast<std::string>());
    const double s = PyFloat_AsDouble(value.ptr());
    if (s == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return s;
}

double ttl_seconds_arg(const py::object &ttl) { return seconds(ttl, "ttl", "None or a number of seconds"); }

// idle_backoff in seconds -> ns, refusing what is outside [0, 1 ms] (NaN included) with the range.
std::uint64_t idle_backoff_ns(double seconds_value) {
    if (!(seconds_value >= 0.0) || seconds_value > static_cast<double>(rk::kMaxIdleBackoffNs) / 1e9)
        throw py::value_error("idle_backoff must be in [0, " + std::to_string(static_cast<double>(rk::kMaxIdleBackoffNs) / 1e9) +
                              "] seconds, got " + std::to_string(seconds_value));
    return static_cast<std::uint64_t>(seconds_value * 1e9 + 0.5);
}

// Python timeout (None or seconds >= 0) to nanoseconds (-1 = forever).
std::int64_t timeout_ns(const py::object &timeout, const char *name = "timeout") {
    if (timeout.is_none()) return -1;
    const double s = seconds(timeout, name, "None (wait forever) or a number of seconds >= 0");
    if (!(s >= 0.0) || !std::isfinite(s)) {
        std::ostringstream msg;
        msg << name << " must be None (wait forever) or a number of seconds >= 0, got " << s;
        throw py::value_error(msg.str());
    }
    return static_cast<std::int64_t>(std::min(s * 1e9, 9.0e18));
}

template <typename T>
T int_in_range(const py::object &value, const char *name, long long lo, unsigned long long hi) {
    // Fast path: a plain int that fits, compared in C.
    if (PyLong_CheckExact(value.ptr())) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
        if (overflow == 0 && v >= lo && (v < 0 || static_cast<unsigned long long>(v) <= hi)) return static_cast<T>(v);
        if (overflow > 0) {
            const unsigned long long u = PyLong_AsUnsignedLongLong(value.ptr());
            if (!PyErr_Occurred() && u <= hi) return static_cast<T>(u);
            PyErr_Clear();
        }
    }
    if (!py::isinstance<py::int_>(value) || py::isinstance<py::bool_>(value)) {
        std::ostringstream msg;
        msg << name << " must be an int in [" << lo << ", " << hi << "], got "
            << py::str(py::type::of(value).attr("__name__")).cast<std::string>();
        throw py::type_error(msg.str());
    }
    // Compare as Python ints so huge values do not overflow on the way in.
    if (value < py::int_(lo) || value > py::int_(hi)) {
        std::ostringstream msg;
        msg << name << " must be in [" << lo << ", " << hi << "], got " << py::str(value).cast<std::string>();
        throw py::value_error(msg.str());
    }
    return value.cast<T>();
}

// ---- the GIL at interpreter exit ------------------------------------------------------------------------
// While the interpreter finalizes, CPython (3.11-3.13) ends any other thread that takes the GIL with
// pthread_exit. Its forced unwind through our frames (a noexcept destructor that retakes the GIL, a
// thread state torn down under finalization) aborts the process. So a thread that comes back to Python
// during finalization -- a daemon thread blocked in receive(), a kernel worker running a Python
// handler -- parks instead, touching nothing of Python's, until the process ends (CPython 3.14 does
// the same with its own threads).

bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
}

[[noreturn]] void park_forever() noexcept {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

// py::gil_scoped_release that parks instead of retaking the GIL during finalization. If finalization
// begins while it waits for the GIL, CPython ends the thread from inside PyEval_RestoreThread with a
// forced unwind, which must be free to leave this destructor (hence noexcept(false), and without_gil
// below, so that no other exception is unwinding at that moment).
class ReleaseGil {
public:
    ReleaseGil() : state_(PyEval_SaveThread()) {}
    ~ReleaseGil() noexcept(false) {
        if (interpreter_finalizing()) park_forever();
        PyEval_RestoreThread(state_);
    }
    ReleaseGil(const ReleaseGil &) = delete;
    ReleaseGil &operator=(const ReleaseGil &) = delete;

private:
    PyThreadState *state_;
};

// Run `f` without the GIL. What it throws is carried out of the GIL-less region and rethrown with the
// GIL back, so the GIL is never retaken while an exception unwinds (see ReleaseGil).
template <typename F>
auto without_gil(F &&f) -> decltype(f()) {
    using R = decltype(f());
    std::exception_ptr error;
    if constexpr (std::is_void_v<R>) {
        {
            ReleaseGil nogil;
            try {
                f();
            } catch (abi::__forced_unwind &) {
                throw;  // thread cancellation must unwind
            } catch (...) {
                error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
    } else {
        std::optional<R> result;
        {
            ReleaseGil nogil;
            try {
                result.emplace(f());
            } catch (abi::__forced_unwind &) {
                throw;
            } catch (...) {
                error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
        return std::move(*result);
    }
}

// py::gil_scoped_acquire for threads that are not Python's (kernel workers): parks instead of taking
// the GIL during finalization, and when the scope is left during finalization (CPython's forced
// unwind: the GIL is not held then) it parks instead of touching the thread state.
class AcquireGil {
public:
    AcquireGil() {
        if (interpreter_finalizing()) park_forever();
        gil_.emplace();
    }
    ~AcquireGil() {
        if (interpreter_finalizing()) park_forever();
    }
    AcquireGil(const AcquireGil &) = delete;
    AcquireGil &operator=(const AcquireGil &) = delete;

private:
    std::optional<py::gil_scoped_acquire> gil_;
};

// Called about every 100 ms while a call waits with the GIL released: lets Ctrl-C interrupt it.
const std::function<void()> kCheckSignals = [] {
    if (interpreter_finalizing()) park_forever();
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
};

rk::Wait wait_for(std::int64_t ns) { return rk::Wait{ns, ns != 0 ? &kCheckSignals : nullptr}; }

// The numpy dtypes of layout.h's structs, given by ringkernel.layout when it is imported (the package does
// so first): the bindings never import the package's Python modules. Leaked on purpose (see numpy()).
struct LayoutDtypes {
    PyObject *envelope = nullptr, *telemetry = nullptr, *control_block = nullptr;
};
LayoutDtypes &layout_dtypes() {
    static LayoutDtypes d;
    return d;
}
py::object layout_dtype(PyObject *const LayoutDtypes::*which, const char *name) {
    PyObject *dt = layout_dtypes().*which;
    if (!dt) throw std::logic_error(std::string("ringkernel.layout has not registered ") + name + " (import ringkernel)");
    return py::reinterpret_borrow<py::object>(dt);
}

py::object numpy() {
    static PyObject *np = py::module_::import("numpy").release().ptr();  // leaked, see envelope_dtype()
    return py::reinterpret_borrow<py::object>(np);
}

std::string type_name(const py::handle &obj) {
    return py::str(py::type::of(obj).attr("__qualname__")).cast<std::string>();
}

// ---- vectorcall methods for the per-call paths --------------------------------------------------------
// pybind11's dispatcher spends 200-700 ns matching keyword arguments. send/receive run once per
// message, so the Queue's four I/O methods are METH_FASTCALL|METH_KEYWORDS methods that parse their
// own arguments (nullptr = argument not given, the default applies).

template <std::size_t N>
struct ArgSpec {
    const char *fname;
    std::array<const char *, N> names;
    std::size_t positional;  // how many may be given by position
    std::size_t required;    // the first `required` names must be given
    // Interned copies of `names`: keywords at call sites are interned too, so the usual match is
    // one pointer comparison. Filled on first use, under the GIL.
    mutable std::array<PyObject *, N> interned{};
};

template <std::size_t N>
std::array<PyObject *, N> parse_args(const ArgSpec<N> &spec, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
    std::array<PyObject *, N> out{};
    if (static_cast<std::size_t>(nargs) > spec.positional) {
        std::ostringstream msg;
        msg << spec.fname << "() takes at most " << spec.positional << " positional argument"
            << (spec.positional == 1 ? "" : "s") << " (" << nargs << " given)";
        throw py::type_error(msg.str());
    }
    for (Py_ssize_t i = 0; i < nargs; ++i) out[static_cast<std::size_t>(i)] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; ++j) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        if (!spec.interned[0])
            for (std::size_t i = 0; i < N; ++i) spec.interned[i] = PyUnicode_InternFromString(spec.names[i]);
        std::size_t k = 0;
        while (k < N && name != spec.interned[k]) ++k;
        if (k == N) {
            k = 0;
            while (k < N && PyUnicode_CompareWithASCIIString(name, spec.names[k]) != 0) ++k;
        }
        if (k == N)
            throw py::type_error(std::string(spec.fname) + "() got an unexpected keyword argument '" +
                                 py::str(name).cast<std::string>() + "'");
        if (out[k])
            throw py::type_error(std::string(spec.fname) + "() got multiple values for argument '" + spec.names[k] + "'");
        out[k] = args[nargs + j];
    }
    for (std::size_t k = 0; k < spec.required; ++k)
        if (!out[k])
            throw py::type_error(std::string(spec.fname) + "() missing required argument '" + spec.names[k] + "'");
    return out;
}

py::object arg(PyObject *given, py::object fallback) {
    return given ? py::reinterpret_borrow<py::object>(given) : std::move(fallback);
}

// Run a method body, turning C++ exceptions into Python ones with pybind11's registered translators.
template <class Body>
PyObject *guarded(Body &&body) {
    try {
        return body();
    } catch (abi::__forced_unwind &) {
        throw;  // CPython ending this thread at exit: let it unwind
    } catch (...) {
        py::detail::try_translate_exceptions();
        return nullptr;
    }
}

// ---- the Python Queue -------------------------------------------------------------------------------

class PyQueue {
public:
    PyQueue(py::object record_type, const py::object &capacity, rk::Backpressure backpressure,
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
    PyQueue(std::shared_ptr<rk::Queue> q, py::object record_type) : record_type_(record_type), q_(std::move(q)) {
        dtype_ = resolve_dtype(record_type);
        codec_ = rkpy::codec_of(record_type.ptr());
        if (static_cast<std::uint32_t>(dtype_.itemsize()) != q_->config().payload_size)
            throw py::type_error("record type " + py::str(record_type).cast<std::string>() + " has " +
                                 std::to_string(dtype_.itemsize()) + " bytes, the queue carries " +
                                 std::to_string(q_->config().payload_size) + "-byte records");
    }

    // One record from Python (message object, numpy record, bytes-like) into `dst` (itemsize bytes).
    void encode(const py::object &value, void *dst) const {
        RecordView view;
        record_bytes(value, view);
        std::memcpy(dst, view.data, static_cast<std::size_t>(dtype_.itemsize()));
    }

    // One record's bytes as what receive() returns (a message object or a numpy scalar).
    py::object decode(const void *src) const {
        if (codec_) return rkpy::record_from_raw(*codec_, src);
        PyObject *scalar = PyArray_Scalar(const_cast<void *>(src), descr(), nullptr);
        if (!scalar) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(scalar);
    }

    const std::shared_ptr<rk::Queue> &shared() const { return q_; }

    bool send(const py::object &record, const py::object &id, const py::object &priority,
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

    int try_send(const py::object &record, const py::object &id, const py::object &priority,
                 const py::object &correlation_id) {
        RecordView view;
        record_bytes(record, view);
        switch (q_->try_send(view.data, send_options(id, priority, correlation_id))) {
        case rk::Queue::Attempt::Accepted: return 0;
        case rk::Queue::Attempt::Refused: return 1;
        default: return 2;
        }
    }

    py::object receive(const py::object &timeout, bool with_envelope) {
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

    std::size_t send_batch(const py::object &records, const py::object &timeout, const py::object &ids,
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

    py::object receive_batch(const py::object &n_obj, const py::object &timeout, bool with_envelopes) {
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
    static py::object batch_result(py::array out, py::array envs, std::size_t got, std::size_t alloc, bool with_envs) {
        auto trim = [&](py::array a) -> py::object {
            if (got == alloc) return std::move(a);
            return a[py::slice(0, static_cast<py::ssize_t>(got), 1)].attr("copy")();
        };
        if (!with_envs) return trim(out);
        return py::make_tuple(trim(out), trim(envs));
    }

    static py::object envelope_dtype() {
        return layout_dtype(&LayoutDtypes::envelope, "ENVELOPE_DTYPE");
    }

    std::size_t size() const { return q_->size(); }
    rk::Queue &core() { return *q_; }
    const py::dtype &dtype() const { return dtype_; }
    PyArray_Descr *descr() const { return reinterpret_cast<PyArray_Descr *>(dtype_.ptr()); }
    const py::object &record_type() const { return record_type_; }

private:
    static py::dtype resolve_dtype(const py::object &record_type) {
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

    void check_dtype(const py::handle &obj, const char *what) const {
        if (!py::hasattr(obj, "dtype"))
            throw py::type_error(std::string(what) + " must be a numpy record of dtype " +
                                 py::str(dtype_).cast<std::string>() + ", got " + type_name(obj));
        py::object d = obj.attr("dtype");
        if (!d.is(dtype_) && !d.equal(dtype_))
            throw py::type_error(std::string(what) + " has dtype " + py::str(d).cast<std::string>() +
                                 ", but this queue carries " + py::str(dtype_).cast<std::string>());
    }

    // The bytes of one record: a numpy scalar (np.void for structured dtypes) or a 0-d array.
    // The bytes of one record: an np.void (structured dtypes), another numpy scalar, a 0-d array,
    // or any buffer exporter with a matching .dtype. The view holds the exporter's buffer until it
    // is destroyed (under the GIL), so the bytes cannot move while a send waits without the GIL.
    class RecordView {
    public:
        RecordView() = default;
        RecordView(const RecordView &) = delete;
        RecordView &operator=(const RecordView &) = delete;
        ~RecordView() {
            if (held_) PyBuffer_Release(&view_);
        }
        const void *data = nullptr;
        py::object keep;  // whatever owns `data`, held for the duration of the call

    private:
        friend class PyQueue;
        Py_buffer view_{};
        bool held_ = false;
    };

    void record_bytes(const py::object &record, RecordView &out) const {
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
    void validate_raw(const void *data) const {
        if (codec_) rkpy::codec_plan(*codec_).validate(static_cast<const std::uint8_t *>(data), 1);
    }

    py::array batch_array(const py::object &records) const {
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

    static rk::SendOptions send_options(const py::object &id, const py::object &priority,
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

    py::object record_type_;
    const rkpy::Codec *codec_ = nullptr;  // the message type's codec when the queue carries message objects
    py::dtype dtype_;
    std::shared_ptr<rk::Queue> q_;
};

py::object ttl_seconds(std::uint64_t ns) {
    if (ns == 0) return py::none();
    return py::float_(static_cast<double>(ns) / 1e9);
}

// ---- layout description for the Python-side dtype checks ---------------------------------------------

#define RK_FIELD(s, f) fields[#f] = py::make_tuple(offsetof(s, f), sizeof(((s *)nullptr)->f))

py::dict layout_info() {
    py::dict out;
    {
        py::dict fields;
        RK_FIELD(rk_ring_header, head);
        RK_FIELD(rk_ring_header, expired);
        RK_FIELD(rk_ring_header, tail);
        RK_FIELD(rk_ring_header, rejected);
        RK_FIELD(rk_ring_header, dropped_new);
        RK_FIELD(rk_ring_header, evicted);
        RK_FIELD(rk_ring_header, magic);
        RK_FIELD(rk_ring_header, version);
        RK_FIELD(rk_ring_header, capacity);
        RK_FIELD(rk_ring_header, mask);
        RK_FIELD(rk_ring_header, slot_stride);
        RK_FIELD(rk_ring_header, max_payload);
        RK_FIELD(rk_ring_header, flags);
        out["ring_header"] = py::dict("size"_a = sizeof(rk_ring_header), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_envelope, message_id);
        RK_FIELD(rk_envelope, correlation_id);
        RK_FIELD(rk_envelope, timestamp);
        RK_FIELD(rk_envelope, enqueue_ns);
        RK_FIELD(rk_envelope, payload_size);
        RK_FIELD(rk_envelope, type_id);
        RK_FIELD(rk_envelope, source_kernel);
        RK_FIELD(rk_envelope, priority);
        RK_FIELD(rk_envelope, flags);
        RK_FIELD(rk_envelope, sequence);
        out["envelope"] = py::dict("size"_a = sizeof(rk_envelope), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_control_block, is_active);
        RK_FIELD(rk_control_block, should_terminate);
        RK_FIELD(rk_control_block, has_terminated);
        RK_FIELD(rk_control_block, errors_encountered);
        RK_FIELD(rk_control_block, messages_processed);
        RK_FIELD(rk_control_block, last_activity_ns);
        RK_FIELD(rk_control_block, input);
        RK_FIELD(rk_control_block, output);
        RK_FIELD(rk_control_block, hlc);
        RK_FIELD(rk_control_block, next_reply_id);
        RK_FIELD(rk_control_block, telemetry_enabled);
        RK_FIELD(rk_control_block, blocks_exited);
        RK_FIELD(rk_control_block, last_error);
        RK_FIELD(rk_control_block, node);
        RK_FIELD(rk_control_block, messages_dropped);
        RK_FIELD(rk_control_block, clock_ns);
        RK_FIELD(rk_control_block, blocks_started);
        RK_FIELD(rk_control_block, clock_offset_ns);
        out["control_block"] = py::dict("size"_a = sizeof(rk_control_block), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_telemetry, messages_processed);
        RK_FIELD(rk_telemetry, messages_dropped);
        RK_FIELD(rk_telemetry, last_processed_timestamp);
        RK_FIELD(rk_telemetry, queue_depth);
        RK_FIELD(rk_telemetry, error_code);
        RK_FIELD(rk_telemetry, total_latency_ns);
        RK_FIELD(rk_telemetry, min_latency_ns);
        RK_FIELD(rk_telemetry, max_latency_ns);
        out["telemetry"] = py::dict("size"_a = sizeof(rk_telemetry), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_route, ring);
        RK_FIELD(rk_route, cookie);
        out["route"] = py::dict("size"_a = sizeof(rk_route), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_channel, count);
        RK_FIELD(rk_channel, targets);
        out["channel"] = py::dict("size"_a = sizeof(rk_channel), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_routes, n_inputs);
        RK_FIELD(rk_routes, n_channels);
        RK_FIELD(rk_routes, inputs);
        RK_FIELD(rk_routes, channels);
        out["routes"] = py::dict("size"_a = sizeof(rk_routes), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_buffer_entry, address);
        RK_FIELD(rk_buffer_entry, bytes);
        RK_FIELD(rk_buffer_entry, generation);
        RK_FIELD(rk_buffer_entry, live);
        out["buffer_entry"] = py::dict("size"_a = sizeof(rk_buffer_entry), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_buffer_table, capacity);
        RK_FIELD(rk_buffer_table, entries);
        out["buffer_table"] = py::dict("size"_a = sizeof(rk_buffer_table), "fields"_a = fields);
    }
    {
        py::dict fields;
        RK_FIELD(rk_kernel_params, control_block);
        RK_FIELD(rk_kernel_params, telemetry);
        RK_FIELD(rk_kernel_params, routes_word);
        RK_FIELD(rk_kernel_params, buffers);
        RK_FIELD(rk_kernel_params, ttl_ns);
        RK_FIELD(rk_kernel_params, reply_id_base);
        RK_FIELD(rk_kernel_params, in_size);
        RK_FIELD(rk_kernel_params, out_size);
        RK_FIELD(rk_kernel_params, backpressure);
        RK_FIELD(rk_kernel_params, out_type);
        RK_FIELD(rk_kernel_params, node);
        RK_FIELD(rk_kernel_params, clock_offset_ns);
        RK_FIELD(rk_kernel_params, run_limit);
        RK_FIELD(rk_kernel_params, idle_backoff_ns);
        out["kernel_params"] = py::dict("size"_a = sizeof(rk_kernel_params), "fields"_a = fields);
    }
    return out;
}
#undef RK_FIELD

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

// The Queue behind `self`; TypeError for an instance whose __init__ never ran (Queue.__new__).
PyQueue &queue_of(PyObject *self) {
    static py::detail::type_info *info = py::detail::get_type_info(typeid(PyQueue));
    auto vh = reinterpret_cast<py::detail::instance *>(self)->get_value_and_holder(info);
    if (!vh.holder_constructed()) throw py::type_error("Queue.__init__() was not called on this instance");
    return *static_cast<PyQueue *>(vh.value_ptr());
}

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

#define RK_FASTCALL(fn) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(fn))

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

// ---- ring kernels ------------------------------------------------------------------------------------------

// A new Python Queue object viewing `q` with `record_type`.
py::object wrap_queue(std::shared_ptr<rk::Queue> q, const py::object &record_type) {
    return py::cast(PyQueue(std::move(q), record_type), py::return_value_policy::move);
}

// Python callables as handlers (CPU backend). Per message: fn(request) -> reply | None | {channel: reply}.
// Per batch: fn(records: np.ndarray) -> replies (array-like of the output dtype, reply i answers
// request i) | None. Calls take the GIL; a kernel's calls are serialised.
class PyHostHandler final : public rk::HostHandler {
public:
    PyHostHandler(py::object fn, py::object in_q, py::object out_q, std::size_t max_batch,
                  std::vector<std::string> channels)
        : fn_(std::move(fn)), in_q_(std::move(in_q)), out_q_(std::move(out_q)), max_batch_(max_batch),
          channels_(std::move(channels)) {}

    ~PyHostHandler() override {
        // The last owner can be an abandoned worker thread: drop the Python references under the GIL,
        // or leak them when the interpreter is already gone.
        if (Py_IsInitialized() && !interpreter_finalizing()) {
            py::gil_scoped_acquire gil;
            fn_ = py::object();
            in_q_ = py::object();
            out_q_ = py::object();
        } else {
            fn_.release();
            in_q_.release();
            out_q_.release();
        }
    }

    std::size_t batch_size() const override { return max_batch_; }
    bool concurrent() const override { return false; }

    int handle(rk_ctx *ctx, const void *in, void *out) override {
        AcquireGil gil;
        try {
            py::object request = queue_of(in_q_.ptr()).decode(in);
            py::object result = fn_(request);
            return reply(ctx, result, out);
        } catch (py::error_already_set &e) {
            throw std::runtime_error(e.what());
        } catch (py::builtin_exception &e) {  // raised by our own conversions: report with its Python type
            e.set_error();
            throw std::runtime_error(py::error_already_set().what());
        }
    }

    long handle_batch(rk_ctx *, const void *in, std::size_t n, std::size_t stride, void *out) override {
        AcquireGil gil;
        try {
            PyQueue &iq = queue_of(in_q_.ptr());
            PyQueue &oq = queue_of(out_q_.ptr());
            py::array records(iq.dtype(), {static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(stride)}, in);
            py::object result = fn_(records);
            if (result.is_none()) return 0;
            py::array replies = numpy().attr("ascontiguousarray")(result, oq.dtype()).cast<py::array>();
            if (replies.ndim() != 1 || static_cast<std::size_t>(replies.shape(0)) > n)
                throw py::value_error("a batch handler returns at most one reply per request (" + std::to_string(n) +
                                      "), got shape " + py::str(replies.attr("shape")).cast<std::string>());
            const std::size_t m = static_cast<std::size_t>(replies.shape(0));
            std::memcpy(out, replies.data(), m * static_cast<std::size_t>(oq.dtype().itemsize()));
            return static_cast<long>(m);
        } catch (py::error_already_set &e) {
            throw std::runtime_error(e.what());
        } catch (py::builtin_exception &e) {  // raised by our own conversions: report with its Python type
            e.set_error();
            throw std::runtime_error(py::error_already_set().what());
        }
    }

private:
    int reply(rk_ctx *ctx, const py::object &result, void *out) {
        if (result.is_none()) return RK_NO_REPLY;
        PyQueue &oq = queue_of(out_q_.ptr());
        if (!py::isinstance<py::dict>(result)) {
            oq.encode(result, out);
            return RK_REPLY;
        }
        int rc = RK_NO_REPLY;
        std::vector<std::uint8_t> tmp(static_cast<std::size_t>(oq.dtype().itemsize()));
        for (auto item : result.cast<py::dict>()) {
            if (item.first.is_none()) {
                oq.encode(py::reinterpret_borrow<py::object>(item.second), out);
                rc = RK_REPLY;
                continue;
            }
            const std::string name = py::str(item.first).cast<std::string>();
            std::uint32_t idx = 0;
            for (std::size_t i = 0; i < channels_.size(); ++i)
                if (channels_[i] == name) idx = static_cast<std::uint32_t>(i + 1);
            if (idx == 0) throw py::key_error("the handler answered on channel '" + name + "', which the kernel does not declare");
            oq.encode(py::reinterpret_borrow<py::object>(item.second), tmp.data());
            without_gil([&] { rk_emit(ctx, idx, tmp.data()); });  // a full channel may make this wait
        }
        return rc;
    }

    py::object fn_, in_q_, out_q_;
    std::size_t max_batch_;
    std::vector<std::string> channels_;
};

struct PyKernel {
    std::shared_ptr<rk::Kernel> k;
    py::object in_type, out_type;
    py::object in_q, out_q;
    std::vector<py::object> channel_qs;
};

struct PyRuntime {
    std::unique_ptr<rk::Runtime> rt;
    std::map<std::string, py::object> types;  // queue name → record type

    PyRuntime() = default;
    PyRuntime(PyRuntime &&) = default;
    ~PyRuntime() {
        // Closing waits for kernels whose Python handlers need the GIL to finish.
        if (rt && Py_IsInitialized() && PyGILState_Check()) {
            without_gil([&] { rt.reset(); });
        }
    }
};

std::uint16_t type_id_of(const py::object &t) {
    const rkpy::Codec *c = rkpy::codec_of(t.ptr());
    return c ? rkpy::codec_type_id(*c) : 0;
}

std::uint32_t record_size_of(const py::object &t) {
    py::object np_dtype = numpy().attr("dtype");
    py::object dt = py::hasattr(t, "dtype") && py::isinstance(t.attr("dtype"), np_dtype) ? t.attr("dtype") : np_dtype(t);
    return dt.attr("itemsize").cast<std::uint32_t>();
}

py::object kernel_create(PyRuntime &self, const std::string &name, const py::object &handler, const py::object &input,
                         py::object output, std::uint32_t grid, std::uint32_t block, const py::object &options,
                         const std::vector<std::string> &channels, std::size_t max_batch, const std::string &mode) {
    if (output.is_none()) output = input;
    rk::KernelSpec spec;
    spec.name = name;
    spec.input_size = record_size_of(input);
    spec.output_size = record_size_of(output);
    spec.input_type = type_id_of(input);
    spec.output_type = type_id_of(output);
    spec.grid = grid;
    spec.block = block;
    if (!options.is_none()) spec.options = options.cast<rk::LaunchOptions>();
    spec.channels = channels;
    if (!mode.empty()) spec.mode = rk::kernel_mode_from_string(mode);
    if (max_batch < 1 || max_batch > 65536)
        throw py::value_error("max_batch must be in [1, 65536], got " + std::to_string(max_batch));
    // Typed views made before the kernel exists, so a Python handler can decode and encode.
    std::shared_ptr<PyHostHandler> host;
    if (py::isinstance<py::str>(handler)) {
        spec.handler = rk::Handler::builtin(handler.cast<std::string>());
    } else if (py::hasattr(handler, "code") && py::hasattr(handler, "entry")) {
        spec.handler = rk::Handler::source(handler.attr("code").cast<std::string>(), handler.attr("entry").cast<std::string>());
    } else if (PyCallable_Check(handler.ptr())) {
        spec.handler = rk::Handler::on_host(nullptr);  // filled below, once the queues exist
    } else {
        throw py::type_error("handler must be a built-in name (str), an rk.Source or a Python callable, got " +
                             type_name(handler));
    }
    if (spec.handler.kind != rk::Handler::Kind::Host && max_batch != 1)
        throw py::value_error("max_batch applies to Python batch handlers only");
    if (spec.handler.kind == rk::Handler::Kind::Host) {
        // The queues are created by the runtime; the handler needs typed views of them, made from
        // throw-away queues of the same types and then re-pointed at the kernel's own.
        rk::QueueConfig tmp;
        tmp.capacity = 16;
        tmp.payload_size = spec.input_size;
        py::object in_view = wrap_queue(std::make_shared<rk::Queue>(tmp), input);
        tmp.payload_size = spec.output_size;
        py::object out_view = wrap_queue(std::make_shared<rk::Queue>(tmp), output);
        host = std::make_shared<PyHostHandler>(handler, in_view, out_view, max_batch, channels);
        spec.handler = rk::Handler::on_host(host);
    }
    std::shared_ptr<rk::Kernel> k;
    {
        k = without_gil([&] { return self.rt->create(spec); });  // compiling a source handler takes a while
    }
    PyKernel pk;
    pk.k = k;
    pk.in_type = input;
    pk.out_type = output;
    pk.in_q = wrap_queue(k->input(), input);
    pk.out_q = wrap_queue(k->output(), output);
    pk.channel_qs.push_back(pk.out_q);
    // Types of queues that are gone (their kernels ended) are forgotten, so a runtime that launches a kernel
    // per job keeps nothing per job here either.
    {
        const std::vector<std::string> live = self.rt->queue_names();
        const std::set<std::string> names(live.begin(), live.end());
        for (auto it = self.types.begin(); it != self.types.end();)
            it = names.count(it->first) ? std::next(it) : self.types.erase(it);
    }
    self.types[name + ".in"] = input;
    self.types[name + ".out"] = output;
    for (std::size_t i = 0; i < channels.size(); ++i) {
        pk.channel_qs.push_back(wrap_queue(k->channel_queue(static_cast<std::uint32_t>(i + 1)), output));
        self.types[name + "." + channels[i]] = output;
    }
    return py::cast(std::move(pk), py::return_value_policy::move);
}

PyKernel &kernel_of(const py::handle &h) { return h.cast<PyKernel &>(); }

// A live view the host must not write through (the kernel owns the memory: a written has_terminated made
// terminate() believe the blocks had left).
py::array read_only(py::array a) {
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
}

template <class F>
auto key_error_for_missing(F &&f) -> decltype(f()) {
    try {
        return f();
    } catch (const std::out_of_range &e) {
        throw py::key_error(e.what());
    }
}

void bind_runtime(py::module_ &m) {
    py::native_enum<rk::KernelState>(m, "KernelState", "enum.Enum", "The lifecycle state of a ring kernel.")
        .value("CREATED", rk::KernelState::Created)
        .value("LAUNCHED", rk::KernelState::Launched)
        .value("ACTIVE", rk::KernelState::Active)
        .value("DEACTIVATED", rk::KernelState::Deactivated)
        .value("TERMINATING", rk::KernelState::Terminating)
        .value("TERMINATED", rk::KernelState::Terminated)
        .value("FAULTED", rk::KernelState::Faulted)
        .finalize();

    py::class_<rk::TelemetrySnapshot>(m, "Telemetry", "A snapshot of a kernel's telemetry counters.")
        .def_readonly("messages_processed", &rk::TelemetrySnapshot::messages_processed)
        .def_readonly("messages_dropped", &rk::TelemetrySnapshot::messages_dropped)
        .def_readonly("last_processed_timestamp", &rk::TelemetrySnapshot::last_processed_timestamp)
        .def_readonly("queue_depth", &rk::TelemetrySnapshot::queue_depth)
        .def_readonly("error_code", &rk::TelemetrySnapshot::error_code)
        .def_readonly("total_latency_ns", &rk::TelemetrySnapshot::total_latency_ns)
        .def_readonly("min_latency_ns", &rk::TelemetrySnapshot::min_latency_ns)
        .def_readonly("max_latency_ns", &rk::TelemetrySnapshot::max_latency_ns)
        .def_property_readonly("avg_latency_ns", &rk::TelemetrySnapshot::avg_latency_ns)
        .def("as_dict", [](const rk::TelemetrySnapshot &t) {
            return py::dict("messages_processed"_a = t.messages_processed, "messages_dropped"_a = t.messages_dropped,
                            "last_processed_timestamp"_a = t.last_processed_timestamp, "queue_depth"_a = t.queue_depth,
                            "error_code"_a = t.error_code, "total_latency_ns"_a = t.total_latency_ns,
                            "min_latency_ns"_a = t.min_latency_ns, "max_latency_ns"_a = t.max_latency_ns,
                            "avg_latency_ns"_a = t.avg_latency_ns());
        })
        .def("__repr__", [](const rk::TelemetrySnapshot &t) {
            std::ostringstream o;
            o << "Telemetry(processed=" << t.messages_processed << ", dropped=" << t.messages_dropped
              << ", depth=" << t.queue_depth << ", latency_ns min/avg/max=" << t.min_latency_ns << "/"
              << static_cast<std::uint64_t>(t.avg_latency_ns()) << "/" << t.max_latency_ns
              << ", error_code=" << t.error_code << ")";
            return o.str();
        });

    py::class_<PyKernel>(m, "_Kernel", "The native side of ringkernel.Kernel.")
        .def_property_readonly("name", [](const PyKernel &k) { return k.k->name(); })
        .def_property_readonly("id", [](const PyKernel &k) { return k.k->id(); })
        .def_property_readonly("state", [](const PyKernel &k) { return k.k->state(); })
        .def_property_readonly("grid", [](const PyKernel &k) { return k.k->spec().grid; })
        .def_property_readonly("block", [](const PyKernel &k) { return k.k->spec().block; })
        .def_property_readonly("handler", [](const PyKernel &k) { return k.k->spec().handler.describe(); })
        .def_property_readonly("mode", [](const PyKernel &k) { return std::string(rk::to_string(k.k->mode())); })
        .def_property_readonly("channels", [](const PyKernel &k) { return k.k->spec().channels; })
        .def_property_readonly("input_type", [](const PyKernel &k) { return k.in_type; })
        .def_property_readonly("output_type", [](const PyKernel &k) { return k.out_type; })
        .def_property_readonly("input", [](const PyKernel &k) { return k.in_q; })
        .def_property_readonly("output", [](const PyKernel &k) { return k.out_q; })
        .def("channel_queue", [](const PyKernel &k, const std::string &name) {
            return key_error_for_missing([&] { return k.channel_qs.at(k.k->channel_index(name)); });
        })
        .def("connected", [](const PyKernel &k, const std::string &name) {
            return key_error_for_missing([&] { return k.k->connected(k.k->channel_index(name)); });
        })
        // Lifecycle calls drop the GIL: they may wait for a lock a terminating kernel's Python handler
        // needs the GIL to release.
        .def("launch", [](PyKernel &k) { without_gil([&] { k.k->launch(); }); })
        .def("activate", [](PyKernel &k) { without_gil([&] { k.k->activate(); }); })
        .def("deactivate", [](PyKernel &k) { without_gil([&] { k.k->deactivate(); }); })
        .def("terminate", [](PyKernel &k, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            // A Python handler may need the GIL to finish.
            return without_gil([&] { return k.k->terminate(ns < 0 ? -1 : ns); });
        }, "timeout"_a = 5.0)
        .def_property_readonly("fault", [](const PyKernel &k) {
            std::string f;
            {
                f = without_gil([&] { return k.k->fault(); });
            }
            return f;
        })
        .def("enable_telemetry", [](PyKernel &k) { k.k->enable_telemetry(); })
        .def("disable_telemetry", [](PyKernel &k) { k.k->disable_telemetry(); })
        .def_property_readonly("telemetry_enabled", [](const PyKernel &k) { return k.k->telemetry_enabled(); })
        .def("reset_telemetry", [](PyKernel &k) { k.k->reset_telemetry(); })
        .def("telemetry", [](const PyKernel &k) { return k.k->telemetry(); })
        .def("telemetry_view", [](py::handle self) {
            PyKernel &k = kernel_of(self);
            py::object dt = layout_dtype(&LayoutDtypes::telemetry, "TELEMETRY_DTYPE");
            return read_only(py::array(dt.cast<py::dtype>(), std::vector<py::ssize_t>{}, std::vector<py::ssize_t>{},
                                       k.k->telemetry_block(), self));
        })
        .def("control_view", [](py::handle self) {
            PyKernel &k = kernel_of(self);
            py::object dt = layout_dtype(&LayoutDtypes::control_block, "CONTROL_BLOCK_DTYPE");
            return read_only(py::array(dt.cast<py::dtype>(), std::vector<py::ssize_t>{}, std::vector<py::ssize_t>{},
                                       k.k->control_block(), self));
        })
        .def_property_readonly("messages_processed", [](const PyKernel &k) { return k.k->messages_processed(); })
        .def_property_readonly("messages_dropped", [](const PyKernel &k) { return k.k->messages_dropped(); })
        .def_property_readonly("errors", [](const PyKernel &k) { return k.k->errors(); })
        .def_property_readonly("last_error", [](const PyKernel &k) { return k.k->last_error(); })
        .def_property_readonly("last_error_message", [](const PyKernel &k) { return k.k->last_error_message(); });

    py::class_<PyRuntime>(m, "_Runtime", "The native side of ringkernel.Runtime.")
        .def(py::init([](const std::string &backend, const std::vector<std::string> &include_dirs,
                         const std::string &cache_dir, const std::string &compiler, std::uint32_t max_buffers,
                         int device, const std::string &mode) {
                 rk::RuntimeConfig cfg;
                 cfg.include_dirs = include_dirs;
                 cfg.cache_dir = cache_dir;
                 cfg.compiler = compiler;
                 cfg.max_buffers = max_buffers;
                 cfg.device = device;
                 cfg.mode = rk::kernel_mode_from_string(mode);
                 PyRuntime r;
                 {
                     // Probing a device backend can take a while.
                     r.rt = without_gil([&] { return std::make_unique<rk::Runtime>(backend, cfg); });
                 }
                 return r;
             }),
             "backend"_a, "include_dirs"_a, "cache_dir"_a = "", "compiler"_a = "", "max_buffers"_a = 4096,
             "device"_a = -1, "mode"_a = "auto")
        .def_property_readonly("backend", [](const PyRuntime &r) { return r.rt->backend(); })
        .def_property_readonly("closed", [](const PyRuntime &r) { return r.rt->closed(); })
        .def("create", &kernel_create, "name"_a, "handler"_a, "input"_a, "output"_a, "grid"_a, "block"_a,
             "options"_a, "channels"_a, "max_batch"_a, "mode"_a = "")
        .def("queue_names", [](const PyRuntime &r) { return r.rt->queue_names(); })
        .def("queue", [](PyRuntime &r, const std::string &name) {
            return key_error_for_missing([&] {
                auto q = r.rt->queue(name);
                return wrap_queue(q, r.types.at(name));
            });
        })
        .def("create_queue", [](PyRuntime &r, const std::string &name, const py::object &queue) {
            PyQueue &pq = queue_of(queue.ptr());
            // A named queue takes the configuration of the Python Queue built for it.
            auto q = r.rt->create_queue(name, pq.core().config());
            r.types[name] = pq.record_type();
            return wrap_queue(q, pq.record_type());
        })
        .def("destroy_queue", [](PyRuntime &r, const std::string &name) {
            key_error_for_missing([&] { r.rt->destroy_queue(name); });
            r.types.erase(name);
        })
        .def("connect", [](PyRuntime &r, PyKernel &src, PyKernel &dst, const std::string &channel) {
            const std::string name = key_error_for_missing([&] { return r.rt->connect(*src.k, *dst.k, channel); });
            r.types[name] = src.out_type;
            return name;
        })
        .def("bridge", [](PyRuntime &r, PyKernel &src, PyKernel &dst, const std::string &channel) {
            return key_error_for_missing([&] { return r.rt->bridge(*src.k, *dst.k, channel); });
        })
        .def("create_topic", [](PyRuntime &r, const std::string &name, const py::object &record_type) {
            r.rt->create_topic(name, record_size_of(record_type), type_id_of(record_type));
        })
        .def("subscribe", [](PyRuntime &r, const std::string &topic, PyKernel &k) {
            key_error_for_missing([&] { r.rt->subscribe(topic, *k.k); });
            r.types[topic + "=>" + k.k->name()] = k.in_type;
        })
        .def("connect_topic", [](PyRuntime &r, PyKernel &src, const std::string &topic, const std::string &channel) {
            key_error_for_missing([&] { r.rt->connect_topic(*src.k, topic, channel); });
        })
        .def("topic_subscribers", [](PyRuntime &r, const std::string &topic) {
            return key_error_for_missing([&] { return r.rt->topic(topic).subscribers; });
        })
        .def("publish", [](PyRuntime &r, const std::string &topic, const py::object &queue_view,
                           const py::object &record, const py::object &timeout) {
            std::vector<std::uint8_t> bytes(queue_of(queue_view.ptr()).core().config().payload_size);
            queue_of(queue_view.ptr()).encode(record, bytes.data());
            const std::int64_t ns = timeout_ns(timeout);
            return key_error_for_missing([&] {
                return without_gil([&] { return r.rt->publish(topic, bytes.data(), {}, wait_for(ns)); });
            });
        })
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
        .def("release_buffer", [](PyRuntime &r, std::uint64_t handle) { r.rt->release_buffer(handle); })
        .def("close", [](PyRuntime &r, const py::object &timeout) {
            const std::int64_t ns = timeout_ns(timeout);
            without_gil([&] { r.rt->close(ns < 0 ? -1 : ns); });
        }, "timeout"_a = 5.0);

    m.def("builtin_handlers", &rk::builtin_handlers, "the names of the built-in handler catalog");
    m.def("builtin_layouts", [] {
        py::dict fields_req, fields_resp;
#define RK_F(d, s, f) d[#f] = py::make_tuple(offsetof(s, f), sizeof(((s *)nullptr)->f))
        RK_F(fields_req, rk_vector_add_request, op);
        RK_F(fields_req, rk_vector_add_request, length);
        RK_F(fields_req, rk_vector_add_request, a);
        RK_F(fields_req, rk_vector_add_request, b);
        RK_F(fields_req, rk_vector_add_request, a_buf);
        RK_F(fields_req, rk_vector_add_request, b_buf);
        RK_F(fields_req, rk_vector_add_request, out_buf);
        RK_F(fields_resp, rk_vector_add_response, length);
        RK_F(fields_resp, rk_vector_add_response, result);
        RK_F(fields_resp, rk_vector_add_response, out_buf);
        RK_F(fields_resp, rk_vector_add_response, status);
#undef RK_F
        return py::dict(
            "vector_add_request"_a = py::dict("size"_a = sizeof(rk_vector_add_request), "fields"_a = fields_req),
            "vector_add_response"_a = py::dict("size"_a = sizeof(rk_vector_add_response), "fields"_a = fields_resp));
    });
    m.attr("ERR_HANDLER") = RK_ERR_HANDLER;
    m.attr("ERR_BUFFER") = RK_ERR_BUFFER;
    m.attr("ERR_INPUT") = RK_ERR_INPUT;
    m.attr("ERR_HOST") = RK_ERR_HOST;
    m.attr("ERR_CHANNEL") = RK_ERR_CHANNEL;
    m.attr("ERR_OPERATION") = RK_ERR_OPERATION;
    m.attr("ERR_LAUNCH") = RK_ERR_LAUNCH;
    m.attr("ERR_RETURN") = RK_ERR_RETURN;
    m.attr("ERR_FAULT") = RK_ERR_FAULT;
}

// ---- message plans --------------------------------------------------------------------------------------

rk::MessagePlan make_plan(std::uint32_t itemsize, const py::list &checks, const py::list &zero, const py::list &tails) {
    std::vector<rk::MessageCheck> out;
    for (const py::handle &item : checks) {
        auto t = item.cast<py::tuple>();
        const std::string kind = t[0].cast<std::string>();
        rk::MessageCheck c;
        c.offset = t[1].cast<std::uint32_t>();
        if (kind == "bool") {
            c.kind = rk::MessageCheck::Kind::Bool;
            c.count = t[2].cast<std::uint32_t>();
            c.path = t[3].cast<std::string>();
        } else if (kind == "enum") {
            c.kind = rk::MessageCheck::Kind::Enum;
            c.count = t[2].cast<std::uint32_t>();
            c.size = t[3].cast<std::uint32_t>();
            c.is_signed = t[4].cast<bool>();
            c.valid = t[5].cast<std::vector<std::int64_t>>();
            c.enum_name = t[6].cast<std::string>();
            c.path = t[7].cast<std::string>();
        } else if (kind == "len" || kind == "utf8") {
            c.kind = kind == "len" ? rk::MessageCheck::Kind::Length : rk::MessageCheck::Kind::Utf8;
            c.size = t[2].cast<std::uint32_t>();
            c.path = t[3].cast<std::string>();
        } else {
            throw py::value_error("unknown message check kind '" + kind + "'");
        }
        out.push_back(std::move(c));
    }
    return rk::MessagePlan(itemsize, std::move(out),
                           zero.cast<std::vector<std::pair<std::uint32_t, std::uint32_t>>>(),
                           tails.cast<std::vector<std::pair<std::uint32_t, std::uint32_t>>>());
}

// A contiguous byte view of whole records for a plan; `writable` for in-place canonicalisation.
struct RecordBuffer {
    Py_buffer view{};
    std::size_t n = 0;
    RecordBuffer(const rk::MessagePlan &plan, const py::handle &obj, bool writable) {
        if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) != 0)
            throw py::error_already_set();
        if (view.len % plan.itemsize() != 0) {
            PyBuffer_Release(&view);
            throw rk::MessageFormatError("expected a whole number of " + std::to_string(plan.itemsize()) +
                                         "-byte records, got " + std::to_string(view.len) + " bytes");
        }
        n = static_cast<std::size_t>(view.len) / plan.itemsize();
    }
    ~RecordBuffer() { PyBuffer_Release(&view); }
    std::uint8_t *data() const { return static_cast<std::uint8_t *>(view.buf); }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    if (_import_array() < 0) throw py::error_already_set();
    m.doc() = "ringkernel native core (private; import ringkernel instead)";
    m.attr("__version__") = RINGKERNEL_VERSION;

    // ---- errors: one Python class per C++ class, base first so derived translators win ----------
    // Exception types live as long as the module; the translators keep borrowed pointers.
    auto &base = py::register_exception<rk::Error>(m, "RingKernelError", PyExc_Exception);
    py::register_exception<rk::BackendUnavailableError>(m, "BackendUnavailableError", base.ptr());
    py::register_exception<rk::LifecycleError>(m, "LifecycleError", base.ptr());
    py::register_exception<rk::MessageFormatError>(m, "MessageFormatError", base.ptr());
    py::register_exception<rk::TelemetryNotEnabledError>(m, "TelemetryNotEnabledError", base.ptr());
    py::register_exception<rk::KernelFaultError>(m, "KernelFaultError", base.ptr());
    py::register_exception<rk::ClockSkewError>(m, "ClockSkewError", base.ptr());
    static PyObject *compile_error = py::register_exception<rk::CompileError>(m, "CompileError", base.ptr()).ptr();
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const rk::CompileError &e) {
            py::object exc = py::reinterpret_borrow<py::object>(compile_error)(e.what());
            exc.attr("log") = e.log();
            PyErr_SetObject(compile_error, exc.ptr());
        } catch (const rk::TypeMismatch &e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        }
    });

    // ---- options -----------------------------------------------------------------------------------
    py::native_enum<rk::Backpressure>(m, "Backpressure", "enum.IntEnum",
                                      "What a full queue does with a new message.")
        .value("BLOCK", rk::Backpressure::Block, "wait for space or the timeout; False on timeout")
        .value("REJECT", rk::Backpressure::Reject, "False at once, counted rejected")
        .value("DROP_OLDEST", rk::Backpressure::DropOldest, "evict the oldest (counted dropped), accept the new")
        .value("DROP_NEW", rk::Backpressure::DropNew, "discard the new (counted dropped), False")
        .finalize();

    py::class_<rk::LaunchOptions>(m, "LaunchOptions", "Options of a kernel launch (validated on every set).")
        .def(py::init([](const py::object &queue_capacity, const py::object &dedup_window, rk::Backpressure bp,
                         bool priority, const py::object &ttl, double idle_backoff) {
                 rk::LaunchOptions o;
                 o.set_queue_capacity(int_in_range<std::uint64_t>(queue_capacity, "queue_capacity", 0, ~0ull));
                 o.set_dedup_window(int_in_range<std::uint64_t>(dedup_window, "dedup_window", 0, ~0ull));
                 o.set_backpressure(bp).set_priority(priority);
                 o.set_ttl_ns(ttl.is_none() ? 0 : rk::ttl_to_ns("ttl", ttl_seconds_arg(ttl)));
                 o.set_idle_backoff_ns(idle_backoff_ns(idle_backoff));
                 return o;
             }),
             "queue_capacity"_a = 4096, "dedup_window"_a = 1024, "backpressure"_a = rk::Backpressure::Block,
             "priority"_a = false, "ttl"_a = py::none(), "idle_backoff"_a = 1e-6)
        .def_static("production", &rk::LaunchOptions::production, "4096 slots, BLOCK, dedup window 1024")
        .def_static("low_latency", &rk::LaunchOptions::low_latency, "256 slots, REJECT, no dedup")
        .def_static("high_throughput", &rk::LaunchOptions::high_throughput, "16384 slots, BLOCK, no dedup")
        .def_property(
            "queue_capacity", &rk::LaunchOptions::queue_capacity,
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_queue_capacity(int_in_range<std::uint64_t>(v, "queue_capacity", 0, ~0ull));
            })
        .def_property(
            "dedup_window", &rk::LaunchOptions::dedup_window,
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_dedup_window(int_in_range<std::uint64_t>(v, "dedup_window", 0, ~0ull));
            },
            "the window in force: the requested one clamped to queue_capacity")
        .def_property("backpressure", &rk::LaunchOptions::backpressure, &rk::LaunchOptions::set_backpressure)
        .def_property("priority", &rk::LaunchOptions::priority, &rk::LaunchOptions::set_priority)
        .def_property(
            "ttl", [](const rk::LaunchOptions &o) { return ttl_seconds(o.ttl_ns()); },
            [](rk::LaunchOptions &o, const py::object &v) {
                o.set_ttl_ns(v.is_none() ? 0 : rk::ttl_to_ns("ttl", ttl_seconds_arg(v)));
            },
            "message time-to-live in seconds, or None")
        .def_property(
            "idle_backoff", [](const rk::LaunchOptions &o) { return static_cast<double>(o.idle_backoff_ns()) / 1e9; },
            [](rk::LaunchOptions &o, double v) { o.set_idle_backoff_ns(idle_backoff_ns(v)); },
            "CUDA: the longest an idle block sleeps between polls of its inputs, in seconds")
        .def("__repr__", &rk::LaunchOptions::to_string)
        .def("__eq__", [](const rk::LaunchOptions &a, const rk::LaunchOptions &b) {
            return a.queue_capacity() == b.queue_capacity() && a.dedup_window() == b.dedup_window() &&
                   a.backpressure() == b.backpressure() && a.priority() == b.priority() && a.ttl_ns() == b.ttl_ns() &&
                   a.idle_backoff_ns() == b.idle_backoff_ns();
        })
        .def("__copy__", [](const rk::LaunchOptions &o) { return o; })
        .attr("__hash__") = py::none();

    // ---- hybrid logical clock ---------------------------------------------------------------------------
    py::class_<rk::HlcTimestamp>(m, "HlcTimestamp", "A hybrid logical clock stamp, ordered by (physical, logical, node).")
        .def(py::init([](const py::object &physical, const py::object &logical, const py::object &node) {
                 return rk::HlcTimestamp{
                     int_in_range<std::uint64_t>(physical, "physical", 0, rk::HlcTimestamp::kMaxPhysical),
                     int_in_range<std::uint16_t>(logical, "logical", 0, 0xFFFF),
                     int_in_range<std::uint16_t>(node, "node", 0, 0xFFFF)};
             }),
             "physical"_a, "logical"_a = 0, "node"_a = 0)
        .def_readonly("physical", &rk::HlcTimestamp::physical, "milliseconds since the Unix epoch")
        .def_readonly("logical", &rk::HlcTimestamp::logical)
        .def_readonly("node", &rk::HlcTimestamp::node)
        .def("pack", &rk::HlcTimestamp::pack, "the 64-bit envelope form: physical << 16 | logical")
        .def_static(
            "unpack",
            [](const py::object &packed, const py::object &node) {
                return rk::HlcTimestamp::unpack(
                    int_in_range<std::uint64_t>(packed, "packed", 0, std::numeric_limits<std::uint64_t>::max()),
                    int_in_range<std::uint16_t>(node, "node", 0, 0xFFFF));
            },
            "packed"_a, "node"_a = 0)
        .def(py::self == py::self)
        .def(py::self != py::self)
        .def(py::self < py::self)
        .def(py::self <= py::self)
        .def(py::self > py::self)
        .def(py::self >= py::self)
        .def("__hash__", [](const rk::HlcTimestamp &t) {
            return py::hash(py::make_tuple(t.physical, t.logical, t.node));
        })
        .def("__repr__", [](const rk::HlcTimestamp &t) {
            return "HlcTimestamp(physical=" + std::to_string(t.physical) + ", logical=" + std::to_string(t.logical) +
                   ", node=" + std::to_string(t.node) + ")";
        });

    py::class_<rk::HlcClock, std::shared_ptr<rk::HlcClock>>(m, "HlcClock", "Thread-safe hybrid logical clock.")
        .def(py::init([](const py::object &node_id, const py::object &max_offset) {
                 const double s = seconds(max_offset, "max_offset", "a number of seconds in [0, 1e9]");
                 if (!(s >= 0.0) || !std::isfinite(s) || s > 1e9)
                     throw py::value_error("max_offset must be a number of seconds in [0, 1e9], got " +
                                           py::str(max_offset).cast<std::string>());
                 return std::make_shared<rk::HlcClock>(int_in_range<std::uint16_t>(node_id, "node_id", 0, 0xFFFF),
                                                       static_cast<std::uint64_t>(std::llround(s * 1000.0)));
             }),
             "node_id"_a = 0, "max_offset"_a = 0.5)
        .def("now", &rk::HlcClock::now, "stamp a local or send event")
        .def("update", &rk::HlcClock::update, "remote"_a,
             "merge a received stamp; ClockSkewError if it is more than max_offset ahead")
        .def("last", &rk::HlcClock::last, "the last stamp issued, without ticking")
        .def_property_readonly("node_id", &rk::HlcClock::node)
        .def_property_readonly("max_offset", [](const rk::HlcClock &c) { return static_cast<double>(c.max_offset_ms()) / 1000.0; })
        .def_property_readonly("borrows", &rk::HlcClock::borrows,
                               "times the logical counter was exhausted and carried into the physical part")
        .def("__repr__", [](const rk::HlcClock &c) {
            return "HlcClock(node_id=" + std::to_string(c.node()) + ", max_offset=" +
                   py::str(py::float_(static_cast<double>(c.max_offset_ms()) / 1000.0)).cast<std::string>() + ")";
        });

    // ---- queues ----
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

    // ---- backends and build facts ------------------------------------------------------------------------------
    py::class_<BackendInfo>(m, "BackendInfo", "Whether a backend can run here, and why not.")
        .def_readonly("name", &BackendInfo::name)
        .def_readonly("available", &BackendInfo::available)
        .def_readonly("detail", &BackendInfo::detail)
        .def("__repr__", [](const BackendInfo &b) {
            return "BackendInfo(name='" + b.name + "', available=" + (b.available ? "True" : "False") + ", detail='" +
                   b.detail + "')";
        });
    py::class_<rk::MessagePlan>(m, "MessagePlan",
                                "Validation and canonicalisation of one message type's records (built by "
                                "ringkernel.messages).")
        .def(py::init(&make_plan), "itemsize"_a, "checks"_a, "zero_ranges"_a, "tails"_a)
        .def_property_readonly("itemsize", &rk::MessagePlan::itemsize)
        .def(
            "validate",
            [](const rk::MessagePlan &p, const py::handle &records) {
                RecordBuffer b(p, records, false);
                p.validate(b.data(), b.n);
            },
            "records"_a, "check whole records (any buffer); MessageFormatError names the field")
        .def(
            "canonical",
            [](const rk::MessagePlan &p, const py::handle &records) {
                RecordBuffer b(p, records, false);
                py::bytearray out(reinterpret_cast<const char *>(b.data()), static_cast<py::ssize_t>(b.view.len));
                p.canonicalise(reinterpret_cast<std::uint8_t *>(PyByteArray_AS_STRING(out.ptr())), b.n);
                return out;
            },
            "records"_a, "a bytearray copy with padding and unused bytes/string storage zeroed")
        .def(
            "canonicalise",
            [](const rk::MessagePlan &p, const py::handle &records) {
                RecordBuffer b(p, records, true);
                p.canonicalise(b.data(), b.n);
            },
            "records"_a, "zero padding and unused bytes/string storage in place (a writable buffer)");
    rkpy::bind_codec(m);
    bind_runtime(m);
    m.def("backends", &backends, "every backend this build knows, with availability and the reason; never raises");
    m.def("cuda_module_loading", &rk::cuda_module_loading_mode,
          "how the CUDA driver loads modules in this process: 'eager', 'lazy', or 'unknown' (CUDA not started)");
    m.def(
        "_set_layout_dtypes",
        [](py::object envelope, py::object telemetry, py::object control_block) {
            LayoutDtypes &d = layout_dtypes();
            if (d.envelope) return;  // set once, by the first import of ringkernel.layout
            d.envelope = envelope.release().ptr();
            d.telemetry = telemetry.release().ptr();
            d.control_block = control_block.release().ptr();
        },
        "envelope"_a, "telemetry"_a, "control_block"_a,
        "ringkernel.layout passes down the numpy dtypes of the envelope, telemetry and control block");
    m.def("layout_info", &layout_info, "sizes and (offset, size) of every field of the layout.h structs");
    m.def("build_info", [] {
        return py::dict("version"_a = RINGKERNEL_VERSION, "cuda_compiled"_a = bool(RINGKERNEL_HAS_CUDA_COMPILER),
                        "compiler"_a = __VERSION__);
    });
    m.attr("RING_MIN_CAPACITY") = rk::kMinCapacity;
    m.attr("RING_MAX_CAPACITY") = rk::kMaxCapacity;
    m.attr("MAX_RECORD_SIZE") = rk::kMaxPayload;
}
