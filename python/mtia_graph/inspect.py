"""``python -m mtia_graph.inspect FILE``: print a saved graph (``MTIAGraph.save``).

Prints the file's version, its bindings (inputs, outputs, constants and their sizes), the
memory regions of its pool, the user-kernel libraries it names, and every node of the graph
and of its bodies with its dependencies and the memory it touches. The file is only read:
no library it names is loaded, and nothing runs. The format is the repository's
``docs/graph-format.md``; :func:`read` checks what it reads against it and raises
``ValueError`` for a malformed file.

(Inside the package this module is ``mtia_graph.inspect``; the package's own modules use
absolute imports, so ``import inspect`` anywhere still means the standard library's.)
"""

from __future__ import annotations

import argparse
import struct
import sys
from dataclasses import dataclass, field

from mtia_graph._C import ffi, lib

__all__ = ["Binding", "Node", "SavedGraph", "format_graph", "main", "read"]

_MAGIC = b"MTIAGRF\0"
_MAJOR = 1
_SECTIONS = {
    1: "strings",
    2: "bindings",
    3: "regions",
    4: "kernels",
    5: "events",
    6: "graphs",
    7: "nodes",
    8: "dependencies",
    9: "arguments",
    10: "data",
}
_RECORD_SIZES = {2: 40, 3: 16, 4: 16, 5: 8, 6: 16, 7: 80, 8: 4, 9: 32}
_KINDS = {
    1: "kernel",
    2: "memcpy",
    3: "fill",
    4: "empty",
    5: "event record",
    6: "event wait",
    7: "child graph",
    8: "conditional",
}
_COPY_KINDS = ("HtoH", "HtoD", "DtoH", "DtoD")
_ROLES = ("input", "output", "constant")
_ACCESS = ("value", "in", "out", "inout")
_USER_KERNEL = 0x80000000


@dataclass
class Binding:
    """A named buffer of a saved graph."""

    name: str
    role: str  # "input", "output" or "constant"
    bytes: int
    host: bool


@dataclass
class Node:
    """One node of a saved graph (or of a body)."""

    kind: str
    deps: list[int]
    text: str  # what it does and the memory it touches


@dataclass
class SavedGraph:
    """What :func:`read` finds in a file."""

    size: int
    version: tuple[int, int]
    device: int
    bindings: list[Binding] = field(default_factory=list)
    regions: list[int] = field(default_factory=list)
    libraries: list[tuple[str, str]] = field(default_factory=list)  # (library, symbol)
    events: int = 0
    graphs: list[list[Node]] = field(default_factory=list)  # graph 0, then the bodies


class _File:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sections: dict[int, tuple[int, int]] = {}

    def fail(self, what: str) -> ValueError:
        return ValueError(f"not a valid saved graph: {what}")

    def unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        values: tuple[int, ...] = struct.unpack_from("<" + fmt, self.data, offset)
        return values

    def records(self, kind: int) -> list[int]:
        """Offsets of the records of a section."""
        offset, size = self.sections.get(kind, (0, 0))
        record = _RECORD_SIZES[kind]
        if size % record:
            raise self.fail(f"the {_SECTIONS[kind]} section is not whole {record}-byte records")
        return list(range(offset, offset + size, record))

    def string(self, at: int) -> str:
        offset, size = self.sections.get(1, (0, 0))
        if at >= size:
            raise self.fail(f"string offset {at} past the string section")
        end = self.data.find(b"\0", offset + at, offset + size)
        if end < 0:
            raise self.fail(f"unterminated string at {at}")
        return self.data[offset + at : end].decode("utf-8", "replace")


