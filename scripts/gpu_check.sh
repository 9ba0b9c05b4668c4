#!/usr/bin/env bash
# shellcheck disable=SC2317  # the step_* functions are called indirectly, as "step_$name"
# gpu_check.sh — the GPU verification run of ringkernel in one call, on a machine with an NVIDIA GPU, from
# the bundle scripts/gpu_prepare.sh built (DESIGN.md §14). Nothing is fetched; the only thing built there
# is the Python extension, and only when the GPU machine's Python differs from the bundle's.
#
#   bash scripts/gpu_check.sh [options]            from the repository root (or anywhere inside it)
#
#   --bundle DIR   the bundle (default: gpu-bundle)
#   --dry-run      on a machine without a GPU: every step that needs none, against the bundle (the wheel
#                  installs, the binaries start and report no CUDA device, pytest collects the cuda tests,
#                  the sanitizer filters match tests, the benchmark reports no GPU), so the real run will
#                  not trip over a path or a missing file
#   --rebuild      build the extension from the tree even when the bundle's wheel fits this Python
#   --full         a long-lived GPU box: the whole pytest suite, synccheck too, limits x6 (budget 60 min)
#   --budget S     seconds for the whole run (default 450; --full 3600)
#   --only A,B     only these steps (env and install always run)
#
# Steps, each under its own time limit (its LIMIT, cut to what the budget leaves after reserving the
# minimum of the steps still to come), killed at that limit with everything it started, the next one
# running regardless:
#   env        nvidia-smi, the driver (>= 580 for this build's static CUDA 13 runtime), nvcc, Python, tools
#   install    pip install --no-deps --no-index the bundle's wheel (or one built here for this Python,
#              sm_90, all cores: its time is in the summary); ringkernel imports and rk.backends() has cuda
#   ctest      the CUDA ctest binary of the manifest (GoogleTest linked in); a GPU test that skips fails
#   pytest     pytest -m cuda (test_cuda.py, the backend-parametrised runtime suite on cuda, and rk.jit handlers
#              compiled for the GPU and run on it: test_jit.py)
#   memcheck   compute-sanitizer --tool memcheck on the manifest's focused tests
#   racecheck  compute-sanitizer --tool racecheck on the manifest's focused tests
#   synccheck  (--full only) compute-sanitizer --tool synccheck
#   bench      bench/bench_cuda.py --quick with the bundle's binary: its JSON goes to $OUT
#
# Output in $OUT (default ./gpu-out), at most 8 files: summary.txt (one line a step: rc, seconds, note),
# the bench JSON (cuda-*.json) and logs.tar.gz (every step's log, the JUnit XML). Exit 0 when every step
# passed, 1 otherwise, 2 on bad arguments or a missing bundle.
set -u

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
BUNDLE=gpu-bundle
DRY=0
REBUILD=0
FULL=0
BUDGET=""
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --bundle) BUNDLE=${2:?--bundle needs a directory}; shift ;;
    --dry-run) DRY=1 ;;
    --rebuild) REBUILD=1 ;;
    --full) FULL=1 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --only) ONLY=${2:?--only needs step names}; shift ;;
    -h | --help) sed -n '3,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$BUDGET" in '' | *[!0-9]*) [ -n "$BUDGET" ] && { echo "--budget must be whole seconds, got '$BUDGET'" >&2; exit 2; } ;; esac
[ -d "$BUNDLE" ] && [ -f "$BUNDLE/manifest.txt" ] ||
    { echo "gpu_check.sh: no bundle at '$BUNDLE' (run scripts/gpu_prepare.sh first, and carry it)" >&2; exit 2; }
BUNDLE=$(cd "$BUNDLE" && pwd)
[ -z "$BUDGET" ] && { [ "$FULL" = 1 ] && BUDGET=3600 || BUDGET=450; }
SCALE=1
[ "$FULL" = 1 ] && SCALE=6

