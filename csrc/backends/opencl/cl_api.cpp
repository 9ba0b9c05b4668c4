// cl_api.cpp — see cl_api.hpp.
#include "cl_api.hpp"

#include "../../core/process.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

namespace rk::opencl {

namespace {

struct Loaded {
    Api api;
    bool ok = false;
    std::string why;
};

template <class F>
bool load(void *lib, const char *name, F &slot, std::string &missing) {
    slot = reinterpret_cast<F>(dlsym(lib, name));
    if (!slot) missing += std::string(missing.empty() ? "" : ", ") + name;
    return slot != nullptr;
}

Loaded load_api() {
    Loaded l;
    const char *env = std::getenv("RINGKERNEL_OPENCL_LIBRARY");
    const std::string path = env && *env ? env : "libOpenCL.so.1";
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *err = dlerror();
        l.why = "no OpenCL ICD loader could be loaded (" + path + ": " + (err ? err : "not found") +
                "); install one, e.g. apt-get install ocl-icd-libopencl1 pocl-opencl-icd";
        return l;
    }
    std::string missing;
    Api &a = l.api;
    load(lib, "clGetPlatformIDs", a.GetPlatformIDs, missing);
    load(lib, "clGetPlatformInfo", a.GetPlatformInfo, missing);
    load(lib, "clGetDeviceIDs", a.GetDeviceIDs, missing);
    load(lib, "clGetDeviceInfo", a.GetDeviceInfo, missing);
    load(lib, "clCreateContext", a.CreateContext, missing);
    load(lib, "clReleaseContext", a.ReleaseContext, missing);
    load(lib, "clCreateCommandQueueWithProperties", a.CreateCommandQueueWithProperties, missing);
    load(lib, "clReleaseCommandQueue", a.ReleaseCommandQueue, missing);
    load(lib, "clCreateProgramWithSource", a.CreateProgramWithSource, missing);
    load(lib, "clBuildProgram", a.BuildProgram, missing);
    load(lib, "clGetProgramBuildInfo", a.GetProgramBuildInfo, missing);
    load(lib, "clReleaseProgram", a.ReleaseProgram, missing);
    load(lib, "clCreateKernel", a.CreateKernel, missing);
    load(lib, "clReleaseKernel", a.ReleaseKernel, missing);
    load(lib, "clSetKernelArgSVMPointer", a.SetKernelArgSVMPointer, missing);
    load(lib, "clSetKernelExecInfo", a.SetKernelExecInfo, missing);
    load(lib, "clEnqueueNDRangeKernel", a.EnqueueNDRangeKernel, missing);
    load(lib, "clFlush", a.Flush, missing);
    load(lib, "clFinish", a.Finish, missing);
    load(lib, "clGetEventInfo", a.GetEventInfo, missing);
    load(lib, "clReleaseEvent", a.ReleaseEvent, missing);
    load(lib, "clSVMAlloc", a.SVMAlloc, missing);
    load(lib, "clSVMFree", a.SVMFree, missing);
    load(lib, "clCreateBuffer", a.CreateBuffer, missing);
    load(lib, "clReleaseMemObject", a.ReleaseMemObject, missing);
    load(lib, "clEnqueueWriteBuffer", a.EnqueueWriteBuffer, missing);
    load(lib, "clEnqueueReadBuffer", a.EnqueueReadBuffer, missing);
    load(lib, "clSetKernelArg", a.SetKernelArg, missing);
    if (!missing.empty()) {
        l.why = "the OpenCL loader " + path + " lacks OpenCL 2.0+ entry points (" + missing + ")";
        return l;  // the library stays open: harmless, and dlclose of ICD loaders is unsafe
    }
    l.ok = true;
    return l;
}

std::string info_string(const Api &a, cl_device_id d, cl_device_info what) {
    size_t size = 0;
    if (a.GetDeviceInfo(d, what, 0, nullptr, &size) != CL_SUCCESS || size == 0) return "";
    std::string s(size, '\0');
    a.GetDeviceInfo(d, what, size, s.data(), nullptr);
    while (!s.empty() && s.back() == '\0') s.pop_back();
    return s;
}

}  // namespace

