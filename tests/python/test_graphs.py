"""MTIAGraph / graph / graph_pool_handle: the cases PyTorch's own suite checks
for CUDA graphs, written from the behaviour.

Values are compared exactly (small integers in float32). Nothing here depends on timing:
where a replay must still be pending, a host-side gate parks the stream.
"""

import gc
import re
import threading
import warnings
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import CaptureError, KernelError, MTIAGraph, OutOfMemoryError, Stream
from mtia_graph._C import ffi, lib

MiB = 1 << 20


# ---------------------------------------------------------------------------------- helpers


def pool_info(pool, device=0):
    """libmtiart's view of a memory pool: exists, use_count, reserved/allocated bytes."""
    info = ffi.new("mtiart_pool_info *")
    mtia._C.check(lib.mtiart_pool_get_info(device, {"first": pool[0], "second": pool[1]}, info))
    return SimpleNamespace(
        exists=bool(info.exists),
        use_count=int(info.use_count),
        reserved=int(info.reserved_bytes),
        allocated=int(info.allocated_bytes),
        active_blocks=int(info.active_blocks),
    )


def same(t, expected):
    """``t`` holds exactly ``expected`` (after all device work is done)."""
    mtia.synchronize(t.device.index)
    np.testing.assert_array_equal(t.numpy(), np.asarray(expected, dtype=t.numpy().dtype))


def settle():
    """Finish all work and return cached memory, so memory numbers start from a clean state."""
    gc.collect()
    for d in range(mtia.device_count()):
        mtia.synchronize(d)
        with mtia.device(d):
            mtia.empty_cache()


def f_with_temps(t, val):
    """torch's func_with_temps: two temporaries per call, result 2 * t + 2 * val."""
    x = t.clone() + val
    y = t.clone() + val
    return x + y


@pytest.fixture
def side():
    """A fresh non-default stream of device 0."""
    return Stream()


# ------------------------------------------------------------------- capture and replay


def test_capture_in_place_and_out_of_place_ops_then_replay():
    a0 = np.arange(16, dtype=np.float32)
    a = mtia.from_numpy(a0.copy())
    b = mtia.full((16,), 3.0)
    g = MTIAGraph()
    with mtia.graph(g):
        assert mtia.is_current_stream_capturing()
        c = a + b  # out-of-place
        c.mul_(2)  # in place on a tensor made by the capture
        a.add_(1)  # in place on an eager tensor
        d = (c - a).relu()  # chain of out-of-place ops
        e = -d * 0.5
    assert not mtia.is_current_stream_capturing()
    # Capture records, it does not run: the eager tensor is untouched.
    same(a, a0)
    g.replay()
    c1 = (a0 + 3) * 2
    a1 = a0 + 1
    d1 = np.maximum(c1 - a1, 0)
    same(c, c1)
    same(a, a1)
    same(d, d1)
    same(e, -d1 * 0.5)
    # A second replay reads the current inputs (a was changed by the first replay).
    g.replay()
    c2 = (a1 + 3) * 2
    a2 = a1 + 1
    same(c, c2)
    same(a, a2)
    same(d, np.maximum(c2 - a2, 0))
    # Eager writes to an input between replays are seen by the next replay.
    b.fill_(-1)
    g.replay()
    same(c, (a2 - 1) * 2)


def test_replay_many_times_values_exact():
    x = mtia.arange(64, dtype=mtia.float32)
    acc = mtia.zeros(64)
    count = mtia.zeros(1, dtype=mtia.int64)
    g = MTIAGraph()
    with mtia.graph(g):
        acc.add_(x)
        count.add_(1)
        snapshot = acc * 1
    for _ in range(250):
        g.replay()
    same(acc, np.arange(64, dtype=np.float32) * 250)
    same(count, [250])
    same(snapshot, np.arange(64, dtype=np.float32) * 250)


def test_capture_on_default_stream_and_default_capture_stream():
    g = MTIAGraph()
    ctx = mtia.graph(g)
    assert isinstance(mtia.graph.default_capture_stream, Stream)
    assert ctx.capture_stream == mtia.graph.default_capture_stream
    x = mtia.ones(4)
    with ctx:
        assert mtia.current_stream() == mtia.graph.default_capture_stream
        assert mtia.graph.default_capture_stream.is_capturing()
        y = x + 1
    g.replay()
    same(y, [2, 2, 2, 2])
    # Capturing on the default stream is allowed as well, with the raw calls.
    g2 = MTIAGraph()
    assert mtia.current_stream() == mtia.default_stream()
    g2.capture_begin((0, 0))
    z = x * 5
    g2.capture_end()
    g2.replay()
    same(z, [5, 5, 5, 5])


def test_reset_then_recapture_something_else():
    a = mtia.arange(8, dtype=mtia.float32)
    g = MTIAGraph()
    with mtia.graph(g):
        first = a * 2
    g.replay()
    same(first, np.arange(8) * 2)
    old_pool = g.pool()
    g.reset()
    g.reset()  # reset never raises, even twice
    with pytest.raises(RuntimeError):
        g.replay()
    with pytest.raises(RuntimeError):
        g.pool()
    assert pool_info(old_pool).use_count == 0
    # The output of the reset graph is still an ordinary, readable tensor.
    same(first, np.arange(8) * 2)
    with mtia.graph(g):
        second = a + 100
        second.mul_(-1)
    assert g.pool() != old_pool
    a.fill_(1)
    g.replay()
    same(second, np.full(8, -101))
    same(first, np.arange(8) * 2)  # the old graph is gone: nothing rewrites `first`
    del first
    assert not pool_info(old_pool).exists


