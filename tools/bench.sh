#!/usr/bin/env bash
# tools/bench.sh - build what the benchmarks need, then run every benchmark (C, peers, Python).
#
#   tools/bench.sh                  full run: JSON lines, then a table
#   tools/bench.sh --quick          one short pass (CI: proves every benchmark runs)
#   tools/bench.sh --readme         full run, then rewrite README.md's benchmark table from
#                                   it (JSON lines kept in $BENCH_BUILD_DIR/bench-results.jsonl)
#   tools/bench.sh --scaling        the worker-scaling table only (see tools/bench_scaling.sh)
#   tools/bench.sh [--quick] ARGS   ARGS go to `python -m mtia_graph.bench`:
#                                   --json, --filter SUBSTRING, --reps N, --output FILE,
#                                   --markdown FILE, --plot out.png, --no-c, --no-peers,
#                                   --no-python, --from-json FILE
#
# Steps:
#   1. meson setup/compile $BENCH_BUILD_DIR (default build-bench/, release build like the
#      wheel) -> libmtiart, benchmarks/bench_runtime (the C benchmarks), benchmarks/kernel_probe
#      and, with a C++ compiler, benchmarks/bench_peers (against oneTBB when meson finds it:
#      Debian's libtbb-dev; its rows are skipped with the reason otherwise)
#   2. pip install --no-build-isolation . when the installed mtia_graph is missing or older
#      than the sources (BENCH_INSTALL=always|never overrides)
#   3. python -m mtia_graph.bench --c-bench $BENCH_BUILD_DIR/benchmarks/bench_runtime
#      --commit <git revision> ARGS (if the Python package cannot be installed, the C
#      benchmarks run on their own)
#
# torch CPU is the peer of some Python rows when it is importable (pip install
# 'mtia-graph[bench]'); without it those rows are skipped with the reason.
#
# Benchmarks are never tests: the exit status is non-zero only when something fails to
# build or run, never because of a time.
#
# Environment: PYTHON (default python3), BENCH_BUILD_DIR, BENCH_INSTALL, MESON_ARGS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
BUILD="${BENCH_BUILD_DIR:-build-bench}"
INSTALL="${BENCH_INSTALL:-auto}"
read -r -a MESON_EXTRA <<<"${MESON_ARGS:-}"

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
esac

say() { printf '==== bench: %s\n' "$*" >&2; }

meson() {
    if "$PYTHON" -c 'import mesonbuild' 2>/dev/null; then
        "$PYTHON" -m mesonbuild.mesonmain "$@"
    else
        command meson "$@"
    fi
}

# 1. the library and the C benchmark program
say "building $BUILD/ (release)"
if [ -f "$BUILD/build.ninja" ]; then
    meson setup --reconfigure "$BUILD" --buildtype=release -Dtests=false -Dpython=disabled \
        "${MESON_EXTRA[@]}" >/dev/null
else
    rm -rf "$BUILD"
    meson setup "$BUILD" --buildtype=release -Dtests=false -Dpython=disabled \
        "${MESON_EXTRA[@]}" >/dev/null
fi
meson compile -C "$BUILD" >/dev/null
C_BENCH="$REPO/$BUILD/benchmarks/bench_runtime"

# 2. the Python package, when the installed one is missing or stale
needs_install() {
    "$PYTHON" - "$REPO" <<'PYEOF'
import os, sys
repo = sys.argv[1]
try:
    import mtia_graph.bench  # noqa: F401
    import mtia_graph._mtiart as ext
except Exception:
    sys.exit(0)                      # missing: install
installed = os.path.getmtime(ext.__file__)
newest = 0.0
for top in ("python", "libmtiart", "include", "meson.build", "pyproject.toml", "tools/gen_cffi.py"):
    path = os.path.join(repo, top)
    if os.path.isfile(path):
        newest = max(newest, os.path.getmtime(path))
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            newest = max(newest, os.path.getmtime(os.path.join(root, f)))
sys.exit(0 if newest > installed else 1)
PYEOF
}

PY_OK=1
if [ "$INSTALL" = always ] || { [ "$INSTALL" = auto ] && needs_install; }; then
    say "pip install --no-build-isolation . (the installed mtia_graph is missing or older than the sources)"
    if ! "$PYTHON" -m pip install -q --no-build-isolation . >&2; then
        say "WARNING: the Python package does not build; running the C benchmarks only"
        PY_OK=0
    fi
fi
if [ "$PY_OK" = 1 ] && ! "$PYTHON" -c 'import mtia_graph.bench' 2>/dev/null; then
    say "WARNING: mtia_graph.bench is not importable; running the C benchmarks only"
    PY_OK=0
fi

# 3. run
results="$BUILD/bench-results.jsonl"
for a in "$@"; do [ "$a" = --scaling ] && results="$BUILD/scaling-results.jsonl"; done
args=()
for a in "$@"; do
    if [ "$a" = --readme ]; then args+=(--output "$results" --readme README.md)
    else args+=("$a"); fi
done
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
# (README.md is left out: its tables are what --readme writes)
if [ "$COMMIT" != unknown ] && ! git -C "$REPO" diff --quiet HEAD -- . ':!README.md' 2>/dev/null; then
    COMMIT="$COMMIT+local changes"
fi
if [ "$PY_OK" = 1 ]; then
    say "python -m mtia_graph.bench --c-bench $C_BENCH ${args[*]}"
    # (the repository root has no mtia_graph/ directory: the installed package is imported)
    exec "$PYTHON" -m mtia_graph.bench --c-bench "$C_BENCH" --commit "$COMMIT" "${args[@]}"
else
    c_args=()
    set -- "${args[@]}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --quick|--json|--scaling) c_args+=("$1") ;;
            --filter|--reps|--workers) c_args+=("$1" "${2:-}"); shift ;;
        esac
        shift
    done
    exec "$C_BENCH" "${c_args[@]}"
fi
