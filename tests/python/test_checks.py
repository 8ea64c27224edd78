"""Graph checks from Python: races (MTIAGraph.check_races, check_races= of capture_begin and
graph); why a capture was invalidated (the call, its thread and the user's line, in the
offending call's error and in capture_end's); the replay order of graphs sharing a pool."""

from __future__ import annotations

import inspect
import re
import threading
import warnings

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import (
    CaptureError,
    MTIAGraph,
    PoolOrderWarning,
    Race,
    RaceError,
    RaceNode,
    RaceWarning,
    Stream,
)


def capture_side_write(g, *, wait_before_read, **kwargs):
    """A side stream writes b from a; the capturing stream then reads b, waiting for the
    side stream first only with ``wait_before_read`` (else a forgotten wait_stream)."""
    a = mtia.ones(64)
    b = mtia.zeros(64)
    side = Stream()
    with mtia.graph(g, **kwargs):
        cur = mtia.current_stream()
        side.wait_stream(cur)
        with mtia.stream(side):
            b.copy_(a)
        if wait_before_read:
            cur.wait_stream(side)
        c = b + 1
        cur.wait_stream(side)
    return a, b, c, side


@pytest.mark.parametrize("keep_graph", [False, True])
def test_forgotten_wait_stream_is_a_race(keep_graph):
    g = MTIAGraph(keep_graph=keep_graph)
    _, b, _, side = capture_side_write(g, wait_before_read=False)
    races = g.check_races()
    assert len(races) == 1
    (race,) = races
    assert isinstance(race, Race)
    assert race.first == RaceNode(
        index=race.first.index, name="memcpy DtoD", stream=side.stream_id, access="write"
    )
    assert race.second.stream == mtia.graph.default_capture_stream.stream_id
    assert race.second.access == "read"
    assert race.second.index > race.first.index
    assert race.address == b.data_ptr() and race.nbytes == b.nbytes
    text = str(race)
    assert f"node {race.first.index} (memcpy DtoD, stream {side.stream_id}) writes" in text
    assert f"reads {b.nbytes} bytes at {b.data_ptr():#x} with no path between them" in text


def test_joined_fork_has_no_race():
    g = MTIAGraph()
    _, _, c, _ = capture_side_write(g, wait_before_read=True, check_races="error")
    assert g.check_races() == []
    g.replay()
    np.testing.assert_array_equal(c.numpy(), np.full(64, 2.0))


def test_read_read_and_disjoint_slices_do_not_race():
    x = mtia.ones(64)
    out = mtia.zeros(64)
    s1, s2 = Stream(), Stream()
    g = MTIAGraph()
    with mtia.graph(g, check_races="error"):
        cur = mtia.current_stream()
        s1.wait_stream(cur)
        s2.wait_stream(cur)
        with mtia.stream(s1):
            out[0:32].copy_(x[0:32] * 2)  # reads x, writes the first half
        with mtia.stream(s2):
            out[32:64].copy_(x[0:32] * 3)  # reads x too, writes the second half
        cur.wait_stream(s1)
        cur.wait_stream(s2)
    assert g.check_races() == []
    g.replay()
    np.testing.assert_array_equal(out.numpy(), np.r_[np.full(32, 2.0), np.full(32, 3.0)])


def test_overlapping_slices_race_on_the_overlap():
    out = mtia.zeros(64)
    s1, s2 = Stream(), Stream()
    g = MTIAGraph()
    with mtia.graph(g):
        cur = mtia.current_stream()
        s1.wait_stream(cur)
        s2.wait_stream(cur)
        with mtia.stream(s1):
            out[0:40].fill_(1.0)
        with mtia.stream(s2):
            out[32:64].fill_(2.0)
        cur.wait_stream(s1)
        cur.wait_stream(s2)
    (race,) = g.check_races()
    assert (race.first.stream, race.second.stream) == (s1.stream_id, s2.stream_id)
    assert race.first.access == race.second.access == "write"
    assert race.address == out[32:40].data_ptr() and race.nbytes == 8 * out.itemsize


def test_check_races_warn_and_error():
    g = MTIAGraph()
    with pytest.warns(RaceWarning, match=r"the captured graph has 1 race:\n  node \d+ "):
        capture_side_write(g, wait_before_read=False, check_races="warn")
    g.replay()  # a warning keeps the graph
    mtia.synchronize()

    g2 = MTIAGraph()
    with pytest.raises(
        RaceError, match=r"MTIAGraph\.capture_end: the captured graph has 1 race"
    ) as info:
        capture_side_write(g2, wait_before_read=False, check_races="error")
    assert len(info.value.races) == 1
    assert isinstance(info.value, mtia.MTIAError)
    # The capture was discarded; the graph object is reusable.
    with pytest.raises(RuntimeError, match="before a successful capture"):
        g2.check_races()
    capture_side_write(g2, wait_before_read=True, check_races="error")
    g2.replay()
    mtia.synchronize()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silent on a correct graph
        capture_side_write(MTIAGraph(), wait_before_read=True, check_races="warn")