def test_reset_of_an_empty_graph_is_a_no_op():
    g = MTIAGraph()
    g.reset()
    assert "empty" in repr(g)
    with pytest.raises(RuntimeError):
        g.pool()


# ------------------------------------------------------------------------- pool sharing


def test_two_successive_graphs_with_and_without_pool_sharing():
    size = 64 * 1024  # 256 KiB per tensor: small blocks, temporaries in every step
    expected_b = None
    reserved_by = {}
    for share in ("none", "pool()", "graph_pool_handle()"):
        settle()
        start = mtia.memory_reserved()
        a = mtia.ones(size)
        g0, g1 = MTIAGraph(), MTIAGraph()
        handle = mtia.graph_pool_handle() if share == "graph_pool_handle()" else None
        with mtia.graph(g0, pool=handle):
            b = a.clone()
            for _ in range(5):
                b = f_with_temps(b, 1)
        if share == "none":
            pool1 = None
        elif share == "pool()":
            pool1 = g0.pool()
        else:
            pool1 = handle
        with mtia.graph(g1, pool=pool1):
            for _ in range(5):
                b = f_with_temps(b, 1)
        if share == "none":
            assert g0.pool() != g1.pool()
            assert g0.pool()[1] == 0 and g1.pool()[1] == 0
        else:
            assert g0.pool() == g1.pool() == (handle if handle else g0.pool())
            assert pool_info(g0.pool()).use_count == 2

        # Eager work interleaved with the replays, on the same stream.
        eager = mtia.zeros(size)
        for _ in range(5):
            g0.replay()
            eager.add_(b)  # reads g1's output of the previous replay (or garbage)
            g1.replay()
            eager.fill_(0)  # not mul_(0): garbage * 0 is garbage (NaN * 0 is NaN)
            eager.add_(b)
        # b = f^10(1) with f(t) = 2t + 2, i.e. 3 * 2**10 - 2.
        same(b, np.full(size, 3 * 2**10 - 2))
        same(eager, np.full(size, 3 * 2**10 - 2))
        if expected_b is None:
            expected_b = b.numpy()
        reserved_by[share] = mtia.memory_reserved() - start
        del a, b, eager, g0, g1
        settle()
    # Sharing a pool lets g1 reuse g0's freed temporaries: strictly less memory reserved.
    assert reserved_by["pool()"] < reserved_by["none"]
    assert reserved_by["graph_pool_handle()"] < reserved_by["none"]


@pytest.mark.parametrize("share", ["none", "pool()", "graph_pool_handle()"])
def test_three_successive_graphs_out_of_order_replay(share):
    """Three graphs captured one after the other; g1 frees g0's output ``c`` during its
    capture and g2, captured next, allocates ``f``.

    Documented behaviour (as in PyTorch): graphs that share a memory pool may reuse each
    other's freed blocks, because the allocator assumes they are replayed in capture order.
    Here ``f`` (g2) lands exactly in ``c``'s block (g0's output, freed inside g1's capture).
    Replaying in capture order (g0, g1, g2) is always exact. Replaying out of order (g2
    then g1) makes g1 read ``c``'s address, which now holds g2's ``f``: g1's output ``e``
    becomes ``f + 3`` instead of ``c + 3``. Graphs with private pools (no sharing) never
    reuse each other's blocks and are exact in any order.
    """
    size = 1000
    a = mtia.ones(size)
    g0, g1, g2 = MTIAGraph(), MTIAGraph(), MTIAGraph()
    handle = mtia.graph_pool_handle() if share == "graph_pool_handle()" else None
    with mtia.graph(g0, pool=handle):
        b = a.clone()
        c = b + 1
        d = b + 2
    shared = {"none": None, "pool()": g0.pool(), "graph_pool_handle()": handle}[share]
    with mtia.graph(g1, pool=shared):
        e = c + 3
        c_address = c.data_ptr()
        del c
    with mtia.graph(g2, pool=shared):
        f = d + 4
    if share == "none":
        assert len({g0.pool(), g1.pool(), g2.pool()}) == 3
        assert f.data_ptr() != c_address
    else:
        assert g0.pool() == g1.pool() == g2.pool()
        assert pool_info(g0.pool()).use_count == 3
        assert f.data_ptr() == c_address  # g2 reused the block g1's capture freed

    for _ in range(3):  # capture order: exact, however often
        g0.replay()
        g1.replay()
        g2.replay()
        same(e, np.full(size, 5))
        same(f, np.full(size, 7))
        same(d, np.full(size, 3))

    expect_corruption = share != "none"
    g2.replay()  # the same graph again: in order
    if expect_corruption:  # the runtime sees the out-of-order replay and says so
        with pytest.warns(
            mtia.PoolOrderWarning, match="graph 1 of the 3 graphs captured into shared pool"
        ):
            g1.replay()
    else:  # private pools: any order is right, and nothing is said
        with warnings.catch_warnings():
            warnings.simplefilter("error", mtia.PoolOrderWarning)
            g1.replay()
    same(e, np.full(size, 7 + 3 if expect_corruption else 5))
    same(f, np.full(size, 7))
    # Back in capture order everything is right again.
    g0.replay()
    g1.replay()
    g2.replay()
    same(e, np.full(size, 5))


