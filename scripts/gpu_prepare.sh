#!/usr/bin/env bash
# gpu_prepare.sh — build, on a machine without a GPU (nvcc is enough), everything the GPU check needs
# into one folder, so that the GPU machine (short loans, no network, no GoogleTest) builds and installs
# nothing it cannot: DESIGN.md §14.
#
#   bash scripts/gpu_prepare.sh [BUNDLE]          default BUNDLE: gpu-bundle/ (ignored by git)
#
# What goes in (well under the 64 MiB that travels to a GPU machine):
#   wheel/          the package's wheel, CUDA device code for $CMAKE_CUDA_ARCHITECTURES only (default 90:
#                   H100/H200), for this machine's Python (python.txt says which)
#   build-wheels/   scikit-build-core and pybind11 wheels (pure Python): what gpu_check.sh needs to build the
#                   extension from the tree on the GPU machine when its Python differs (it has cmake, ninja,
#                   nvcc and numpy)
#   bin/            the CUDA ctest binary (GoogleTest linked in) and the CUDA benchmark, libstdc++ and
#                   libgcc linked statically: they need nothing but glibc there
#   include/        the device dialect, for the C++ binaries' runtime-compiled (NVRTC) handlers
#   manifest.txt    which binaries and tests each step of gpu_check.sh runs, with their time limits
#   tests/, bench/, pyproject.toml
#                   the pytest suite, the benchmark scripts and the pytest configuration, as built
#   bundle.txt      commit, date, Python, architectures, nvcc, sizes
#   sources.txt     the fingerprint of the sources it was built from (gpu_check.sh refuses a stale bundle)
#
# Environment: CMAKE_CUDA_ARCHITECTURES (default 90), JOBS (default: all cores), PYTHON (default python3).
# Build trees stay in build/gpu-bundle/ (a second run rebuilds only what changed). Takes about 3-5 minutes
# from scratch on 2 cores. Then, on the GPU machine: bash scripts/gpu_check.sh (README, "Verifying on a GPU").
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
BUNDLE=${1:-gpu-bundle}
mkdir -p "$BUNDLE"
BUNDLE=$(cd "$BUNDLE" && pwd)
PY=${PYTHON:-python3}
ARCH=${CMAKE_CUDA_ARCHITECTURES:-90}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
WORK=$REPO/build/gpu-bundle
t_start=$(date +%s)

say() { printf '\n==== %s\n' "$*"; }
die() { echo "gpu_prepare.sh: $*" >&2; exit 1; }

nvcc=$(command -v nvcc || true)
for c in "${CUDA_HOME:-/nonexistent}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
    [ -z "$nvcc" ] && [ -x "$c" ] && nvcc=$c
done
[ -n "$nvcc" ] || die "nvcc not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin): the bundle needs the CUDA backend compiled"
export CUDACXX=$nvcc
"$PY" -c "import scikit_build_core, pybind11, numpy" 2>/dev/null ||
    die "$PY needs scikit-build-core, pybind11 and numpy (pip install scikit-build-core pybind11 numpy)"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

# Start from an empty bundle (the build trees under build/gpu-bundle stay).
find "$BUNDLE" -mindepth 1 -delete
mkdir -p "$BUNDLE"/{wheel,build-wheels,bin,include,tests}

say "wheel: CUDA architectures '$ARCH', $($PY --version 2>&1)"
CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "$PY" -m pip wheel "$REPO" --no-deps --no-build-isolation -q \
    --disable-pip-version-check -w "$BUNDLE/wheel" \
    -C "build-dir=$WORK/wheel" \
    -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH" \
    -C "cmake.define.RINGKERNEL_ENABLE_CUDA=ON"
