#!/usr/bin/env bash
# gpu_fingerprint.sh — one hash of the sources a GPU bundle is built from (what gpu_prepare.sh records and
# gpu_check.sh compares with the tree it runs in, so that a bundle older than the tree is never tested).
# The files are those that travel to a GPU machine (tracked, and untracked but not ignored: git lists them
# where there is a checkout; elsewhere, a copy of such a tree, every file but caches). scripts/ is left out:
# the check may be fixed between two calls on a GPU machine without preparing again. Prints the hash.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(CMakeLists.txt pyproject.toml cmake csrc python tests bench)
list() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z -co --exclude-standard -- "${paths[@]}"
    else
        find "${paths[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0
    fi
}
list | tr '\0' '\n' | grep -vE '^(bench/results/|tests/fuzz/corpus/)' | LC_ALL=C sort |
    tr '\n' '\0' | xargs -0 sha256sum | sha256sum | cut -c1-16
