"""The package's modules form the layers its docstring lists: no module imports one listed
after it, neither in its source (every import statement, wherever it is) nor when it is
imported first, on its own, in a fresh interpreter."""

import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import mtia_graph

PACKAGE_DIR = os.path.dirname(mtia_graph.__file__)
PACKAGE = "mtia_graph"


def documented_modules(heading):
    """Module names, in order, of the docstring's literal block after ``heading``."""
    doc = mtia_graph.__doc__ or ""
    found = re.search(re.escape(heading) + r".*?::\n\n((?:    [^\n]*\n?)+)", doc, re.S)
    assert found, f"the package docstring must list its modules after {heading!r}"
    return [line.split()[0] for line in found.group(1).splitlines() if line.strip()]


# The library's modules, lowest layer first, then the programs above them all, which
# import the package itself as its users do.
LAYERS = documented_modules("form layers")
CLIENTS = documented_modules("Programs built on the package")
RANK = {name: i for i, name in enumerate(LAYERS + CLIENTS)}


def package_files():
    """(layer name, path) of every Python source of the installed package but __init__."""
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), PACKAGE_DIR)
            parts = rel[:-3].split(os.sep)
            if parts == ["__init__"]:
                continue
            yield parts[0], os.path.join(root, f)


def package_modules(path, tree):
    """The package's top-level modules (or the package itself) that ``tree`` imports."""
    rel = os.path.relpath(path, PACKAGE_DIR)[:-3].split(os.sep)
    here = [PACKAGE, *rel[:-1]]  # the package relative imports start from
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE:
                    yield node.lineno, parts[1] if len(parts) > 1 else PACKAGE
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
            else:
                parts = (node.module or "").split(".")
            if parts[0] != PACKAGE:
                continue
            if len(parts) > 1:
                yield node.lineno, parts[1]
                continue
            for alias in node.names:  # from mtia_graph import x: a module, or the package
                yield node.lineno, alias.name if alias.name in RANK else PACKAGE


def test_every_module_is_in_the_documented_layers():
    present = {name for name, _ in package_files()} | {"_mtiart"}
    missing = sorted(present - set(RANK))
    assert not missing, f"modules missing from mtia_graph's docstring layer list: {missing}"
    assert sorted(set(RANK) - present) == [], "the docstring lists modules that do not exist"
    assert len(RANK) == len(LAYERS) + len(CLIENTS)  # each listed once
    assert LAYERS[0] == "_mtiart"


def test_no_module_imports_a_later_layer():
    wrong = []
    for name, path in package_files():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for line, target in package_modules(path, tree):
            if target == name:
                continue
            if name in CLIENTS:
                if target in CLIENTS:
                    wrong.append(f"{path}:{line}: {name} imports {target}, another program")
            elif target == PACKAGE:
                wrong.append(f"{path}:{line}: {name} imports the package itself")
            elif RANK.get(target, len(RANK)) >= RANK[name]:
                wrong.append(f"{path}:{line}: {name} imports {target}, a later layer")
    assert not wrong, "\n".join(wrong)


# Runs in a fresh interpreter: makes the package importable without running its __init__,
# then imports the named modules one after the other and reports which package modules
# each import loaded.
_IMPORT_ALONE = textwrap.dedent("""
    import importlib, importlib.util, json, sys
    spec = importlib.util.find_spec("mtia_graph")
    sys.modules["mtia_graph"] = importlib.util.module_from_spec(spec)  # __init__ not run
    loaded = []
    for name in sys.argv[1:]:
        before = set(sys.modules)
        importlib.import_module("mtia_graph." + name)
        new = sorted({m.split(".")[1] for m in set(sys.modules) - before
                      if m.startswith("mtia_graph.")})
        loaded.append([name, new])
    print(json.dumps(loaded))
""")


def import_in_fresh_interpreter(order):
    r = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALONE, *order],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("first", LAYERS)
def test_each_module_imports_first_in_a_fresh_interpreter(first):
    # First the module alone, then every other one from the top layer down: each import
    # may only load the module itself and modules of lower layers.
    rest = [m for m in reversed(LAYERS) if m != first]
    for name, new in import_in_fresh_interpreter([first, *rest]):
        later = [m for m in new if m != name and RANK.get(m, len(RANK)) >= RANK[name]]
        assert not later, f"importing {name} loaded {later}"


def test_modules_import_bottom_up_in_a_fresh_interpreter():
    for name, new in import_in_fresh_interpreter(LAYERS):
        assert new == [name], f"importing {name} after its lower layers also loaded {new}"
