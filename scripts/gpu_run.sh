#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step_* functions are called indirectly, as "step_$name"
# gpu_run.sh — the whole GPU verification run of ringkernel in one command, for a machine with an
# NVIDIA GPU (H100/H200), run from anywhere inside the repository:
#
#   bash scripts/gpu_run.sh              every step, in order
#   bash scripts/gpu_run.sh STEP...      only these steps (or groups), in the order given
#
# Steps (each logs to $OUT/<step>.log; $OUT defaults to ./gpu-out):
#   env          nvidia-smi, nvcc --version, compilers, cmake, python
#   pip          pip install numpy pybind11 scikit-build-core pytest hypothesis msgpack
#                "nvidia-cuda-nvrtc>=13,<14"; offline (no index reachable) it notes what is missing and
#                goes on without failing (the steps that need a missing package fail instead)
#   configure    CMake, Release, into build/gpu: tests on, Python extension on, CUDA required, Google
#                Benchmark benchmarks on when bench/cpp configures (else off). Falls back to Python off,
#                then tests off, so that something still builds; each fallback counts as a failure
#   build        cmake --build build/gpu on all cores
#   ctest        the whole ctest suite, one test at a time (GPU tests must not share the GPU)
#   ctest_cuda   ctest -L cuda alone
#   pytest_cuda  the built extension copied into python/ringkernel, then
#                PYTHONPATH=python pytest -q tests/python -m cuda -rs
#   pytest       the whole tests/python
#   memcheck racecheck synccheck
#                compute-sanitizer --tool <tool> --error-exitcode 1 on
#                build/gpu/tests/cpp/ringkernel_cuda_kernel ($RK_SANITIZER_FILTER: a --gtest_filter)
#   bench        python3 bench/bench_cuda.py (the binary built in build/gpu when there is one;
#                $RK_BENCH_QUICK=1 adds --quick), then bench/results/cuda-*.json copied into $OUT
# Groups: all (the default), setup (env pip configure build), tests (ctest ctest_cuda pytest_cuda
# pytest), sanitizers (memcheck racecheck synccheck).
#
# Every step runs even when an earlier one failed; $OUT/summary.txt lists each step's exit code and
# seconds, and the script exits 1 when any step failed (2 on an unknown step name).
#
# How long: on a 16-core H100 machine roughly 2-5 min for setup (the build dominates: the CUDA kernels
# for sm_80 and sm_90 and the Python extension), 3-8 min for tests, 2-10 min for the sanitizers
# (persistent kernels run far slower under them) and 1-2 min for the benchmark: 10-25 min in all. When
# one command may run at most 10 minutes, run it in parts on the same (warm) machine, for example
#   bash scripts/gpu_run.sh setup; bash scripts/gpu_run.sh tests;
#   bash scripts/gpu_run.sh sanitizers; bash scripts/gpu_run.sh bench
# (build/gpu stays between the calls; each call writes its own $OUT/summary.txt).
# Per-step time limits (seconds) can be changed with RK_STEP_TIMEOUT (applies to every step).
set -u

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.txt"
BUILD=build/gpu
PY=$(command -v python3 || command -v python || echo python3)
JOBS=$(nproc 2>/dev/null || echo 4)
CUDA_TEST_BIN="$BUILD/tests/cpp/ringkernel_cuda_kernel"
FAILED=0
NOTE=""

ALL_STEPS="env pip configure build ctest ctest_cuda pytest_cuda pytest memcheck racecheck synccheck bench"

# `tmo SECONDS CMD...`: CMD under a time limit (RK_STEP_TIMEOUT overrides), when `timeout` exists.
tmo() {
    local secs=${RK_STEP_TIMEOUT:-$1}
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=30 "$secs" "$@"
    else
        "$@"
    fi
}

