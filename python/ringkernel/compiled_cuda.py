"""rk.jit handlers on the CUDA backend: ``rt.launch(name, handler)`` on a cuda runtime compiles the handler for
its GPU (``rt.device_target``), and ``handler.compile("cuda", arch="sm_90")`` does it ahead of time, without one.

The same Python function becomes a device function linked into the persistent CUDA kernel:

1. **The bridge** (why it exists): numba-cuda compiles C-ABI device functions whose arguments are scalars
   and pointers to scalars, but not pointers to record types (``'ArrayType' object has no attribute
   'is_opaque'`` inside numba-cuda 0.30, with either ABI), and ``numba.carray`` is not available on the CUDA
   target; calling one numba-cuda device function from another needs a current device, and this runs
   without a GPU. So the handler's source is rewritten (its AST) into the C-ABI entry itself,
   ``rk_jit_entry(ctx, out, <one typed pointer per field>)`` (the request's, the reply's, and for a handler
   with ``state=`` the state record's, in the kernel's state): ``msg.x`` reads ``msg__x[0]``, a fixed array
   ``out.v`` is a 1-d view of its elements, ``thread_rank()``/``thread_count()`` are
   ``threadIdx.x``/``blockDim.x``, ``return cond`` returns 1 (reply) or 0, and an explicit ``raise``
   returns RK_ERR_HANDLER (numba-cuda has no exceptions there).
2. **Checks** (numba-cuda has no bounds checking and no exceptions): indexes into fields' arrays and buffer
   views go through helpers (compiled_cuda_glue) that touch no memory outside the array and leave an error
   code instead; the rewrite returns that code after the statement, so the message fails (counted in
   ``errors``, ``last_error`` RK_ERR_HANDLER, RK_ERR_BUFFER or RK_ERR_CHANNEL) and nothing is written out of
   range -- the CPU backend's IndexError, as a code. ``emit(channel, out)`` and ``buffer(handle, count,
   dtype)`` call two C functions of the shim (``rk_jit_emit``, ``rk_jit_buffer``: the dialect's
   rk_emit/rk_deliver and rk_buffer). On CUDA, emit sends the output record ``out`` (the CPU also takes
   other records of the output type); division by zero follows numba-cuda's numpy error model (inf, nan,
   0), not an error; try/except, slices and whole-record values are rk.CompileError.
3. **The kernel**: NVRTC compiles the device dialect's persistent kernel (``rk_persistent``, as for an
   ``rk.Source``) around a shim handler that calls ``rk_jit_entry`` with the field pointers of the request
   and reply records, to LTO-IR (``-dlto``).
4. **The link**: nvJitLink (wheel ``nvidia-nvjitlink``) links both LTO-IRs for the device's arch into a
   cubin, cached on disk (``jit/cuda-<key>.cubin`` in the handler cache) under a key of the handler's
   source, the constants it reads, its record types, the arch, the dialect's headers and the tools'
   versions. The CUDA backend loads it as a handler image (C++ ``Handler::image``).

Needs numba-cuda, cuda-bindings (NVRTC, nvJitLink) and NVRTC's and nvJitLink's libraries: the ``[cuda]``
extra. Running needs a GPU (scripts/gpu_check.sh runs the cuda cases of tests/python/test_jit.py).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import inspect
import os
import re
import textwrap
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np

from . import _core
from .compiled_cuda_glue import ERR_HANDLER, glue

_ARCH = re.compile(r"^sm_(\d+)(\d)a?$")  # sm_90: 9.0, sm_120: 12.0
_BRIDGE = 3  # the shape of rk_jit_entry and the shim; part of the cache key


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


def _name(id: str) -> ast.Name:
    return ast.Name(id=id, ctx=ast.Load())


def _call(fn: str, args: list) -> ast.Call:
    return ast.Call(func=_name(fn), args=args, keywords=[])


def _guard() -> ast.If:
    """After a statement whose helpers may have failed: return the error code they left."""
    bad = ast.Subscript(value=_name("__rk_bad"), slice=ast.Constant(0), ctx=ast.Load())
    return ast.If(test=bad, body=[ast.Return(value=bad)], orelse=[])


class _Rewrite(ast.NodeTransformer):
    """The handler's body in terms of the entry's parameters and the device-side helpers (compiled_cuda_glue):
    fields through their pointers, indexes into fields' arrays and buffer views checked, emit/buffer through
    the shim, and a guard after every statement whose helpers can fail."""

    def __init__(self, handler: str, params: Tuple[str, ...], fields: dict):
        self.handler, self.params, self.fields = handler, params, fields
        self.checked = {f"{side}__{name}" for side in params for name, count in fields[side].items() if count}
        self.hits = 0  # helper calls so far that can fail
        self.temps = 0

    def _err(self, node: ast.AST, text: str) -> Exception:
        return _core.CompileError(f"rk.jit handler '{self.handler}' (line {getattr(node, 'lineno', '?')}): {text}")

    # -- statements --------------------------------------------------------------------------------------
    def block(self, stmts: list) -> list:
        out = []
        for stmt in stmts:
            before = self.hits
            r = self.visit(stmt)
            out.extend(r if isinstance(r, list) else [r])
            if self.hits != before and not isinstance(stmt, (ast.Return, ast.Raise)):
                out.append(_guard())
        return out

    def _compound(self, node: Any, heads: Tuple[str, ...]) -> Any:
        before = self.hits
        for field in heads:
            setattr(node, field, self.visit(getattr(node, field)))
        head_can_fail = self.hits != before
        node.body = ([_guard()] if head_can_fail else []) + self.block(node.body)
        node.orelse = self.block(node.orelse)
        return node

    def visit_For(self, node: ast.For) -> Any:
        return self._compound(node, ("target", "iter"))

    def visit_While(self, node: ast.While) -> Any:
        return self._compound(node, ("test",))

    def visit_If(self, node: ast.If) -> Any:
        return self._compound(node, ("test",))

    def _is_checked(self, value: ast.AST) -> bool:
        """Whether a (rewritten) expression is an array whose indexes are checked: a field's array, a buffer
        view (buffer(...) itself, or a name bound to one)."""
        if isinstance(value, ast.Name):
            return value.id in self.checked
        return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "__rk_buffer"

    def _checked_target(self, target: ast.AST) -> Any:
        """(array, index) of a store into a checked array, else None (and the target is left as it was)."""
        if not isinstance(target, ast.Subscript):
            return None
        before = self.hits
        value = self.visit(copy.deepcopy(target.value))
        if not self._is_checked(value):
            self.hits = before  # the target is visited again, as it is, by the caller
            return None
        if isinstance(target.slice, (ast.Slice, ast.Tuple)):
            raise self._err(target, "on CUDA arrays are written one element at a time (a[i] = v)")
        return value, self.visit(target.slice)

    def _scratch(self, node: ast.Assign) -> Any:
        """``name = np.zeros(n, dtype)`` / ``np.empty``: a thread-local array on CUDA (numba-cuda allocates no
        numpy arrays in device code), zeroed either way; n must be a constant (a literal or a module
        constant). Its indexes are checked like a field's array."""
        v = node.value
        if not (len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and isinstance(v, ast.Call)
                and isinstance(v.func, ast.Attribute) and v.func.attr in ("zeros", "empty")
                and isinstance(v.func.value, ast.Name) and v.func.value.id in ("np", "numpy")):
            return None
        kw = {k.arg: k.value for k in v.keywords}
        if len(v.args) + len(kw) > 2 or set(kw) - {"shape", "dtype"} or not (v.args or "shape" in kw):
            raise self._err(node, f"on CUDA np.{v.func.attr} takes (n, dtype): a one-dimensional scratch array")
        shape = v.args[0] if v.args else kw["shape"]
        dtype = v.args[1] if len(v.args) > 1 else kw.get("dtype", ast.parse("np.float64", mode="eval").body)
        name = node.targets[0].id
        self.checked.add(name)
        self.temps += 1
        i = f"__rk_t{self.temps}"
        local = ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                           value=ast.Call(func=ast.parse("__rk_cuda.local.array", mode="eval").body,
                                          args=[self.visit(shape), self.visit(dtype)], keywords=[]))
        zero = ast.parse(f"for {i} in range(len({name})):\n    {name}[{i}] = 0").body[0]
        return [ast.copy_location(local, node), ast.copy_location(zero, node)]

    def visit_Assign(self, node: ast.Assign) -> Any:
        scratch = self._scratch(node)
        if scratch is not None:
            return scratch
        if len(node.targets) == 1:
            store = self._checked_target(node.targets[0])
            if store is not None:
                self.hits += 1
                value = self.visit(node.value)
                return ast.copy_location(ast.Expr(value=_call("__rk_store", [*store, value, _name("__rk_bad")])), node)
        node = self.generic_visit(node)
        if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and self._is_checked(node.value):
            self.checked.add(node.targets[0].id)  # a buffer view or another name for a checked array
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> Any:
        store = self._checked_target(node.target)
        if store is None:
            return self.generic_visit(node)
        self.hits += 1
        arr, index = store
        value = self.visit(node.value)
        pre = []
        if not isinstance(index, (ast.Name, ast.Constant)):  # evaluated once, as Python does
            self.temps += 1
            tmp = f"__rk_t{self.temps}"
            pre.append(ast.copy_location(ast.Assign(targets=[ast.Name(id=tmp, ctx=ast.Store())], value=index), node))
            index = _name(tmp)
        current = _call("__rk_load", [arr, index, _name("__rk_bad")])
        new = ast.BinOp(left=current, op=node.op, right=value)
        return pre + [ast.copy_location(ast.Expr(value=_call("__rk_store", [arr, index, new, _name("__rk_bad")])), node)]

    def visit_Return(self, node: ast.Return) -> Any:
        # True/False becomes the C entry's 1 (reply) or 0 (no reply), unless a helper failed on the way.
        value = self.visit(node.value) if node.value is not None else ast.Constant(False)
        self.temps += 1
        tmp = f"__rk_t{self.temps}"
        keep = ast.Assign(targets=[ast.Name(id=tmp, ctx=ast.Store())],
                          value=ast.IfExp(test=value, body=ast.Constant(1), orelse=ast.Constant(0)))
        bad = ast.Subscript(value=_name("__rk_bad"), slice=ast.Constant(0), ctx=ast.Load())
        ret = ast.Return(value=ast.IfExp(test=bad, body=bad, orelse=_name(tmp)))
        return [ast.copy_location(keep, node), ast.copy_location(ret, node)]

    def visit_Raise(self, node: ast.Raise) -> Any:
        # numba-cuda has no exceptions in C-ABI device functions: an explicit raise fails the message.
        return ast.copy_location(ast.Return(value=ast.Constant(ERR_HANDLER)), node)

    def visit_Try(self, node: ast.AST) -> Any:
        raise self._err(node, "try/except is not available in CUDA compiled handlers (numba-cuda has no exceptions "
                              "there); a raise fails the message")

    # -- expressions --------------------------------------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id in self.params:
            side = node.value.id
            if node.attr not in self.fields[side]:
                what = ("input", "output", "state")[self.params.index(side)]
                raise self._err(node, f"the {what} record has no field {node.attr!r} (its fields: "
                                      f"{', '.join(self.fields[side])})")
            ref = _name(f"{side}__{node.attr}")
            if self.fields[side][node.attr] == 0:  # a scalar: element 0 of its pointer
                return ast.copy_location(ast.Subscript(value=ref, slice=ast.Constant(0), ctx=node.ctx), node)
            return ast.copy_location(ref, node)  # an array: the view the prologue made
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        value = self.visit(node.value)
        if self._is_checked(value):
            if not isinstance(node.ctx, ast.Load):
                raise self._err(node, "on CUDA an array element is written by a statement of its own (a[i] = v, "
                                      "a[i] += v)")
            if isinstance(node.slice, (ast.Slice, ast.Tuple)):
                raise self._err(node, "on CUDA arrays are read one element at a time (a[i])")
            self.hits += 1
            return ast.copy_location(_call("__rk_load", [value, self.visit(node.slice), _name("__rk_bad")]), node)
        node.value = value
        node.slice = self.visit(node.slice)
        return node

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in self.params:
            raise self._err(node, f"on CUDA a record is used through its fields ({node.id}.<field>), not as a whole "
                                  f"(emit(channel, {self.params[1]}) is the one exception)")
        return node

    def visit_Call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Name):
            fn = node.func.id
            if fn in ("thread_rank", "thread_count") and not node.args:
                dim = "threadIdx" if fn == "thread_rank" else "blockDim"
                return ast.copy_location(ast.parse(f"__rk_cuda.{dim}.x", mode="eval").body, node)
            if fn == "emit":
                if len(node.args) != 2 or node.keywords:
                    raise self._err(node, "emit takes (channel, record)")
                rec = node.args[1]
                if not (isinstance(rec, ast.Name) and rec.id == self.params[1]):
                    raise self._err(node, f"on CUDA emit sends the output record: emit(channel, {self.params[1]})")
                self.hits += 1
                chan = _call("__rk_channel", [self.visit(node.args[0]), _name("__rk_bad")])
                return ast.copy_location(_call("__rk_emit", [_name("__rk_ctx"), chan, _name("__rk_out")]), node)
            if fn == "buffer":
                if len(node.args) != 3 or node.keywords:
                    raise self._err(node, "buffer takes (handle, count, dtype)")
                self.hits += 1
                args = [self.visit(a) for a in node.args]
                return ast.copy_location(_call("__rk_buffer", [_name("__rk_ctx"), *args, _name("__rk_bad")]), node)
        return self.generic_visit(node)


