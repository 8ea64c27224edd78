"""Graph structure from Python: events inside graphs (external records, waits across graphs),
fork/join captured as edges, replays captured as child graphs, updates in place
(MTIAGraph.update, recapture), and conditional bodies (while_, if_)."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import CaptureError, Event, KernelError, MTIAGraph, MTIAValueError, Stream
from mtia_graph._C import ffi, lib


def same(t, expected):
    np.testing.assert_array_equal(t.numpy(), np.asarray(expected))


def node_kinds(g):
    """The kinds (MTIART_NODE_*) of a keep_graph=True graph's top-level nodes."""
    kinds = []
    info = ffi.new("mtiart_node_info *")
    for i in range(g.num_nodes()):
        mtia._C.check(lib.mtiart_graph_get_node_info(g._graph, i, info))
        kinds.append(int(info.kind))
    return kinds


# ----------------------------------------------------------------- events in graphs


def test_graph_timing():
    """torch's test_graph_timing: external events time the graph's work at every replay."""
    x = mtia.ones(1 << 18)
    start = Event(enable_timing=True, external=True)
    end = Event(enable_timing=True, external=True)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        start.record()
        y = (x + 1) * 2
        y.exp()
        end.record()
    assert node_kinds(g).count(lib.MTIART_NODE_EVENT_RECORD) == 2
    with pytest.raises(MTIAValueError, match="recorded"):
        start.elapsed_time(end)  # the capture recorded nothing
    for _ in range(2):
        g.replay()
        mtia.synchronize()
        assert end.query()
        assert start.elapsed_time(end) > 0
    same(y, np.full(1 << 18, 4.0))


def test_ordinary_events_in_a_capture_are_no_nodes():
    x = mtia.ones(4)
    ev = Event(enable_timing=True)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        ev.record()
        y = x + 1
    assert g.num_nodes() == 1 and ev.external is False
    g.replay()
    mtia.synchronize()
    with pytest.raises(MTIAValueError):
        ev.elapsed_time(ev)  # never recorded: the replay does not record it
    same(y, [2] * 4)


def test_graph_external_wait_and_record():
    """torch's test_graph_external_wait_and_record: graph `sig` blocks in a host function
    and then records `start`; graph `work` waits on it, copies and records `end`."""
    x = mtia.ones(10)
    dst = mtia.zeros(10)
    start = Event(external=True)
    end = Event(external=True)
    sig, work = MTIAGraph(), MTIAGraph()
    s1, s2 = Stream(), Stream()
    release = threading.Event()
    with mtia.graph(sig, stream=s1):
        mtia.launch_host_func(lambda: release.wait(30))
        start.record()
    with mtia.graph(work, stream=s2):
        start.wait()
        dst.copy_(x)
        end.record()
    for _ in range(2):
        release.clear()
        dst.zero_()
        mtia.synchronize()
        with mtia.stream(s1):
            sig.replay()
        with mtia.stream(s2):
            work.replay()
        time.sleep(0.05)
        assert not end.query()
        assert not s2.query()
        same(dst, np.zeros(10))  # nothing writes dst before the host function returns
        release.set()
        end.synchronize()
        same(dst, np.ones(10))
        s1.synchronize()


def test_work_after_a_replay_waits_for_its_record(gate):
    side = Stream()
    done = Event(external=True)
    x = mtia.zeros(8)
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        x.add_(1)
        done.record()
    other = Stream()
    y = mtia.zeros(8)
    mtia.synchronize()
    gate.block(mtia.current_stream())
    g.replay()  # on the gated default stream: its record is reserved now
    with mtia.stream(other):
        done.wait()
        y.add_(x)
    time.sleep(0.02)
    assert not done.query() and not other.query()
    gate.open()
    other.synchronize()
    same(y, [1] * 8)


# ----------------------------------------------------------------- fork/join as edges


def test_fork_join_makes_edges_not_nodes():
    s1, s2 = Stream(), Stream()
    a = mtia.arange(64, dtype=mtia.float32)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        cur = mtia.current_stream()
        b = a * 2
        s1.wait_stream(cur)
        s2.wait_stream(cur)
        with mtia.stream(s1):
            c = b + 1
        with mtia.stream(s2):
            d = b * 3
        cur.wait_stream(s1)
        cur.wait_stream(s2)
        e = c + d
    kinds = node_kinds(g)
    assert len(kinds) == 4 and set(kinds) == {lib.MTIART_NODE_KERNEL}
    assert "n1 -> n3" in g.dot() and "n2 -> n3" in g.dot()
    g.replay()
    same(e, np.arange(64) * 8 + 1)