OUT=${OUT:-$REPO/gpu-out}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${RK_GPU_WORK:-/tmp/rk-gpu-check}
rm -rf "$WORK"
mkdir -p "$WORK/logs" "$WORK/cache" || exit 2
LOGS=$WORK/logs
SUMMARY=$OUT/summary.txt
PY=${PYTHON:-python3}
JOBS=$(nproc 2>/dev/null || echo 4)
ARCH=${CMAKE_CUDA_ARCHITECTURES:-90}
T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
FAILED=0
NOTE=""

# What the C++ binaries and the Python package need wherever they run.
export RINGKERNEL_INCLUDE_DIR="$BUNDLE/include/device:$BUNDLE/include"
export RINGKERNEL_CACHE_DIR="$WORK/cache"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1

# name  LIMIT_S  MINIMUM_S (reserved while the step is still to come)
STEPS="env 30 10
install 240 60
ctest 150 30
pytest 150 40
memcheck 75 25
racecheck 75 25
synccheck 75 25
bench 90 30"

selected() {
    local s=$1
    [ "$s" = synccheck ] && [ "$FULL" = 0 ] && return 1
    [ -z "$ONLY" ] || [ "$s" = env ] || [ "$s" = install ] || [[ ",$ONLY," == *",$s,"* ]]
}

# ---- helpers -----------------------------------------------------------------------------------------

now() { date +%s; }
note() { NOTE="${NOTE:+$NOTE; }$*"; }

# `lim CMD...`: CMD under what is left of the step's limit (or of RUN_DEADLINE, when a caller set a shorter
# one), killed with its children at the end of it.
lim() {
    local left=$((${RUN_DEADLINE:-$STEP_DEADLINE} - $(now)))
    if [ "$left" -le 1 ]; then
        echo "!! no time left in this step for: $*"
        return 124
    fi
    timeout --kill-after=5 "$left" "$@"
    local rc=$?
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "!! killed at the step's limit ($left s left when it started): $*"
    return "$rc"
}

find_sanitizer() {
    local d c
    for d in "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/nvcc)")" \
        "${CUDA_HOME:-/nonexistent}/bin" /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer /usr/local/cuda-*/bin; do
        for c in "$d/compute-sanitizer" "$d/../compute-sanitizer/compute-sanitizer"; do
            [ -x "$c" ] && { echo "$c"; return 0; }
        done
    done
    command -v compute-sanitizer 2>/dev/null
}

# The manifest's lines for a step: "LIMIT BINARY ARGS..." each.
manifest() { awk -v s="$1" '!/^#/ && $1 == s { $1 = ""; sub(/^ +/, ""); print }' "$BUNDLE/manifest.txt"; }

# gtest's closing counts from a log into NOTE; sets GT_PASSED, GT_SKIPPED, GT_FAILED.
gtest_counts() {
    GT_PASSED=$(grep -oE '^\[  PASSED  \] [0-9]+' "$1" | tail -n 1 | grep -oE '[0-9]+$' || true)
    GT_SKIPPED=$(grep -oE '^\[  SKIPPED \] [0-9]+' "$1" | tail -n 1 | grep -oE '[0-9]+$' || true)
    GT_FAILED=$(grep -oE '^\[  FAILED  \] [0-9]+ test' "$1" | tail -n 1 | grep -oE '^\[  FAILED  \] [0-9]+' | grep -oE '[0-9]+$' || true)
    GT_PASSED=${GT_PASSED:-0} GT_SKIPPED=${GT_SKIPPED:-0} GT_FAILED=${GT_FAILED:-0}
}

# ---- the steps (output goes to $LOGS/<step>.log; NOTE goes into the summary) --------------------------