def _rewritten(handler: Any, fin: list, fout: list, fstate: list) -> str:
    """The handler's source as the C-ABI entry rk_jit_entry(ctx, out, <a pointer per field>): the request's
    fields, the reply's, then (a handler with state) the state record's."""
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
    names = tuple(a.arg for a in fdef.args.args)  # (msg, out) or (msg, out, state)
    sides = list(zip(names, (fin, fout, fstate)))
    fields = {side: {f[0]: f[3] for f in fs} for side, fs in sides}
    body = _Rewrite(handler.__name__, names, fields).block(fdef.body)
    params, prologue = ["__rk_ctx", "__rk_out"], [
        "__rk_bad = __rk_cuda.local.array(1, __rk_i32)",
        "__rk_bad[0] = 0",
    ]
    for side, fs in sides:
        for name, _, _, count in fs:
            if count:  # a fixed array: a view of its elements, so that indexes into it are checked
                params.append(f"{side}__{name}__p")
                prologue.append(f"{side}__{name} = __rk_ptr_view({side}__{name}__p, {count})")
            else:
                params.append(f"{side}__{name}")
    fdef.name = "rk_jit_entry"  # the handler itself, inlined: numba-cuda compiles one C-ABI function
    fdef.args = ast.arguments(posonlyargs=[], args=[ast.arg(arg=p) for p in params], kwonlyargs=[],
                              kw_defaults=[], defaults=[])
    fdef.body = [ast.parse(line).body[0] for line in prologue] + body + [ast.Return(value=ast.Constant(0))]
    return ast.unparse(ast.fix_missing_locations(fdef))