def test_a_forked_stream_may_go_once_joined():
    a = mtia.ones(16)
    g = MTIAGraph()
    with mtia.graph(g):
        cur = mtia.current_stream()
        side = Stream()
        side.wait_stream(cur)
        with mtia.stream(side):
            b = a * 3
        cur.wait_stream(side)
        handle = int(ffi.cast("uintptr_t", side._handle))
        del side  # its handle is destroyed here: allowed, its work was joined back
        gc.collect()
        stream_id = ffi.new("uint64_t *")
        status = lib.mtiart_stream_get_id(ffi.cast("mtiart_stream", handle), stream_id)
        assert status == lib.MTIART_ERROR_INVALID_HANDLE
        c = b + 1
    g.replay()
    same(c, [4] * 16)


# ----------------------------------------------------------------- child graphs


def test_replay_inside_a_capture_is_a_child_graph():
    y = mtia.zeros(4)
    calls = []
    inner = MTIAGraph()
    with mtia.graph(inner):
        y.add_(1)
        mtia.launch_host_func(lambda: calls.append(1))
    outer = MTIAGraph(keep_graph=True)
    with mtia.graph(outer):
        inner.replay()
        inner.replay()
        y.mul_(2)
    assert node_kinds(outer) == [lib.MTIART_NODE_CHILD_GRAPH] * 2 + [lib.MTIART_NODE_KERNEL]
    same(y, [0] * 4)  # captured, not run
    inner.reset()  # the child nodes are copies, their host functions kept with them
    outer.replay()
    same(y, [4] * 4)
    assert calls == [1, 1]
    assert "subgraph cluster_n0" in outer.dot()


# ----------------------------------------------------------------- updates


def test_update_runs_the_other_graphs_parameters():
    a, b = mtia.full((8,), 1.0), mtia.full((8,), 10.0)
    out = mtia.zeros(8)
    g = MTIAGraph()
    with mtia.graph(g):
        out.add_(a)
    g2 = MTIAGraph(keep_graph=True)
    with mtia.graph(g2, pool=g.pool()):
        out.add_(b)
    g.replay()
    same(out, [1] * 8)
    g.update(g2)
    g.replay()
    same(out, [11] * 8)
    # a graph of another structure is refused and changes nothing
    g3 = MTIAGraph(keep_graph=True)
    with mtia.graph(g3):
        out.add_(a)
        out.add_(a)
    with pytest.raises(MTIAValueError, match=r"the graph has 2 nodes where the executable.s has 1"):
        g.update(g3)
    g.replay()
    same(out, [21] * 8)
    with pytest.raises(RuntimeError, match="keep_graph=True"):
        g.update(MTIAGraph())
    with pytest.raises(TypeError):
        g.update(object())  # type: ignore[arg-type]


def test_update_keeps_the_parameters_of_pending_replays(gate):
    a, b = mtia.full((4,), 1.0), mtia.full((4,), 10.0)
    out = mtia.zeros(4)
    g = MTIAGraph()
    with mtia.graph(g):
        out.add_(a)
    g2 = MTIAGraph(keep_graph=True)
    with mtia.graph(g2):
        out.add_(b)
    gate.block(mtia.current_stream())
    g.replay()  # launched with a
    g.update(g2)
    g.replay()  # with b
    gate.open()
    same(out, [11] * 4)


def test_recapture_updates_the_executable_in_place():
    x1, x2 = mtia.full((16,), 2.0), mtia.full((16,), 5.0)
    out = mtia.zeros(16)
    calls = []
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        out.copy_(x1)
        out.mul_(3)
        mtia.launch_host_func(lambda: calls.append("first"))
    g.replay()
    same(out, [6] * 16)
    with g.recapture():
        out.copy_(x2)
        out.mul_(3)
        mtia.launch_host_func(lambda: calls.append("second"))
    g.replay()
    same(out, [15] * 16)
    assert calls == ["first", "second"]
    assert "pool" in g.dot()  # the template is the new capture's
    # A capture of another structure is refused: the executable is left as it was.
    with pytest.raises(MTIAValueError, match="kernel node where it was a memcpy"), g.recapture():
        out.mul_(2)
        out.mul_(3)
        out.add_(1)
    out.zero_()
    g.replay()
    same(out, [15] * 16)
    assert not mtia.is_current_stream_capturing()
    with pytest.raises(RuntimeError, match="before a successful capture"), MTIAGraph().recapture():
        pass


# ----------------------------------------------------------------- conditionals


