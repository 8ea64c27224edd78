"""Timeline traces: profiler.trace writes Chrome trace-event JSON of what the workers ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import mtia_graph as mtia
from mtia_graph import MTIAError, MTIAGraph, profiler

# A fork/join graph over two streams: each branch sleeps (a Python kernel releases the GIL
# while it sleeps), so two workers run the branches at the same time.
FORK_JOIN = textwrap.dedent(
    """
    import sys, time
    import mtia_graph as mtia
    from mtia_graph import MTIAGraph, profiler

    @mtia.kernel
    def branch(x):
        time.sleep(0.03)
        x += 1

    x, y = mtia.zeros(4), mtia.zeros(4)
    side = mtia.Stream()
    g = MTIAGraph()
    with mtia.graph(g):
        cap = mtia.current_stream()
        x.fill_(1)
        side.wait_stream(cap)
        branch(x)
        with mtia.stream(side):
            branch(y)
        cap.wait_stream(side)
        z = x + y
    g.replay()  # instantiates
    mtia.synchronize()
    with profiler.trace(sys.argv[1]):
        g.replay()
        g.replay()
    print(cap.stream_id, side.stream_id)
    """
)


def _run_fork_join(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    env = dict(os.environ, MTIART_NUM_WORKERS="2")
    done = subprocess.run(
        [sys.executable, "-c", FORK_JOIN, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    cap, side = map(int, done.stdout.split())
    return profiler.load(path), cap, side


def _check_format(events: list[dict[str, Any]]) -> None:
    assert events, "no events"
    for e in events:
        assert e["ph"] in ("X", "s", "f", "M"), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["name"], str) and "stream" in e["args"]
            # ts and dur in microseconds, the nanoseconds beside them
            assert abs(e["dur"] * 1000 - (e["args"]["end_ns"] - e["args"]["start_ns"])) <= 2
    flows: dict[int, list[str]] = {}
    for e in events:
        if e["ph"] in ("s", "f"):
            flows.setdefault(e["id"], []).append(e["ph"])
    assert all(sorted(v) == ["f", "s"] for v in flows.values()), flows


def test_fork_join_branches_overlap_on_two_workers(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    events, cap, side = _run_fork_join(path)
    _check_format(events)
    assert json.loads(path.read_text())["traceEvents"] == events
    nodes = [e for e in events if e["ph"] == "X" and "plan_position" in e["args"]]
    replays = sorted({e["args"]["replay"] for e in nodes})
    assert len(replays) == 2  # both replays, each with its nodes
    graph_ops = [e for e in events if e["ph"] == "X" and e["name"] == "graph replay"]
    assert len(graph_ops) == 2 and all(e["args"]["stream"] not in (0,) for e in graph_ops)
    for replay in replays:
        mine = [e for e in nodes if e["args"]["replay"] == replay]
        by_name: dict[str, list[dict[str, Any]]] = {}
        for e in mine:
            by_name.setdefault(e["name"], []).append(e)
        branches = by_name["__main__.branch"]
        assert len(branches) == 2
        a, b = branches
        assert {a["args"]["stream"], b["args"]["stream"]} == {cap, side}
        assert a["tid"] != b["tid"]  # two workers
        assert a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"]  # overlap
        (join,) = by_name["add"]
        assert join["args"]["stream"] == cap
        assert all(join["ts"] >= e["ts"] + e["dur"] - 1e-3 for e in branches)
        assert join["args"]["bytes"] == 3 * 16
        (fill,) = [e for name, es in by_name.items() if name.startswith("fill") for e in es]
        assert fill["ts"] + fill["dur"] <= min(e["ts"] for e in branches) + 1e-3
    # arrows along the edges that cross streams: into the side branch and back to the join
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert len(starts) >= 4
    for flow_id, s in starts.items():
        f = ends[flow_id]
        assert s["ts"] <= f["ts"] + 1e-3
    # one lane per worker, named
    names = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    assert {e["tid"] for e in nodes} <= {e["tid"] for e in names}


@mtia.kernel
def _nap(x):  # type: ignore[no-untyped-def]
    time.sleep(0.05)


def test_eager_ops_and_event_flows(tmp_path: Path) -> None:
    x = mtia.ones(64, 32)
    w = mtia.ones(32, 16)
    side = mtia.Stream()
    e = mtia.Event()
    path = tmp_path / "eager.json"
    with profiler.trace(path):
        y = x.matmul(w)
        _nap(y)  # the record runs after the wait is enqueued, so the wait is a real one
        e.record()
        side.wait_event(e)
        with mtia.stream(side):
            z = y.relu()
    events = profiler.load(path)
    _check_format(events)
    slices = [ev for ev in events if ev["ph"] == "X"]
    names = [ev["name"] for ev in slices]
    assert "matmul 64x32 @ 32x16" in names and "relu" in names
    assert f"{__name__}._nap" in names
    assert "event record" in names and "event wait" in names
    record = next(ev for ev in slices if ev["name"] == "event record")
    wait = next(ev for ev in slices if ev["name"] == "event wait")
    assert wait["args"]["stream"] == side.stream_id != record["args"]["stream"]
    flows = [ev for ev in events if ev["ph"] in ("s", "f") and ev["name"] == "event"]
    assert len(flows) == 2
    del z


def test_trace_misuse_is_refused_and_recoverable(tmp_path: Path) -> None:
    with pytest.raises(MTIAError, match="no trace is running"):
        profiler.stop(tmp_path / "x.json")
    with pytest.raises(MTIAError, match="no trace is running"):
        profiler.flush(tmp_path / "x.json")
    with profiler.trace(tmp_path / "ok.json"):
        with pytest.raises(MTIAError, match="already running"):
            profiler.start()
        mtia.ones(4).add_(1)
        with pytest.raises(MTIAError, match="cannot write"):
            profiler.flush(tmp_path / "missing" / "x.json")
        profiler.flush(tmp_path / "partial.json")
    assert profiler.load(tmp_path / "partial.json")
    assert sorted(os.listdir(tmp_path)) == ["ok.json", "partial.json"]
    # a body that raises still writes the trace, and the exception propagates
    with pytest.raises(ZeroDivisionError), profiler.trace(tmp_path / "raised.json"):
        mtia.ones(4).add_(1)
        1 / 0  # noqa: B018
    assert any(ev["ph"] == "X" for ev in profiler.load(tmp_path / "raised.json"))
    # a stop that cannot write still stops
    profiler.start()
    with pytest.raises(MTIAError, match="cannot write"):
        profiler.stop(tmp_path / "missing" / "y.json")
    profiler.start()
    profiler.stop(None)


def test_trace_keeps_destroyed_graphs_readable(tmp_path: Path) -> None:
    x = mtia.zeros(8)
    path = tmp_path / "gone.json"
    with profiler.trace(path):
        g = MTIAGraph()
        with mtia.graph(g):
            x.add_(2)
        g.replay()
        g.replay()
        mtia.synchronize()
        g.reset()  # the executable is gone before the trace is written
        del g
    names = [ev["name"] for ev in profiler.load(path) if ev["ph"] == "X"]
    assert names.count("add scalar=2") >= 2


def test_view_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "trace.json"
    _run_fork_join(path)
    out = tmp_path / "trace.png"
    done = subprocess.run(
        [sys.executable, "-m", "mtia_graph.profiler", "view", str(path), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtia_graph.profiler",
            "view",
            str(tmp_path / "no.json"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1 and "no.json" in bad.stderr
