"""MTIAGraph.save: an MLP step captured here, saved, loaded and replayed by C and C++
programs (examples/replay.c, replay.cpp) with outputs matching this process's replays;
loading in-process through the C API; what save refuses; python -m mtia_graph.inspect."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import MTIAGraph, MTIAValueError
from mtia_graph._C import ffi, lib
from mtia_graph.inspect import format_graph, read

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(mtia.__file__).parent
REPLAYS = 100
BATCH, FEATURES, HIDDEN, CLASSES = 16, 64, 128, 10


def mlp(x, w1, b1, w2, b2):
    return ((x @ w1 + b1).gelu() @ w2 + b2).softmax(dim=-1)


@pytest.fixture()
def captured_mlp():
    """A captured MLP step: (graph, x, y, weights), warmed up as the demo does."""
    rng = np.random.default_rng(0)
    w1 = mtia.from_numpy((rng.standard_normal((FEATURES, HIDDEN)) / 8).astype(np.float32))
    b1 = mtia.from_numpy((rng.standard_normal(HIDDEN) / 10).astype(np.float32))
    w2 = mtia.from_numpy((rng.standard_normal((HIDDEN, CLASSES)) / 11).astype(np.float32))
    b2 = mtia.from_numpy((rng.standard_normal(CLASSES) / 10).astype(np.float32))
    x = mtia.zeros((BATCH, FEATURES))
    side = mtia.Stream()
    side.wait_stream(mtia.current_stream())
    with mtia.stream(side):
        mlp(x, w1, b1, w2, b2)
    mtia.current_stream().wait_stream(side)
    g = MTIAGraph()
    with mtia.graph(g):
        y = mlp(x, w1, b1, w2, b2)
    return g, x, y, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def python_replays(g, x, y, inputs):
    outputs = []
    for batch in inputs:
        x.copy_(batch)
        g.replay()
        outputs.append(y.numpy())
    return np.stack(outputs)


def build_example(tmp_path: Path, source: str, compiler: str, *flags: str) -> Path:
    exe = tmp_path / Path(source).stem
    cmd = [
        compiler,
        *flags,
        str(REPO / "examples" / source),
        f"-I{REPO / 'include'}",
        f"-L{PACKAGE_DIR}",
        "-l:libmtiart.so.0",
        f"-Wl,-rpath,{PACKAGE_DIR}",
        "-o",
        str(exe),
    ]
    subprocess.run(cmd, check=True)
    return exe


@pytest.mark.parametrize(
    ("source", "compiler", "flags"),
    [("replay.c", "cc", ("-std=c11",)), ("replay.cpp", "c++", ("-std=c++17",))],
)
def test_mlp_saved_in_python_replays_in_c(captured_mlp, tmp_path, source, compiler, flags):
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} to build examples/{source}")
    g, x, y, weights = captured_mlp
    path = tmp_path / "mlp.mtg"
    g.save(path, inputs={"x": x}, outputs={"y": y}, constants=weights)
    assert path.exists() and not list(tmp_path.glob("mlp.mtg.tmp*"))

    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((REPLAYS, BATCH, FEATURES)).astype(np.float32)
    expected = python_replays(g, x, y, inputs)
    (tmp_path / "inputs.f32").write_bytes(inputs.tobytes())

    exe = build_example(tmp_path, source, compiler, *flags)
    run = subprocess.run(
        [str(exe), str(path), str(tmp_path / "inputs.f32"), str(tmp_path / "outputs.f32")],
        check=True,
        capture_output=True,
        text=True,
    )
    assert f"{REPLAYS} times" in run.stdout
    got = np.frombuffer((tmp_path / "outputs.f32").read_bytes(), dtype=np.float32)
    got = got.reshape(REPLAYS, BATCH, CLASSES)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_loaded_in_process_through_the_c_api(captured_mlp, tmp_path):
    g, x, y, weights = captured_mlp
    path = tmp_path / "mlp.mtg"
    g.save(path, inputs={"x": x}, outputs={"y": y}, constants=weights)
    batch = np.random.default_rng(2).standard_normal((BATCH, FEATURES)).astype(np.float32)
    expected = python_replays(g, x, y, [batch])[0]

    exec_ = load_and_instantiate(path)
    count = ffi.new("size_t *")
    assert lib.mtiart_graph_exec_get_node_count(exec_, count) == 0
    assert count[0] == g.num_nodes()
    x2, y2 = mtia.from_numpy(batch), mtia.zeros((BATCH, CLASSES))
    stream = mtia.current_stream()
    # Unbound: the launch is refused, naming the binding.
    assert lib.mtiart_graph_launch(exec_, stream._handle) == lib.MTIART_ERROR_NOT_PERMITTED
    assert b"'x'" in ffi.string(lib.mtiart_last_error_message())
    bind(exec_, "x", x2)
    bind(exec_, "y", y2)
    assert lib.mtiart_graph_launch(exec_, stream._handle) == 0
    np.testing.assert_allclose(y2.numpy(), expected, rtol=0, atol=1e-6)
    lib.mtiart_graph_exec_destroy(exec_)


def load_and_instantiate(path):
    graph = ffi.new("mtiart_graph *")
    assert lib.mtiart_graph_load(os.fsencode(path), 0, ffi.NULL, graph) == 0
    exec_ = ffi.new("mtiart_graph_exec *")
    assert lib.mtiart_graph_instantiate(graph[0], exec_) == 0
    lib.mtiart_graph_destroy(graph[0])
    return exec_[0]


def bind(exec_, name, tensor):
    ptr = ffi.cast("void *", tensor.data_ptr())
    status = lib.mtiart_graph_exec_bind(exec_, name.encode(), ptr, tensor.nbytes)
    assert status == 0, ffi.string(lib.mtiart_last_error_message())


def test_while_loop_saved_with_its_condition_as_a_binding(tmp_path):
    count = mtia.zeros(1, dtype=mtia.int32)
    flag = mtia.ones(1, dtype=mtia.bool)
    limit = mtia.tensor([5], dtype=mtia.int32)
    g = MTIAGraph()
    with mtia.graph(g), mtia.while_(flag):
        count.add_(1)
        flag.copy_(count < limit)
    g.replay()
    assert count.item() == 5
    path = tmp_path / "loop.mtg"
    g.save(path, inputs={"count": count, "flag": flag, "limit": limit})
    assert "conditional  WHILE 'flag'+0 (1 B): body graph 1" in format_graph(
        read(path.read_bytes())
    )

    exec_ = load_and_instantiate(path)
    count2 = mtia.tensor([2], dtype=mtia.int32)
    flag2 = mtia.ones(1, dtype=mtia.bool)
    limit2 = mtia.tensor([9], dtype=mtia.int32)
    for name, t in (("count", count2), ("flag", flag2), ("limit", limit2)):
        bind(exec_, name, t)
    assert lib.mtiart_graph_launch(exec_, mtia.current_stream()._handle) == 0
    assert count2.item() == 9 and not flag2.item()
    lib.mtiart_graph_exec_destroy(exec_)


def test_save_keeps_the_template_or_uses_the_executable(captured_mlp, tmp_path):
    g, x, y, weights = captured_mlp  # keep_graph=False: saved from the executable
    g.save(tmp_path / "a.mtg", inputs={"x": x}, outputs={"y": y}, constants=weights)
    rng = np.random.default_rng(0)
    w = mtia.from_numpy(rng.standard_normal((4, 4)).astype(np.float32))
    a = mtia.ones((4, 4))
    kept = MTIAGraph(keep_graph=True)
    with mtia.graph(kept):
        out = a @ w
    kept.save(tmp_path / "b.mtg", inputs={"a": a}, outputs={"out": out}, constants={"w": w})
    saved = read((tmp_path / "b.mtg").read_bytes())
    assert [(b.name, b.role, b.bytes) for b in saved.bindings] == [
        ("a", "input", 64),
        ("out", "output", 64),
        ("w", "constant", 64),
    ]
    assert len(saved.graphs[0]) == kept.num_nodes()


def test_save_refuses_what_cannot_be_saved(tmp_path):
    @mtia.kernel
    def double(t):
        t *= 2

    t = mtia.ones(4)
    g = MTIAGraph()
    with mtia.graph(g):
        double(t)
    path = tmp_path / "refused.mtg"
    with pytest.raises(MTIAValueError, match=r"MTIAGraph.save.*node 0 \(kernel.*Python kernel"):
        g.save(path, inputs={"t": t})
    assert not path.exists() and not list(tmp_path.iterdir())

    # A tensor from outside the graph that no binding names.
    u = mtia.ones(4)
    g2 = MTIAGraph()
    with mtia.graph(g2):
        u.add_(1)
    with pytest.raises(MTIAValueError, match="name it as an input, output or constant"):
        g2.save(path)
    with pytest.raises(MTIAValueError, match="overlap"):
        g2.save(path, inputs={"u": u, "v": u})
    with pytest.raises(TypeError, match="names"):
        g2.save(path, inputs={"u": np.ones(4)})  # type: ignore[dict-item]
    assert not list(tmp_path.iterdir())
    g2.save(path, inputs={"u": u})
    with pytest.raises(RuntimeError, match="before a successful capture"):
        MTIAGraph().save(path)


def test_inspect_prints_the_saved_graph(captured_mlp, tmp_path):
    g, x, y, weights = captured_mlp
    path = tmp_path / "mlp.mtg"
    g.save(path, inputs={"x": x}, outputs={"y": y}, constants=weights)
    run = subprocess.run(
        [sys.executable, "-m", "mtia_graph.inspect", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    text = run.stdout
    assert "format 1.0" in text
    assert f"x                input    {BATCH * FEATURES * 4:>12} bytes" in text
    assert f"y                output   {BATCH * CLASSES * 4:>12} bytes" in text
    assert "w1               constant" in text and "(embedded)" in text
    assert "mtiart_matmul" in text and "mtiart_softmax" in text
    assert f"graph ({g.num_nodes()} nodes" in text
    assert text.strip() == format_graph(read(path.read_bytes()), str(path))

    bad = tmp_path / "bad.mtg"
    bad.write_bytes(path.read_bytes()[:100])
    run = subprocess.run(
        [sys.executable, "-m", "mtia_graph.inspect", str(bad)], capture_output=True, text=True
    )
    assert run.returncode == 1 and "not a valid saved graph" in run.stderr
    with pytest.raises(ValueError, match="newer"):
        data = bytearray(path.read_bytes())
        data[8] = 9
        read(bytes(data))