# nvcc: on PATH, else the usual toolkit places.
find_nvcc() {
    local c
    for c in "$(command -v nvcc 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/nvcc" "${CUDA_PATH:-/nonexistent}/bin/nvcc" \
        /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do
        if [ -n "$c" ] && [ -x "$c" ]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# compute-sanitizer: next to nvcc (also behind a wrapper script), in the toolkit CMake found, or in
# the usual places.
find_sanitizer() {
    local nvcc dirs=() d real
    if nvcc=$(find_nvcc); then
        dirs+=("$(dirname "$nvcc")")
        real=$(readlink -f "$nvcc" 2>/dev/null) && dirs+=("$(dirname "$real")")
        # a wrapper script (exec /path/to/nvcc "$@"): the directory of the nvcc it runs
        real=$(grep -o '/[^ "]*/bin/nvcc' "$nvcc" 2>/dev/null | head -n 1) && [ -n "$real" ] && dirs+=("$(dirname "$real")")
    fi
    d=$(grep -E '^CUDAToolkit_BIN_DIR:' "$BUILD/CMakeCache.txt" 2>/dev/null | cut -d= -f2) && [ -n "$d" ] && dirs+=("$d")
    dirs+=("${CUDA_HOME:-/nonexistent}/bin" /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer)
    for d in /usr/local/cuda-*/bin /usr/local/cuda-*/compute-sanitizer; do dirs+=("$d"); done
    for d in "${dirs[@]}"; do
        for c in "$d/compute-sanitizer" "$d/../compute-sanitizer/compute-sanitizer"; do
            if [ -x "$c" ]; then
                echo "$c"
                return 0
            fi
        done
    done
    command -v compute-sanitizer 2>/dev/null && return 0
    echo "looked in: ${dirs[*]}" >&2
    return 1
}

# ---- the steps (stdout and stderr go to $OUT/<step>.log; NOTE goes into the summary) ----------------

step_env() {
    local rc=0 nvcc
    echo "== date: $(date -u +%FT%TZ); host: $(hostname); kernel: $(uname -r); cores: $JOBS"
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then
        tmo 60 nvidia-smi || rc=1
        tmo 60 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,pci.bus_id --format=csv || true
    else
        echo "nvidia-smi not found"
        rc=1
    fi
    echo "== nvcc --version"
    if nvcc=$(find_nvcc); then
        echo "$nvcc"
        "$nvcc" --version || rc=1
    else
        echo "nvcc not found (PATH, \$CUDA_HOME, /usr/local/cuda*/bin)"
        rc=1
    fi
    echo "== compute-sanitizer: $(find_sanitizer 2>&1)"
    echo "== toolchain"
    cmake --version 2>&1 | head -n 1
    ninja --version 2>&1 | sed 's/^/ninja /'
    c++ --version 2>&1 | head -n 1
    "$PY" --version 2>&1
    "$PY" -m pip --version 2>&1
    [ "$rc" = 0 ] || NOTE="no GPU driver or no nvcc: see env.log"
    return "$rc"
}

step_pip() {
    local pkgs=(numpy pybind11 scikit-build-core pytest hypothesis msgpack "nvidia-cuda-nvrtc>=13,<14")
    local log="$OUT/pip.attempt" missing="" m rc
    if ! "$PY" -m pip --version; then
        echo "pip is not available for $PY"
        NOTE="skipped: no pip"
    else
        tmo 600 "$PY" -m pip install --disable-pip-version-check --retries 1 --timeout 20 "${pkgs[@]}" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        if [ "$rc" != 0 ] && grep -q "externally-managed-environment" "$log"; then
            echo "== the system Python is externally managed: again with --break-system-packages"
            tmo 600 "$PY" -m pip install --disable-pip-version-check --retries 1 --timeout 20 \
                --break-system-packages "${pkgs[@]}" 2>&1 | tee "$log"
            rc=${PIPESTATUS[0]}
        fi
        rm -f "$log"
        [ "$rc" = 0 ] || NOTE="pip install failed (offline?); going on with what is installed"
    fi
    for m in numpy pybind11 pytest hypothesis msgpack; do
        "$PY" -c "import $m" 2>/dev/null || missing="$missing $m"
    done
    if [ -n "$missing" ]; then
        echo "missing Python modules:$missing (the steps needing them will fail)"
        NOTE="${NOTE:+$NOTE; }missing:$missing"
    else
        echo "all Python modules the run needs are importable"
    fi
    return 0
}

step_configure() {
    local gen=() common=() pyb py_exe variant tests python bench first=1
    command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
    # An existing build dir keeps its generator: only name one for a fresh dir.
    [ -f "$BUILD/CMakeCache.txt" ] && gen=()
    py_exe=$("$PY" -c 'import sys; print(sys.executable)' 2>/dev/null) || py_exe=$PY
    common=(-S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DRINGKERNEL_ENABLE_CUDA=ON
        "-DPython_EXECUTABLE=$py_exe")
    if pyb=$("$PY" -m pybind11 --cmakedir 2>/dev/null) && [ -n "$pyb" ]; then
        common+=("-Dpybind11_DIR=$pyb")
    fi
    if ! find_nvcc >/dev/null && [ -z "${CMAKE_CUDA_COMPILER:-}" ]; then
        echo "warning: nvcc not found; configure will fail (RINGKERNEL_ENABLE_CUDA=ON)"
    fi
    # tests python benchmarks: the first that configures wins; benchmarks off is no failure (Google
    # Benchmark and the peer queues are optional here), Python or tests off is.
    for variant in "ON ON ON" "ON ON OFF" "ON OFF OFF" "OFF OFF OFF"; do
        read -r tests python bench <<<"$variant"
        echo "==== configure: tests=$tests python=$python benchmarks=$bench"
        if tmo 600 cmake "${common[@]}" -DRINGKERNEL_BUILD_TESTS="$tests" -DRINGKERNEL_BUILD_PYTHON="$python" \
            -DRINGKERNEL_BUILD_BENCHMARKS="$bench"; then
            NOTE="tests=$tests python=$python benchmarks=$bench"
            if [ "$first" = 1 ] || [ "$variant" = "ON ON OFF" ]; then
                return 0
            fi
            NOTE="$NOTE (fallback: see configure.log)"
            return 1
        fi
        first=0
    done
    NOTE="configure failed in every variant"
    return 1
}

step_build() {
    [ -f "$BUILD/CMakeCache.txt" ] || { echo "$BUILD is not configured"; return 1; }
    tmo 2400 cmake --build "$BUILD" --parallel "$JOBS"
}

step_ctest() {
    [ -d "$BUILD" ] || { echo "$BUILD does not exist"; return 1; }
    # One test at a time: several processes' persistent kernels on one GPU would time-slice.
    tmo 2400 ctest --test-dir "$BUILD" --output-on-failure
}

step_ctest_cuda() {
    [ -d "$BUILD" ] || { echo "$BUILD does not exist"; return 1; }
    local rc
    tmo 1800 ctest --test-dir "$BUILD" --output-on-failure -L cuda
    rc=$?
    # ctest exits 0 when no test carries the label: say so.
    if ! ctest --test-dir "$BUILD" -N -L cuda 2>/dev/null | grep -q "Total Tests: [1-9]"; then
        echo "no ctest test is labelled 'cuda'"
        NOTE="no test labelled cuda"
        return 1
    fi
    # A skipped GPU test passes for ctest; on a GPU machine it means the backend did not come up.
    skipped_note "$OUT/ctest_cuda.log" "(Skipped)"
    return "$rc"
}

# NOTE gets how many lines of LOG contain PATTERN (skipped tests), when any do.
skipped_note() {
    local n
    n=$(grep -cF "$2" "$1" 2>/dev/null) || n=0
    [ "$n" = 0 ] || NOTE="${NOTE:+$NOTE; }$n skipped: see $(basename "$1")"
}

copy_extension() {
    local so="" f
    for f in "$BUILD"/csrc/python/_core*.so; do
        [ -f "$f" ] && so=$f && break
    done
    if [ -z "$so" ]; then
        echo "no built extension $BUILD/csrc/python/_core*.so (configured with the Python extension off?)"
        return 1
    fi
    rm -f python/ringkernel/_core*.so
    cp "$so" python/ringkernel/ && echo "copied $so into python/ringkernel/"
}

# pytest's last line ("N passed, M skipped in T s") into NOTE.
pytest_note() {
    NOTE=$(grep -E '[0-9]+ (passed|failed|skipped|error|deselected)' "$1" 2>/dev/null | tail -n 1 | tr -d '=' | sed 's/^ *//')
}

step_pytest_cuda() {
    local rc
    copy_extension || return 1
    PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" tmo 1800 "$PY" -m pytest -q tests/python -m cuda -rs
    rc=$?
    pytest_note "$OUT/pytest_cuda.log"
    return "$rc"
}

step_pytest() {
    local rc
    copy_extension || return 1
    PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" tmo 2400 "$PY" -m pytest -q tests/python -rs
    rc=$?
    pytest_note "$OUT/pytest.log"
    return "$rc"
}

sanitizer() {
    local tool=$1 cs filter=()
    if ! cs=$(find_sanitizer); then
        echo "compute-sanitizer not found"
        NOTE="compute-sanitizer not found"
        return 1
    fi
    if [ ! -x "$CUDA_TEST_BIN" ]; then
        echo "$CUDA_TEST_BIN is not built"
        NOTE="$CUDA_TEST_BIN not built"
        return 1
    fi
    [ -n "${RK_SANITIZER_FILTER:-}" ] && filter=("--gtest_filter=$RK_SANITIZER_FILTER")
    "$cs" --version
    echo "==== $cs --tool $tool --error-exitcode 1 $CUDA_TEST_BIN ${filter[*]}"
    tmo 1800 "$cs" --tool "$tool" --error-exitcode 1 "$CUDA_TEST_BIN" "${filter[@]}"
}
step_memcheck() { sanitizer memcheck; }
step_racecheck() { sanitizer racecheck; }
step_synccheck() { sanitizer synccheck; }

step_bench() {
    local rc bin="$BUILD/bench/cpp/ringkernel_bench_cuda" quick=() f copied=0
    if [ -x "$bin" ]; then
        export RINGKERNEL_BENCH_CUDA_BINARY="$REPO/$bin"
        echo "using $bin"
    else
        unset RINGKERNEL_BENCH_CUDA_BINARY
        echo "$bin not built (benchmarks off in $BUILD?): bench_cuda.py builds its own"
    fi
    [ "${RK_BENCH_QUICK:-0}" = 1 ] && quick=(--quick)
    # PYTHONPATH=python: bench_python (shared helpers) imports ringkernel; it runs without it too.
    PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}" tmo 1800 "$PY" bench/bench_cuda.py "${quick[@]}"
    rc=$?
    for f in bench/results/cuda-*.json; do
        [ -f "$f" ] || continue
        cp "$f" "$OUT"/ && echo "copied $f" && copied=1
    done
    [ "$copied" = 1 ] || { echo "no bench/results/cuda-*.json"; NOTE="no results written (no GPU?)"; }
    return "$rc"
}

