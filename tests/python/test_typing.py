"""The installed package is typed: a user's typed program passes ``mypy --strict`` and runs,
and misuse is rejected where it is marked."""

import os
import re
import subprocess
import sys

import pytest

import mtia_graph

TYPING_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "typing")
USER_SCRIPT = os.path.abspath(os.path.join(TYPING_DIR, "user_script.py"))
USER_ERRORS = os.path.abspath(os.path.join(TYPING_DIR, "user_errors.py"))


def test_package_ships_its_type_information():
    package = os.path.dirname(mtia_graph.__file__)
    assert os.path.isfile(os.path.join(package, "py.typed"))
    assert os.path.isfile(os.path.join(package, "_mtiart.pyi"))


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    pytest.importorskip(
        "mypy", reason="mypy is not installed (pip install mypy, or the package's [test] extra)"
    )
    return tmp_path_factory.mktemp("mypy-cache")


def run_mypy(path, cache):
    # From an empty directory: no project configuration applies, and mtia_graph is found
    # where it is installed, as for any user.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(cache),
            path,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cache,
    )
    assert r.returncode in (0, 1), r.stdout + r.stderr  # 2: mypy itself failed
    return r


def test_typed_user_script_passes_mypy_strict(mypy_cache):
    r = run_mypy(USER_SCRIPT, mypy_cache)
    assert r.returncode == 0, r.stdout + r.stderr


def test_typed_user_script_runs(tmp_path):
    r = subprocess.run(
        [sys.executable, USER_SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_misuse_is_rejected_exactly_where_marked(mypy_cache):
    with open(USER_ERRORS, encoding="utf-8") as f:
        marked = {i for i, line in enumerate(f, 1) if line.rstrip().endswith("# error")}
    r = run_mypy(USER_ERRORS, mypy_cache)
    reported = {int(m.group(1)) for m in re.finditer(r"user_errors\.py:(\d+): error:", r.stdout)}
    assert marked and reported == marked, r.stdout
