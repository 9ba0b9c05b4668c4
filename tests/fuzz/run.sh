#!/usr/bin/env bash
# Build the libFuzzer targets of tests/fuzz with clang into build/fuzz and run each on its committed
# corpus for a while (README.md in this folder).
#
#   bash tests/fuzz/run.sh [SECONDS] [--grow] [--lenient] [TARGET...]
#
#   SECONDS   per target (default 20)
#   --grow    afterwards, merge what the run found that adds coverage into tests/fuzz/corpus/<target>
#             (otherwise new inputs stay in build/fuzz/scratch/<target> and the corpus is untouched)
#   --lenient steer around the inputs of the issues in README.md ("Findings", all fixed), for bisecting
#             an older tree: build dir build/fuzz-lenient (the default fails on them: strict)
#   TARGET    fuzz_envelope, fuzz_message, fuzz_queue_ops (default: all three)
#
# Exits nonzero when a target crashes (or hangs), after printing where the input was saved and how to
# replay it. Compiler: $FUZZ_CXX / $FUZZ_CC, else clang++ on PATH, clang++-N on PATH, or
# /usr/lib/llvm-*/bin/clang++, the first that links -fsanitize=fuzzer. Without one it exits 1, or 0
# when FUZZ_OPTIONAL=1.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=20
grow=0
strict=1
targets=()
for arg in "$@"; do
  case "$arg" in
    --grow) grow=1 ;;
    --strict) strict=1 ;;
    --lenient) strict=0 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    fuzz_envelope|fuzz_message|fuzz_queue_ops) targets+=("$arg") ;;
    *)
      if [[ "$arg" =~ ^[0-9]+$ ]] && [ "$arg" -gt 0 ]; then secs=$arg
      else echo "run.sh: unknown argument '$arg' (see --help)" >&2; exit 2; fi ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_envelope fuzz_message fuzz_queue_ops)

unavailable() {
  echo "run.sh: $*" >&2
  if [ "${FUZZ_OPTIONAL:-0}" = 1 ]; then
    echo "run.sh: FUZZ_OPTIONAL=1: not fuzzing, and not failing for it" >&2
    exit 0
  fi
  exit 1
}

# ---- a clang that can link libFuzzer ------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
candidates=()
if [ -n "${FUZZ_CXX:-}" ]; then
  candidates=("$FUZZ_CXX")
else
  command -v clang++ >/dev/null 2>&1 && candidates+=(clang++)
  while read -r c; do [ -n "$c" ] && candidates+=("$c"); done < <(compgen -c 'clang++-' 2>/dev/null |
    grep -E '^clang\+\+-[0-9]+$' | sort -u | sort -t- -k2 -n -r)
  for c in /usr/lib/llvm-*/bin/clang++; do [ -x "$c" ] && candidates+=("$c"); done
fi
printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char *, unsigned long) { return 0; }\n' > "$tmp/probe.cpp"
printf 'int rk_probe(int x) { return x + 1; }\n' > "$tmp/probe.c"
cxx=""
cc=""
tried=""
for cand in "${candidates[@]}"; do
  path=$(command -v "$cand" 2>/dev/null) || { tried+=" $cand (not found)"; continue; }
  if [ -n "${FUZZ_CC:-}" ]; then
    ccand=$FUZZ_CC
  else
    ccand="$(dirname "$path")/$(basename "$path" | sed 's/clang++/clang/')"
  fi
  if ! "$path" -fsanitize=fuzzer,address,undefined "$tmp/probe.cpp" -o "$tmp/probe" >"$tmp/err" 2>&1; then
    tried+=" $path (cannot link -fsanitize=fuzzer: $(head -n 1 "$tmp/err"))"
    continue
  fi
  if ! "$ccand" -fsanitize=fuzzer-no-link,address -c "$tmp/probe.c" -o "$tmp/probe.o" >"$tmp/err" 2>&1; then
    tried+=" $path (its C compiler $ccand does not work: $(head -n 1 "$tmp/err"))"
    continue
  fi
  cxx=$path
  cc=$(command -v "$ccand")
  break
done
if [ -z "$cxx" ]; then
  unavailable "no clang with libFuzzer found (tried:${tried:- nothing: no clang++ on PATH or in /usr/lib/llvm-*/bin}). Install clang (Debian/Ubuntu: apt-get install clang) or set FUZZ_CXX and FUZZ_CC."
