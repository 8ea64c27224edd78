"""Host memory in captures, one rule for every path that copies from host memory: the
captured copy reads the array (any buffer the caller holds) itself at every replay, and the
graph keeps it alive; an array that cannot be read in place (non-contiguous, another dtype,
broadcast) is refused during the capture with a message naming the fix; numbers and
sequences are read once, at capture. Eager copies are unaffected."""

from __future__ import annotations

import array
import functools
import gc
import weakref

import numpy as np
import pytest

import mtia_graph as mg
from mtia_graph import CaptureError, MTIAGraph


def capture(body):
    """Capture ``body()`` into a new graph; returns (graph, what body returned)."""
    g = MTIAGraph()
    with mg.graph(g):
        out = body()
    return g, out


# Every way of copying host memory into a tensor, as (name, make(host) -> tensor).
def _setitem(host):
    t = mg.zeros(6)
    t[1:5] = host[:4] if host.size > 4 else host
    return t


PATHS = {
    "tensor": lambda host: mg.tensor(host),
    "from_numpy": lambda host: mg.from_numpy(host),
    "copy_": lambda host: mg.empty(host.shape, dtype=mg.float32).copy_(host),
    "from_dlpack": lambda host: mg.from_dlpack(host),
    "Tensor()": lambda host: mg.Tensor(host),
    "operand": lambda host: mg.zeros(host.shape) + host,
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_each_replay_reads_the_array_as_it_is_then(path):
    host = np.arange(4, dtype=np.float32)
    g, t = capture(lambda: PATHS[path](host))
    for step in (1, 2, 7):
        host[:] = step
        g.replay()
        np.testing.assert_array_equal(t.numpy(), np.full(4, step, np.float32))


def test_setitem_reads_the_array_at_every_replay():
    host = np.ones(4, dtype=np.float32)
    t = mg.zeros(6)
    g, _ = capture(lambda: t.__setitem__(slice(1, 5), host))
    host[:] = 7  # the case of the issue: replay must not leave [1, 1, 1, 1]
    g.replay()
    assert t.tolist() == [0, 7, 7, 7, 7, 0]


def test_copy_into_a_static_input_feeds_every_replay():
    static_in = mg.zeros(3)
    feed = np.zeros(3, dtype=np.float32)
    g = MTIAGraph()
    with mg.graph(g):
        static_in.copy_(feed)
        out = static_in * 10
    for i in range(3):
        feed[:] = [i, i + 1, i + 2]
        g.replay()
        assert out.tolist() == [10.0 * i, 10.0 * (i + 1), 10.0 * (i + 2)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: array.array("f", [0, 1, 2, 3]),
        lambda: np.arange(4, dtype=np.float32).reshape(2, 2),
        lambda: np.arange(4, dtype=np.int64),
        lambda: np.array([True, False, True, True]),
    ],
    ids=["array.array", "2-d", "int64", "bool"],
)
def test_buffer_protocol_objects_are_read_in_place(make):
    host = make()
    view = np.asarray(host)
    g, t = capture(lambda: mg.tensor(host))
    view[...] = np.ones_like(view)
    g.replay()
    np.testing.assert_array_equal(t.numpy(), np.ones_like(view))


def test_the_graph_keeps_the_array_alive():
    host = np.full(4, 3.0, dtype=np.float32)
    ref = weakref.ref(host)
    g, t = capture(functools.partial(mg.tensor, host))
    del host
    gc.collect()
    assert ref() is not None
    ref()[:] = 5
    g.replay()
    assert t.tolist() == [5.0] * 4
    g.reset()
    mg.synchronize()
    gc.collect()
    assert ref() is None


def test_a_replay_captured_as_a_child_graph_reads_the_array_and_keeps_it():
    """A graph replayed inside another capture becomes a child graph of it: the outer
    graph reads the inner one's host array at each of its replays, and keeps it alive
    after the inner graph is gone."""
    host = np.zeros(4, dtype=np.float32)
    ref = weakref.ref(host)
    inner, t = capture(functools.partial(mg.tensor, host))
    outer = MTIAGraph()
    with mg.graph(outer):
        inner.replay()
        doubled = t * 2
    del host
    inner.reset()
    gc.collect()
    assert ref() is not None
    for step in (1, 3):
        ref()[:] = step
        outer.replay()
        assert doubled.tolist() == [2.0 * step] * 4
    outer.reset()
    mg.synchronize()
    gc.collect()
    assert ref() is None


