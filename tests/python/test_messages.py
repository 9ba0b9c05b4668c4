"""Message type declarations (ringkernel.messages): dtypes, type ids, C declarations, errors."""

import enum
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ringkernel as rk


class Op(enum.IntEnum):
    ADD = 0
    SUBTRACT = 1
    MULTIPLY = 2


class Signed(enum.IntEnum):
    LOW = -3
    HIGH = 40000


@rk.message
class Point:
    x: rk.f64
    valid: rk.bool_


@rk.message(type_id=77)
class Everything:
    a_u8: rk.u8
    a_u16: rk.u16
    a_u32: rk.u32
    a_u64: rk.u64
    a_i8: rk.i8
    a_i16: rk.i16
    a_i32: rk.i32
    a_i64: rk.i64
    a_f32: rk.f32
    a_f64: rk.f64
    a_bool: rk.bool_
    op: Op
    level: Signed
    vec: rk.array(rk.f32, 5)
    grid: rk.array(rk.i16, (3, 4))
    nested_grid: rk.array(rk.array(rk.u8, 2), 3)
    blob: rk.bytes_(7)
    name: rk.string(13)
    origin: Point
    path: rk.array(Point, 2)


def c_alignment_dtype(fields):
    """What a C compiler does: each field at the next multiple of its alignment, size padded."""
    return np.dtype(fields, align=True)


def test_every_field_kind_maps_to_the_expected_dtype():
    dt = Everything.dtype
    assert dt["a_u64"] == np.dtype("<u8") and dt["a_i8"] == np.dtype("i1") and dt["a_bool"] == np.dtype("?")
    assert dt["op"] == np.dtype("u1") and dt["level"] == np.dtype("<i4")
    assert dt["vec"].shape == (5,) and dt["grid"].shape == (3, 4) and dt["nested_grid"].shape == (3, 2)
    assert dt["blob"].names == ("length", "data") and dt["blob"]["data"].shape == (7,)
    assert dt["name"].itemsize == 4 + 13 + 3  # u32 length + 13 bytes, padded to 4
    assert dt["origin"] == Point.dtype and dt["path"].shape == (2,)
    assert Everything.itemsize == dt.itemsize and Everything.type_id == 77
    assert list(Everything.fields) == list(dt.names)
    assert repr(Everything.fields["vec"]) == "rk.array(rk.f32, 5)"


def test_layout_follows_c_alignment():
    @rk.message
    class Mixed:
        a: rk.u8
        b: rk.f64
        c: rk.u16

    assert [Mixed.dtype.fields[n][1] for n in ("a", "b", "c")] == [0, 8, 16]
    assert Mixed.itemsize == 24  # trailing padding to the 8-byte alignment, as in C


