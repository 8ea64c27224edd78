"""What the runtime shows of its work: graph pictures (debug_dump, dot), allocation names."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import mtia_graph as mtia
from mtia_graph import MTIAGraph

# ------------------------------------------------------------------ a small DOT parser

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|->|[{}\[\];=,]|[^\s{}\[\];=,"]+')


@dataclass
class Dot:
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    # cluster name -> (its attributes, the nodes it holds directly or in nested clusters)
    clusters: dict[str, tuple[dict[str, str], set[str]]] = field(default_factory=dict)
    graph_attrs: dict[str, str] = field(default_factory=dict)


def _unquote(tok: str) -> str:
    if tok.startswith('"'):
        return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), tok[1:-1])
    return tok


def parse_dot(text: str) -> Dot:
    """Statements of the DOT language that graph dumps use: node statements with attribute
    lists, edges (a -> b [attrs]), attribute assignments, nested subgraphs."""
    toks = _TOKEN.findall(text)
    dot = Dot()
    pos = 0

    def attr_list() -> dict[str, str]:
        nonlocal pos
        attrs: dict[str, str] = {}
        assert toks[pos] == "["
        pos += 1
        while toks[pos] != "]":
            key = toks[pos]
            assert toks[pos + 1] == "=", toks[pos : pos + 3]
            attrs[key] = _unquote(toks[pos + 2])
            pos += 3
            if toks[pos] in (",", ";"):
                pos += 1
        pos += 1
        return attrs

    def body(stack: list[str]) -> None:
        nonlocal pos
        assert toks[pos] == "{"
        pos += 1
        while toks[pos] != "}":
            tok = toks[pos]
            if tok == ";":
                pos += 1
            elif tok == "subgraph":
                name = toks[pos + 1]
                pos += 2
                dot.clusters[name] = ({}, set())
                body([*stack, name])
            elif tok in ("node", "edge", "graph"):
                pos += 1
                attr_list()
            elif toks[pos + 1] == "=":
                value = _unquote(toks[pos + 2])
                if stack:
                    dot.clusters[stack[-1]][0][tok] = value
                else:
                    dot.graph_attrs[tok] = value
                pos += 3
            elif toks[pos + 1] == "->":
                src, dst = tok, toks[pos + 2]
                pos += 3
                attrs = attr_list() if toks[pos] == "[" else {}
                dot.edges.append((src, dst, attrs))
            else:
                pos += 1
                if toks[pos] == "[":
                    dot.nodes.setdefault(tok, {}).update(attr_list())
                else:
                    dot.nodes.setdefault(tok, {})
                for name in stack:
                    dot.clusters[name][1].add(tok)
        pos += 1

    assert toks[0] == "digraph"
    pos = 2
    body([])
    return dot


def edges(dot: Dot) -> set[tuple[str, str]]:
    return {(a, b) for a, b, _ in dot.edges}


def stream_clusters(dot: Dot) -> dict[str, set[str]]:
    """The stream clusters by label ("stream 5") -> the nodes in them."""
    return {
        attrs["label"]: members
        for name, (attrs, members) in dot.clusters.items()
        if name.startswith("cluster_stream_")
    }


def label(dot: Dot, node: str) -> list[str]:
    return dot.nodes[node]["label"].split("\n")


# ------------------------------------------------------------------ graph pictures


@mtia.kernel
def _scale(x):  # type: ignore[no-untyped-def]
    x *= 2


def _fork_join_graph() -> tuple[MTIAGraph, mtia.Stream, mtia.Stream, list[mtia.Tensor]]:
    w = mtia.ones(8, 2)
    w.name = "weights"
    x = mtia.ones(4, 8)
    side = mtia.Stream()
    g = MTIAGraph(keep_graph=True)
    main = mtia.current_stream()
    with mtia.graph(g):
        cap = mtia.current_stream()
        h = x.matmul(w)  # on the capturing stream
        side.wait_stream(cap)
        with mtia.stream(side):
            z = (x + 1).relu()
            _scale(z)
        cap.wait_stream(side)
        out = h.sum(1)
    del main
    return g, cap, side, [w, x, h, z, out]


def test_dot_labels_buffers_streams_and_edges() -> None:
    g, cap, side, _keep = _fork_join_graph()
    dot = parse_dot(g.dot())
    assert g.num_nodes() == len(dot.nodes) == 5
    labels = {n: label(dot, n) for n in dot.nodes}
    first = {n: lines[0] for n, lines in labels.items()}
    assert first["n0"] == "#0 matmul 4x8 @ 8x2"
    assert first["n1"] == "#1 add scalar=1"
    assert first["n2"] == "#2 relu"
    assert first["n3"] == f"#3 {_scale.__module__}._scale"
    assert first["n4"] == "#4 sum dim=1"
    # buffers by dtype, shape and name; no addresses unless asked
    assert labels["n0"][1:] == ["W float32[4, 2]", "R float32[4, 8]", 'R float32[8, 2] "weights"']
    assert labels["n3"][1:] == ["RW float32[4, 8]"]
    assert "0x" not in g.dot() and "blocks=" not in g.dot()
    # one cluster per capturing stream
    clusters = stream_clusters(dot)
    assert clusters == {
        f"stream {cap.stream_id}": {"n0", "n4"},
        f"stream {side.stream_id}": {"n1", "n2", "n3"},
    }
    # the side stream forks after the matmul and joins before the sum
    assert edges(dot) == {("n0", "n1"), ("n0", "n4"), ("n1", "n2"), ("n2", "n3"), ("n3", "n4")}
    kernel_shape = {a["shape"] for a in dot.nodes.values()}
    assert kernel_shape == {"box"}
    # the border colours tell the streams apart
    assert dot.nodes["n0"]["color"] != dot.nodes["n1"]["color"]
    assert dot.nodes["n0"]["color"] == dot.nodes["n4"]["color"]


def test_dot_verbose_adds_addresses_sizes_and_blocks() -> None:
    g, _cap, _side, (w, *_rest) = _fork_join_graph()
    dot = parse_dot(g.dot(verbose=True))
    lines = label(dot, "n0")
    assert lines[1].startswith("blocks=")
    assert f'R float32[8, 2] "weights" {hex(w.data_ptr())} +64' in lines
    assert g.dot(verbose=True) != g.dot()


def test_dot_of_structured_graphs_draws_every_kind() -> None:
    flag = mtia.zeros(1, dtype=mtia.int32)
    x = mtia.zeros(4)
    inner = MTIAGraph()
    with mtia.graph(inner):
        x.add_(1)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        inner.replay()  # a child graph node
        with mtia.if_(flag):
            x.mul_(3)
        e = mtia.Event()
        e.record()
        mtia.current_stream().wait_event(e)
    dot = parse_dot(g.dot())
    shapes = {label(dot, n)[0].split(" ", 1)[1]: a["shape"] for n, a in dot.nodes.items()}
    assert shapes.get("child graph (1 nodes)") == "box3d"
    assert shapes.get("conditional IF (1 nodes)") == "diamond"
    assert shapes.get("add scalar=1") == "box" and shapes.get("mul scalar=3") == "box"
    # each body is a cluster next to its node, which points at the body's roots
    body_clusters = [n for n in dot.clusters if not n.startswith("cluster_stream_")]
    assert len(body_clusters) == 2
    dashed = [(a, b) for a, b, attrs in dot.edges if attrs.get("style") == "dashed"]
    assert len(dashed) == 2 and all(b.startswith(a + "_") for a, b in dashed)


def test_tensor_name_names_the_allocation() -> None:
    a = mtia.zeros(16)
    assert a.name is None
    a.name = "cache"
    view = a[4:]
    assert view.name == "cache" == a.name
    a.name = None
    assert view.name is None
    with pytest.raises(TypeError):
        a.name = 3  # type: ignore[assignment]
    empty = mtia.zeros(0)
    assert empty.name is None
    with pytest.raises(ValueError):
        empty.name = "x"


def test_a_node_keeps_the_name_it_was_captured_with() -> None:
    a = mtia.ones(4)
    a.name = "before"
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        b = a * 2
    a.name = "after"
    text = g.dot()
    assert '"before"' in label(parse_dot(text), "n0")[-1] and "after" not in text
    del b


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz")
@pytest.mark.parametrize("ext, magic", [(".svg", b"<svg"), (".png", b"\x89PNG")])
def test_debug_dump_renders_with_graphviz(tmp_path: Path, ext: str, magic: bytes) -> None:
    g, *_keep = _fork_join_graph()
    path = tmp_path / ("graph" + ext)
    g.debug_dump(path)
    data = path.read_bytes()
    assert magic in data[:512]
    assert sorted(os.listdir(tmp_path)) == ["graph" + ext]  # no temporary left


def test_debug_dump_writes_dot_atomically(tmp_path: Path) -> None:
    g, *_keep = _fork_join_graph()
    path = tmp_path / "graph.dot"
    g.debug_dump(str(path), verbose=True)
    assert path.read_text() == g.dot(verbose=True)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_debug_dump_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g, *_keep = _fork_join_graph()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    path = tmp_path / "graph.svg"
    with pytest.raises(RuntimeError, match="Graphviz"):
        g.debug_dump(path)
    assert os.listdir(tmp_path) == []
    # a graph without a template: nothing written either
    with pytest.raises(RuntimeError, match="keep_graph"):
        MTIAGraph().debug_dump(tmp_path / "g.dot")
    assert os.listdir(tmp_path) == []
    # a directory that does not exist
    with pytest.raises(OSError):
        g.debug_dump(tmp_path / "missing" / "g.dot")
    assert os.listdir(tmp_path) == []