def _shim(fin: list, fout: list, fstate: list) -> str:
    """CUDA C: the handler that hands rk_jit_entry the field pointers (request, reply, and the state record's
    in the kernel's state, rk_state), the helpers emit() and buffer() reach, and the persistent kernel."""
    def ctype(dt: np.dtype) -> str:
        return {"b": "signed char", "u1": "unsigned char", "i1": "signed char", "u2": "unsigned short",
                "i2": "short", "u4": "unsigned int", "i4": "int", "u8": "unsigned long long", "i8": "long long",
                "f4": "float", "f8": "double"}[dt.kind + str(dt.itemsize) if dt.kind != "b" else "b"]
    decl = ["unsigned long long", "unsigned long long"]
    decl += [f"const {ctype(f[1])} *" for f in fin] + [f"{ctype(f[1])} *" for f in fout + fstate]
    args = ["(unsigned long long)ctx", "(unsigned long long)out"]
    args += [f"(const {ctype(f[1])} *)(i + {f[2]})" for f in fin] + [f"({ctype(f[1])} *)(o + {f[2]})" for f in fout]
    args += [f"({ctype(f[1])} *)(s + {f[2]})" for f in fstate]
    return ("// generated by ringkernel: an rk.jit handler for the CUDA backend\n"
            '#include "rk_builtins.h"\n'
            f'extern "C" __device__ int rk_jit_entry({", ".join(decl)});\n'
            "// emit(channel, out): channel 0 is the main output (thread 0 sends), 1..7 the named channels;\n"
            "// 8 is what the handler passes for a channel out of range (it has failed the message already).\n"
            'extern "C" __device__ int rk_jit_emit(unsigned long long ctx, unsigned int channel, '
            "unsigned long long record) {\n"
            "    rk_ctx *c = (rk_ctx *)ctx;\n"
            "    if (channel >= RK_MAX_CHANNELS) return RK_ERR_CHANNEL;\n"
            "    if (channel == 0) return c->thread_rank == 0 ? rk_deliver(c, 0, (const void *)record) : 0;\n"
            "    return rk_emit(c, channel, (const void *)record);\n"
            "}\n"
            "// buffer(handle, count, dtype): the address of at least `bytes` bytes behind handle, or 0.\n"
            'extern "C" __device__ unsigned long long rk_jit_buffer(unsigned long long ctx, unsigned long long handle, '
            "unsigned long long bytes) {\n"
            "    return (unsigned long long)rk_buffer((const rk_ctx *)ctx, handle, bytes);\n"
            "}\n"
            "RK_FN int rk_jit_handler(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {\n"
            "    const unsigned char *i = (const unsigned char *)in;\n"
            "    unsigned char *o = (unsigned char *)out;\n"
            + ("    unsigned char *s = (unsigned char *)rk_state(ctx);  /* launched with the handler's state type */\n"
               if fstate else "") +
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


def _cache_key(handler: Any, arch: str) -> str:
    """What the linked cubin depends on: the handler (its CPU key: source, constants, types, versions), the
    arch, the dialect's headers and the CUDA tools' versions."""
    import importlib.metadata as md

    h = hashlib.sha256()
    parts = [_BRIDGE, handler._key(), arch]
    for dist in ("numba-cuda", "nvidia-nvjitlink", "cuda-bindings"):
        try:
            parts.append(f"{dist}={md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist}=?")
    for d in _include_dirs():
        for f in sorted(Path(d).rglob("*.h")):
            parts.append(f"{f.relative_to(d)}:{hashlib.sha256(f.read_bytes()).hexdigest()}")
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def compile_cuda(handler: Any, arch: Any) -> Any:
    """The handler linked into the persistent CUDA kernel for ``arch``: an rk.CompiledHandler (cubin).
    Cached on disk next to the CPU entries (jit/cuda-<key>.cubin): a second process loads the cubin."""
    from .compiled import CompiledHandler, _cache_dir

    major, minor = parse_arch(arch)
    try:
        from numba import cuda, types
        import numba
    except ImportError as e:
        raise ImportError("compiling rk.jit handlers for CUDA needs numba-cuda: pip install 'pyringkernel[cuda]'") from e
    fin = _fields(handler.input_dtype, "input")
    fout = _fields(handler.output_dtype, "output")
    fstate = [] if handler.state_dtype is None else _fields(handler.state_dtype, "state")
    entry_src = _rewritten(handler, fin, fout, fstate)  # CompileErrors of the bridge come first, cached or not
    path = _cache_dir() / f"cuda-{_cache_key(handler, arch)}.cubin"
    if path.is_file():
        cubin = path.read_bytes()
        if cubin[:4] == b"\x7fELF":
            return CompiledHandler("cuda", arch, "rk_persistent", cubin, f"loaded from {path}",
                                   handler.__name__, handler.input, handler.output, handler.state)
    scope = dict(handler.py_func.__globals__)
    scope.update(glue())
    try:
        exec(compile(entry_src, f"<rk.jit {handler.__name__} for CUDA>", "exec"), scope)
        ptr = [types.uint64, types.uint64]
        ptr += [types.CPointer(numba.from_dtype(f[1])) for f in fin + fout + fstate]
        ltoir, _ = cuda.compile(scope["rk_jit_entry"], types.int32(*ptr), device=True, abi="c",
                                abi_info={"abi_name": "rk_jit_entry"}, output="ltoir", cc=(major, minor))
    except Exception as e:  # whatever numba-cuda raises while compiling is the handler's error
        text = str(e).strip()
        if type(e).__name__ == "CudaSupportError":
            # numba-cuda compiles some functions (np.zeros, calls of @cuda.jit device functions) through a
            # dispatcher that asks a GPU for its architecture: not available to a handler compiled here.
            text = ("it calls a function numba-cuda compiles only with a GPU present (numpy calls that allocate, "
                    "@cuda.jit device functions); scratch arrays are written `name = np.zeros(N, dtype)` with a "
                    f"constant N, which becomes a thread-local array ({text.splitlines()[0] if text else type(e).__name__})")
        exc = _core.CompileError(f"rk.jit handler '{handler.__name__}' did not compile for CUDA ({arch}):\n{text}")
        exc.log = text
        raise exc from None
    kernel, nvrtc_log = _nvrtc_ltoir(_shim(fin, fout, fstate), arch)
    cubin, link_log = _link([(bytes(ltoir), "handler.ltoir"), (kernel, "kernel.ltoir")], arch)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(cubin)
    os.replace(tmp, path)  # atomic: a process loading it sees all or nothing
    return CompiledHandler("cuda", arch, "rk_persistent", cubin, "\n".join(x for x in (nvrtc_log, link_log) if x),
                           handler.__name__, handler.input, handler.output, handler.state)
