// cl_api.hpp — the OpenCL API, loaded at run time. The library never links libOpenCL: it opens the
// ICD loader (libOpenCL.so.1, or $RINGKERNEL_OPENCL_LIBRARY) on first use, so the package imports and
// runs on machines without one, and rk.backends() can say why OpenCL is unavailable.
#pragma once

#define CL_TARGET_OPENCL_VERSION 300
#include <CL/cl.h>

#include <string>
#include <vector>

namespace rk::opencl {

struct Api {
    decltype(&::clGetPlatformIDs) GetPlatformIDs = nullptr;
    decltype(&::clGetPlatformInfo) GetPlatformInfo = nullptr;
    decltype(&::clGetDeviceIDs) GetDeviceIDs = nullptr;
    decltype(&::clGetDeviceInfo) GetDeviceInfo = nullptr;
    decltype(&::clCreateContext) CreateContext = nullptr;
    decltype(&::clReleaseContext) ReleaseContext = nullptr;
    decltype(&::clCreateCommandQueueWithProperties) CreateCommandQueueWithProperties = nullptr;
    decltype(&::clReleaseCommandQueue) ReleaseCommandQueue = nullptr;
    decltype(&::clCreateProgramWithSource) CreateProgramWithSource = nullptr;
    decltype(&::clBuildProgram) BuildProgram = nullptr;
    decltype(&::clGetProgramBuildInfo) GetProgramBuildInfo = nullptr;
    decltype(&::clReleaseProgram) ReleaseProgram = nullptr;
    decltype(&::clCreateKernel) CreateKernel = nullptr;
    decltype(&::clReleaseKernel) ReleaseKernel = nullptr;
    decltype(&::clSetKernelArgSVMPointer) SetKernelArgSVMPointer = nullptr;
    decltype(&::clSetKernelExecInfo) SetKernelExecInfo = nullptr;
    decltype(&::clEnqueueNDRangeKernel) EnqueueNDRangeKernel = nullptr;
    decltype(&::clFlush) Flush = nullptr;
    decltype(&::clFinish) Finish = nullptr;
    decltype(&::clGetEventInfo) GetEventInfo = nullptr;
    decltype(&::clReleaseEvent) ReleaseEvent = nullptr;
    decltype(&::clSVMAlloc) SVMAlloc = nullptr;
    decltype(&::clSVMFree) SVMFree = nullptr;
    decltype(&::clCreateBuffer) CreateBuffer = nullptr;
    decltype(&::clReleaseMemObject) ReleaseMemObject = nullptr;
    decltype(&::clEnqueueWriteBuffer) EnqueueWriteBuffer = nullptr;
    decltype(&::clEnqueueReadBuffer) EnqueueReadBuffer = nullptr;
    decltype(&::clSetKernelArg) SetKernelArg = nullptr;
};

// The loaded API, or nullptr with the reason in *why.
const Api *api(std::string *why);

struct Device {
    cl_platform_id platform = nullptr;
    cl_device_id device = nullptr;
    std::string platform_name, name, version;  // version: "OpenCL x.y ..."
    cl_uint compute_units = 0;
    cl_device_type type = 0;
    cl_ulong local_mem = 0;           // bytes of local memory per work-group
    size_t max_work_group = 0;
    bool compiler = false;
    bool fine_grain_svm_atomics = false;       // persistent mode: host and device share memory live
    bool svm_disabled = false;                 // $RINGKERNEL_OPENCL_SVM=0: behave as a device without it
    std::string describe() const;
    // Dispatch mode with copies runs on any device with a compiler; persistent mode needs shared memory.
    bool can_run_ring_kernels() const { return compiler; }
    bool shares_memory() const { return fine_grain_svm_atomics && !svm_disabled; }
    bool is_cpu() const { return (type & CL_DEVICE_TYPE_CPU) != 0; }
};

// Every device of every platform (empty, with *why, when there is none or no loader).
std::vector<Device> devices(std::string *why);

}  // namespace rk::opencl