def test_graph_pool_handles_are_fresh_and_well_formed():
    h1, h2 = mtia.graph_pool_handle(), mtia.graph_pool_handle()
    for h in (h1, h2):
        assert isinstance(h, tuple) and len(h) == 2
        assert all(isinstance(v, int) for v in h)
        assert h[0] == 0 and h[1] > 0
    assert h1 != h2
    g = MTIAGraph()
    with mtia.graph(g):
        y = mtia.ones(1) + 1
    p = g.pool()
    assert isinstance(p, tuple) and p[0] > 0 and p[1] == 0
    del y


# ----------------------------------------------------------------------- memory and pools


def test_memory_statistics_right_after_capture():
    settle()
    a = mtia.ones(MiB // 4)  # 1 MiB
    before = mtia.memory_stats()
    g = MTIAGraph()
    with mtia.graph(g):
        tmp = a * 2  # 1 MiB temporary, freed inside the capture
        out = tmp + 1  # 1 MiB output
        del tmp
        big = mtia.zeros(3 * MiB // 4)  # 3 MiB temporary: its own segment
        out2 = out * 3  # 1 MiB output (may reuse tmp's block)
        del big
    after = mtia.memory_stats()
    info = pool_info(g.pool())
    assert info.exists and info.use_count == 1
    # Only the live outputs count as allocated; the freed temporaries stay reserved in the
    # graph's pool (its high-water mark), which eager allocations never use.
    assert info.allocated == out.nbytes + out2.nbytes
    assert info.active_blocks == 2
    assert info.reserved >= 3 * MiB + 2 * MiB
    assert (
        after["allocated_bytes.all.current"] - before["allocated_bytes.all.current"]
        == out.nbytes + out2.nbytes
    )
    assert (
        after["reserved_bytes.all.current"] - before["reserved_bytes.all.current"] == info.reserved
    )
    assert after["private_pools"] == before["private_pools"] + 1
    assert after["allocated_bytes.all.peak"] >= before["allocated_bytes.all.current"] + 3 * MiB
    assert mtia.memory_allocated() == after["dram"]["allocated_bytes"]
    g.replay()
    same(out2, np.full(MiB // 4, 9))
    # Replays allocate nothing.
    assert (
        mtia.memory_stats()["allocated_bytes.all.current"] == after["allocated_bytes.all.current"]
    )
    assert mtia.memory_reserved() == after["reserved_bytes.all.current"]


def test_outputs_outlive_the_graph_and_the_pool_goes_with_them():
    settle()
    base_reserved = mtia.memory_reserved()
    base_allocated = mtia.memory_allocated()
    a = mtia.arange(1000, dtype=mtia.float32)
    g = MTIAGraph()
    with mtia.graph(g):
        t = a * 2
        out1 = t + 1
        del t
        out2 = out1 * 2
    g.replay()
    pool = g.pool()
    assert pool_info(pool).use_count == 1
    del g
    gc.collect()
    mtia.empty_cache()
    info = pool_info(pool)
    assert info.exists and info.use_count == 0 and info.active_blocks == 2
    expected1 = np.arange(1000) * 2 + 1
    same(out1, expected1)
    same(out2, expected1 * 2)
    out1.add_(1)  # still ordinary, writable tensors
    same(out1, expected1 + 1)
    del out1
    assert pool_info(pool).exists  # out2 still lives in it
    same(out2, expected1 * 2)
    del out2
    info = pool_info(pool)
    assert not info.exists and info.reserved == 0
    del a
    settle()
    assert mtia.memory_allocated() == base_allocated
    assert mtia.memory_reserved() == base_reserved


def test_dropping_a_graph_without_reset_releases_its_pool():
    x = mtia.ones(16)
    g = MTIAGraph()
    with mtia.graph(g):
        y = x * 4
    pool = g.pool()
    g.replay()
    assert pool_info(pool).use_count == 1
    ref = weakref.ref(g)
    del g
    gc.collect()
    assert ref() is None
    # A replay still in flight keeps the executable, and so the pool, until it is done.
    mtia.synchronize()
    assert pool_info(pool).use_count == 0
    same(y, [4] * 16)
    del y
    assert not pool_info(pool).exists


def test_shared_pool_use_counts_follow_the_graphs():
    handle = mtia.graph_pool_handle()
    x = mtia.ones(8)
    graphs, outs = [], []
    for i in range(3):
        g = MTIAGraph()
        with mtia.graph(g, pool=handle):
            outs.append(x * (i + 1))
        graphs.append(g)
        assert pool_info(handle).use_count == i + 1
    for g in graphs:
        g.replay()
    del g
    for i, o in enumerate(outs):
        same(o, [i + 1] * 8)
    del o
    graphs[1].reset()
    assert pool_info(handle).use_count == 2
    del graphs[0]
    gc.collect()
    assert pool_info(handle).use_count == 1
    graphs.clear()
    gc.collect()
    assert pool_info(handle).use_count == 0
    assert pool_info(handle).exists  # the outputs still live there
    outs.clear()
    assert not pool_info(handle).exists


def test_reset_while_replays_are_pending(gate, side):
    x = mtia.ones(32)
    acc = mtia.zeros(32)
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        acc.add_(x)
    pool = g.pool()
    worker = Stream()
    gate.block(worker)
    with mtia.stream(worker):
        g.replay()
        g.replay()
    g.reset()
    # The pending replays still hold the executable, hence a use of its pool.
    assert pool_info(pool).use_count >= 1
    assert pool_info(pool).exists
    gate.open()
    worker.synchronize()
    same(acc, [2] * 32)
    assert pool_info(pool).use_count == 0


# ----------------------------------------------------------------- multi-stream capture


def test_fork_join_capture_over_three_streams():
    s0, s1, s2 = Stream(), Stream(), Stream()
    a0 = np.arange(256, dtype=np.float32)
    a = mtia.from_numpy(a0.copy())
    g = MTIAGraph()
    with mtia.graph(g, stream=s0):
        cur = mtia.current_stream()
        assert cur == s0
        b = a * 2
        s1.wait_stream(cur)
        s2.wait_stream(cur)
        with mtia.stream(s1):
            assert s1.is_capturing()
            c = b + 1
            tmp1 = c * 0
            del tmp1
        b.record_stream(s1)
        with mtia.stream(s2):
            assert s2.is_capturing()
            d = b * 3
        b.record_stream(s2)
        cur.wait_stream(s1)
        cur.wait_stream(s2)
        e = c + d
        del b
        pool = g.pool()
        # Allocations of every stream of the capture land in the capture's pool.
        by_stream = {}
        for seg in mtia.memory_snapshot():
            if seg["stream"] in (s1.stream_id, s2.stream_id):
                by_stream.setdefault(seg["stream"], set()).add(seg["segment_pool_id"])
        assert by_stream == {s1.stream_id: {pool}, s2.stream_id: {pool}}
    assert not s1.is_capturing() and not s2.is_capturing()
    assert pool_info(pool).active_blocks == 3  # c, d, e
    for _ in range(3):
        g.replay()
        same(e, a0 * 2 + 1 + a0 * 6)
    a.fill_(1)
    g.replay()
    same(c, np.full(256, 3))
    same(d, np.full(256, 6))
    same(e, np.full(256, 9))
    # The side streams are ordinary streams again.
    with mtia.stream(s1):
        z = c + 1
    s1.synchronize()
    same(z, np.full(256, 4))


def test_record_stream_inside_capture_keeps_block_until_join(side):
    s1 = Stream()
    a = mtia.arange(256, dtype=mtia.float32)
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        cur = mtia.current_stream()
        b = a * 2
        s1.wait_stream(cur)
        with mtia.stream(s1):
            c = b + 1
        b.record_stream(s1)
        b_address = b.data_ptr()
        del b
        # s1 may still read b at replay: the origin stream must not reuse its block.
        n = a * 5
        assert n.data_ptr() != b_address
        cur.wait_stream(s1)
    for _ in range(4):
        g.replay()
    same(c, np.arange(256) * 2 + 1)
    same(n, np.arange(256) * 5)


def test_unjoined_fork_fails_capture_end_and_leaves_graph_reusable(side):
    s1 = Stream()
    x = mtia.ones(8)
    g = MTIAGraph()
    with mtia.stream(side):
        g.capture_begin()
        pool = g.pool()
        s1.wait_stream(side)
        with mtia.stream(s1):
            y = x + 1
        with pytest.raises(CaptureError, match="join"):
            g.capture_end()
    assert not side.is_capturing() and not s1.is_capturing()
    assert pool_info(pool).use_count == 0
    with pytest.raises(RuntimeError):
        g.replay()
    with mtia.graph(g, stream=side):
        y = x + 2
    g.replay()
    same(y, [3] * 8)


def test_replay_on_a_different_stream_than_the_capture_stream(side):
    other = Stream()
    x = mtia.arange(16, dtype=mtia.float32)
    acc = mtia.zeros(16)
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        acc.add_(x)
    # Replay on another stream, ordered after eager work on the default stream.
    acc.fill_(100)
    other.wait_stream(mtia.current_stream())
    with mtia.stream(other):
        g.replay()
        g.replay()
    mtia.current_stream().wait_stream(other)
    acc.add_(1)  # default stream, after the replays
    same(acc, 100 + 2 * np.arange(16) + 1)
    # And on the default stream too.
    g.replay()
    same(acc, 100 + 3 * np.arange(16) + 1)


def test_concurrent_replay_of_two_graphs_with_separate_pools(gate):
    s_a, s_b = Stream(), Stream()
    a = mtia.zeros(4096)
    b = mtia.zeros(4096)
    ga, gb = MTIAGraph(), MTIAGraph()
    with mtia.graph(ga, stream=s_a):
        a.add_(1)
        ta = a * 2
        a.copy_(ta)
    with mtia.graph(gb, stream=s_b):
        b.add_(2)
        tb = b * 3
        b.copy_(tb)
    assert ga.pool() != gb.pool()
    gate.block(s_a)
    gate.block(s_b)
    for _ in range(6):
        with mtia.stream(s_a):
            ga.replay()
        with mtia.stream(s_b):
            gb.replay()
    gate.open()  # both streams run their queued replays at the same time
    mtia.synchronize()
    va, vb = 0.0, 0.0
    for _ in range(6):
        va = (va + 1) * 2
        vb = (vb + 2) * 3
    same(a, np.full(4096, va))
    same(b, np.full(4096, vb))
    same(ta, np.full(4096, va))
    same(tb, np.full(4096, vb))


def test_graph_context_on_a_stream_of_another_device():
    s1 = Stream(device=1)
    x = mtia.ones(4, device="mtia:1")
    g = MTIAGraph()
    with mtia.graph(g, stream=s1):
        assert mtia.current_device() == 1
        assert mtia.current_stream() == s1
        assert s1.is_capturing()
        assert not mtia.default_stream(0).is_capturing()
        y = x * 3
    assert mtia.current_device() == 0
    assert mtia.current_stream(1) == mtia.default_stream(1)
    assert g.num_nodes() == 1
    assert pool_info(g.pool(), device=1).use_count == 1
    g.replay()
    same(y, [3, 3, 3, 3])
    assert y.device.index == 1


# ---------------------------------------------------------------------- capture errors


def test_empty_capture_warns():
    g = MTIAGraph()
    with pytest.warns(UserWarning, match="empty"), mtia.graph(g):
        pass
    g.replay()  # an empty graph still replays (does nothing)
    mtia.synchronize()


def test_out_of_memory_inside_capture_leaves_everything_usable(side):
    x = mtia.ones(10)
    keep = mtia.full((10,), 7.0)
    ooms = mtia.memory_stats()["num_ooms"]
    too_big = mtia.get_device_properties(0).total_memory * 2
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        y = x * 2
        with pytest.raises(OutOfMemoryError, match="out of memory") as info:
            mtia.empty(too_big // 4)
        assert isinstance(info.value, RuntimeError)
        assert side.is_capturing()  # an OOM does not invalidate the capture
        z = y + 1
    assert mtia.memory_stats()["num_ooms"] == ooms + 1
    g.replay()
    same(z, [3] * 10)
    same(keep, [7] * 10)
    w = keep + x
    same(w, [8] * 10)


def _unsafe_calls():
    def item(t, s):
        t[:1].item()

    def numpy_(t, s):
        t.numpy()

    def sync(t, s):
        mtia.synchronize()

    def stream_sync(t, s):
        s.synchronize()

    def empty_cache(t, s):
        mtia.empty_cache()

    def event_sync(t, s):
        ev = mtia.Event()
        ev.record(s)
        ev.synchronize()

    return [item, numpy_, sync, stream_sync, empty_cache, event_sync]


@pytest.mark.parametrize("unsafe", _unsafe_calls(), ids=lambda f: f.__name__)
def test_unsafe_call_inside_capture_invalidates_it(unsafe, side):
    x = mtia.ones(8)
    g = MTIAGraph()
    with mtia.stream(side):
        g.capture_begin()
        pool = g.pool()
        y = x * 2
        with pytest.raises(CaptureError, match="capturing"):
            unsafe(y, side)
        # Work enqueued after the invalidation is refused too.
        with pytest.raises(CaptureError, match="invalidated"):
            y.add_(1)
        with pytest.raises(CaptureError, match="invalidated"):
            g.capture_end()
    assert not side.is_capturing()
    assert pool_info(pool).use_count == 0
    with pytest.raises(RuntimeError):
        g.replay()
    with pytest.raises(RuntimeError):
        g.pool()
    # The graph object is empty and can capture again; x was never touched.
    same(x, [1] * 8)
    with mtia.graph(g, stream=side):
        y2 = x + 9
    g.replay()
    same(y2, [10] * 8)


def test_unsafe_call_inside_graph_context_propagates(side):
    x = mtia.ones(3)
    g = MTIAGraph()
    with pytest.raises(CaptureError), mtia.graph(g, stream=side):
        y = x + 1
        y.tolist()
    assert not side.is_capturing()
    assert mtia.current_stream() == mtia.default_stream()
    with mtia.graph(g, stream=side):
        y = x + 1
    g.replay()
    same(y, [2, 2, 2])


@pytest.mark.parametrize(
    "mode,invalidates", [("global", True), ("thread_local", False), ("relaxed", False)]
)
def test_capture_error_mode_and_another_threads_unsafe_call(mode, invalidates, side):
    x = mtia.ones(8)
    g = MTIAGraph()
    outcome = {}

    def other_thread():
        try:
            mtia.synchronize()
            outcome["result"] = "ok"
        except CaptureError as exc:
            outcome["result"] = exc

    with mtia.stream(side):
        g.capture_begin((0, 0), capture_error_mode=mode)
        y = x * 2
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        if invalidates:
            assert isinstance(outcome["result"], CaptureError)
            with pytest.raises(CaptureError, match="invalidated"):
                g.capture_end()
            return
        assert outcome["result"] == "ok"
        y.add_(1)
        g.capture_end()
    g.replay()
    same(y, [3] * 8)


def test_capture_error_modes_on_the_capturing_thread(side):
    x = mtia.ones(4)
    # relaxed: the capturing thread may synchronize the device (not the capturing stream).
    g = MTIAGraph()
    with mtia.graph(g, stream=side, capture_error_mode="relaxed"):
        y = x + 1
        mtia.synchronize()
        y.add_(1)
    g.replay()
    same(y, [3] * 4)
    # thread_local: the capturing thread's own unsafe call still invalidates.
    g2 = MTIAGraph()
    with (
        pytest.raises(CaptureError),
        mtia.graph(g2, stream=side, capture_error_mode="thread_local"),
    ):
        y2 = x + 1
        mtia.synchronize()
    del y2
    with pytest.raises(ValueError):
        MTIAGraph().capture_begin((0, 0), capture_error_mode="strict")
    with pytest.raises(TypeError):
        MTIAGraph().capture_begin((0, 0), capture_error_mode=1)
    with pytest.raises(ValueError):
        mtia.graph(MTIAGraph(), capture_error_mode="nope")
    assert not mtia.is_current_stream_capturing()


# ------------------------------------------------------------------------- keep_graph


def test_keep_graph_false_forbids_instantiate():
    x = mtia.ones(4)
    g = MTIAGraph()
    with mtia.graph(g):
        y = x + 1
    with pytest.raises(RuntimeError) as info:
        g.instantiate()
    assert str(info.value) == (
        "instantiate() is intended to be called by the user only when keep_graph=True"
    )
    g.replay()
    same(y, [2] * 4)
    with pytest.raises(RuntimeError):
        g.debug_dump("/dev/null")  # the template was dropped at capture_end


def test_keep_graph_true_instantiate_replay_reinstantiate():
    x = mtia.ones(4)
    acc = mtia.zeros(4)
    g = MTIAGraph(keep_graph=True)
    with pytest.raises(RuntimeError):
        g.instantiate()  # nothing captured yet
    with mtia.graph(g):
        acc.add_(x)
    g.instantiate()
    g.replay()
    g.replay()
    same(acc, [2] * 4)
    g.instantiate()  # re-instantiate: replaces the executable, same work
    g.instantiate()
    g.replay()
    same(acc, [3] * 4)
    assert g.num_nodes() == 1


def test_keep_graph_lazy_instantiation_on_first_replay():
    x = mtia.ones(4)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        y = x * 6
    assert g._exec is None  # not instantiated by capture_end
    g.replay()
    assert g._exec is not None
    same(y, [6] * 4)
    x.fill_(2)
    g.replay()
    same(y, [12] * 4)


def test_keep_graph_reset_and_recapture():
    x = mtia.ones(4)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        y = x + 1
    g.instantiate()
    g.replay()
    g.reset()
    with pytest.raises(RuntimeError):
        g.instantiate()
    with mtia.graph(g):
        z = x + 2
        z.mul_(2)
    assert g.num_nodes() == 2
    g.replay()  # lazy instantiation again
    same(z, [6] * 4)
    same(y, [2] * 4)


def test_debug_dump_writes_dot_with_the_nodes(tmp_path):
    x = mtia.ones(4)
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        y = x + 1
        y.mul_(3)
        z = y.relu()
    path = tmp_path / "graph.dot"
    g.debug_dump(str(path))
    text = path.read_text()
    assert text.lstrip().startswith("digraph")
    assert text.rstrip().endswith("}")
    nodes = re.findall(r"^\s*n(\d+) \[", text, flags=re.M)
    assert len(nodes) == g.num_nodes() == 3
    assert re.search(r"n0 -> n1", text) and re.search(r"n1 -> n2", text)
    assert f"pool ({g.pool()[0]}, {g.pool()[1]})" in text
    assert text == g.dot()
    g.replay()
    same(z, [6] * 4)


# ------------------------------------------------------------- exceptions in the body


def test_exception_inside_graph_context_is_propagated_and_cleaned_up(side):
    x = mtia.ones(4)
    g = MTIAGraph()
    err = KeyError("boom")
    before = mtia.current_stream()
    pool = None
    with pytest.raises(KeyError) as info, mtia.graph(g, stream=side):
        y = x * 2
        pool = g.pool()
        assert pool_info(pool).use_count == 1
        mtia.set_stream(Stream())  # the body even changes the current stream
        raise err
    assert info.value is err
    assert mtia.current_stream() == before
    assert not side.is_capturing()
    assert pool_info(pool).use_count == 0
    del y
    assert not pool_info(pool).exists
    with pytest.raises(RuntimeError):
        g.pool()
    with mtia.graph(g, stream=side):
        y = x * 7
    g.replay()
    same(y, [7] * 4)


def test_exception_inside_graph_context_on_another_device_restores_device():
    s1 = Stream(device=1)
    g = MTIAGraph()
    with pytest.raises(ZeroDivisionError), mtia.graph(g, stream=s1):
        assert mtia.current_device() == 1
        _ = 1 / 0
    assert mtia.current_device() == 0
    assert mtia.current_stream(1) == mtia.default_stream(1)
    assert not s1.is_capturing()


# ------------------------------------------------------------------------------- misuse


def test_capture_begin_twice(side):
    g = MTIAGraph()
    x = mtia.ones(2)
    with mtia.stream(side):
        g.capture_begin()
        with pytest.raises(RuntimeError, match="already owns a captured graph"):
            g.capture_begin()
        assert side.is_capturing()  # the first capture goes on
        y = x + 1
        g.capture_end()
    with pytest.raises(RuntimeError, match="already owns a captured graph"):
        g.capture_begin()
    g.replay()
    same(y, [2, 2])


def test_second_graph_cannot_capture_a_capturing_stream(side):
    g1, g2 = MTIAGraph(), MTIAGraph()
    x = mtia.ones(2)
    with mtia.stream(side):
        g1.capture_begin()
        with pytest.raises(CaptureError):
            g2.capture_begin()
        y = x + 1
        g1.capture_end()
    with pytest.raises(RuntimeError):
        g2.replay()
    g1.replay()
    same(y, [2, 2])


def test_capture_end_without_begin():
    with pytest.raises(RuntimeError, match="capture_begin"):
        MTIAGraph().capture_end()


def test_capture_end_on_a_different_current_stream(side):
    g = MTIAGraph()
    x = mtia.ones(2)
    g.capture_begin()
    y = x * 3
    with mtia.stream(side), pytest.raises(RuntimeError, match="same stream"):
        g.capture_end()
    assert mtia.current_stream().is_capturing()
    g.capture_end()
    g.replay()
    same(y, [3, 3])


def test_replay_and_pool_before_capture():
    g = MTIAGraph()
    with pytest.raises(RuntimeError):
        g.replay()
    with pytest.raises(RuntimeError):
        g.pool()
    with pytest.raises(RuntimeError):
        g.num_nodes()
    with pytest.raises(RuntimeError):
        MTIAGraph(keep_graph=True).debug_dump("/dev/null")


@pytest.mark.parametrize(
    "pool,exc",
    [
        ((1, 1), ValueError),
        ((-1, 0), ValueError),
        ((0, -5), ValueError),
        ([0, 0], TypeError),
        (5, TypeError),
        ((0,), TypeError),
        ((0, 0, 0), TypeError),
        (("a", 0), TypeError),
        ((1.0, 0), TypeError),
        ((True, 0), TypeError),
    ],
)
def test_bad_pool_values(pool, exc):
    g = MTIAGraph()
    with pytest.raises(exc):
        g.capture_begin(pool)
    assert not mtia.is_current_stream_capturing()
    with pytest.raises(exc):
        mtia.graph(g, pool=pool)
    # The object is still usable.
    x = mtia.ones(2)
    with mtia.graph(g):
        y = x + 1
    g.replay()
    same(y, [2, 2])


def test_graph_of_a_non_graph_is_a_type_error():
    for bad in (None, object(), "g", 3):
        with pytest.raises(TypeError):
            mtia.graph(bad)
    assert not mtia.is_current_stream_capturing()


def test_torch_signatures():
    g = MTIAGraph(False)
    g2 = MTIAGraph(keep_graph=True)
    assert "keep_graph=True" in repr(g2)
    assert isinstance(g, MTIAGraph)
    ctx = mtia.graph(g, None, None)
    assert ctx.pool == () and ctx.mtia_graph is g
    handle = mtia.graph_pool_handle()
    assert mtia.graph(g2, pool=handle).pool == (handle,)
    assert set(mtia.graphs.__all__) >= {"MTIAGraph", "graph"}


# --------------------------------------------------------------------- host functions


def test_host_functions_run_once_per_replay(side):
    calls = []
    x = mtia.zeros(4)
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        x.add_(1)
        mtia.launch_host_func(lambda: calls.append("module"))
        side.launch_host_func(lambda: calls.append("stream"))
    assert calls == []  # captured, not run
    for _ in range(4):
        g.replay()
    mtia.synchronize()
    assert calls == ["module", "stream"] * 4
    same(x, [4] * 4)


def test_host_function_exception_surfaces_at_synchronize(side):
    n = [0]

    def flaky():
        n[0] += 1
        if n[0] == 2:
            raise ValueError("host-kaboom")

    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        mtia.launch_host_func(flaky)
    g.replay()
    g.replay()
    g.replay()
    with pytest.raises(KernelError) as info:
        mtia.synchronize()
    text = str(info.value)
    assert "Traceback" in text
    assert "ValueError: host-kaboom" in text
    assert "flaky" in text
    assert isinstance(info.value, RuntimeError)
    # Reported once; the stream keeps working.
    mtia.synchronize()
    g.replay()
    mtia.synchronize()
    assert n[0] == 4
    x = mtia.ones(3) + 1
    same(x, [2, 2, 2])


def test_captured_host_functions_are_released_with_the_graph(side):
    class Callback:
        def __init__(self):
            self.hits = 0

        def __call__(self):
            self.hits += 1

    # Never replayed: released at reset.
    cb = Callback()
    ref = weakref.ref(cb)
    g = MTIAGraph()
    with mtia.graph(g, stream=side):
        mtia.launch_host_func(cb)
    del cb
    gc.collect()
    assert ref() is not None  # the graph keeps it
    g.reset()
    gc.collect()
    assert ref() is None

    # Replayed: released once the last replay is done (at a later reset's clean-up).
    cb = Callback()
    ref = weakref.ref(cb)
    with mtia.graph(g, stream=side):
        mtia.launch_host_func(cb)
    del cb
    g.replay()
    g.replay()
    mtia.synchronize()
    assert ref().hits == 2
    g.reset()
    mtia.synchronize()
    g2 = MTIAGraph()
    with mtia.graph(g2, stream=side):
        mtia.launch_host_func(lambda: None)
    g2.reset()  # purges the finished entries
    gc.collect()
    assert ref() is None


def test_host_data_uploaded_inside_capture_is_replayed():
    g = MTIAGraph()
    with mtia.graph(g):
        t = mtia.tensor([1.0, 2.0, 3.0])
        t.mul_(2)
    gc.collect()
    g.replay()
    same(t, [2, 4, 6])
    t.fill_(0)
    g.replay()
    same(t, [2, 4, 6])


def test_unjoined_fork_inside_graph_context_raises_at_exit(side):
    s1 = Stream()
    x = mtia.ones(4)
    g = MTIAGraph()
    before = mtia.current_stream()
    with pytest.raises(CaptureError, match="join"), mtia.graph(g, stream=side):
        s1.wait_stream(side)
        with mtia.stream(s1):
            y = x + 1
    assert mtia.current_stream() == before
    assert not side.is_capturing() and not s1.is_capturing()
    with mtia.graph(g, stream=side):
        y = x + 2
    g.replay()
    same(y, [3] * 4)


def test_graph_output_used_on_another_stream_then_freed(subprocess_python):
    """The usual pattern: a graph output (allocated on the capture stream) is consumed by
    eager work on the default stream; the graph is reset and the output dropped while that
    work is still queued. As with torch (cudaFree synchronizes), this must not crash."""
    result = subprocess_python("""
        import threading, mtia_graph as mtia
        cap = mtia.Stream()
        gate = threading.Event()
        g = mtia.MTIAGraph()
        with mtia.graph(g, stream=cap):
            b = mtia.empty(8)
            b.fill_(1)
        g.replay()
        mtia.synchronize()
        mtia.launch_host_func(lambda: gate.wait(30))  # park the default stream
        d = b + b          # queued on the default stream, reads b
        g.reset()          # the private pool loses its last user
        del b              # freed on its own (idle) stream
        gate.set()
        mtia.synchronize()
        print("values", d.tolist())
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "values [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]" in result.stdout


# ---------------------------------------------------------------------------------- fusion


def _captured_mlp(fuse, x, weights, keep_graph=False):
    """A graph of the MLP step captured (and instantiated) with fusion on or off, with every
    intermediate tensor kept."""
    w1, b1, w2, b2 = weights
    mtia.set_graph_fusion(fuse)
    try:
        g = MTIAGraph(keep_graph=keep_graph)
        with mtia.graph(g):
            h = x @ w1
            h2 = h + b1
            h3 = h2.relu()
            z = h3 @ w2
            z2 = z + b2
            out = z2.softmax(dim=-1)
        if keep_graph:
            g.instantiate()
    finally:
        mtia.set_graph_fusion(None)
    return g, (h, h2, h3, z, z2, out)


@pytest.mark.parametrize("shape", [(32, 256, 512, 256), (7, 33, 70, 5), (65, 90, 40, 12)])
def test_fused_replays_are_bitwise_the_unfused_ones(shape):
    m, n_in, hidden, n_out = shape
    rng = np.random.default_rng(3)
    weights = [
        mtia.from_numpy(rng.standard_normal(s).astype(np.float32))
        for s in ((n_in, hidden), (hidden,), (hidden, n_out), (n_out,))
    ]
    x = mtia.zeros((m, n_in))
    fused, fused_t = _captured_mlp(True, x, weights)
    plain, plain_t = _captured_mlp(False, x, weights, keep_graph=True)
    assert fused.num_nodes() == plain.num_nodes() == 6  # the captured graph's nodes
    for step in range(3):
        x.copy_(rng.standard_normal((m, n_in)).astype(np.float32))
        plain.replay()
        want = [t.numpy().copy() for t in plain_t]
        fused.replay()
        got = [t.numpy() for t in fused_t]
        for name, a, b in zip(("h", "h2", "h3", "z", "z2", "out"), got, want, strict=True):
            assert a.tobytes() == b.tobytes(), (step, name)
    ref = np.maximum(x.numpy() @ weights[0].numpy() + weights[1].numpy(), 0)
    # float32 sums of n_in products in another order than numpy's (and, under valgrind,
    # another ISA's kernel): a few ulps of the largest terms
    np.testing.assert_allclose(fused_t[2].numpy(), ref, rtol=1e-4, atol=1e-4)


def test_set_graph_fusion_takes_a_bool_or_none():
    with pytest.raises(TypeError, match="bool or None"):
        mtia.set_graph_fusion(1)
    mtia.set_graph_fusion(False)
    mtia.set_graph_fusion(None)


def test_graph_fusion_environment_is_validated(subprocess_python):
    r = subprocess_python("import mtia_graph; mtia_graph.init()", env={"MTIART_GRAPH_FUSION": "on"})
    assert r.returncode != 0
    assert "MTIART_GRAPH_FUSION" in r.stderr
    r = subprocess_python(
        """
        import numpy as np, mtia_graph as mtia
        w = mtia.from_numpy(np.eye(4, dtype=np.float32))
        g = mtia.MTIAGraph()
        with mtia.graph(g):
            y = (w @ w + 1).relu()
        g.replay()
        print(y.numpy().sum())
        """,
        env={"MTIART_GRAPH_FUSION": "0"},
    )
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == 20.0