def test_check_races_argument_is_validated():
    g = MTIAGraph()
    with pytest.raises(ValueError, match="check_races must be None, 'warn' or 'error'"):
        mtia.graph(g, check_races="yes")
    with pytest.raises(ValueError, match="check_races"):
        g.capture_begin(check_races=True)
    assert not mtia.is_current_stream_capturing()
    with pytest.raises(RuntimeError, match="before a successful capture"):
        g.check_races()


def test_many_unordered_writers_report_every_pair():
    x = mtia.zeros(16)
    streams = [Stream() for _ in range(4)]
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        cur = mtia.current_stream()
        for s in streams:
            s.wait_stream(cur)
            with mtia.stream(s):
                x.fill_(1.0)
        for s in streams:
            cur.wait_stream(s)
    races = g.check_races()
    assert len(races) == 6  # every pair of the four writers
    assert {(r.first.stream, r.second.stream) for r in races} == {
        (a.stream_id, b.stream_id) for i, a in enumerate(streams) for b in streams[i + 1 :]
    }


# ----------------------------------------------------------------- why a capture broke


def _line_after() -> int:
    """The line number after the caller's current line."""
    return inspect.currentframe().f_back.f_lineno + 1  # type: ignore[union-attr]


def test_another_threads_synchronize_is_named_with_its_line():
    raised: list[BaseException] = []

    def worker():
        try:
            line[0] = _line_after()
            mtia.synchronize()
        except BaseException as exc:  # noqa: BLE001 - checked below
            raised.append(exc)

    line = [0]
    x = mtia.ones(8)
    g = MTIAGraph()
    with pytest.raises(CaptureError) as ended, mtia.graph(g):
        y = x + 1
        t = threading.Thread(target=worker, name="worker-2")
        t.start()
        t.join()
        y.add_(1)  # work after the invalidation is refused, with the reason
    where = rf"test_checks\.py:{line[0]} in worker"
    culprit = (
        r"synchronize\(\) \(mtiart_device_synchronize_timeout\) on thread 'worker-2' "
        r"\(tid \d+\) at \S*" + where
    )
    (own,) = raised
    assert isinstance(own, CaptureError)
    assert re.search(r"the capture has been invalidated \(" + culprit + r"\)", str(own)), own
    stream = mtia.graph.default_capture_stream
    reason = (
        r"capture invalidated by " + culprit + rf" while stream {stream.stream_id} was capturing "
        r"in global mode \(a capture in global mode is active\)"
    )
    # The first refused call after it is what the body raised... unless the capture ended
    # first: either way capture_end's error repeats the reason.
    assert re.search(reason, str(ended.value)), ended.value
    assert not mtia.is_current_stream_capturing()
    g.reset()


def test_the_capturing_threads_host_read_is_named():
    x = mtia.ones(8)
    g = MTIAGraph()
    with pytest.raises(CaptureError) as info, mtia.graph(g, capture_error_mode="thread_local"):
        y = x * 2
        line = _line_after()
        y.numpy()
    text = str(info.value)
    assert re.search(
        r"(Tensor\.)?numpy\(\) \(mtiart_\w+\) on thread 'MainThread' \(tid \d+\)", text
    )
    assert f"test_checks.py:{line} in test_the_capturing_threads_host_read_is_named" in text
    assert "(capture " in text and "mode thread_local)" in text
    # A correct capture afterwards reports nothing.
    with mtia.graph(g):
        x.add_(1)
    g.replay()
    mtia.synchronize()


# ----------------------------------------------------------------- shared-pool replay order


def three_graphs_sharing_a_pool():
    x = mtia.ones(16)
    pool = mtia.graph_pool_handle()
    graphs = [MTIAGraph() for _ in range(3)]
    for g in graphs:
        with mtia.graph(g, pool=pool):
            x.add_(1)
    return graphs, pool


def test_capture_order_replays_are_silent():
    graphs, _ = three_graphs_sharing_a_pool()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            for g in graphs:
                g.replay()
        graphs[2].replay()  # again
        graphs[0].replay()  # a new round
        graphs[1].replay()
    mtia.synchronize()