def _jacobi_setup(n=32):
    b = mtia.from_numpy(np.linspace(1.0, 4.0, n))
    x = mtia.zeros(n, dtype=mtia.float64)
    flag = mtia.ones(1, dtype=mtia.int32)
    iters = mtia.zeros(1, dtype=mtia.int64)
    limit = mtia.full((1,), 10**6, dtype=mtia.int64)
    return b, x, flag, iters, limit


def _jacobi_step(b, x, flag, iters, limit, tol=1e-10):
    new = (b + x) * 0.5
    res = (new - x).abs().sum()
    x.copy_(new)
    iters.add_(1)
    flag.copy_((res > tol) & (iters < limit))


def test_while_loop_replays_the_eager_iterates():
    b, x, flag, iters, limit = _jacobi_setup()
    history = []
    while flag.item():
        _jacobi_step(b, x, flag, iters, limit)
        history.append(x.numpy().copy())
    assert len(history) > 20 and iters.item() == len(history)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g), mtia.while_(flag):
        _jacobi_step(b, x, flag, iters, limit)
    assert node_kinds(g) == [lib.MTIART_NODE_CONDITIONAL]
    dot = g.dot()
    assert "conditional WHILE" in dot and "subgraph cluster_n0" in dot
    # The loop bounded at k iterations ends on the k-th eager iterate, bit for bit.
    for k in (1, 2, 7, len(history), len(history) + 5):
        x.zero_()
        iters.zero_()
        flag.fill_(1)
        limit.fill_(k)
        g.replay()  # the whole loop on the device
        done = min(k, len(history))
        assert iters.item() == done
        np.testing.assert_array_equal(x.numpy(), history[done - 1])


def test_if_runs_once_when_set_and_nests_in_a_while():
    loop = mtia.ones(1, dtype=mtia.int32)
    even = mtia.zeros(1, dtype=mtia.bool)
    count, evens = mtia.zeros(1, dtype=mtia.int64), mtia.zeros(1, dtype=mtia.int64)
    g = MTIAGraph()
    with mtia.graph(g), mtia.while_(loop):
        count.add_(1)
        even.copy_(count < 5)
        with mtia.if_(even):
            evens.add_(1)
        loop.copy_(count < 10)
    for _ in range(2):
        loop.fill_(1)
        count.zero_()
        evens.zero_()
        g.replay()
        assert count.item() == 10 and evens.item() == 4
    flag = mtia.zeros(1, dtype=mtia.int32)
    hits = mtia.zeros(1)
    once = MTIAGraph()
    with mtia.graph(once), mtia.if_(flag):
        hits.add_(1)
    once.replay()
    assert hits.item() == 0
    flag.fill_(7)
    once.replay()
    once.replay()
    assert hits.item() == 2


def test_a_failing_while_body_stops_and_reports():
    count = mtia.zeros(1, dtype=mtia.int64)
    loop = mtia.ones(1, dtype=mtia.int32)

    @mtia.kernel
    def give_up(c):
        if c[0] >= 3:
            raise ValueError("the body gave up")

    g = MTIAGraph()
    with mtia.graph(g), mtia.while_(loop):
        count.add_(1)
        give_up(count)
        loop.copy_(count < 10)
    with pytest.raises(KernelError, match="WHILE body node") as info:
        g.replay()
        mtia.synchronize()
    assert "the body gave up" in str(info.value)
    assert count.item() == 3
    count.zero_()  # the stream goes on
    assert count.item() == 0


def test_conditional_misuse():
    flag = mtia.ones(1, dtype=mtia.int32)
    with pytest.raises(CaptureError, match="not capturing"), mtia.while_(flag):
        pass
    with pytest.raises(ValueError, match="one-element int32 or bool"):
        mtia.while_(mtia.ones(1))
    with pytest.raises(ValueError, match="one-element"):
        mtia.if_(mtia.ones(2, dtype=mtia.int32))
    with pytest.raises(TypeError):
        mtia.if_(1)  # type: ignore[arg-type]
    # A body that raises: the exception comes first, the capture is abandoned.
    x = mtia.zeros(2)
    g = MTIAGraph()
    with pytest.raises(ZeroDivisionError), mtia.graph(g), mtia.while_(flag):
        x.add_(1)
        1 / 0  # noqa: B018
    assert not mtia.is_current_stream_capturing()
    with mtia.graph(g):
        x.add_(1)
    g.replay()
    same(x, [1, 1])
    # External records and outside waits cannot be part of a body.
    ev = Event(external=True)
    g2 = MTIAGraph()
    with pytest.raises(mtia.MTIAError, match="conditional body"), mtia.graph(g2), mtia.while_(flag):
        ev.record()