def test_type_id_is_stable_and_follows_the_layout():
    def declare(second):
        class Msg:
            __annotations__ = {"a": rk.u32, "b": second}
        Msg.__module__ = __name__
        return rk.message(Msg).type_id

    assert declare(rk.u32) == declare(rk.u32)
    assert declare(rk.u32) != declare(rk.u64)
    assert 1 <= declare(rk.f32) <= 65535
    # Same definition, another process: same id.
    code = ("import ringkernel as rk\n"
            "class Msg:\n    __annotations__ = {'a': rk.u32, 'b': rk.u32}\n"
            "print(rk.message(Msg).type_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == declare(rk.u32)


@pytest.mark.parametrize(
    "annotations, error, message",
    [
        ({"a": int}, TypeError, r"unsupported annotation <class 'int'>; use rk.i64"),
        ({"a": float}, TypeError, r"use rk.f64 or rk.f32"),
        ({"a": str}, TypeError, r"use rk.string\(N\)"),
        ({"a": list}, TypeError, r"unsupported annotation"),
        ({"a": "NoSuchType"}, TypeError, r"cannot resolve annotation 'NoSuchType'"),
        ({"int": rk.u8}, TypeError, r"'int' is reserved in C"),
        ({"global": rk.u8}, TypeError, r"reserved in C, C\+\+, OpenCL C or MSL"),
        ({"_hidden": rk.u8}, TypeError, r"must be C identifiers starting with a letter"),
        ({"dtype": rk.u8}, TypeError, r"collides with the message type's own attribute"),
        ({"type_id": rk.u8}, TypeError, r"collides"),
        ({}, TypeError, r"has no annotated fields"),
    ],
)
def test_declaration_errors(annotations, error, message):
    class Bad:
        __annotations__ = annotations

    with pytest.raises(error, match=message):
        rk.message(Bad)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: rk.array(rk.f32, 0), r"zero-length arrays have no C layout"),
        (lambda: rk.array(rk.f32, (3, 0)), r"zero-length"),
        (lambda: rk.array(rk.f32, ()), r"non-empty tuple"),
        (lambda: rk.array(rk.f32, 2.5), r"positive int"),
        (lambda: rk.array(int, 3), r"unsupported annotation"),
        (lambda: rk.bytes_(0), r"bytes_ capacity must be in \[1, 65536\] bytes, got 0"),
        (lambda: rk.string(70000), r"string capacity must be in \[1, 65536\]"),
        (lambda: rk.string("8"), r"string capacity must be an int"),
    ],
)
def test_field_constructor_errors(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_recursive_and_inherited_definitions_are_refused():
    class Node:
        __annotations__ = {"value": rk.u32, "next": "Node"}

    with pytest.raises(TypeError, match="recursive message types have no fixed size"):
        rk.message(Node)

    class Derived(Point):
        __annotations__ = {"y": rk.f64}

    with pytest.raises(TypeError, match="do not inherit"):
        rk.message(Derived)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (65536, ValueError), ("7", TypeError), (True, TypeError)])
def test_explicit_type_id_is_validated(bad, error):
    class Msg:
        __annotations__ = {"a": rk.u8}

    with pytest.raises(error, match=r"type_id must be"):
        rk.message(type_id=bad)(Msg)


def test_enum_storage_is_the_smallest_type_that_fits():
    class Big(enum.IntEnum):
        A = 0
        B = 1 << 40

    @rk.message
    class WithEnums:
        small: Op
        level: Signed
        big: Big

    assert [WithEnums.dtype[n] for n in ("small", "level", "big")] == [np.dtype("u1"), np.dtype("<i4"), np.dtype("<u8")]


def test_header_declares_dependencies_first_and_once():
    text = rk.c_header(Everything, Point)
    assert text.count("typedef struct Point {") == 1
    assert text.index("typedef struct Point {") < text.index("typedef struct Everything {")
    assert "#define EVERYTHING_TYPE_ID 77u" in text
    assert "#ifndef RK_TYPES_H" in text  # self-contained: carries the type prelude

    class Other:
        __annotations__ = {"q": rk.u8}

    Other.__name__ = "Point"
    with pytest.raises(TypeError, match="two different message types are named Point"):
        rk.c_header(Everything, rk.message(Other))


# ---- the declaration compiles to the identical layout under every compiler we have -------------------

PROBE = r"""
#include <stdio.h>
#include "messages.h"
#define F(T, f) printf("%s %s %u %u\n", #T, #f, (unsigned)RK_OFFSETOF(T, f), (unsigned)sizeof(((T *)0)->f));
int main(void) {
    printf("Everything size %u 0\n", (unsigned)sizeof(Everything));
    printf("Point size %u 0\n", (unsigned)sizeof(Point));
    FIELDS
    return 0;
}
"""


def expected_layout():
    rows = {("Everything", "size"): (Everything.itemsize, 0), ("Point", "size"): (Point.itemsize, 0)}
    for cls in (Everything, Point):
        for name in cls.dtype.names:
            field_dtype, offset = cls.dtype.fields[name][:2]
            rows[(cls.__name__, name)] = (offset, field_dtype.itemsize)
    return rows