# ---- driver -------------------------------------------------------------------------------------

run_step() {
    local name=$1 t0 t1 rc
    NOTE=""
    t0=$(date +%s)
    echo "==== $name: started $(date -u +%FT%TZ) (log: $OUT/$name.log)"
    "step_$name" >"$OUT/$name.log" 2>&1
    rc=$?
    t1=$(date +%s)
    [ "$rc" = 0 ] || FAILED=1
    printf '%-12s rc=%-3s %5ss  %s\n' "$name" "$rc" "$((t1 - t0))" "$NOTE" | tee -a "$SUMMARY"
}

steps=()
[ $# -eq 0 ] && set -- all
for arg in "$@"; do
    case "$arg" in
    all) read -r -a more <<<"$ALL_STEPS" ;;
    setup) more=(env pip configure build) ;;
    tests) more=(ctest ctest_cuda pytest_cuda pytest) ;;
    sanitizers) more=(memcheck racecheck synccheck) ;;
    env | pip | configure | build | ctest | ctest_cuda | pytest_cuda | pytest | memcheck | racecheck | synccheck | bench)
        more=("$arg") ;;
    -h | --help)
        sed -n '3,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown step '$arg'; steps: $ALL_STEPS; groups: all setup tests sanitizers" >&2
        exit 2
        ;;
    esac
    steps+=("${more[@]}")
done

{
    echo "# ringkernel GPU run $(date -u +%FT%TZ) on $(hostname); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
    echo "# steps: ${steps[*]}"
} >>"$SUMMARY"
for s in "${steps[@]}"; do
    run_step "$s"
done
echo "# done $(date -u +%FT%TZ): $([ "$FAILED" = 0 ] && echo 'every step passed' || echo 'some step FAILED')" | tee -a "$SUMMARY"
echo "summary: $SUMMARY"
exit "$FAILED"