step_env() {
    local rc=0 drv major built here_fp
    echo "== $(date -u +%FT%TZ) on $(hostname); kernel $(uname -r); $JOBS cores; dry run: $DRY"
    echo "== bundle"; cat "$BUNDLE/bundle.txt"
    echo "== tree: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')"
    # The bundle must be built from these very sources (a stale one would test old binaries).
    built=$(cat "$BUNDLE/sources.txt" 2>/dev/null || echo none)
    here_fp=$(lim bash "$REPO/scripts/gpu_fingerprint.sh" || echo unknown)
    if [ "$built" != "$here_fp" ]; then
        echo "!! the bundle was built from sources $built, the tree here is $here_fp: run scripts/gpu_prepare.sh again"
        note "STALE BUNDLE (built from $built, tree is $here_fp): run gpu_prepare.sh again"
        rc=1
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        lim nvidia-smi </dev/null || rc=1
        lim nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,pci.bus_id,compute_mode --format=csv </dev/null || rc=1
        drv=$(lim nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null </dev/null | head -n 1 | tr -d ' ')
        major=${drv%%.*}
        if [ -z "$major" ] || ! [ "$major" -ge 580 ] 2>/dev/null; then
            echo "!! driver '$drv': this build links the CUDA 13 runtime statically, which needs driver >= 580"
            note "driver $drv < 580 (CUDA 13 runtime needs >= 580)"
            rc=1
        else
            note "$(lim nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader </dev/null | head -n 1), driver $drv"
        fi
    elif [ "$DRY" = 1 ]; then
        note "dry run: no nvidia-smi here"
    else
        echo "!! nvidia-smi not found"
        note "no nvidia-smi"
        rc=1
    fi
    echo "== nvcc: $(command -v nvcc || echo 'not on PATH')"; lim nvcc --version 2>&1 </dev/null | tail -n 2
    echo "== compute-sanitizer: $(find_sanitizer || echo 'not found')"
    echo "== $("$PY" --version 2>&1) at $(command -v "$PY"); cmake: $(lim cmake --version 2>&1 </dev/null | head -n 1); ninja: $(lim ninja --version 2>&1 </dev/null)"
    # What the steps need from this Python: pip (install), numpy and pytest; hypothesis for --full.
    local mods="numpy, pytest, pip"
    [ "$FULL" = 1 ] && mods="$mods, hypothesis"
    lim "$PY" -c "import $mods; print('numpy', numpy.__version__, 'pytest', pytest.__version__, 'pip', pip.__version__)" </dev/null ||
        { note "$PY lacks one of: $mods"; rc=1; }
    lim "$PY" -c 'import cupy; print("cupy", cupy.__version__)' 2>&1 </dev/null | tail -n 1
    return "$rc"
}

