"""rk.jit handlers for the CUDA backend, ahead of time: ``handler.compile("cuda", arch="sm_90")``.

The same Python function becomes a device function linked into the persistent CUDA kernel:

1. **The bridge** (why it exists): numba-cuda compiles C-ABI device functions whose arguments are scalars
   and pointers to scalars, but not pointers to record types (``'ArrayType' object has no attribute
   'is_opaque'`` inside numba-cuda 0.30, with either ABI), and ``carray`` is not available on the CUDA
   target. So the handler's source is rewritten (its AST) to take one typed pointer per field: ``msg.x``
   reads ``msg__x[0]``, ``out.v[i] = ...`` writes ``out__v[i]``, and ``thread_rank()``/``thread_count()``
   become ``cuda.threadIdx.x``/``cuda.blockDim.x``, and ``return cond`` returns 1 (reply) or 0: the
   handler itself becomes the C-ABI entry ``rk_jit_entry(msg__a, ..., out__a, ...)`` (numba-cuda needs a
   current device to call one device function from another, and this runs without a GPU). Scalar fields and one-dimensional fixed arrays are supported; ``emit`` and
   ``buffer`` are not on CUDA yet (rk.CompileError says so).
2. **The kernel**: NVRTC compiles the device dialect's persistent kernel (``rk_persistent``, as for an
   ``rk.Source``) around a shim handler that calls ``rk_jit_entry`` with the field pointers of the request
   and reply records, to LTO-IR (``-dlto``).
3. **The link**: nvJitLink (wheel ``nvidia-nvjitlink``) links both LTO-IRs for the device's arch into a cubin.

Running the result needs a GPU (scripts/gpu_check.sh); compiling needs none. Needs numba-cuda,
cuda-bindings (NVRTC, nvJitLink) and NVRTC's and nvJitLink's libraries: the ``[cuda]`` extra.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np

from . import _core

_ARCH = re.compile(r"^sm_(\d)(\d+)a?$")
_HELPERS_REFUSED = ("emit", "buffer")


def parse_arch(arch: Any) -> Tuple[int, int]:
    """(major, minor) of an ``sm_XY`` name; ValueError naming the valid form otherwise."""
    m = _ARCH.match(arch) if isinstance(arch, str) else None
    if not m or int(m.group(1)) < 7:
        raise ValueError(f"arch must name a real GPU architecture 'sm_XY' of compute capability 7.0 or later "
                         f"(e.g. 'sm_80', 'sm_90', 'sm_100'), got {arch!r}")
    return int(m.group(1)), int(m.group(2))


def _fields(dt: np.dtype, side: str) -> List[Tuple[str, np.dtype, int, int]]:
    """(name, element dtype, offset, count) per field; CompileError for what the bridge cannot pass."""
    out = []
    for name in dt.names:
        ft, offset = dt.fields[name][0], dt.fields[name][1]
        base, shape = (ft.subdtype if ft.subdtype else (ft, ()))
        if base.fields is not None or base.kind not in "biuf" or len(shape) > 1:
            raise _core.CompileError(f"the {side} field {name!r} ({ft}) cannot be passed to a CUDA compiled handler: "
                                     "scalar numbers and one-dimensional arrays of them only (on the CPU backend "
                                     "every field works)")
        if offset % base.itemsize:
            raise _core.CompileError(f"the {side} field {name!r} at offset {offset} is not aligned to its "
                                     f"{base.itemsize}-byte type, which a GPU cannot read in place: declare the "
                                     "message with aligned fields (@rk.message lays them out aligned)")
        out.append((name, base, offset, int(np.prod(shape)) if shape else 0))
    return out


class _Rewrite(ast.NodeTransformer):
    def __init__(self, handler: str, params: Tuple[str, str], fields: dict):
        self.handler, self.params, self.fields = handler, params, fields

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id in self.params:
            side = node.value.id
            if node.attr not in self.fields[side]:
                raise _core.CompileError(f"rk.jit handler '{self.handler}' (line {node.lineno}): the "
                                         f"{'input' if side == self.params[0] else 'output'} record has no field "
                                         f"{node.attr!r} (its fields: {', '.join(self.fields[side])})")
            ref = ast.Name(id=f"{side}__{node.attr}", ctx=ast.Load())
            if self.fields[side][node.attr] == 0:  # a scalar: element 0 of its pointer
                return ast.copy_location(ast.Subscript(value=ref, slice=ast.Constant(0), ctx=node.ctx), node)
            return ast.copy_location(ref, node)
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in self.params:
            raise _core.CompileError(f"rk.jit handler '{self.handler}' (line {node.lineno}): on CUDA a record is "
                                     f"used through its fields ({node.id}.<field>), not as a whole")
        return node

    def visit_Return(self, node: ast.Return) -> Any:
        # True/False becomes the C entry's 1 (reply) or 0 (no reply).
        value = self.visit(node.value) if node.value is not None else ast.Constant(False)
        test = ast.IfExp(test=value, body=ast.Constant(1), orelse=ast.Constant(0))
        return ast.copy_location(ast.Return(value=test), node)

    def visit_Call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Name):
            if node.func.id in ("thread_rank", "thread_count") and not node.args:
                dim = "threadIdx" if node.func.id == "thread_rank" else "blockDim"
                return ast.copy_location(ast.parse(f"__rk_cuda.{dim}.x", mode="eval").body, node)
            if node.func.id in _HELPERS_REFUSED:
                raise _core.CompileError(f"rk.jit handler '{self.handler}' (line {node.lineno}): "
                                         f"{node.func.id}() is not available to CUDA compiled handlers yet (CPU only); "
                                         "an rk.Source handler has rk_emit and rk_buffer on every backend")
        return self.generic_visit(node)


def _rewritten(handler: Any, fin: list, fout: list) -> Tuple[str, List[str]]:
    """The handler's source as the C-ABI entry: a pointer per field, 1/0 for True/False."""
    fn = handler.py_func
    if fn.__closure__:
        raise _core.CompileError(f"rk.jit handler '{handler.__name__}' uses variables of an enclosing function "
                                 "(a closure), which the CUDA bridge cannot carry: use module-level constants")
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise _core.CompileError(f"rk.jit handler '{handler.__name__}': its source is needed to compile it for "
                                 f"CUDA and cannot be read ({e})") from None
    tree = ast.parse(src)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise _core.CompileError(f"rk.jit handler '{handler.__name__}' must be a def (not a lambda) for CUDA")
    fdef.decorator_list = []
    msg, out = (a.arg for a in fdef.args.args)
    fields = {msg: {f[0]: f[3] for f in fin}, out: {f[0]: f[3] for f in fout}}
    fdef = _Rewrite(handler.__name__, (msg, out), fields).visit(fdef)
    params = [f"{msg}__{f[0]}" for f in fin] + [f"{out}__{f[0]}" for f in fout]
    fdef.name = "rk_jit_entry"  # the handler itself, inlined: numba-cuda compiles one C-ABI function
    fdef.args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], kwonlyargs=[],
                              kw_defaults=[], defaults=[])
    fdef.body.append(ast.Return(value=ast.Constant(0)))  # falling off the end: no reply
    return ast.unparse(ast.fix_missing_locations(fdef)), params


