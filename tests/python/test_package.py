"""The package as users meet it: imports, public names, stubs, errors, CLI and demo."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ringkernel as rk
from ringkernel import _core

HERE = Path(__file__).parent


def test_public_names_are_exported_and_exist():
    for name in rk.__all__:
        assert hasattr(rk, name), name
    for name in ["Queue", "LaunchOptions", "Backpressure", "HlcClock", "HlcTimestamp", "backends", "RingKernelError",
                 "BackendUnavailableError", "LifecycleError", "MessageFormatError", "CompileError",
                 "TelemetryNotEnabledError", "KernelFaultError", "ClockSkewError"]:
        assert name in rk.__all__, name


def test_extension_is_private_and_typed():
    assert rk.Queue.__module__.startswith("ringkernel")
    package = Path(rk.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_core.pyi").exists()
    assert rk.__version__ == _core.build_info()["version"]


@pytest.mark.parametrize("name", ["BackendUnavailableError", "LifecycleError", "MessageFormatError", "CompileError",
                                  "TelemetryNotEnabledError", "KernelFaultError", "ClockSkewError"])
def test_errors_derive_from_ringkernelerror(name):
    cls = getattr(rk, name)
    assert issubclass(cls, rk.RingKernelError) and issubclass(rk.RingKernelError, Exception)
    with pytest.raises(rk.RingKernelError):
        raise cls("boom")


def test_backends_never_raise_and_explain_unavailability():
    infos = rk.backends()
    names = [b.name for b in infos]
    assert names[0] == "cpu" and infos[0].available
    assert {"cuda", "opencl"} <= set(names)
    for b in infos:
        assert isinstance(b.detail, str) and b.detail
        if not b.available:
            assert "not implemented" in b.detail or "unavailable" in b.detail


def test_import_does_not_load_a_gpu_driver():
    code = ("import ringkernel, sys; maps = open('/proc/self/maps').read(); "
            "bad = [lib for lib in ('libcuda.so', 'libOpenCL.so', 'libnvrtc') if lib in maps]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stubs_match_the_extension():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install .[test] installs it)")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "ringkernel._core", "--allowlist", str(HERE / "stubtest_allowlist.txt")],
        capture_output=True, text=True, timeout=300, cwd=str(HERE.parent.parent / "tests"),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringkernel", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_runs_and_shows_each_part():
    result = run_cli("demo", "--messages", "50000")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "50000 of 50000 records arrived, sum of sequence numbers correct" in out
    for part in ["vector_add ring kernel", "100 elements buffers DIVIDE", "strictly increasing", "all checks passed",
                 "backends", "BLOCK", "REJECT", "DROP_OLDEST", "DROP_NEW", "received in order [1, 3, 2, 0]",
                 "is refused", "high_throughput"]:
        assert part in out, part


def test_cli_backends_and_version():
    result = run_cli("backends")
    assert result.returncode == 0 and result.stdout.startswith("cpu")
    result = run_cli("version")
    assert result.returncode == 0 and rk.__version__ in result.stdout


def test_cli_rejects_bad_arguments():
    result = run_cli("demo", "--messages", "0")
    assert result.returncode == 2 and "--messages must be >= 1" in result.stderr


@pytest.mark.skipif(shutil.which("ringkernel") is None, reason="console script not on PATH (not installed by pip)")
def test_console_script_is_installed():
    result = subprocess.run(["ringkernel", "version"], capture_output=True, text=True, timeout=60, env=os.environ)
    assert result.returncode == 0 and rk.__version__ in result.stdout


def test_readme_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tour writes messages.h
    readme = (HERE.parent.parent / "README.md").read_text()
    kernels = readme.split("```python\n", 1)[1].split("```", 1)[0]  # the ring-kernel tour runs as written
    exec(compile(kernels, "README.md", "exec"), {})
    code = readme.split("## Queues, messages, clocks: a short tour", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    *body, last = code.strip().splitlines()
    assert "queue_capacity=1000" in last  # the tour ends by showing a validation error
    exec(compile("\n".join(body), "README.md", "exec"), {})
    assert "typedef struct Order" in (tmp_path / "messages.h").read_text()
    with pytest.raises(ValueError, match="queue_capacity must be a power of two"):
        exec(compile(last, "README.md", "exec"), {"rk": rk})


def test_readme_python_handler_example_runs():
    pytest.importorskip("numba", reason="rk.jit needs Numba (pip install 'pyringkernel[jit]')")
    readme = (HERE.parent.parent / "README.md").read_text()
    code = readme.split("## Writing handlers in Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    with rk.Runtime("cpu") as rt:
        scope = {"rk": rk, "rt": rt}
        exec(compile(code, "README.md", "exec"), scope)
        k = scope["k"]
        k.activate()
        k.send(scope["Req"](seq=4, x=1.25))
        r = k.receive(timeout=5)
        assert (r.seq, r.x) == (4, 2.5)