def test_out_of_order_replay_warns_at_the_users_line():
    graphs, pool = three_graphs_sharing_a_pool()
    graphs[0].replay()
    with pytest.warns(PoolOrderWarning) as caught:
        line = _line_after()
        graphs[2].replay()
    (w,) = caught
    assert w.filename == __file__ and w.lineno == line
    assert re.match(
        rf"out-of-order replay on stream \d+: graph 2 of the 3 graphs captured into shared "
        rf"pool \({pool[0]}, {pool[1]}\) on device 0 launched after graph 0 \(expected "
        rf"graph 0 or 1\)",
        str(w.message),
    )
    mtia.synchronize()


def test_strict_mode_refuses_an_out_of_order_replay():
    graphs, _ = three_graphs_sharing_a_pool()
    mtia.set_pool_order_check("error")
    try:
        graphs[0].replay()
        with pytest.raises(mtia.MTIAError, match=r"MTIAGraph\.replay: .*out-of-order replay"):
            graphs[2].replay()  # skips graph 1
        graphs[1].replay()
        graphs[2].replay()
    finally:
        mtia.set_pool_order_check("warn")
    mtia.synchronize()
    with pytest.raises(ValueError, match="mode must be one of"):
        mtia.set_pool_order_check("strict")
    mtia.set_pool_order_check("off")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            graphs[0].replay()
            graphs[2].replay()
    finally:
        mtia.set_pool_order_check("warn")
    mtia.synchronize()


def test_private_pools_replay_in_any_order_silently():
    x = mtia.ones(16)
    graphs = [MTIAGraph() for _ in range(3)]
    for g in graphs:
        with mtia.graph(g):
            x.add_(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for g in reversed(graphs):
            g.replay()
    mtia.synchronize()


# ----------------------------------------------------------------- replay schedules


def capture_missing_edge(g, *, with_edge):
    """b is reset, then (on a side stream) set to 7 while the capture stream first sets c to
    1 and then adds b to it; without ``with_edge`` nothing orders the add after the side
    stream's write. Node order: reset b (0), c = 1 (1), b = 7 (2, side), c += b (3): the
    serial and the reverse schedules both run 2 before 3; only some random ones do not."""
    b, c = mtia.zeros(64), mtia.zeros(64)
    side = Stream()
    with mtia.graph(g):
        cur = mtia.current_stream()
        b.fill_(0.0)
        side.wait_stream(cur)
        c.fill_(1.0)
        with mtia.stream(side):
            b.fill_(7.0)
        if with_edge:
            cur.wait_stream(side)
        c.add_(b)
        cur.wait_stream(side)
    return c


def test_schedules_expose_a_missing_edge_only_random_ones_find():
    g = MTIAGraph()
    c = capture_missing_edge(g, with_edge=False)
    for schedule in ("serial", "reverse"):
        g.replay(schedule=schedule)
        mtia.synchronize()
        np.testing.assert_array_equal(c.numpy(), np.full(64, 8.0))
    diff = mtia.debug.compare_schedules(g, [c], runs=16)
    assert isinstance(diff, mtia.debug.ScheduleDifference)
    assert (diff.output, diff.schedule) == (0, "random")
    assert (diff.expected, diff.got, diff.max_abs_diff) == (8.0, 1.0, 7.0)
    assert diff.index == (0,)
    assert str(diff).startswith(
        f"output 0 differs between the serial and the random schedule (seed {diff.seed}): "
        "element [0] is 1.0 instead of 8.0"
    )
    # The same seed draws the same order: the difference comes back.
    g.replay(schedule="random", seed=diff.seed)
    mtia.synchronize()
    np.testing.assert_array_equal(c.numpy(), np.full(64, 1.0))


def test_schedules_agree_on_a_correct_graph():
    g = MTIAGraph()
    c = capture_missing_edge(g, with_edge=True)
    assert mtia.debug.compare_schedules(g, [c], runs=16) is None
    g.replay()  # the plan again
    mtia.synchronize()
    np.testing.assert_array_equal(c.numpy(), np.full(64, 8.0))


def test_schedule_arguments_are_checked():
    g = MTIAGraph()
    c = capture_missing_edge(g, with_edge=True)
    with pytest.raises(ValueError, match="schedule must be None or one of"):
        g.replay(schedule="backwards")
    with pytest.raises(TypeError, match="expects an MTIAGraph"):
        mtia.debug.compare_schedules(c, [c])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runs must be"):
        mtia.debug.compare_schedules(g, [c], runs=-1)
