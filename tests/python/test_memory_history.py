"""Memory history: allocations keep the stack that made them; snapshots in torch's structure."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import mtia_graph as mtia
from mtia_graph import MTIAGraph
from mtia_graph.memory import _dump_snapshot

# A script that captures a graph and leaks one tensor: the snapshot shows its allocating
# line, in a block of the graph's pool.
LEAK = textwrap.dedent(
    """
    import pickle, sys
    import mtia_graph as mtia
    from mtia_graph import MTIAGraph
    from mtia_graph.memory import _dump_snapshot

    mtia.record_memory_history(max_entries=100000)
    x = mtia.ones(64)
    g = MTIAGraph()
    leaked = []
    with mtia.graph(g):
        y = x * 2
        leaked.append(y + 1)  # LEAK
    _dump_snapshot(sys.argv[1])
    print(g.pool()[0], g.pool()[1], leaked[0].data_ptr(), hex(id(g)))
    """
)


def _line_of(script: str, marker: str) -> int:
    return next(i for i, text in enumerate(script.splitlines(), 1) if marker in text)


def test_a_leak_in_a_graph_shows_its_allocating_line(tmp_path: Path) -> None:
    script = tmp_path / "leak.py"
    script.write_text(LEAK)
    dump = tmp_path / "snapshot.pickle"
    done = subprocess.run(
        [sys.executable, str(script), str(dump)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    p0, p1, address, graph_id = done.stdout.split()
    with open(dump, "rb") as f:
        snap: dict[str, Any] = pickle.load(f)
    assert set(snap) >= {"segments", "device_traces"}
    (seg,) = [s for s in snap["segments"] if any(b["address"] == int(address) for b in s["blocks"])]
    assert seg["segment_pool_id"] == (int(p0), int(p1)) != (0, 0)
    assert seg["pool_label"] == f"MTIAGraph at {graph_id}"
    (block,) = [b for b in seg["blocks"] if b["address"] == int(address)]
    assert block["state"] == "active_allocated"
    top = block["frames"][0]
    assert top["filename"] == str(script) and top["line"] == _line_of(LEAK, "# LEAK")
    assert top["name"] == "<module>"
    # the log: the leaked tensor's allocation, with the same frames
    allocs = [e for e in snap["device_traces"][0] if e["action"] == "alloc"]
    mine = [e for e in allocs if e["addr"] == int(address)]
    assert mine and mine[-1]["frames"][0]["line"] == top["line"]
    assert all(set(e) >= {"action", "addr", "size", "stream", "time_us", "frames"} for e in allocs)


@pytest.fixture
def history() -> Any:
    mtia.record_memory_history()
    yield
    mtia.record_memory_history(None)


def _here() -> int:
    return sys._getframe(1).f_lineno


def test_blocks_keep_python_and_c_frames(history: None) -> None:
    mtia.record_memory_history(stacks="all")
    t = mtia.zeros(32)
    line = _here() - 1
    segs = mtia.memory_snapshot()
    (block,) = [b for s in segs for b in s["blocks"] if b["address"] == t.data_ptr()]
    py = [f for f in block["frames"] if f["filename"] == __file__]
    assert py[0]["line"] == line and py[0]["name"] == "test_blocks_keep_python_and_c_frames"
    assert any(f["name"].startswith("0x") for f in block["frames"])  # the C return addresses


def test_frees_are_logged_and_reused_addresses_do_not_inherit_frames(history: None) -> None:
    a = mtia.zeros(1024)
    address = a.data_ptr()
    del a
    mtia.synchronize()
    snap = mtia.snapshot()
    actions = [(e["action"], e["addr"]) for e in snap["device_traces"][0]]
    assert ("alloc", address) in actions and ("free_requested", address) in actions
    blocks = [b for s in snap["segments"] for b in s["blocks"] if b["address"] == address]
    assert all(b["frames"] == [] for b in blocks if b["state"] == "inactive")


def test_history_off_keeps_frames_empty_and_bad_arguments_refused() -> None:
    mtia.record_memory_history(None)
    t = mtia.zeros(16)
    (block,) = [
        b for s in mtia.memory_snapshot() for b in s["blocks"] if b["address"] == t.data_ptr()
    ]
    assert block["frames"] == []
    with pytest.raises(ValueError):
        mtia.record_memory_history("sometimes")
    with pytest.raises(ValueError):
        mtia.record_memory_history(stacks="cpp")
    with pytest.raises(ValueError):
        mtia.record_memory_history(max_entries=-1)


def test_max_entries_bounds_the_log(history: None) -> None:
    mtia.record_memory_history(max_entries=4)
    keep = [mtia.zeros(8) for _ in range(10)]
    log = mtia.snapshot()["device_traces"][0]
    assert len(log) == 4
    assert [e["addr"] for e in log] == [t.data_ptr() for t in keep[-4:]]


def test_dump_snapshot_pickles_the_snapshot(tmp_path: Path, history: None) -> None:
    t = mtia.ones(4)
    path = tmp_path / "snap.pickle"
    _dump_snapshot(str(path))
    with open(path, "rb") as f:
        data = pickle.load(f)
    assert any(b["address"] == t.data_ptr() for s in data["segments"] for b in s["blocks"])
    assert os.path.getsize(path) > 0


def test_graph_pools_are_labelled(history: None) -> None:
    x = mtia.ones(8)
    g = MTIAGraph()
    with mtia.graph(g):
        y = x + 1
    labels = {
        s.get("pool_label") for s in mtia.memory_snapshot() if s["segment_pool_id"] == g.pool()
    }
    assert labels == {f"MTIAGraph at {hex(id(g))}"}
    del y