const Api *api(std::string *why) {
    static const Loaded loaded = load_api();
    if (!loaded.ok) {
        if (why) *why = loaded.why;
        return nullptr;
    }
    return &loaded.api;
}

std::string Device::describe() const {
    std::string s = name + " (" + version + ", " + platform_name + ", " + std::to_string(compute_units) +
                    " compute units";
    s += shares_memory() ? ", fine-grained SVM with atomics: persistent and dispatch modes"
                         : fine_grain_svm_atomics ? ", SVM disabled by RINGKERNEL_OPENCL_SVM=0: dispatch mode with copies"
                                                  : ", no fine-grained SVM: dispatch mode with copies";
    return s + ")";
}

std::vector<Device> devices(std::string *why) {
    std::vector<Device> out;
    // A driver started before fork() does not work in the child (PoCL's threads are not copied): say so
    // instead of calling into it.
    if (std::string inherited = driver_inherited_reason("opencl"); !inherited.empty()) {
        if (why) *why = inherited;
        return out;
    }
    const Api *a = api(why);
    if (!a) return out;
    note_driver_started("opencl");
    cl_uint np = 0;
    if (a->GetPlatformIDs(0, nullptr, &np) != CL_SUCCESS || np == 0) {
        if (why) *why = "the OpenCL loader found no platform (no ICD installed, e.g. pocl-opencl-icd)";
        return out;
    }
    std::vector<cl_platform_id> platforms(np);
    a->GetPlatformIDs(np, platforms.data(), nullptr);
    for (cl_platform_id p : platforms) {
        char pname[256] = {};
        a->GetPlatformInfo(p, CL_PLATFORM_NAME, sizeof pname - 1, pname, nullptr);
        cl_uint nd = 0;
        if (a->GetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 0, nullptr, &nd) != CL_SUCCESS || nd == 0) continue;
        std::vector<cl_device_id> ids(nd);
        a->GetDeviceIDs(p, CL_DEVICE_TYPE_ALL, nd, ids.data(), nullptr);
        for (cl_device_id id : ids) {
            Device d;
            d.platform = p;
            d.device = id;
            d.platform_name = pname;
            d.name = info_string(*a, id, CL_DEVICE_NAME);
            d.version = info_string(*a, id, CL_DEVICE_VERSION);
            a->GetDeviceInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof d.compute_units, &d.compute_units, nullptr);
            a->GetDeviceInfo(id, CL_DEVICE_TYPE, sizeof d.type, &d.type, nullptr);
            a->GetDeviceInfo(id, CL_DEVICE_LOCAL_MEM_SIZE, sizeof d.local_mem, &d.local_mem, nullptr);
            a->GetDeviceInfo(id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof d.max_work_group, &d.max_work_group, nullptr);
            cl_bool compiler = CL_FALSE;
            a->GetDeviceInfo(id, CL_DEVICE_COMPILER_AVAILABLE, sizeof compiler, &compiler, nullptr);
            d.compiler = compiler == CL_TRUE;
            cl_device_svm_capabilities svm = 0;
            if (d.version.rfind("OpenCL 1.", 0) != 0 &&
                a->GetDeviceInfo(id, CL_DEVICE_SVM_CAPABILITIES, sizeof svm, &svm, nullptr) == CL_SUCCESS)
                d.fine_grain_svm_atomics = (svm & CL_DEVICE_SVM_FINE_GRAIN_BUFFER) && (svm & CL_DEVICE_SVM_ATOMICS);
            const char *svm_env = std::getenv("RINGKERNEL_OPENCL_SVM");
            d.svm_disabled = svm_env && std::string(svm_env) == "0";
            out.push_back(d);
        }
    }
    if (out.empty() && why) *why = "the OpenCL platforms report no device";
    return out;
}

}  // namespace rk::opencl
