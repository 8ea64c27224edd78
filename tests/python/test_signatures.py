"""The public signatures of mtia_graph against torch 2.13's (recorded in
data/torch_signatures.json by tools/torch_signatures.py; torch is not needed here).

* Every public callable of the package, and of its classes, that has a torch counterpart
  takes the same parameters: names, order, kinds and defaults. A difference is either
  fixed or listed under "deliberate" in the data file with its reason (and documented in
  the README); a listed difference that no longer exists fails too.
* Every callable of torch's graph and runtime surface (torch.mtia, torch.mtia.memory,
  torch.mtia.mtia_graph, torch.cuda.graphs, their classes, and torch's and torch.cuda's
  Stream and Event) exists here or is listed under "absent" with its reason.

The counterpart of ``mtia_graph.NAME`` is the first of torch.mtia.NAME, torch.mtia.memory,
torch.mtia.mtia_graph, torch.cuda.graphs, torch.cuda.memory and torch.NAME that the data
has; a class's methods are looked up in its torch classes ("classes"), in order; and
"counterparts" names the exceptions (renamed methods, a Tensor method that is a torch
function).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
from typing import Any

import pytest

import mtia_graph as mg

DATA_PATH = os.path.join(os.path.dirname(__file__), "data", "torch_signatures.json")
with open(DATA_PATH, encoding="utf-8") as _f:
    DATA = json.load(_f)
SIGNATURES: dict[str, Any] = DATA["signatures"]
NAMESPACES = (
    "torch.mtia",
    "torch.mtia.memory",
    "torch.mtia.mtia_graph",
    "torch.cuda.graphs",
    "torch.cuda.memory",
    "torch",
)
# torch's surface that must exist here or be listed as absent.
SURFACE = (
    "torch.mtia.",
    "torch.cuda.graphs.",
    "torch.Stream.",
    "torch.Event.",
    "torch.cuda.Stream.",
    "torch.cuda.Event.",
)
METHOD_DUNDERS = ("__call__", "__enter__", "__exit__", "__dlpack__", "__dlpack_device__")
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def our_callables():
    """(qualname, object, is_method) of every public callable of the package."""
    for name in mg.__all__:
        obj = getattr(mg, name)
        if not callable(obj) or isinstance(obj, mg.dtype):
            continue
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue  # exceptions: no torch counterpart, no methods of their own
        yield f"mtia_graph.{name}", obj, False
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in METHOD_DUNDERS:
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property) or not callable(member):
                    continue
                yield f"mtia_graph.{name}.{attr}", member, True


def _default(value: str | None) -> Any:
    """A default's source text as a comparable value (the text when not a literal)."""
    if value is None:
        return inspect.Parameter.empty
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def our_params(obj: Any, is_method: bool) -> list[tuple[str, str, Any]]:
    sig = inspect.signature(obj)
    params = list(sig.parameters.values())
    if is_method and params and params[0].name in ("self", "cls"):
        params = params[1:]
    out = []
    for p in params:
        default = inspect.Parameter.empty if p.default is p.empty else p.default
        if default is not inspect.Parameter.empty and not isinstance(
            default, (int, float, str, bool, type(None), tuple)
        ):
            default = repr(default)
        out.append((p.name, p.kind.name, default))
    return out


def torch_params(entry: Any) -> list[tuple[str, str, Any]] | None:
    """The recorded parameters of a counterpart (a name, or {"torch": name, "self":
    its parameter that is our method's self})."""
    name = entry if isinstance(entry, str) else entry["torch"]
    recorded = SIGNATURES.get(name)
    if recorded is None or recorded["params"] is None:
        return None
    params = [(n, k, _default(d)) for n, k, d in recorded["params"]]
    if isinstance(entry, dict):
        params = [p for p in params if p[0] != entry["self"]]
    return params


def counterpart(qualname: str) -> Any | None:
    explicit = DATA["counterparts"].get(qualname)
    if explicit is not None:
        return explicit
    parts = qualname.split(".")[1:]
    if len(parts) == 1:
        if parts[0] in DATA["classes"]:
            return DATA["classes"][parts[0]][0]
        for ns in NAMESPACES:
            if f"{ns}.{parts[0]}" in SIGNATURES:
                return f"{ns}.{parts[0]}"
        return None
    cls, method = parts
    for torch_cls in DATA["classes"].get(cls, ()):
        key = f"{torch_cls}.{method}"
        if key in SIGNATURES and SIGNATURES[key]["params"] is not None:
            return key
    return None


def differences(ours: list, theirs: list) -> dict[str, str]:
    """What differs, by parameter name ("(order)" for the order of common parameters);
    *args and **kwargs match by kind whatever their names."""

    def key(p):
        return {"VAR_POSITIONAL": "*", "VAR_KEYWORD": "**"}.get(p[1], p[0])

    mine = {key(p): p for p in ours}
    torch_ = {key(p): p for p in theirs}
    diffs = {}
    for k in torch_:
        if k not in mine:
            diffs[torch_[k][0]] = "missing here"
    for k, p in mine.items():
        if k not in torch_:
            diffs[p[0]] = "not in torch"
            continue
        t = torch_[k]
        if p[1] != t[1]:
            diffs[p[0]] = f"{p[1]} here, {t[1]} in torch"
        elif p[2] != t[2]:
            diffs[p[0]] = f"default {p[2]!r} here, {t[2]!r} in torch"
    common_mine = [key(p) for p in ours if key(p) in torch_]
    common_torch = [key(p) for p in theirs if key(p) in mine]
    if common_mine != common_torch:
        diffs["(order)"] = f"{common_mine} here, {common_torch} in torch"
    return diffs