@pytest.mark.parametrize("compiler, flags", [("cc", ["-std=c11"]), ("c++", ["-std=c++17", "-x", "c++"])])
def test_host_compilers_agree_with_the_dtype_at_run_time(tmp_path, compiler, flags):
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} on this machine")
    rk.write_header(tmp_path / "messages.h", Everything, Point)
    fields = "\n    ".join(f"F({cls.__name__}, {n})" for cls in (Everything, Point) for n in cls.dtype.names)
    (tmp_path / "probe.c").write_text(PROBE.replace("FIELDS", fields))
    exe = tmp_path / "probe"
    build = subprocess.run([compiler, *flags, "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path),
                            str(tmp_path / "probe.c"), "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=True)
    seen = {(t, f): (int(a), int(b)) for t, f, a, b in (line.split() for line in run.stdout.splitlines())}
    assert seen == expected_layout()


def test_opencl_c_compiler_accepts_the_static_layout_checks(tmp_path):
    clang = next((c for c in ("clang-15", "clang") if shutil.which(c)), None)
    if clang is None:
        pytest.skip("no clang for OpenCL C here (PoCL's package brings clang-15)")
    header = rk.write_header(tmp_path / "messages.h", Everything, Point)
    kernel = tmp_path / "k.cl"
    kernel.write_text('#include "messages.h"\n__kernel void k(__global Everything *e) { e->a_u8 = 1; }\n')
    for std in ("CL1.2", "CL3.0"):
        result = subprocess.run([clang, "-x", "cl", f"-cl-std={std}", "-Xclang", "-finclude-default-header",
                                 "-fsyntax-only", "-I", str(header.parent), str(kernel)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{std}: {result.stderr}"


def test_a_wrong_layout_fails_the_static_checks(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no cc on this machine")
    text = rk.c_header(Point).replace("RK_OFFSETOF(Point, valid) == 8", "RK_OFFSETOF(Point, valid) == 9")
    (tmp_path / "bad.c").write_text(text + "\nint main(void) { return 0; }\n")
    result = subprocess.run(["cc", "-std=c11", "-c", str(tmp_path / "bad.c"), "-o", str(tmp_path / "bad.o")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "Point_valid_offset" in result.stderr


def test_nvcc_accepts_the_static_layout_checks(tmp_path):
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if shutil.which("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    header = rk.write_header(tmp_path / "messages.h", Everything, Point)
    (tmp_path / "k.cu").write_text('#include "messages.h"\n__global__ void k(Everything *e) { e->a_u8 = 1; }\n')
    result = subprocess.run([nvcc, "-c", "-arch=sm_80", "-I", str(header.parent), str(tmp_path / "k.cu"),
                             "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


OPENCL_PROBE = r"""
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <string.h>
static const char *src =
    "#include \"messages.h\"\n"
    "#define F(T, f) out[i++] = RK_OFFSETOF(T, f); out[i++] = sizeof(((T *)0)->f);\n"
    "__kernel void probe(__global ulong *out) {\n"
    "    int i = 0;\n"
    "    out[i++] = sizeof(Everything); out[i++] = 0; out[i++] = sizeof(Point); out[i++] = 0;\n"
    "    FIELDS\n"
    "}\n";
int main(int argc, char **argv) {
    cl_platform_id p; cl_device_id d; cl_uint n = 0; cl_int err;
    if (clGetPlatformIDs(1, &p, &n) != CL_SUCCESS || n == 0) { puts("NO-PLATFORM"); return 3; }
    if (clGetDeviceIDs(p, CL_DEVICE_TYPE_ALL, 1, &d, &n) != CL_SUCCESS || n == 0) { puts("NO-DEVICE"); return 3; }
    cl_context ctx = clCreateContext(NULL, 1, &d, NULL, NULL, &err);
    cl_command_queue q = clCreateCommandQueue(ctx, d, 0, &err);
    cl_program prog = clCreateProgramWithSource(ctx, 1, &src, NULL, &err);
    char opts[4096];
    snprintf(opts, sizeof opts, "%s -I %s", argv[1], argv[2]);
    if (clBuildProgram(prog, 1, &d, opts, NULL, NULL) != CL_SUCCESS) {
        char log[65536]; clGetProgramBuildInfo(prog, d, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
        printf("BUILD-FAILED %s\n", log); return 2;
    }
    cl_ulong host[COUNT];
    cl_mem out = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof host, NULL, &err);
    cl_kernel k = clCreateKernel(prog, "probe", &err);
    clSetKernelArg(k, 0, sizeof out, &out);
    size_t one = 1;
    clEnqueueNDRangeKernel(q, k, 1, NULL, &one, NULL, 0, NULL, NULL);
    clEnqueueReadBuffer(q, out, CL_TRUE, 0, sizeof host, host, 0, NULL, NULL);
    for (int i = 0; i < COUNT; i += 2) printf("%llu %llu\n", (unsigned long long)host[i], (unsigned long long)host[i + 1]);
    return 0;
}
"""


@pytest.mark.parametrize("std", ["-cl-std=CL1.2", "-cl-std=CL3.0"])
def test_opencl_device_agrees_with_the_dtype_at_run_time(tmp_path, std):
    import ctypes.util

    if shutil.which("cc") is None or ctypes.util.find_library("OpenCL") is None:
        pytest.skip("needs cc and an OpenCL ICD loader (ocl-icd-opencl-dev, pocl-opencl-icd)")
    rk.write_header(tmp_path / "messages.h", Everything, Point)
    names = [(cls.__name__, n) for cls in (Everything, Point) for n in cls.dtype.names]
    fields = " ".join(f"F({t}, {n})" for t, n in names)
    src = OPENCL_PROBE.replace("FIELDS", fields).replace("COUNT", str(2 * (len(names) + 2)))
    (tmp_path / "probe.c").write_text(src)
    exe = tmp_path / "probe"
    build = subprocess.run(["cc", "-std=c11", str(tmp_path / "probe.c"), "-o", str(exe), "-lOpenCL"],
                           capture_output=True, text=True)
    if build.returncode != 0 and "CL/cl.h" in build.stderr:
        pytest.skip("no OpenCL headers (opencl-headers)")
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe), std, str(tmp_path)], capture_output=True, text=True, timeout=300)
    if run.returncode == 3:
        pytest.skip(f"no OpenCL device: {run.stdout.strip()}")
    assert run.returncode == 0, run.stdout[-3000:]
    values = [tuple(map(int, line.split())) for line in run.stdout.splitlines()]
    keys = [("Everything", "size"), ("Point", "size")] + names
    assert dict(zip(keys, values)) == expected_layout()


def test_opencl_devices_without_fp64_compile_headers_without_f64(tmp_path):
    clang = next((c for c in ("clang-15", "clang") if shutil.which(c)), None)
    if clang is None:
        pytest.skip("no clang for OpenCL C here (PoCL's package brings clang-15)")

    @rk.message
    class Small:
        n: rk.u32

    def compile_cl(cls):
        rk.write_header(tmp_path / "messages.h", cls)
        kernel = tmp_path / "k.cl"
        kernel.write_text('#include "messages.h"\n__kernel void k(__global int *x) { x[0] = 1; }\n')
        return subprocess.run([clang, "-x", "cl", "-cl-std=CL1.2", "-Xclang", "-finclude-default-header",
                               "-Xclang", "-cl-ext=-cl_khr_fp64", "-fsyntax-only", "-I", str(tmp_path), str(kernel)],
                              capture_output=True, text=True)

    assert compile_cl(Small).returncode == 0, compile_cl(Small).stderr
    failed = compile_cl(Point)
    assert failed.returncode != 0 and "64-bit float fields" in failed.stderr
