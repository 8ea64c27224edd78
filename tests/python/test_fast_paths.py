"""The allocation-free fast paths of the hot calls (the capture-id query, allocation,
add_ of a number, copies from host arrays that need no conversion) give exactly what the
general paths give, take the general path for every case they do not cover, and keep the
errors of the general path."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import mtia_graph as mg
from mtia_graph import CaptureError, InvalidHandleError, MTIAGraph, OutOfMemoryError
from mtia_graph._C import capture_id_of, capture_info, lib
from mtia_graph.streams import _stream_handle


def test_capture_id_is_capture_infos_id_outside_and_inside_a_capture():
    h = _stream_handle(0)
    t = mg.zeros(2)
    assert capture_id_of(h) == capture_info(h).id == 0
    g = MTIAGraph()
    with mg.graph(g):
        inside = capture_id_of(h)
        assert inside == capture_info(h).id != 0
        t.add_(1)
    assert capture_id_of(h) == 0
    g2 = MTIAGraph()
    with mg.graph(g2):
        assert capture_id_of(h) > inside  # every capture has its own id
        t.add_(1)


def test_capture_id_of_a_destroyed_stream_raises_and_leaves_the_thread_usable():
    s = mg.Stream()
    handle = s._handle
    lib.mtiart_stream_destroy(handle)
    with pytest.raises(InvalidHandleError, match=r"^what failed: "):
        capture_id_of(handle, "what failed")
    t = mg.zeros(3).add_(1)
    assert t.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("dt", [mg.float32, mg.float64])
@pytest.mark.parametrize("value", [1, 2.5, -3, True])
def test_add_of_a_number_to_a_floating_tensor(dt, value):
    t = mg.tensor([1.0, 2.0, 3.0], dtype=dt)
    assert t.add_(value) is t
    np.testing.assert_array_equal(t.numpy(), np.array([1.0, 2.0, 3.0]) + value)


def test_add_of_an_int_beyond_a_double_takes_the_general_path_and_its_error():
    t = mg.zeros(2)
    with pytest.raises((OverflowError, ValueError, RuntimeError)):
        t.add_(10**400)
    assert t.add_(1).tolist() == [1.0, 1.0]


def test_add_of_a_number_runs_on_each_threads_current_stream():
    results = {}

    def work(k):
        s = mg.Stream()
        with mg.stream(s):
            t = mg.zeros(64)
            for _ in range(200):
                t.add_(k)
            s.synchronize()
            results[k] = t.numpy()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 5)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(1, 5):
        np.testing.assert_array_equal(results[k], np.full(64, 200.0 * k, dtype=np.float32))


def test_an_allocation_failure_is_an_out_of_memory_error_and_nothing_is_lost():
    keep = mg.ones(4)
    with pytest.raises(OutOfMemoryError, match="allocate"):
        mg.empty(1 << 58, dtype=mg.float64)
    assert keep.add_(1).tolist() == [2.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(12, dtype=np.float32).reshape(3, 4),  # the fast case itself
        lambda: np.arange(12, dtype=np.float64).reshape(3, 4),  # another dtype
        lambda: np.arange(24, dtype=np.float32).reshape(3, 8)[:, ::2],  # not contiguous
        lambda: np.arange(12, dtype=np.float32).reshape(4, 3).T,  # Fortran order
        lambda: np.arange(12, dtype=">f4").reshape(3, 4),  # byte-swapped
        lambda: np.arange(4, dtype=np.float32),  # broadcast over the rows
        lambda: np.arange(12, dtype=np.float32).reshape(3, 4).view(np.recarray),  # subclass
        lambda: np.arange(12, dtype=np.int64).reshape(3, 4),
    ],
)
def test_copy_from_host_arrays_equals_numpys_conversion(make):
    src = make()
    t = mg.empty((3, 4))
    assert t.copy_(src) is t
    expected = np.broadcast_to(np.asarray(src), (3, 4)).astype(np.float32)
    np.testing.assert_array_equal(t.numpy(), expected)


def test_copy_from_an_exact_array_is_taken_at_once_and_waits_for_earlier_work():
    t = mg.zeros(1000)
    t.add_(5)  # enqueued before the copy, which must land after it
    src = np.arange(1000, dtype=np.float32)
    t.copy_(src)
    src[:] = -1  # the copy was synchronous: the tensor keeps the values copied
    np.testing.assert_array_equal(t.numpy(), np.arange(1000, dtype=np.float32))


def test_copy_of_the_wrong_shape_is_refused_with_the_general_message():
    t = mg.zeros((2, 3))
    with pytest.raises(ValueError, match=r"source of shape \(4,\) cannot be broadcast"):
        t.copy_(np.zeros(4, dtype=np.float32))


@pytest.mark.parametrize(
    ("a", "b"),
    [((4, 3), (3,)), ((3,), (4, 3)), ((2, 4, 3), (4, 3)), ((4, 3), (2, 1, 3)), ((4, 1), (3,))],
)
def test_broadcasting_a_trailing_shape_equals_numpys(a, b):
    x = np.arange(np.prod(a), dtype=np.float32).reshape(a)
    y = np.arange(np.prod(b), dtype=np.float32).reshape(b) + 1
    np.testing.assert_array_equal((mg.tensor(x) + mg.tensor(y)).numpy(), x + y)


def test_a_trailing_shape_that_does_not_match_is_refused():
    with pytest.raises(ValueError, match="cannot be broadcast"):
        mg.zeros((2, 3)) + mg.zeros(2)


@pytest.mark.parametrize(("a", "b"), [((5, 4), (4, 3)), ((4,), (4, 3)), ((5, 4), (4,))])
def test_matmul_of_plain_operands_equals_numpys_and_shares_nothing(a, b):
    x = np.arange(np.prod(a), dtype=np.float32).reshape(a)
    y = np.arange(np.prod(b), dtype=np.float32).reshape(b)
    tx, ty = mg.tensor(x), mg.tensor(y)
    out = tx @ ty
    np.testing.assert_array_equal(out.numpy(), x @ y)
    out.add_(1)  # the result is memory of its own
    np.testing.assert_array_equal(tx.numpy(), x)
    np.testing.assert_array_equal(ty.numpy(), y)


def test_a_converting_copy_in_a_capture_is_still_refused():
    static = mg.zeros(4)
    g = MTIAGraph()
    with pytest.raises(CaptureError, match="float64"), mg.graph(g):
        static.copy_(np.zeros(4, dtype=np.float64))
