"""scripts/gpu_check.sh, the one-call GPU run (DESIGN.md §14), on this machine: its arguments, and that a
step which hangs is killed at its limit while the run goes on and stays within its budget. The run against
a real bundle (scripts/gpu_prepare.sh, then --dry-run) is a step of tests/run_all.sh."""

from __future__ import annotations

import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(not CHECK.is_file(), reason="runs from a checkout (scripts/ is not installed)")


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_bad_arguments_are_refused_with_the_reason(tmp_path):
    out = run("--bundle", str(tmp_path / "none"))
    assert out.returncode == 2 and "no bundle at" in out.stderr and "gpu_prepare.sh" in out.stderr
    out = run("--frobnicate")
    assert out.returncode == 2 and "unknown argument '--frobnicate'" in out.stderr
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.txt").write_text("")
    out = run("--bundle", str(tmp_path / "b"), "--budget", "ten")
    assert out.returncode == 2 and "--budget must be whole seconds" in out.stderr
    out = run("--help")
    assert out.returncode == 0 and "--dry-run" in out.stdout and "summary.txt" in out.stdout


def fingerprint() -> str:
    return subprocess.run(["bash", str(REPO / "scripts" / "gpu_fingerprint.sh")], capture_output=True, text=True,
                          check=True).stdout.strip()


def fake_bundle(root: Path, hang_s: int, limit_s: int) -> Path:
    """A bundle whose ctest binary hangs: no wheel, so install fails fast; bench and sanitizers absent."""
    b = root / "bundle"
    (b / "bin").mkdir(parents=True)
    (b / "wheel").mkdir()
    (b / "build-wheels").mkdir()
    (b / "python.txt").write_text("3.99\n")
    (b / "bundle.txt").write_text("commit: fake\npython: 3.99 (none)\n")
    (b / "sources.txt").write_text(fingerprint() + "\n")  # built from this very tree
    hang = b / "bin" / "hang"
    hang.write_text(f"#!/bin/sh\necho '[==========] Running 1 test'\nsleep {hang_s}\n")
    hang.chmod(0o755)
    (b / "manifest.txt").write_text(f"# a hung test binary\nctest {limit_s} bin/hang\n")
    return b


def dry_run(bundle: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """gpu_check.sh --dry-run on `bundle`, its output in tmp_path/out."""
    return run("--dry-run", "--bundle", str(bundle), *args,
               env={"OUT": str(tmp_path / "out"), "RK_GPU_WORK": str(tmp_path / "work"), "PYTHON": "python3"})


def test_a_hung_step_is_killed_at_its_limit_and_the_run_goes_on(tmp_path):
    bundle = fake_bundle(tmp_path, hang_s=600, limit_s=4)
    out_dir = tmp_path / "out"
    t0 = time.monotonic()
    out = dry_run(bundle, tmp_path, "--only", "ctest", "--budget", "60")
    took = time.monotonic() - t0
    assert out.returncode == 1, out.stdout + out.stderr
    assert took < 40, f"the hung binary held the run for {took:.0f} s"
    summary = (out_dir / "summary.txt").read_text()
    lines = {line.split()[0]: line for line in summary.splitlines() if line and not line.startswith("#")}
    assert set(lines) == {"env", "install", "ctest"}  # --only: env and install always run
    assert "rc=0" in lines["env"] and "rc=1" in lines["install"]
    assert "rc=124" in lines["ctest"]  # killed at the manifest's 4 s limit
    assert "some step FAILED" in summary
    with tarfile.open(out_dir / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("ctest.log") for n in names) and any(n.endswith("summary.txt") for n in names)
    ctest_log = tarfile.open(out_dir / "logs.tar.gz").extractfile(
        next(n for n in names if n.endswith("ctest.log"))).read().decode()
    assert "killed at the step's limit" in ctest_log
    assert len(list(out_dir.iterdir())) <= 8  # what comes back from a GPU machine: at most 8 files


def test_the_budget_caps_every_step(tmp_path):
    # A budget smaller than the ctest line's own limit: the step gets what is left after env and install.
    bundle = fake_bundle(tmp_path, hang_s=600, limit_s=300)
    out_dir = tmp_path / "out"
    t0 = time.monotonic()
    out = dry_run(bundle, tmp_path, "--only", "ctest", "--budget", "15")
    assert out.returncode == 1
    assert time.monotonic() - t0 < 35
    assert "rc=124" in next(line for line in (out_dir / "summary.txt").read_text().splitlines()
                            if line.startswith("ctest"))


def test_a_bundle_built_from_other_sources_is_refused(tmp_path):
    bundle = fake_bundle(tmp_path, hang_s=0, limit_s=5)
    (bundle / "sources.txt").write_text("0123456789abcdef\n")
    out_dir = tmp_path / "out"
    out = dry_run(bundle, tmp_path, "--only", "env", "--budget", "60")
    assert out.returncode == 1
    env_line = next(line for line in (out_dir / "summary.txt").read_text().splitlines() if line.startswith("env"))
    assert "rc=1" in env_line and "STALE BUNDLE" in env_line and "0123456789abcdef" in env_line


def test_the_fingerprint_covers_the_sources_and_not_the_scripts(tmp_path):
    # A copy of the tree without git gives the same fingerprint as the checkout (what travels to a GPU machine).
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("needs a git checkout to list the files that travel")
    copy = tmp_path / "copy"
    for name in files.stdout.splitlines():
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes((REPO / name).read_bytes())
    def fp(root: Path) -> str:
        return subprocess.run(["bash", str(root / "scripts" / "gpu_fingerprint.sh")], capture_output=True, text=True,
                              check=True).stdout.strip()
    base = fp(copy)
    assert base == fingerprint() and len(base) == 16
    (copy / "scripts" / "gpu_check.sh").write_text("# edited between two GPU calls\n")
    assert fp(copy) == base
    (copy / "csrc" / "device" / "rk_kernel.h").write_text("/* changed */\n")
    assert fp(copy) != base