def _shim(fin: list, fout: list) -> str:
    """CUDA C: the handler that hands rk_jit_entry the field pointers, and the persistent kernel."""
    def ctype(dt: np.dtype) -> str:
        return {"b": "signed char", "u1": "unsigned char", "i1": "signed char", "u2": "unsigned short",
                "i2": "short", "u4": "unsigned int", "i4": "int", "u8": "unsigned long long", "i8": "long long",
                "f4": "float", "f8": "double"}[dt.kind + str(dt.itemsize) if dt.kind != "b" else "b"]
    decl = [f"const {ctype(f[1])} *" for f in fin] + [f"{ctype(f[1])} *" for f in fout]
    args = [f"(const {ctype(f[1])} *)(i + {f[2]})" for f in fin] + [f"({ctype(f[1])} *)(o + {f[2]})" for f in fout]
    return ("// generated by ringkernel: an rk.jit handler for the CUDA backend\n"
            '#include "rk_builtins.h"\n'
            f'extern "C" __device__ int rk_jit_entry({", ".join(decl)});\n'
            "RK_FN int rk_jit_handler(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {\n"
            "    (void)ctx;\n"
            "    const unsigned char *i = (const unsigned char *)in;\n"
            "    unsigned char *o = (unsigned char *)out;\n"
            f"    return rk_jit_entry({', '.join(args)});\n"
            "}\n"
            "RK_DEFINE_BLOCK_STEP(rk_cuda_step, rk_jit_handler)\n"
            "RK_DEFINE_CUDA_KERNEL(rk_persistent, rk_cuda_step)\n")


def _include_dirs() -> List[str]:
    """The device dialect's folders, as the runtime finds them (the package's include/, else the build's)."""
    pkg = Path(__file__).resolve().parent / "include"
    return _core.dialect_include_dirs([str(pkg)] if (pkg / "rk_kernel.h").is_file() else [])


