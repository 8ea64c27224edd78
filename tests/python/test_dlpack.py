"""DLPack export (Tensor.__dlpack__, zero-copy) and import (mtia_graph.from_dlpack, a copy)."""

import gc

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import CaptureError, MTIAGraph

DTYPES = [mtia.float32, mtia.float64, mtia.int32, mtia.int64, mtia.bool]


def test_dlpack_device_is_cpu():
    assert mtia.ones(2).__dlpack_device__() == (1, 0)


def test_numpy_from_dlpack_shares_memory():
    t = mtia.arange(6, dtype=mtia.float32).reshape(2, 3)
    a = np.from_dlpack(t)
    assert a.shape == (2, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, np.arange(6).reshape(2, 3))
    # device writes are visible through the array once synchronized
    t.fill_(5)
    mtia.synchronize()
    np.testing.assert_array_equal(a, np.full((2, 3), 5))
    # host writes through the array are seen by the device
    a[0, 0] = 42
    assert t.numpy()[0, 0] == 42
    assert a.ctypes.data == t.data_ptr()


def test_export_waits_for_pending_work():
    t = mtia.zeros(1 << 16)
    for _ in range(20):
        t.add_(1)
    a = np.from_dlpack(t)  # no explicit synchronize: __dlpack__ does it
    assert (a == 20).all()


def test_export_of_a_view_and_on_a_given_stream():
    s = mtia.Stream()
    with mtia.stream(s):
        base = mtia.arange(12, dtype=mtia.int64).reshape(3, 4)
        row = base[1]
    # row's producer is s, not the current (default) stream: export on s
    cap = row.__dlpack__(stream=s)
    assert cap is not None
    a = np.from_dlpack(_Wrap(row, s))
    np.testing.assert_array_equal(a, [4, 5, 6, 7])
    with pytest.raises(BufferError):
        row.__dlpack__(stream=1)


class _Wrap:
    """Forwards the DLPack protocol, pinning the producer stream."""

    def __init__(self, t, s):
        self.t, self.s = t, s

    def __dlpack__(self, **kwargs):
        kwargs.pop("stream", None)
        return self.t.__dlpack__(stream=self.s, **kwargs)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def test_exported_memory_outlives_the_tensor():
    gc.collect()
    mtia.synchronize()  # what earlier tests left to be released goes now, not below
    t = mtia.full((1000,), 7, dtype=mtia.int32)
    a = np.from_dlpack(t)
    gc.collect()  # earlier tests' garbage must not be freed during the measurement
    mtia.synchronize()
    allocated = mtia.memory_allocated()
    del t
    gc.collect()
    mtia.synchronize()
    assert mtia.memory_allocated() == allocated  # still held by the array
    # new allocations must not land on the shared memory
    others = [mtia.zeros(1000, dtype=mtia.int32) for _ in range(4)]
    mtia.synchronize()
    assert (a == 7).all()
    del a, others
    gc.collect()
    mtia.synchronize()
    assert mtia.memory_allocated() < allocated


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
def test_round_trip_dtypes(dt):
    src = (np.arange(10) % 3).astype(dt.to_numpy()).reshape(2, 5)
    t = mtia.from_dlpack(src)
    assert isinstance(t, mtia.Tensor) and t.dtype is dt and t.shape == (2, 5)
    np.testing.assert_array_equal(t.numpy(), src)
    # import is a copy: the source can change afterwards
    src[...] = 0 if dt is not mtia.bool else False
    back = np.from_dlpack(t)
    assert back.dtype == src.dtype
    np.testing.assert_array_equal(back, (np.arange(10) % 3).astype(dt.to_numpy()).reshape(2, 5))


def test_from_dlpack_of_a_tensor_is_the_tensor_and_bad_inputs():
    t = mtia.ones(3)
    assert mtia.from_dlpack(t) is t
    with pytest.raises(TypeError):
        mtia.from_dlpack([1, 2, 3])
    with pytest.raises(TypeError):
        mtia.from_dlpack(np.zeros(3, dtype=np.uint8))
    # non-contiguous sources are fine (copied)
    src = np.arange(20, dtype=np.float64).reshape(4, 5)[:, ::2]
    np.testing.assert_array_equal(mtia.from_dlpack(src).numpy(), src)


def test_empty_tensor_export():
    t = mtia.empty(0, 4)
    a = np.from_dlpack(t)
    assert a.shape == (0, 4)


def test_dlpack_refused_during_capture_and_from_dlpack_reads_at_every_replay():
    t = mtia.ones(4)
    g = MTIAGraph()
    src = np.arange(4, dtype=np.float32)
    with mtia.graph(g):
        with pytest.raises(CaptureError):
            t.__dlpack__()
        u = mtia.from_dlpack(src)
        u.add_(1)
    g.replay()
    np.testing.assert_array_equal(u.numpy(), np.arange(4) + 1)
    src[...] = 100  # the captured copy reads the exporter's memory at every replay
    g.replay()
    np.testing.assert_array_equal(u.numpy(), np.full(4, 101))


def test_torch_interop():
    torch = pytest.importorskip("torch")
    t = mtia.arange(6, dtype=mtia.float32)
    tt = torch.from_dlpack(t)
    assert tt.device.type == "cpu" and tt.dtype == torch.float32
    assert tt.data_ptr() == t.data_ptr()
    t.mul_(2)
    mtia.synchronize()
    assert tt.tolist() == [0, 2, 4, 6, 8, 10]
    back = mtia.from_dlpack(torch.arange(5, dtype=torch.int64))
    assert back.dtype is mtia.int64 and back.tolist() == [0, 1, 2, 3, 4]