def compared():
    for qualname, obj, is_method in our_callables():
        entry = counterpart(qualname)
        if entry is None:
            continue
        theirs = torch_params(entry)
        if theirs is None:
            continue  # torch records no signature for it (a C method without docs)
        yield qualname, entry, differences(our_params(obj, is_method), theirs)


def test_the_data_was_generated_from_torch_2_13():
    assert DATA["torch_version"].startswith("2.13.")
    assert DATA["generated_by"] == "tools/torch_signatures.py"
    assert len(SIGNATURES) > 500


def test_signatures_match_torch_or_the_difference_is_deliberate():
    deliberate = DATA["deliberate"]
    problems = []
    for qualname, entry, diffs in compared():
        listed = deliberate.get(qualname, {})
        torch_name = entry if isinstance(entry, str) else entry["torch"]
        for param, what in diffs.items():
            if param not in listed:
                problems.append(f"{qualname} vs {torch_name}: {param}: {what}")
        for param in listed:
            if param not in diffs:
                problems.append(f"{qualname}: {param} is listed as deliberate but matches")
    assert not problems, "\n".join(problems)


def test_every_deliberate_difference_has_a_reason_and_a_callable():
    ours = {q for q, _, _ in our_callables()}
    for qualname, params in DATA["deliberate"].items():
        assert qualname in ours, f"{qualname} is listed as deliberate but does not exist"
        for param, reason in params.items():
            assert isinstance(reason, str) and len(reason) > 10, (qualname, param)


def covered_torch_names() -> set[str]:
    """torch qualnames that a callable of the package stands for."""
    covered = set()
    ours = list(our_callables())
    for qualname, _, _ in ours:
        entry = counterpart(qualname)
        if entry is not None:
            covered.add(entry if isinstance(entry, str) else entry["torch"])
        parts = qualname.split(".")[1:]
        if len(parts) == 1:
            covered.update(f"{ns}.{parts[0]}" for ns in NAMESPACES)
            covered.update(DATA["classes"].get(parts[0], ()))
        else:
            covered.update(f"{t}.{parts[1]}" for t in DATA["classes"].get(parts[0], ()))
    return covered


def test_torch_s_surface_exists_here_or_is_listed_as_absent():
    covered = covered_torch_names()
    absent = DATA["absent"]
    missing = []
    for name in SIGNATURES:
        if not name.startswith(SURFACE) or name in covered:
            continue
        owner = name.rsplit(".", 1)[0]
        if name in absent or owner in absent:
            continue
        missing.append(name)
    assert not missing, "neither here nor listed as absent:\n" + "\n".join(missing)
    for name, reason in absent.items():
        assert name in SIGNATURES, f"{name} is listed as absent but torch has no such name"
        assert name not in covered, f"{name} is listed as absent but exists here"
        assert isinstance(reason, str) and len(reason) > 10, name


def _readme_section() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = re.search(r"\n## Differences from torch\n(.*?)(\n## |\Z)", text, re.S)
    assert found, "the README has a section 'Differences from torch'"
    return found.group(1)


def test_the_readme_documents_every_deliberate_difference_and_absence():
    section = _readme_section()
    undocumented = []
    for name in DATA["absent"]:
        short = name.rsplit(".", 1)[-1]
        if f"`{short}" not in section:
            undocumented.append(f"absent {name}")
    for qualname, params in DATA["deliberate"].items():
        for param in params:
            if param == "(order)":
                continue
            spellings = (f"`{param}", f"`*{param}", f"`**{param}", f"{param}=")
            if not any(w in section for w in spellings):
                undocumented.append(f"{qualname}: {param}")
    assert not undocumented, "not in the README's 'Differences from torch':\n" + "\n".join(
        undocumented
    )


@pytest.mark.parametrize(
    ("ours", "torch_name", "extras"),
    [
        ("mtia_graph.MTIAGraph", "torch.mtia.MTIAGraph", ()),
        (
            "mtia_graph.MTIAGraph.capture_begin",
            "torch.cuda.graphs.CUDAGraph.capture_begin",
            ("check_races",),
        ),
        ("mtia_graph.MTIAGraph.debug_dump", "torch.cuda.graphs.CUDAGraph.debug_dump", ()),
        (
            "mtia_graph.graph",
            "torch.mtia.graph",
            ("capture_error_mode", "check_input_liveness", "check_races"),
        ),
        ("mtia_graph.Event", "torch.Event", ("external",)),
        ("mtia_graph.Stream", "torch.cuda.Stream", ()),
    ],
)
def test_the_signatures_built_to_match_torch_stay_exact(ours, torch_name, extras):
    """The seed's and torch's signatures these were built on: nothing differs but the
    keywords named, which follow torch's parameters (positional callers are unaffected)."""
    assert counterpart(ours) == torch_name
    diffs = dict(next(d for q, _, d in compared() if q == ours))
    assert set(diffs) == set(extras), diffs
    assert all(what == "not in torch" for what in diffs.values())


def test_the_package_s_own_capture_contexts_take_graph_s_keywords():
    """MTIAGraph.recapture() captures as graph() does (into the graph's own pool): the
    same capture arguments, kinds and defaults."""
    graph_params = our_params(mg.graph.__init__, True)
    expected = [p for p in graph_params if p[0] not in ("mtia_graph", "pool")]
    assert our_params(mg.MTIAGraph.recapture, True) == expected
