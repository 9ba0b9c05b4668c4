"""Portable-source (rk.Source) handlers on every backend: compiled at run time, threads cooperating across
barriers, compile errors with their log, the on-disk cache, a missing compiler, argument checks."""

from __future__ import annotations


import pytest

import ringkernel as rk

from kernel_helpers import DOUBLE, REC, rec


# ---- portable source ------------------------------------------------------------------------------------


BLOCK_SUM = r"""
typedef struct { rk_u64 seq; rk_f64 value; } rec;
int block_sum(rk_ctx *ctx, RK_GLOBAL const void *in, RK_LOCAL void *out) {
    RK_LOCAL rk_f64 *part = (RK_LOCAL rk_f64 *)rk_shared(ctx);
    rk_u32 t = rk_thread_rank(ctx), n = rk_thread_count(ctx);
    part[t] = ((RK_GLOBAL const rec *)in)->value * (t + 1);
    rk_barrier(ctx);
    for (rk_u32 s = 1; s < n; s *= 2) {         /* tree reduction across the block */
        rk_f64 mine = (t % (2 * s) == 0 && t + s < n) ? part[t + s] : 0.0;
        rk_barrier(ctx);
        part[t] += mine;
        rk_barrier(ctx);
    }
    if (t == 0) {
        ((RK_LOCAL rec *)out)->seq = ((RK_GLOBAL const rec *)in)->seq;
        ((RK_LOCAL rec *)out)->value = part[0];
    }
    return RK_REPLY;
}
"""


def test_source_handler(rt):
    k = rt.launch("twice", rk.Source(DOUBLE, entry="twice"), input=REC)
    k.activate()
    k.send(rec(4, 1.25))
    r = k.receive(timeout=5)
    assert r["seq"] == 4 and r["value"] == 2.5


def test_source_handler_threads_cooperate_across_barriers(rt):
    k = rt.launch("sum", rk.Source(BLOCK_SUM, entry="block_sum"), input=REC, block=16)
    k.activate()
    for i in range(10):
        k.send(rec(i, 1.0))
        r = k.receive(timeout=5)
        assert r["seq"] == i and r["value"] == sum(range(1, 17))


def test_source_compile_error_carries_the_log(rt):
    # gcc and clang say "undeclared"; NVRTC says "identifier ... is undefined"; PoCL's clang "undeclared".
    with pytest.raises(rk.CompileError, match="undeclared|undefined") as info:
        rt.launch("bad", rk.Source("int h(rk_ctx *c, const void *i, void *o) { return missing_thing; }",
                                   entry="h"), input=REC)
    assert "missing_thing" in str(info.value)
    assert "bad.in" not in rt.queue_names()


def test_source_cache_is_reused(rt, tmp_path):
    if rt.backend != "cpu":
        pytest.skip("the on-disk cache belongs to the CPU backend's host compiler; device programs are cached "
                    "per runtime in memory")
    # A source no earlier test compiled (a module loaded in this process would be reused without the disk).
    source = DOUBLE + f"/* {tmp_path.name} */\n"
    with rk.Runtime(rt.backend, cache_dir=str(tmp_path)) as r2:
        r2.launch("one", rk.Source(source, entry="twice"), input=REC)
        files = sorted(p.name for p in tmp_path.iterdir())
        r2.launch("two", rk.Source(source, entry="twice"), input=REC)
        assert sorted(p.name for p in tmp_path.iterdir()) == files and len(files) == 1


def test_no_compiler_is_a_clear_error(backend):
    if backend != "cpu":
        pytest.skip("the host C compiler is the CPU backend's")
    with rk.Runtime(backend, compiler="/nonexistent/cc") as runtime:
        with pytest.raises(rk.CompileError, match="/nonexistent/cc"):
            runtime.launch("x", rk.Source(DOUBLE, entry="twice"), input=REC)


def test_source_argument_checks():
    with pytest.raises(TypeError):
        rk.Source("")
    with pytest.raises(ValueError, match="identifier"):
        rk.Source("int x;", entry="not valid")