def _ok(result: Any, what: str) -> Any:
    """cuda.bindings calls return (error, value...): the value, or CompileError naming the call."""
    err, *rest = result
    if int(err) != 0:
        raise _core.CompileError(f"{what} failed ({err})")
    return rest[0] if rest else None


def _nvrtc_ltoir(source: str, arch: str) -> Tuple[bytes, str]:
    from cuda.bindings import nvrtc

    prog = _ok(nvrtc.nvrtcCreateProgram(source.encode(), b"ringkernel-jit.cu", 0, [], []), "nvrtcCreateProgram")
    opts = [f"--gpu-architecture={arch}", "-dlto", "--relocatable-device-code=true", "--std=c++17",
            "--device-as-default-execution-space", "-DRK_NVRTC=1"] + [f"--include-path={d}" for d in _include_dirs()]
    try:
        rc = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        size = _ok(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, buf)
        log = buf.decode(errors="replace").rstrip("\0 ")
        if int(rc[0]) != 0:
            raise _core.CompileError(f"NVRTC did not compile the CUDA kernel of an rk.jit handler ({arch}):\n{log}")
        n = _ok(nvrtc.nvrtcGetLTOIRSize(prog), "nvrtcGetLTOIRSize")
        data = b" " * n
        _ok(nvrtc.nvrtcGetLTOIR(prog, data), "nvrtcGetLTOIR")
        return data, log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _link(parts: List[Tuple[bytes, str]], arch: str) -> Tuple[bytes, str]:
    from cuda.bindings import nvjitlink

    handle = nvjitlink.create(2, [f"-arch={arch}", "-lto"])
    try:
        for data, name in parts:
            nvjitlink.add_data(handle, nvjitlink.InputType.LTOIR, data, len(data), name)
        try:
            nvjitlink.complete(handle)
        except nvjitlink.nvJitLinkError as e:
            size = nvjitlink.get_error_log_size(handle)
            log = bytearray(size)
            nvjitlink.get_error_log(handle, log)
            raise _core.CompileError(f"nvJitLink did not link the rk.jit handler ({arch}): {e}\n"
                                     f"{log.decode(errors='replace')}") from None
        size = nvjitlink.get_linked_cubin_size(handle)
        cubin = bytearray(size)
        nvjitlink.get_linked_cubin(handle, cubin)
        isize = nvjitlink.get_info_log_size(handle)
        info = bytearray(isize)
        if isize:
            nvjitlink.get_info_log(handle, info)
        return bytes(cubin), info.decode(errors="replace").rstrip("\0")
    finally:
        nvjitlink.destroy(handle)


def compile_cuda(handler: Any, arch: Any) -> Any:
    """The handler linked into the persistent CUDA kernel for ``arch``: an rk.CompiledHandler (cubin)."""
    from .compiled import CompiledHandler

    major, minor = parse_arch(arch)
    try:
        from numba import cuda, types
        import numba
    except ImportError as e:
        raise ImportError("compiling rk.jit handlers for CUDA needs numba-cuda: pip install 'pyringkernel[cuda]'") from e
    fin = _fields(handler.input_dtype, "input")
    fout = _fields(handler.output_dtype, "output")
    entry_src, _ = _rewritten(handler, fin, fout)
    scope = dict(handler.py_func.__globals__)
    scope["__rk_cuda"] = cuda
    try:
        exec(compile(entry_src, f"<rk.jit {handler.__name__} for CUDA>", "exec"), scope)
        ptr = [types.CPointer(numba.from_dtype(f[1])) for f in fin] + [types.CPointer(numba.from_dtype(f[1])) for f in fout]
        ltoir, _ = cuda.compile(scope["rk_jit_entry"], types.int32(*ptr), device=True, abi="c",
                                abi_info={"abi_name": "rk_jit_entry"}, output="ltoir", cc=(major, minor))
    except numba.core.errors.NumbaError as e:
        exc = _core.CompileError(f"rk.jit handler '{handler.__name__}' did not compile for CUDA ({arch}):\n{e}")
        exc.log = str(e)
        raise exc from None
    kernel, nvrtc_log = _nvrtc_ltoir(_shim(fin, fout), arch)
    cubin, link_log = _link([(bytes(ltoir), "handler.ltoir"), (kernel, "kernel.ltoir")], arch)
    return CompiledHandler("cuda", arch, "rk_persistent", cubin, "\n".join(x for x in (nvrtc_log, link_log) if x))
