// errors.hpp — the exception hierarchy of the C++ core, mirrored one-to-one in Python (DESIGN §7).
#pragma once

#include <stdexcept>
#include <string>

namespace rk {

// Base of every ringkernel error (Python: rk.RingKernelError).
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class BackendUnavailableError : public Error {
public:
    using Error::Error;
};
class LifecycleError : public Error {
public:
    using Error::Error;
};
class MessageFormatError : public Error {
public:
    using Error::Error;
};
class TelemetryNotEnabledError : public Error {
public:
    using Error::Error;
};
class KernelFaultError : public Error {
public:
    using Error::Error;
};
class ClockSkewError : public Error {
public:
    using Error::Error;
};

// A compiler rejected handler source; log() is the compiler's full output.
class CompileError : public Error {
public:
    CompileError(const std::string &what, std::string log) : Error(what), log_(std::move(log)) {}
    const std::string &log() const noexcept { return log_; }

private:
    std::string log_;
};

// An argument of the wrong type (Python: TypeError). Values out of range throw
// std::invalid_argument (Python: ValueError) with the valid range in the message.
class TypeMismatch : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

}  // namespace rk