def test_numbers_and_sequences_are_read_once_at_capture():
    values = [1.0, 2.0, 3.0]
    g, (a, b, c) = capture(
        lambda: (mg.tensor(values), mg.zeros(3).copy_(values), mg.tensor(np.float32(4)))
    )
    values[0] = 100.0  # a list is data, not memory the graph reads
    g.replay()
    assert a.tolist() == [1.0, 2.0, 3.0] and b.tolist() == [1.0, 2.0, 3.0]
    assert c.item() == 4.0


def test_eager_copies_are_taken_at_once():
    host = np.arange(3, dtype=np.float32)
    t = mg.tensor(host)
    u = mg.zeros(3).copy_(host)
    v = mg.from_dlpack(host)
    host[:] = 9
    assert t.tolist() == u.tolist() == v.tolist() == [0.0, 1.0, 2.0]


REFUSED = [
    # (name, make the tensor from the bad array, words the message must contain)
    (
        "non-contiguous tensor()",
        lambda: mg.tensor(np.arange(8, dtype=np.float32)[::2]),
        ["not C-contiguous", "np.ascontiguousarray"],
    ),
    (
        "non-contiguous copy_()",
        lambda: mg.zeros(4).copy_(np.arange(8, dtype=np.float32)[::2]),
        ["not C-contiguous", "np.ascontiguousarray"],
    ),
    (
        "Fortran order",
        lambda: mg.tensor(np.asfortranarray(np.ones((2, 3), np.float32))),
        ["not C-contiguous"],
    ),
    (
        "non-contiguous from_dlpack()",
        lambda: mg.from_dlpack(np.ones((4, 4), np.float32)[:, 1]),
        ["from_dlpack()", "not C-contiguous"],
    ),
    (
        "dtype of tensor(dtype=)",
        lambda: mg.tensor(np.ones(4), dtype=mg.float32),
        ["float64", "pass an array of dtype float32"],
    ),
    (
        "dtype of from_numpy(dtype=)",
        lambda: mg.from_numpy(np.ones(4, np.int32), dtype=mg.int64),
        ["int32", "pass an array of dtype int64"],
    ),
    (
        "dtype of copy_()",
        lambda: mg.zeros(4).copy_(np.ones(4)),
        ["copy_()", "float64", "pass an array of dtype float32"],
    ),
    (
        "unsupported dtype",
        lambda: mg.zeros(2, dtype=mg.int32).copy_(bytearray(b"\x01\x02")),
        ["uint8", "pass an array of dtype int32"],
    ),
    (
        "broadcast copy_()",
        lambda: mg.zeros(2, 3).copy_(np.ones(3, np.float32)),
        ["shape (3,)", "pass an array of shape (2, 3)"],
    ),
    (
        "non-contiguous operand",
        lambda: mg.zeros(4) + np.ones(8)[::2],
        ["add()", "not C-contiguous"],
    ),
]


@pytest.mark.parametrize(("name", "make", "words"), REFUSED, ids=[r[0] for r in REFUSED])
def test_arrays_that_cannot_be_read_in_place_are_refused_with_the_fix(name, make, words):
    g = MTIAGraph()
    with pytest.raises(CaptureError) as info, mg.graph(g):
        make()
    message = str(info.value)
    assert "reads the array itself at every replay" in message
    for w in words:
        assert w in message, message
    # The body raised: the capture was abandoned cleanly and everything works.
    assert not mg.is_current_stream_capturing()
    assert (mg.ones(2) + 1).tolist() == [2.0, 2.0]


def test_a_refused_copy_leaves_the_capture_usable():
    g = MTIAGraph()
    x = mg.zeros(4)
    g.capture_begin()
    try:
        with pytest.raises(CaptureError, match=r"np\.ascontiguousarray"):
            x.copy_(np.ones(8, np.float32)[::2])
        x.add_(1)  # the capture goes on
    finally:
        g.capture_end()
    g.replay()
    g.replay()
    assert x.tolist() == [2.0] * 4


def test_the_fixed_array_is_what_replays_read():
    host = np.ones(8, dtype=np.float64)[::2]
    staged = np.ascontiguousarray(host, dtype=np.float32)  # what the message suggests
    g, t = capture(lambda: mg.tensor(staged))
    staged[:] = [4, 3, 2, 1]
    g.replay()
    assert t.tolist() == [4.0, 3.0, 2.0, 1.0]


def test_host_reads_are_refused_in_capture_as_before():
    t = mg.ones(3)
    for read in (t.numpy, t.tolist, lambda: t.sum().item(), lambda: np.asarray(t)):
        g = MTIAGraph()
        with pytest.raises(CaptureError), mg.graph(g):
            read()
