// dlpack_abi.hpp — the part of the DLPack C ABI that Buffer.__dlpack__ exports: the unversioned managed
// tensor that travels in a PyCapsule named "dltensor" (DLPack 0.x, which every consumer still accepts).
// Declared here, with its layout asserted, so DLPack support never depends on a system header being
// installed where the package is built. Names follow the DLPack specification with an rk prefix.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rkdl {

// DLDeviceType values used here.
constexpr std::int32_t kDLCPU = 1;
constexpr std::int32_t kDLCUDA = 2;

// DLDataTypeCode values used here.
constexpr std::uint8_t kDLInt = 0;
constexpr std::uint8_t kDLUInt = 1;
constexpr std::uint8_t kDLFloat = 2;
constexpr std::uint8_t kDLComplex = 5;
constexpr std::uint8_t kDLBool = 6;

struct DLDevice {
    std::int32_t device_type;  // a C enum in the specification: int-sized
    std::int32_t device_id;
};

struct DLDataType {
    std::uint8_t code;
    std::uint8_t bits;
    std::uint16_t lanes;
};

struct DLTensor {
    void *data;
    DLDevice device;
    std::int32_t ndim;
    DLDataType dtype;
    std::int64_t *shape;
    std::int64_t *strides;  // null: compact, row-major
    std::uint64_t byte_offset;
};

struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(DLManagedTensor *self);
};

static_assert(sizeof(DLDevice) == 8 && sizeof(DLDataType) == 4, "DLPack device and dtype layout");
static_assert(offsetof(DLTensor, device) == 8 && offsetof(DLTensor, ndim) == 16 && offsetof(DLTensor, dtype) == 20 &&
                  offsetof(DLTensor, shape) == 24 && offsetof(DLTensor, byte_offset) == 40 && sizeof(DLTensor) == 48,
              "DLTensor layout (64-bit)");
static_assert(offsetof(DLManagedTensor, manager_ctx) == 48 && sizeof(DLManagedTensor) == 64,
              "DLManagedTensor layout (64-bit)");

}  // namespace rkdl