def read(data: bytes) -> SavedGraph:
    """Parse a saved graph's bytes (raises ``ValueError`` for a malformed file)."""
    f = _File(data)
    if len(data) < 64 or data[:8] != _MAGIC:
        raise f.fail("wrong magic or shorter than the header (not a graph file)")
    major, minor, order, header_size, num_sections, file_size, device = f.unpack("HHIIIQI", 8)
    if order != 0x01020304:
        raise f.fail("not a little-endian file")
    if major > _MAJOR:
        raise ValueError(f"format version {major}.{minor} is newer than {_MAJOR}.x: upgrade")
    if file_size != len(data):
        raise f.fail(f"the header gives {file_size} bytes, the file has {len(data)}")
    if header_size < 64 or header_size + 24 * num_sections > len(data):
        raise f.fail("the section table runs past the end of the file")
    for i in range(num_sections):
        kind, _, offset, size = f.unpack("IIQQ", header_size + 24 * i)
        if offset + size > len(data):
            raise f.fail(f"section {i} runs past the end of the file")
        if kind in _SECTIONS:
            f.sections[kind] = (offset, size)
    out = SavedGraph(size=len(data), version=(major, minor), device=device)
    for at in f.records(2):
        name, flags, size = f.unpack("IIQ", at)
        role = flags & 3
        out.bindings.append(
            Binding(f.string(name), _ROLES[role] if role < 3 else "?", size, bool(flags & 4))
        )
    out.regions = [f.unpack("Q", at)[0] for at in f.records(3)]
    out.libraries = [
        (f.string(lib_at), f.string(sym_at))
        for lib_at, sym_at in (f.unpack("II", at) for at in f.records(4))
    ]
    out.events = len(f.records(5))
    deps = [f.unpack("I", at)[0] for at in f.records(8)]
    args = [f.unpack("IIIIQQ", at) for at in f.records(9)]
    nodes = [f.unpack("IIIIIIIIQQIIQIIQ", at) for at in f.records(7)]

    def where(space: int, index: int, offset: int) -> str:
        if space == 1 and index < len(out.regions):
            return f"region {index}+{offset}"
        if space == 2 and index < len(out.bindings):
            return f"'{out.bindings[index].name}'+{offset}"
        return "-"

    def kernel_name(ref: int) -> str:
        if ref & _USER_KERNEL:
            index = ref & ~_USER_KERNEL
            if index >= len(out.libraries):
                raise f.fail(f"user kernel {index} does not exist")
            return out.libraries[index][1]
        name = lib.mtiart_builtin_kernel_name(ref)
        return ffi.string(name).decode() if name != ffi.NULL else f"built-in #{ref} (unknown)"

    def describe(n: tuple[int, ...]) -> str:
        kind, _, _, blocks, a, b, c, _, x, y, s0, i0, o0, s1, i1, o1 = n
        if kind == 1:
            if c + b > len(args):
                raise f.fail("a kernel's arguments run past the argument section")
            parts = []
            for akind, asize, space, index, offset, extent in args[c : c + b]:
                if akind == 0:
                    parts.append(f"{asize}B")
                else:
                    access = _ACCESS[akind] if akind < 4 else "?"
                    parts.append(f"{access} {where(space, index, offset)} ({extent} B)")
            return f"{kernel_name(a)} blocks={blocks} ({', '.join(parts)})"
        if kind == 2:
            copy = _COPY_KINDS[a] if a < 4 else "?"
            return f"{copy} {x} B {where(s1, i1, o1)} -> {where(s0, i0, o0)}"
        if kind == 3:
            return f"x{a} pattern 0x{y:x} count {x} -> {where(s0, i0, o0)}"
        if kind in (5, 6):
            return f"event {a}"
        if kind == 7:
            return f"body graph {a}"
        if kind == 8:
            cond = "WHILE" if b == 1 else "IF"
            return f"{cond} {where(s0, i0, o0)} ({c} B): body graph {a}"
        return ""

    for first, count in (f.unpack("II", at) for at in f.records(6)):
        if first + count > len(nodes):
            raise f.fail("a graph's nodes run past the node section")
        graph = []
        for n in nodes[first : first + count]:
            kind, num_deps, first_dep = n[0], n[1], n[2]
            if first_dep + num_deps > len(deps):
                raise f.fail("a node's dependencies run past the dependency section")
            graph.append(
                Node(
                    _KINDS.get(kind, f"kind {kind}"),
                    deps[first_dep : first_dep + num_deps],
                    describe(n),
                )
            )
        out.graphs.append(graph)
    if not out.graphs:
        raise f.fail("no graph")
    return out


def format_graph(saved: SavedGraph, path: str = "") -> str:
    """The text ``python -m mtia_graph.inspect`` prints."""
    lines = [
        f"{path or 'saved graph'}: format {saved.version[0]}.{saved.version[1]}, "
        f"{saved.size} bytes, saved from device {saved.device}"
    ]
    lines.append(f"bindings ({len(saved.bindings)}):")
    for b in saved.bindings:
        where = " (host)" if b.host else " (embedded)" if b.role == "constant" else ""
        lines.append(f"  {b.name:<16} {b.role:<8} {b.bytes:>12} bytes{where}")
    lines.append(f"regions ({len(saved.regions)}, {sum(saved.regions)} bytes of the graph's pool):")
    for i, size in enumerate(saved.regions):
        lines.append(f"  region {i:<9} {size:>12} bytes")
    if saved.libraries:
        lines.append(f"user kernels ({len(saved.libraries)}):")
        for library, symbol in saved.libraries:
            lines.append(f"  {symbol} in {library}")
    if saved.events:
        lines.append(f"events: {saved.events}")
    for g, nodes in enumerate(saved.graphs):
        edges = sum(len(n.deps) for n in nodes)
        title = "graph" if g == 0 else f"body graph {g}"
        lines.append(f"{title} ({len(nodes)} nodes, {edges} edges):")
        for i, n in enumerate(nodes):
            after = f"  after {', '.join(f'#{d}' for d in n.deps)}" if n.deps else ""
            lines.append(f"  #{i:<4} {n.kind:<12} {n.text}{after}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mtia_graph.inspect``."""
    parser = argparse.ArgumentParser(
        prog="python -m mtia_graph.inspect", description="Print a saved MTIA graph."
    )
    parser.add_argument("file", help="a file written by MTIAGraph.save or mtiart_graph_save")
    options = parser.parse_args(argv)
    try:
        with open(options.file, "rb") as f:
            data = f.read()
        saved = read(data)
    except (OSError, ValueError) as exc:
        print(f"python -m mtia_graph.inspect: {options.file}: {exc}", file=sys.stderr)
        return 1
    print(format_graph(saved, options.file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
