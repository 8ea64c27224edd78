#!/usr/bin/env python3
"""Record torch's signatures of what mtia_graph rebuilds, for tests/python/test_signatures.py.

    /path/to/venv-with-torch/bin/python tools/torch_signatures.py [OUTPUT]

OUTPUT defaults to tests/python/data/torch_signatures.json. Run it with an interpreter that
has torch; the tests read the file and never need torch. What is recorded:

* every public callable of ``torch.mtia``, ``torch.mtia.memory``, ``torch.mtia.mtia_graph``
  and ``torch.cuda.graphs``, and the methods of their classes;
* ``torch.Stream`` / ``torch.Event`` and ``torch.cuda.Stream`` / ``torch.cuda.Event``, the
  ``torch.cuda.memory`` functions named in MEMORY, the torch functions named in FUNCTIONS
  (the tensor factories and functions mtia_graph has) and in NN_FUNCTIONS (those of
  ``torch.nn.functional`` that mtia_graph has as Tensor methods), and every method of
  ``torch.Tensor``.

A signature comes from ``inspect.signature`` where torch's object has one, otherwise from
the first line of its docstring (``zeros(*size, *, out=None, ...) -> Tensor``), which is
how torch documents its C functions; ``source`` says which. ``params`` is a list of
``[name, kind, default]`` (kind as inspect.Parameter names it, default None when there is
none, else its source text); ``self``/``cls`` are left out.

The file's other sections ("counterparts", "classes", "deliberate", "absent") are written
by hand and kept as they are when the file is regenerated.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import types

import torch
import torch.cuda.graphs
import torch.cuda.memory
import torch.mtia
import torch.mtia.memory
import torch.mtia.mtia_graph
import torch.nn.functional

SURFACE_MODULES = ("torch.mtia", "torch.mtia.memory", "torch.mtia.mtia_graph", "torch.cuda.graphs")
CLASSES = ("torch.Stream", "torch.Event", "torch.cuda.Stream", "torch.cuda.Event", "torch.Tensor")
MEMORY = (
    "empty_cache",
    "mem_get_info",
    "memory_allocated",
    "max_memory_allocated",
    "memory_reserved",
    "max_memory_reserved",
    "memory_snapshot",
    "memory_stats",
    "reset_accumulated_memory_stats",
    "reset_peak_memory_stats",
)
FUNCTIONS = (
    "arange",
    "can_cast",
    "empty",
    "empty_like",
    "from_dlpack",
    "from_numpy",
    "full",
    "full_like",
    "get_default_dtype",
    "matmul",
    "ones",
    "ones_like",
    "promote_types",
    "result_type",
    "tensor",
    "where",
    "zeros",
    "zeros_like",
)
NN_FUNCTIONS = ("gelu",)
# Methods recorded beside the public ones (a class's own signature stands for its
# constructor, __new__ and __init__).
DUNDERS = ("__call__", "__enter__", "__exit__", "__dlpack__", "__dlpack_device__")
HAND_SECTIONS = ("counterparts", "classes", "deliberate", "absent")
# Modules whose objects torch's modules import for their annotations, not their surface.
IMPORTED = ("typing", "typing_extensions", "collections", "abc", "builtins")


def split_params(text: str) -> list[str]:
    """The comma-separated items of a parameter list, brackets respected."""
    items, depth, current = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current.strip())
    return items


def from_doc(name: str, doc: str | None) -> list[list] | None:
    """Parameters of the ``name(...)`` line of a torch docstring, or None."""
    if not doc:
        return None
    for line in doc.strip().splitlines()[:3]:
        m = re.match(r"^\s*(?:[\w.]+\.)?" + re.escape(name) + r"\((.*?)\)\s*(->.*)?$", line)
        if m:
            break
    else:
        return None
    params, kind = [], "POSITIONAL_OR_KEYWORD"
    for item in split_params(m.group(1).replace("\\*", "*")):
        if item in ("*", "/"):
            if item == "*":
                kind = "KEYWORD_ONLY"
            else:
                params = [[p[0], "POSITIONAL_ONLY", p[2]] for p in params]
            continue
        if item.startswith("**"):
            params.append([item[2:], "VAR_KEYWORD", None])
            continue
        if item.startswith("*"):
            params.append([item[1:], "VAR_POSITIONAL", None])
            kind = "KEYWORD_ONLY"
            continue
        pname, eq, default = item.partition("=")
        pname = pname.split(":")[0].strip()
        if pname in ("self", "cls") and not params:
            continue
        params.append([pname, kind, default.strip() if eq else None])
    return params


def from_inspect(obj: object) -> list[list] | None:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    params = []
    for p in sig.parameters.values():
        if p.name in ("self", "cls") and not params:
            continue
        default = None if p.default is inspect.Parameter.empty else repr(p.default)
        params.append([p.name, p.kind.name, default])
    # C types report a generic (obj, /, *args, **kwargs): no information
    kinds = [p[1] for p in params]
    if kinds[-2:] == ["VAR_POSITIONAL", "VAR_KEYWORD"] and len(kinds) <= 3:
        return None
    return params


def record(out: dict, qualname: str, obj: object, name: str) -> None:
    params = from_inspect(obj)
    source = "inspect"
    if params is None:
        params, source = from_doc(name, getattr(obj, "__doc__", None)), "doc"
    if params is None:
        source = "none"
    out[qualname] = {"source": source, "params": params}


def record_class(out: dict, qualname: str, cls: type) -> None:
    record(out, qualname, cls, cls.__name__)
    for attr in sorted(dir(cls)):
        if attr.startswith("_") and attr not in DUNDERS:
            continue
        try:
            member = inspect.getattr_static(cls, attr)
        except AttributeError:
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property) or not callable(member):
            continue
        record(out, f"{qualname}.{attr}", member, attr)


def public_callables(module: types.ModuleType):
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType) or not callable(obj):
            continue
        origin = getattr(obj, "__module__", "") or ""
        if origin.split(".")[0] in IMPORTED:
            continue  # names the module imports for its annotations
        if obj is torch.Tensor:
            continue  # recorded once, as torch.Tensor
        yield name, obj


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    path = (
        sys.argv[1]
        if len(sys.argv) > 1
        else os.path.join(here, "..", "tests", "python", "data", "torch_signatures.json")
    )
    kept = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        kept = {k: old[k] for k in HAND_SECTIONS if k in old}
    signatures: dict = {}
    for modname in SURFACE_MODULES:
        module = sys.modules[modname]
        for name, obj in public_callables(module):
            if isinstance(obj, type):
                record_class(signatures, f"{modname}.{name}", obj)
            else:
                record(signatures, f"{modname}.{name}", obj, name)
    for qualname in CLASSES:
        owner, _, name = qualname.rpartition(".")
        record_class(signatures, qualname, getattr(sys.modules[owner], name))
    for name in MEMORY:
        record(signatures, f"torch.cuda.memory.{name}", getattr(torch.cuda.memory, name), name)
    for name in FUNCTIONS:
        record(signatures, f"torch.{name}", getattr(torch, name), name)
    for name in NN_FUNCTIONS:
        obj = getattr(torch.nn.functional, name)
        record(signatures, f"torch.nn.functional.{name}", obj, name)
    data = {
        "torch_version": torch.__version__,
        "generated_by": "tools/torch_signatures.py",
        **{k: kept.get(k, {}) for k in HAND_SECTIONS},
        "signatures": signatures,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"{path}: {len(signatures)} signatures of torch {torch.__version__}")


if __name__ == "__main__":
    main()