fi
command -v cmake >/dev/null 2>&1 || unavailable "cmake not found"

# llvm-symbolizer next to the compiler gives symbolised stacks.
real_cxx=$(readlink -f "$cxx")
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && [ -x "$(dirname "$real_cxx")/llvm-symbolizer" ]; then
  export ASAN_SYMBOLIZER_PATH="$(dirname "$real_cxx")/llvm-symbolizer"
fi
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

# ---- configure and build --------------------------------------------------------------------------
bdir="$root/build/fuzz"
[ "$strict" = 0 ] && bdir="$root/build/fuzz-lenient"
if [ -f "$bdir/CMakeCache.txt" ] &&
   [ "$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$bdir/CMakeCache.txt" | head -n 1)" != "$cxx" ]; then
  rm -rf "$bdir"  # configured with another compiler: start over
fi
mkdir -p "$bdir/logs"
gen=()
command -v ninja >/dev/null 2>&1 && [ ! -f "$bdir/CMakeCache.txt" ] && gen=(-G Ninja)
jobs=$(nproc 2>/dev/null || echo 2)
echo "run.sh: $("$cxx" --version | head -n 1) ($cxx), $secs s per target, build in ${bdir#$root/}"
t0=$SECONDS
if ! cmake -S "$here" -B "$bdir" "${gen[@]}" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
     -DRK_FUZZ_STRICT=$([ "$strict" = 1 ] && echo ON || echo OFF) >"$bdir/logs/configure.log" 2>&1; then
  cat "$bdir/logs/configure.log" >&2
  echo "run.sh: configure failed" >&2
  exit 1
fi
if ! cmake --build "$bdir" -j "$jobs" --target "${targets[@]}" >"$bdir/logs/build.log" 2>&1; then
  tail -n 60 "$bdir/logs/build.log" >&2
  echo "run.sh: build failed (full log: $bdir/logs/build.log)" >&2
  exit 1
fi
echo "run.sh: built in $((SECONDS - t0)) s"

# ---- fuzz ---------------------------------------------------------------------------------------------
failed=0
for t in "${targets[@]}"; do
  corpus="$here/corpus/$t"
  scratch="$bdir/scratch/$t"
  artifacts="$bdir/artifacts/$t"
  log="$bdir/logs/$t.log"
  mkdir -p "$corpus" "$artifacts"
  rm -rf "$scratch" && mkdir -p "$scratch"
  before=$(ls -A "$artifacts" | sort)
  # New inputs go to the first directory (scratch); the committed corpus is only read.
  "$bdir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$scratch" "$corpus" >"$log" 2>&1
  rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
  [ -z "$done_line" ] && done_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1)
  echo "run.sh: $t: ${done_line:-no progress line} [corpus $(ls -A "$corpus" | wc -l), new $(ls -A "$scratch" | wc -l)]"
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "---- $t FAILED (exit $rc); the end of its log ($log):" >&2
    tail -n 60 "$log" >&2
    new=$(comm -13 <(echo "$before") <(ls -A "$artifacts" | sort))
    for f in $new; do
      echo "run.sh: $t: crashing input saved at $artifacts/$f" >&2
      echo "run.sh:   replay: $bdir/$t $artifacts/$f" >&2
    done
    [ -z "$new" ] && echo "run.sh: $t: no input was saved (see the log)" >&2
    continue
  fi
  if [ "$grow" = 1 ]; then
    n0=$(ls -A "$corpus" | wc -l)
    "$bdir/$t" -merge=1 -max_len=4096 -timeout=10 "$corpus" "$scratch" >>"$log" 2>&1 ||
      { echo "run.sh: $t: merge failed (see $log)" >&2; failed=1; continue; }
    echo "run.sh: $t: corpus grew from $n0 to $(ls -A "$corpus" | wc -l) inputs ($(du -sk "$corpus" | cut -f1) KiB)"
  fi
done
echo "run.sh: total $((SECONDS - t0)) s"
[ "$failed" = 0 ] && echo "run.sh: no crashes" || echo "run.sh: FAILED" >&2
exit "$failed"
