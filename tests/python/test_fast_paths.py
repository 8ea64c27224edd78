"""The allocation-free fast paths of the hot calls (the capture-id query, allocation,
add_ of a number, copies from host arrays that need no conversion) give exactly what the
general paths give, take the general path for every case they do not cover, and keep the
errors of the general path."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import mtia_graph as mg
from mtia_graph import CaptureError, InvalidHandleError, MTIAGraph, OutOfMemoryError
from mtia_graph._C import capture_id_of, capture_info, lib
from mtia_graph.streams import _stream_handle

REPO = Path(__file__).resolve().parents[2]


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


def test_add_of_a_number_follows_the_current_stream_as_it_changes():
    """add_ reads the current stream in C: stream contexts, set_stream and their undoing
    move it exactly as they move current_stream()."""
    gate = threading.Event()
    s = mg.Stream()
    s.launch_host_func(lambda: gate.wait(30))  # holds back whatever s runs next
    t, u = mg.zeros(4), mg.zeros(4)
    with mg.stream(s):
        t.add_(1)  # on s: waits for the gate
    u.add_(1)  # on the default stream again: runs now
    mg.default_stream().synchronize()
    assert u.tolist() == [1.0] * 4
    assert s.query() is False
    gate.set()
    s.synchronize()
    assert t.tolist() == [1.0] * 4
    mg.set_stream(s)
    try:
        assert mg.current_stream() == s
        gate.clear()
        s.launch_host_func(lambda: gate.wait(30))
        t.add_(1)
        assert s.query() is False
        gate.set()
        s.synchronize()
        assert t.tolist() == [2.0] * 4
    finally:
        mg.set_stream(mg.default_stream())
    t.add_(1)
    mg.default_stream().synchronize()
    assert t.tolist() == [3.0] * 4


def test_a_current_stream_belongs_to_the_python_thread_state_that_made_it(subprocess_python):
    """A C thread that calls into Python through ctypes gets a fresh thread state each
    time, with the default streams current: the stream one call made current is not what
    the C helpers find in the next (here: host functions on the one worker)."""
    result = subprocess_python(
        """
        import ctypes
        import mtia_graph as mg
        from mtia_graph._C import ffi, lib
        from mtia_graph.streams import _stream_handle

        s = mg.Stream()
        t = mg.zeros(2)
        desc = t._desc or t._get_desc()
        seen = []

        def make_current(_):
            mg.set_stream(s)
            seen.append(_stream_handle(0) == s._handle)
            return 0

        def look(_):
            seen.append(lib._mtia_add_scalar_float(0, desc, 1.0) == lib.MTIA_NO_CURRENT_STREAM)
            t.add_(1)  # on the default stream, current for this thread state
            seen.append(_stream_handle(0) == mg.default_stream()._handle)
            return 0

        host_fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)
        callbacks = [host_fn(make_current), host_fn(look)]
        for cb in callbacks:
            fn = ffi.cast("mtiart_host_fn", ctypes.cast(cb, ctypes.c_void_p).value)
            assert lib.mtiart_launch_host_func(_stream_handle(0), fn, ffi.NULL) == 0
        mg.synchronize()
        assert seen == [True, True, True], seen
        assert t.tolist() == [1.0, 1.0]
        print("ok")
        """,
        env={"MTIART_NUM_WORKERS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_add_of_a_number_keeps_pace_with_python_work_running_on_the_workers():
    """add_ of a number holds the GIL through its call: it must never wait for a worker,
    which needs the GIL for the host functions and Python kernels queued before it. Each
    host function here runs Python until the host has made its next add_s."""
    made = [0]

    def until(n):
        deadline = time.monotonic() + 30
        while made[0] < n and time.monotonic() < deadline:
            time.sleep(0)  # Python bytecode: the worker takes the GIL again and again
        return None

    @mg.kernel(access=("w",))
    def bump(x):
        x += 1

    t, u = mg.zeros(8), mg.zeros(8)
    for step in range(1, 21):
        mg.launch_host_func(lambda n=step * 50: until(n))
        bump(u)
        for _ in range(50):
            t.add_(1)  # queued behind the host function that waits for it
            made[0] += 1
    mg.synchronize()
    assert made[0] == 1000
    np.testing.assert_array_equal(t.numpy(), np.full(8, 1000.0, dtype=np.float32))
    np.testing.assert_array_equal(u.numpy(), np.full(8, 20.0, dtype=np.float32))


def test_only_the_declared_wrappers_keep_the_gil():
    """The generated extension drops the GIL around every call but the non-blocking enqueue
    helpers whose declarations say they keep it; a declaration naming no wrapper fails the
    build rather than being ignored."""
    gen = _load_gen_cffi()
    if gen is None:
        pytest.skip("tools/gen_cffi.py is not beside the tests (an installed copy)")
    extra = REPO / "python" / "mtia_graph" / "_cdef_extra.h"
    assert gen.gil_keepers(str(extra)) == ["_mtia_set_current_stream", "_mtia_add_scalar_float"]
    wrapper = (
        "static PyObject *\n_cffi_f_{0}(PyObject *self, PyObject *args)\n{{\n  int x;\n"
        "  Py_BEGIN_ALLOW_THREADS\n  {{ result = {0}(x); }}\n  Py_END_ALLOW_THREADS\n"
        "  return NULL;\n}}\n"
    )
    code = wrapper.format("kept") + wrapper.format("released")
    out = gen.keep_gil(code, "kept")
    kept, released = out.split("_cffi_f_released")
    assert "ALLOW_THREADS" not in kept and "result = kept(x);" in kept
    assert released.count("Py_BEGIN_ALLOW_THREADS") == released.count("Py_END_ALLOW_THREADS") == 1
    with pytest.raises(SystemExit, match="no cffi wrapper of missing"):
        gen.keep_gil(code, "missing")


def _load_gen_cffi():
    path = REPO / "tools" / "gen_cffi.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("gen_cffi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