ls "$BUNDLE"/wheel/*.whl >/dev/null 2>&1 || die "no wheel was built"
"$PY" - "$BUNDLE"/wheel/*.whl "$REPO/csrc/device" <<'PYEOF'
import os, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
core = [n for n in names if n.startswith("ringkernel/_core")]
held = {os.path.basename(n) for n in names if n.startswith("ringkernel/include/")}
missing = sorted(h for h in os.listdir(sys.argv[2]) if h.endswith(".h") and h not in held)
if not core or missing:
    sys.exit(f"the wheel lacks the extension ({core}) or device-dialect headers: {missing}")
print("wheel holds", core[0], "and the device dialect")
PYEOF
"$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' >"$BUNDLE/python.txt"

say "build-time wheels (to build the extension on the GPU machine for its own Python)"
skb=$("$PY" -c 'import importlib.metadata as m; print(m.version("scikit-build-core"))')
pyb=$("$PY" -c 'import importlib.metadata as m; print(m.version("pybind11"))')
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$BUNDLE/build-wheels" \
    "scikit-build-core==$skb" "pybind11==$pyb" ||
    die "could not fetch the scikit-build-core $skb and pybind11 $pyb wheels (pip download needs PyPI)"
ls "$BUNDLE"/build-wheels

say "C++: the CUDA ctest binary and the CUDA benchmark (architectures '$ARCH', libstdc++ static)"
cmake -S "$REPO" -B "$WORK/cpp" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DRINGKERNEL_ENABLE_CUDA=ON \
    -DRINGKERNEL_BUILD_TESTS=ON -DRINGKERNEL_BUILD_BENCHMARKS=ON -DRINGKERNEL_BUILD_PYTHON=OFF \
    -DRINGKERNEL_INSTALL=OFF -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >"$WORK/cpp-configure.log" 2>&1 ||
    { cat "$WORK/cpp-configure.log"; die "configuring the C++ build failed"; }
cmake --build "$WORK/cpp" -j "$JOBS" --target ringkernel_cuda_kernel ringkernel_bench_cuda
cp "$WORK/cpp/tests/cpp/ringkernel_cuda_kernel" "$WORK/cpp/bench/cpp/ringkernel_bench_cuda" "$BUNDLE/bin/"
for b in "$BUNDLE"/bin/*; do
    # Only the C library and the loader may come from the GPU machine (its glibc is newer than ours).
    extra=$(ldd "$b" | awk '{print $1}' | grep -vE '^(linux-vdso\.so|/lib64/ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so)' || true)
    [ -z "$extra" ] || die "$(basename "$b") needs shared libraries the GPU machine may lack: $extra"
    strip --strip-unneeded "$b"
done
ls -l "$BUNDLE/bin"

say "dialect, tests, benchmark scripts, manifest"
cp -r csrc/device "$BUNDLE/include/device"
mkdir -p "$BUNDLE/include/ringkernel"
cp csrc/include/ringkernel/*.h "$BUNDLE/include/ringkernel/"  # the C headers the dialect includes
mkdir -p "$BUNDLE/tests/python" "$BUNDLE/bench"
cp tests/python/*.py tests/python/*.txt "$BUNDLE/tests/python/"
cp bench/*.py "$BUNDLE/bench/"
cp pyproject.toml "$BUNDLE/"
cp scripts/gpu_manifest.txt "$BUNDLE/manifest.txt"
# Every binary the manifest names is in bin/.
awk '!/^#/ && NF {print $3}' "$BUNDLE/manifest.txt" | sort -u | while read -r bin; do
    [ -x "$BUNDLE/$bin" ] || die "manifest.txt names $bin, which the bundle does not have"
done

bash scripts/gpu_fingerprint.sh >"$BUNDLE/sources.txt"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (+ local changes)"
{
    echo "commit: $commit"
    echo "sources: $(cat "$BUNDLE/sources.txt") (scripts/gpu_fingerprint.sh)"
    echo "built: $(date -u +%FT%TZ) on $(hostname)"
    echo "python: $(cat "$BUNDLE/python.txt") ($(basename "$BUNDLE"/wheel/*.whl))"
    echo "cuda_architectures: $ARCH"
    echo "nvcc: $("$nvcc" --version | tail -n 2 | head -n 1)"
    echo "build_wheels: $(cd "$BUNDLE/build-wheels" && ls | tr '\n' ' ')"
} >"$BUNDLE/bundle.txt"
size_kb=$(du -sk "$BUNDLE" | cut -f1)
echo "size: $((size_kb / 1024)) MiB" >>"$BUNDLE/bundle.txt"
[ "$size_kb" -lt $((64 * 1024)) ] || die "the bundle is $((size_kb / 1024)) MiB; at most 64 MiB travel to a GPU machine"
cat "$BUNDLE/bundle.txt"
echo "prepared $BUNDLE in $(($(date +%s) - t_start)) s; next, on the GPU machine: bash scripts/gpu_check.sh${1:+ --bundle $1}"