step_install() {
    local want have wheel t0 rc
    want=$(cat "$BUNDLE/python.txt")
    have=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    wheel=$(ls "$BUNDLE"/wheel/*.whl 2>/dev/null | head -n 1)
    if [ "$want" != "$have" ] || [ "$REBUILD" = 1 ] || [ -z "$wheel" ]; then
        echo "== the bundle's wheel is for Python $want, this is $have (or --rebuild): building the extension here"
        if [ -z "${CUDACXX:-}" ]; then
            CUDACXX=$(command -v nvcc || true)
            [ -z "$CUDACXX" ] && [ -x /usr/local/cuda/bin/nvcc ] && CUDACXX=/usr/local/cuda/bin/nvcc
            export CUDACXX
        fi
        lim "$PY" -m pip install -q --no-deps --no-index --no-compile --disable-pip-version-check \
            --target "$WORK/buildsite" "$BUNDLE"/build-wheels/*.whl || { note "build-time wheels did not install"; return 1; }
        t0=$(now)
        # From the tree, architectures $ARCH alone, every core, nothing fetched (no build isolation).
        PYTHONPATH="$WORK/buildsite${PYTHONPATH:+:$PYTHONPATH}" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
            lim "$PY" -m pip wheel "$REPO" --no-deps --no-index --no-build-isolation --disable-pip-version-check \
            -w "$WORK/wheel" -C "build-dir=$WORK/build" -C "cmake.define.CMAKE_CUDA_ARCHITECTURES=$ARCH" \
            -C "cmake.define.RINGKERNEL_ENABLE_CUDA=ON"
        rc=$?
        [ "$rc" = 0 ] || { note "building the extension for Python $have failed after $(($(now) - t0)) s"; return 1; }
        note "extension built here for Python $have in $(($(now) - t0)) s"
        wheel=$(ls "$WORK"/wheel/*.whl | head -n 1)
    fi
    echo "== installing $wheel"
    lim "$PY" -m pip install -q --no-deps --no-index --no-compile --disable-pip-version-check \
        --target "$WORK/site" "$wheel" || { note "pip install of the wheel failed"; return 1; }
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    # shellcheck disable=SC2016
    lim "$PY" -c '
import sys, ringkernel as rk
print("ringkernel", rk.__version__, "from", rk.__file__)
for b in rk.backends():
    print(f"  {b.name:7s} available={b.available}  {b.detail}")
cuda = {b.name: b for b in rk.backends()}["cuda"]
dry = sys.argv[1] == "1"
if not cuda.available and not dry:
    sys.exit("the cuda backend is not available: " + cuda.detail)
if dry and "this build has no CUDA" in cuda.detail:
    sys.exit("the wheel was built without the CUDA backend: " + cuda.detail)
' "$DRY" >"$WORK/backends.txt" 2>&1
    rc=$?
    cat "$WORK/backends.txt"
    [ "$rc" = 0 ] || { note "$(tail -n 1 "$WORK/backends.txt")"; return 1; }
    # NVRTC for the C++ binaries too: where the package finds it (the nvidia-cuda-nvrtc wheel), unless set.
    if [ -z "${RINGKERNEL_NVRTC_LIBRARY:-}" ]; then
        RINGKERNEL_NVRTC_LIBRARY=$(lim "$PY" -c 'import os, ringkernel; print(os.environ.get("RINGKERNEL_NVRTC_LIBRARY", ""))' </dev/null)
        export RINGKERNEL_NVRTC_LIBRARY
    fi
    echo "== NVRTC for the C++ binaries: ${RINGKERNEL_NVRTC_LIBRARY:-the one of the toolkit, found by the backend}"
    [ -n "$NOTE" ] || note "bundle wheel for Python $have"
    return 0
}

# Run one manifest line's binary with gtest; $1 = "LIMIT BINARY ARGS...", $2 = a wrapper (sanitizer) or "".
run_gtest() {
    local line=$1 wrapper=$2 limit bin args log rc
    read -r limit bin args <<<"$line"
    local RUN_DEADLINE=$(($(now) + limit * SCALE))
    [ "$RUN_DEADLINE" -gt "$STEP_DEADLINE" ] && RUN_DEADLINE=$STEP_DEADLINE
    log="$LOGS/$(basename "$bin")-$CURRENT.out"
    # shellcheck disable=SC2086  # args: gtest flags from the manifest, split on purpose
    if [ -n "$wrapper" ]; then
        lim $wrapper "$BUNDLE/$bin" $args --gtest_output="xml:$LOGS/$CURRENT.xml" </dev/null 2>&1 | tee "$log"
    else
        lim "$BUNDLE/$bin" $args --gtest_output="xml:$LOGS/$CURRENT.xml" </dev/null 2>&1 | tee "$log"
    fi
    rc=${PIPESTATUS[0]}
    gtest_counts "$log"
    note "$GT_PASSED passed, $GT_SKIPPED skipped, $GT_FAILED failed"
    if [ "$rc" = 0 ] && [ "$DRY" = 0 ] && [ "$GT_SKIPPED" != 0 ]; then
        echo "!! $GT_SKIPPED test(s) skipped on a GPU machine: the CUDA backend did not come up"
        grep -A1 "Skipped" "$log" | head -n 20
        rc=1
    fi
    if [ "$rc" = 0 ] && [ "$GT_PASSED$GT_SKIPPED" = 00 ]; then
        echo "!! the binary ran no test (a filter that matches nothing passes in gtest)"; rc=1
    fi
    return "$rc"
}

step_ctest() {
    local line rc=0 r
    while read -r line; do
        [ -n "$line" ] || continue
        run_gtest "$line" "" || { r=$?; [ "$rc" = 0 ] && rc=$r; }
    done < <(manifest ctest)
    return "$rc"
}

sanitizer() {
    local tool=$1 cs line rc=0 r bin limit args n
    cs=$(find_sanitizer)
    while read -r line; do
        [ -n "$line" ] || continue
        read -r limit bin args <<<"$line"
        if [ "$DRY" = 1 ]; then
            # shellcheck disable=SC2086
            n=$(lim "$BUNDLE/$bin" $args --gtest_list_tests </dev/null | grep -c '^  ' || true)
            echo "$bin $args: the filter selects $n test(s); compute-sanitizer: ${cs:-not found here}"
            note "dry run: filter selects $n test(s)"
            [ "$n" -gt 0 ] || rc=1
            continue
        fi
        [ -n "$cs" ] || { note "compute-sanitizer not found"; return 1; }
        lim "$cs" --version </dev/null | tail -n 1
        # Instrumented kernels run far slower: the backend's and the tests' deadlines stretch.
        RINGKERNEL_CUDA_TIMEOUT_SCALE=20 run_gtest "$line" \
            "$cs --tool $tool --error-exitcode 1 --print-limit 20 --launch-timeout 60" || { r=$?; [ "$rc" = 0 ] && rc=$r; }
    done < <(manifest "$tool")
    return "$rc"
}
step_memcheck() { sanitizer memcheck; }
step_racecheck() { sanitizer racecheck; }
step_synccheck() { sanitizer synccheck; }

step_pytest() {
    # The cuda cases (test_cuda.py and the backend-parametrised suite, across its files), or everything (--full).
    local rc marks=(-m cuda) extra=() files=(tests/python)
    [ "$FULL" = 1 ] && marks=()
    cd "$BUNDLE" || return 1
    if [ "$DRY" = 1 ]; then
        lim "$PY" -m pytest -q -p no:cacheprovider --collect-only "${marks[@]}" "${files[@]}" </dev/null 2>&1 | tee "$LOGS/pytest-collect.out"
        rc=${PIPESTATUS[0]}
        local n
        n=$(grep -oE '^[0-9]+(/[0-9]+)? tests? collected' "$LOGS/pytest-collect.out" | grep -oE '^[0-9]+' | head -n 1)
        note "dry run: ${n:-0} cuda tests collected"
        [ "$rc" = 0 ] && [ "${n:-0}" -ge 40 ] || { echo "!! expected >= 40 cuda tests"; rc=1; }
        cd "$REPO" || return 1
        return "$rc"
    fi
    "$PY" -c 'import pytest_timeout' 2>/dev/null && extra=(--timeout=$((90 * SCALE)))
    lim "$PY" -m pytest -q -rs -p no:cacheprovider "${marks[@]}" "${extra[@]}" -o faulthandler_timeout=$((60 * SCALE)) \
        --durations=15 --junitxml="$LOGS/pytest.xml" "${files[@]}" </dev/null 2>&1 | tee "$LOGS/pytest.out"
    rc=${PIPESTATUS[0]}
    note "$(grep -E '[0-9]+ (passed|failed|error)' "$LOGS/pytest.out" | tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//')"
    if grep -q "backend cuda unavailable here" "$LOGS/pytest.out"; then
        echo "!! cuda tests skipped because the backend was unavailable"
        rc=1
    fi
    # The compiled-handler (rk.jit) cases need Numba, numba-cuda and nvJitLink in this Python.
    if grep -qE "rk.jit needs Numba|compiling for CUDA needs numba-cuda|linking for CUDA needs nvJitLink" "$LOGS/pytest.out"; then
        echo "!! rk.jit cuda tests skipped: this Python lacks numba, numba-cuda or nvidia-nvjitlink (carry their wheels)"
        rc=1
    fi
    cd "$REPO" || return 1
    return "$rc"
}

step_bench() {
    local line limit bin args rc f copied=0
    line=$(manifest bench | head -n 1)
    read -r limit bin args <<<"$line"
    [ -x "$BUNDLE/$bin" ] || { note "no benchmark binary in the bundle"; return 1; }
    local RUN_DEADLINE=$(($(now) + limit * SCALE))
    [ "$RUN_DEADLINE" -gt "$STEP_DEADLINE" ] && RUN_DEADLINE=$STEP_DEADLINE
    mkdir -p "$WORK/bench"
    RINGKERNEL_BENCH_CUDA_BINARY="$BUNDLE/$bin" lim "$PY" "$BUNDLE/bench/bench_cuda.py" --quick --out "$WORK/bench" </dev/null
    rc=$?
    for f in "$WORK"/bench/cuda-*.json; do
        [ -f "$f" ] || continue
        cp "$f" "$OUT/" && echo "wrote $OUT/$(basename "$f")" && copied=1
    done
    if [ "$copied" = 0 ]; then
        if [ "$DRY" = 1 ]; then
            note "dry run: no GPU, nothing written (as expected)"
        else
            note "no results written"
            rc=1
        fi
    else
        note "$(cd "$OUT" && ls cuda-*.json | tr '\n' ' ')"
    fi
    return "$rc"
}

# ---- driver --------------------------------------------------------------------------------------------

{
    echo "# ringkernel GPU check $(date -u +%FT%TZ) on $(hostname); tree $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (+ local changes)'); budget ${BUDGET} s$([ "$DRY" = 1 ] && echo '; DRY RUN')$([ "$FULL" = 1 ] && echo '; full')"
    echo "# bundle: $(head -n 1 "$BUNDLE/bundle.txt"), $(grep '^python:' "$BUNDLE/bundle.txt")"
} >"$SUMMARY"

names=$(echo "$STEPS" | awk '{print $1}')
for name in $names; do
    selected "$name" || continue
    read -r _ limit minimum <<<"$(echo "$STEPS" | awk -v s="$name" '$1 == s')"
    # Keep the minimum of every selected step still to come.
    reserve=0
    after=0
    while read -r n _ m; do
        [ "$n" = "$name" ] && { after=1; continue; }
        [ "$after" = 1 ] && selected "$n" && reserve=$((reserve + m))
    done <<<"$STEPS"
    limit=$((limit * SCALE))
    left=$((DEADLINE - $(now)))
    avail=$((left - reserve))
    # A step gets at least its own minimum while the budget lasts, even if later steps get less.
    [ "$avail" -lt "$minimum" ] && { avail=$minimum; [ "$left" -lt "$avail" ] && avail=$left; }
    [ "$avail" -lt "$limit" ] && limit=$avail
    NOTE=""
    CURRENT=$name
    t_step=$(now)
    if [ "$limit" -lt 5 ]; then
        rc=124
        NOTE="not run: the budget is spent"
    else
        STEP_DEADLINE=$((t_step + limit))
        echo "==== $name (limit $limit s): $(date -u +%T)"
        "step_$name" >"$LOGS/$name.log" 2>&1
        rc=$?
    fi
    [ "$rc" = 0 ] || FAILED=1
    printf '%-10s rc=%-3s %4ss  %s\n' "$name" "$rc" "$(($(now) - t_step))" "$NOTE" | tee -a "$SUMMARY"
done

total=$(($(now) - T0))
echo "# done in $total s: $([ "$FAILED" = 0 ] && echo 'every step passed' || echo 'some step FAILED')" | tee -a "$SUMMARY"
cp "$SUMMARY" "$LOGS/" 2>/dev/null
[ -f "$WORK/backends.txt" ] && cp "$WORK/backends.txt" "$LOGS/"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs && echo "logs: $OUT/logs.tar.gz"
echo "summary: $SUMMARY"
exit "$FAILED"
