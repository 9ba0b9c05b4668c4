#!/usr/bin/env bash
# The whole test suite: C++ (ctest: unit, stress, installed-package consumer; then again under
# ASan+UBSan and under TSan; then the libFuzzer targets for a short run; then the GPU bundle is built and
# dry-run) and Python (pytest against the package installed with pip).
#   bash tests/run_all.sh            everything
#   bash tests/run_all.sh --quick    skip the sanitizer builds, the fuzzing and the GPU bundle
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc 2>/dev/null || echo 2)
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

step() { printf '\n==== %s\n' "$*"; }

step "C++: configure and build (Release, -Wall -Wextra -Werror)"
cmake -S . -B build/test "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DRINGKERNEL_WERROR=ON
cmake --build build/test -j "$jobs"

step "C++: ctest"
# NVRTC from the nvidia-cuda-nvrtc wheel (pip install .[cuda]), when installed: the CUDA backend's
# portable-source compiles run without a GPU.
if [ -z "${RINGKERNEL_NVRTC_LIBRARY:-}" ]; then
  nvrtc=$(python3 -c "
import importlib.util, os
s = importlib.util.find_spec('nvidia')
for root in (s.submodule_search_locations if s else []):
    for rel in ('cu13/lib/libnvrtc.so.13', 'cuda_nvrtc/lib/libnvrtc.so.12'):
        if os.path.isfile(os.path.join(root, rel)): print(os.path.join(root, rel)); raise SystemExit
" 2>/dev/null || true)
  RINGKERNEL_NVRTC_LIBRARY="$nvrtc" ctest --test-dir build/test --output-on-failure -j "$jobs"
else
  ctest --test-dir build/test --output-on-failure -j "$jobs"
fi

if [ "$quick" = 0 ]; then
  for san in address,undefined thread; do
    step "C++: ctest under -fsanitize=$san"
    dir="build/san-${san%%,*}"
    cmake -S . -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGKERNEL_WERROR=ON \
      -DRINGKERNEL_SANITIZE="$san" -DRINGKERNEL_ENABLE_CUDA=OFF -DRINGKERNEL_BUILD_BENCHMARKS=OFF \
      -DRINGKERNEL_INSTALL=OFF
    cmake --build "$dir" -j "$jobs"
    # The OpenCL dialect test runs inside PoCL's uninstrumented JIT and threads; it is left to the
    # plain run above.
    TSAN_OPTIONS="halt_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
      ctest --test-dir "$dir" --output-on-failure -j "$jobs" -LE opencl
  done

  step "C++: libFuzzer targets on their committed corpus, 20 s each (tests/fuzz)"
  bash tests/fuzz/run.sh 20

  # The GPU run is prepared here and made on a GPU machine when one is lent (README, "Verifying on a
  # GPU"): build the bundle and run every step of the check that needs no GPU against it.
  if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
    step "GPU bundle: scripts/gpu_prepare.sh, then scripts/gpu_check.sh --dry-run"
    bash scripts/gpu_prepare.sh build/gpu-bundle/bundle
    OUT=build/gpu-bundle/dry-run bash scripts/gpu_check.sh --dry-run --bundle build/gpu-bundle/bundle
  else
    step "GPU bundle: not prepared (no nvcc on this machine; the bundle needs the CUDA backend compiled)"
  fi
fi

step "Python: pip install .[test,cuda]"
python3 -m pip install -q --disable-pip-version-check ".[test,cuda]"

step "Python: pytest"
python3 -m pytest tests/python
