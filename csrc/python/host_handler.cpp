// host_handler.cpp — PyHostHandler: a Python callable as a kernel's handler (CPU backend), called with
// the GIL taken on the kernel's worker thread; replies encoded through the output queue's view.
#include "host_handler.hpp"

#include <pybind11/numpy.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "args.hpp"
#include "bindings.hpp"
#include "gil.hpp"
#include "py_queue.hpp"
#include "rk_handler.h"

namespace rkpy {

namespace {

// Python callables as handlers (CPU backend). Per message: fn(request) -> reply | None | {channel: reply}.
// Per batch: fn(records: np.ndarray) -> replies (array-like of the output dtype, reply i answers
// request i) | None. Calls take the GIL; a kernel's calls are serialised.
class PyHostHandler final : public rk::HostHandler {
public:
    PyHostHandler(py::object fn, py::object in_q, py::object out_q, std::size_t max_batch,
                  std::vector<std::string> channels, py::object state_dtype)
        : fn_(std::move(fn)), in_q_(std::move(in_q)), out_q_(std::move(out_q)), state_dtype_(std::move(state_dtype)),
          max_batch_(max_batch), channels_(std::move(channels)) {}

    ~PyHostHandler() override {
        // The last owner can be an abandoned worker thread: drop the Python references under the GIL,
        // or leak them when the interpreter is already gone.
        if (Py_IsInitialized() && !interpreter_finalizing()) {
            py::gil_scoped_acquire gil;
            fn_ = py::object();
            in_q_ = py::object();
            out_q_ = py::object();
            state_dtype_ = py::object();
            state_ = py::object();
        } else {
            fn_.release();
            in_q_.release();
            out_q_.release();
            state_dtype_.release();
            state_.release();
        }
    }

    std::size_t batch_size() const override { return max_batch_; }
    bool concurrent() const override { return false; }

    int handle(rk_ctx *ctx, const void *in, void *out) override {
        AcquireGil gil;
        try {
            py::object request = queue_of(in_q_.ptr()).decode(in);
            py::object result = state_dtype_.is_none() ? fn_(request) : fn_(request, state(ctx));
            return reply(ctx, result, out);
        } catch (py::error_already_set &e) {
            if (e.matches(kernel_fault_type())) throw rk::KernelAtFault(e.what());
            throw std::runtime_error(e.what());
        } catch (py::builtin_exception &e) {  // raised by our own conversions: report with its Python type
            e.set_error();
            throw std::runtime_error(py::error_already_set().what());
        }
    }

    long handle_batch(rk_ctx *ctx, const void *in, std::size_t n, std::size_t stride, void *out) override {
        AcquireGil gil;
        try {
            PyQueue &iq = queue_of(in_q_.ptr());
            PyQueue &oq = queue_of(out_q_.ptr());
            py::array records(iq.dtype(), {static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(stride)}, in);
            py::object result = state_dtype_.is_none() ? fn_(records) : fn_(records, state(ctx));
            if (result.is_none()) return 0;
            py::array replies = numpy().attr("ascontiguousarray")(result, oq.dtype()).cast<py::array>();
            if (replies.ndim() != 1 || static_cast<std::size_t>(replies.shape(0)) > n)
                throw py::value_error("a batch handler returns at most one reply per request (" + std::to_string(n) +
                                      "), got shape " + py::str(replies.attr("shape")).cast<std::string>());
            const std::size_t m = static_cast<std::size_t>(replies.shape(0));
            std::memcpy(out, replies.data(), m * static_cast<std::size_t>(oq.dtype().itemsize()));
            return static_cast<long>(m);
        } catch (py::error_already_set &e) {
            if (e.matches(kernel_fault_type())) throw rk::KernelAtFault(e.what());
            throw std::runtime_error(e.what());
        } catch (py::builtin_exception &e) {  // raised by our own conversions: report with its Python type
            e.set_error();
            throw std::runtime_error(py::error_already_set().what());
        }
    }

private:
    // The kernel's state as a writable numpy record over its memory (made on the first call: the memory is
    // the kernel's for its life, restarts included).
    py::object state(rk_ctx *ctx) {
        if (!state_) {
            py::dtype dt = py::reinterpret_borrow<py::dtype>(state_dtype_);
            // Base None: a view, no copy, no owner (the kernel outlives every call of its handler).
            py::array view(dt, {py::ssize_t(1)}, {dt.itemsize()}, rk_state(ctx), py::none());
            state_ = view.attr("view")(numpy().attr("recarray"))[py::int_(0)];
        }
        return state_;
    }

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

    py::object fn_, in_q_, out_q_, state_dtype_, state_;
    std::size_t max_batch_;
    std::vector<std::string> channels_;
};

}  // namespace

std::shared_ptr<rk::HostHandler> make_host_handler(py::object fn, py::object in_q, py::object out_q,
                                                   std::size_t max_batch, std::vector<std::string> channels,
                                                   py::object state_dtype) {
    return std::make_shared<PyHostHandler>(std::move(fn), std::move(in_q), std::move(out_q), max_batch,
                                           std::move(channels), std::move(state_dtype));
}

}  // namespace rkpy
