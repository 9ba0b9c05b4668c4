// The device dialect under a real OpenCL C compiler (PoCL in CI): builds the ring protocol for
// OpenCL C 1.2 and for the newest OpenCL C the device offers, then runs a kernel that moves
// messages through a ring in device memory and checks every one on the host.
#include <gtest/gtest.h>

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ringkernel/layout.h"
#include "rk_ring.h"

namespace {

const char *kKernel = R"CLC(
#include "rk_ring.h"
/* One work-item pushes n messages (payload: its index) into the ring, pops them back, and writes
 * what it popped to out[]. The host checks order, ids and payloads. */
__kernel void ring_roundtrip(__global rk_ring_header *ring, __global rk_envelope *scratch,
                             __global ulong *out, uint n) {
    if (get_global_id(0) != 0) return;
    for (uint i = 0; i < n; ++i) {
        scratch->message_id = 1000 + i;
        scratch->payload_size = 8;
        __global rk_u8 *payload = (__global rk_u8 *)(scratch + 1);
        ((__global ulong *)payload)[0] = i * 3;
        if (!rk_ring_try_push(ring, scratch, payload, 0, RK_SCOPE_DEVICE)) { out[n] = 1; return; }
        __global rk_envelope *env = scratch + 2;
        __global rk_u8 *got = (__global rk_u8 *)(scratch + 3);
        if (!rk_ring_try_pop(ring, env, got, 8, 0, RK_SCOPE_DEVICE)) { out[n] = 2; return; }
        out[i] = env->message_id == 1000 + i ? ((__global ulong *)got)[0] : ~0ul;
    }
    out[n] = 0;
}
)CLC";

struct Cl {
    cl_platform_id platform = nullptr;
    cl_device_id device = nullptr;
    std::string skip;
    Cl() {
        cl_uint n = 0;
        if (clGetPlatformIDs(1, &platform, &n) != CL_SUCCESS || n == 0) {
            skip = "no OpenCL platform (install pocl-opencl-icd)";
            return;
        }
        if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, &n) != CL_SUCCESS || n == 0)
            skip = "no OpenCL device on the first platform";
    }
    std::string device_string(cl_device_info what) const {
        size_t size = 0;
        clGetDeviceInfo(device, what, 0, nullptr, &size);
        std::string s(size, '\0');
        clGetDeviceInfo(device, what, size, s.data(), nullptr);
        while (!s.empty() && s.back() == '\0') s.pop_back();
        return s;
    }
};

// Build kKernel with the given -cl-std; returns the build log on failure, "" on success.
std::string build_and_run(const Cl &cl, const std::string &std_flag) {
    cl_int err;
    cl_context ctx = clCreateContext(nullptr, 1, &cl.device, nullptr, nullptr, &err);
    if (err != CL_SUCCESS) return "clCreateContext failed";
    cl_command_queue queue = clCreateCommandQueue(ctx, cl.device, 0, &err);
    const char *src = kKernel;
    cl_program prog = clCreateProgramWithSource(ctx, 1, &src, nullptr, &err);
    const std::string opts = std_flag + " -I " RINGKERNEL_INCLUDE_DIR " -I " RINGKERNEL_DEVICE_DIR;
    std::string result;
    if (clBuildProgram(prog, 1, &cl.device, opts.c_str(), nullptr, nullptr) != CL_SUCCESS) {
        size_t size = 0;
        clGetProgramBuildInfo(prog, cl.device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size);
        std::string log(size, '\0');
        clGetProgramBuildInfo(prog, cl.device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
        result = "build failed (" + opts + "):\n" + log;
    } else {
        const rk_u32 cap = 16, stride = rk_ring_slot_stride(8), n = 100;
        std::vector<unsigned char> ring_bytes(rk_ring_bytes(cap, stride), 0);
        rk_ring_init(reinterpret_cast<rk_ring_header *>(ring_bytes.data()), cap, stride, 0);
        cl_mem ring = clCreateBuffer(ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, ring_bytes.size(),
                                     ring_bytes.data(), &err);
        cl_mem scratch = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 4 * sizeof(rk_envelope), nullptr, &err);
        cl_mem out = clCreateBuffer(ctx, CL_MEM_READ_WRITE, (n + 1) * sizeof(cl_ulong), nullptr, &err);
        cl_kernel k = clCreateKernel(prog, "ring_roundtrip", &err);
        clSetKernelArg(k, 0, sizeof ring, &ring);
        clSetKernelArg(k, 1, sizeof scratch, &scratch);
        clSetKernelArg(k, 2, sizeof out, &out);
        clSetKernelArg(k, 3, sizeof n, &n);
        size_t global = 1;
        err = clEnqueueNDRangeKernel(queue, k, 1, nullptr, &global, nullptr, 0, nullptr, nullptr);
        std::vector<cl_ulong> host(n + 1, 99);
        clEnqueueReadBuffer(queue, out, CL_TRUE, 0, host.size() * sizeof(cl_ulong), host.data(), 0, nullptr, nullptr);
        std::vector<unsigned char> after(ring_bytes.size());
        clEnqueueReadBuffer(queue, ring, CL_TRUE, 0, after.size(), after.data(), 0, nullptr, nullptr);
        if (err != CL_SUCCESS) result = "kernel launch failed";
        else if (host[n] != 0) result = "kernel reported failure " + std::to_string(host[n]);
        for (rk_u32 i = 0; result.empty() && i < n; ++i)
            if (host[i] != i * 3ul) result = "message " + std::to_string(i) + " came back wrong";
        const auto *hdr = reinterpret_cast<const rk_ring_header *>(after.data());
        if (result.empty() && (hdr->head != n || hdr->tail != n)) result = "cursors did not advance by n";
        clReleaseKernel(k);
        clReleaseMemObject(ring);
        clReleaseMemObject(scratch);
        clReleaseMemObject(out);
    }
    clReleaseProgram(prog);
    clReleaseCommandQueue(queue);
    clReleaseContext(ctx);
    return result;
}

}  // namespace

TEST(OpenClDialect, RingProtocolBuildsAndRunsAsOpenCLC12) {
    Cl cl;
    if (!cl.skip.empty()) GTEST_SKIP() << cl.skip;
    EXPECT_EQ(build_and_run(cl, "-cl-std=CL1.2"), "");
}

TEST(OpenClDialect, RingProtocolBuildsAndRunsWithC11Atomics) {
    Cl cl;
    if (!cl.skip.empty()) GTEST_SKIP() << cl.skip;
    // OpenCL 3.0 devices report "OpenCL C 1.2" in CL_DEVICE_OPENCL_C_VERSION; the platform version
    // tells whether -cl-std=CL3.0 (or CL2.0) is accepted.
    const std::string version = cl.device_string(CL_DEVICE_VERSION);  // "OpenCL x.y ..."
    if (version.rfind("OpenCL 1.", 0) == 0)
        GTEST_SKIP() << "device offers only " << version << "; the C11 atomics path needs OpenCL 2.0 or 3.0";
    const std::string flag = version.rfind("OpenCL 3.", 0) == 0 ? "-cl-std=CL3.0" : "-cl-std=CL2.0";
    EXPECT_EQ(build_and_run(cl, flag), "") << "device: " << cl.device_string(CL_DEVICE_NAME) << ", " << version;
}
