"""What torch's surface adds, behaving as in torch: Event's arguments, streams as context
managers, capture_begin(pool=None), debug mode and dumps, the C handles of a graph, the
memory and device-property shapes of torch.mtia."""

from __future__ import annotations

import numpy as np
import pytest

import mtia_graph as mg
from mtia_graph import MTIAGraph
from mtia_graph._C import ffi, lib

# --------------------------------------------------------------------- Event


def test_event_takes_torch_event_s_arguments():
    # torch.Event(device=None, *, enable_timing=False, blocking=False, interprocess=False)
    e = mg.Event(0)
    assert e.device == mg.Device(0) and not e.enable_timing
    e = mg.Event(device="mtia:0", enable_timing=True, blocking=True, external=True)
    assert e.enable_timing and e.blocking and e.external
    assert not mg.Event().external
    with pytest.raises(TypeError):
        mg.Event(0, True)  # enable_timing is keyword-only (Event(1) meant timing before)
    with pytest.raises(TypeError):
        mg.Event(True)  # a torch.cuda.Event(True) is not mistaken for a device
    with pytest.raises(ValueError):
        mg.Event(mg.device_count())
    with pytest.raises(ValueError, match="interprocess"):
        mg.Event(interprocess=True)


def test_an_event_binds_to_the_device_of_its_first_record():
    e = mg.Event()
    assert e.device == mg.Device("mtia") and e.device.index is None
    e.record()
    assert e.device == mg.Device(0)
    assert isinstance(e.event_id, int) and e.event_id == mg.Event.event_id.fget(e)
    if mg.device_count() > 1:
        with pytest.raises(ValueError, match="mtia:0"):
            e.record(mg.default_stream(1))
        f = mg.Event(1)
        f.record()  # the current stream of the event's device
        f.synchronize()
        mg.current_stream(1).wait_event(e)  # waits may cross devices


def test_timing_with_torch_s_keywords():
    start, end = mg.Event(enable_timing=True), mg.Event(enable_timing=True)
    start.record()
    mg.ones(1000).add_(1)
    end.record()
    end.synchronize()
    assert start.elapsed_time(end) >= 0


# --------------------------------------------------------------------- Stream


def test_a_stream_is_a_context_manager_as_torch_stream():
    s = mg.Stream()
    outer = mg.current_stream()
    with s as entered:
        assert entered is s and mg.current_stream() == s
        with mg.Stream() as inner:
            assert mg.current_stream() == inner
        assert mg.current_stream() == s
        x = mg.ones(4) + 1  # on s
    assert mg.current_stream() == outer
    s.synchronize()
    assert x.tolist() == [2.0] * 4
    if mg.device_count() > 1:
        other = mg.Stream(1)
        with other:
            assert mg.current_device() == 1 and mg.current_stream(1) == other
        assert mg.current_device() == 0


def test_stream_attributes_of_torch_stream():
    s = mg.Stream()
    assert s.device_type == "mtia" and s.device_index == 0
    handle = ffi.cast("mtiart_stream", s.native_handle)
    device = ffi.new("int *")
    assert lib.mtiart_stream_get_device(handle, device) == 0 and device[0] == 0


# --------------------------------------------------------------------- graphs


def test_capture_begin_pool_none_is_a_new_private_pool():
    x = mg.zeros(2)
    graphs = []
    for pool in (None, (0, 0)):
        g = MTIAGraph()
        g.capture_begin(pool)
        x.add_(1)
        g.capture_end()
        graphs.append(g)
    assert graphs[0].pool() != graphs[1].pool()  # two private pools
    assert graphs[0].pool()[1] == 0 and graphs[0].pool()[0] > 0
    g = MTIAGraph()
    g.capture_begin()  # the default, as torch.cuda's
    x.add_(1)
    g.capture_end()
    assert g.pool() not in (graphs[0].pool(), graphs[1].pool())


def test_check_input_liveness_is_accepted_by_name_and_refused_until_supported():
    g = MTIAGraph()
    g.capture_begin(check_input_liveness=False)
    mg.zeros(1).add_(1)
    g.capture_end()
    with pytest.raises(NotImplementedError, match="check_input_liveness"):
        MTIAGraph().capture_begin(check_input_liveness=True)
    with pytest.raises(NotImplementedError), mg.graph(MTIAGraph(), check_input_liveness=True):
        pass
    assert not mg.is_current_stream_capturing()


def test_recapture_takes_graph_s_capture_arguments():
    x = mg.zeros(2)
    g = MTIAGraph()
    with mg.graph(g):
        x.add_(1)
    with g.recapture(stream=mg.Stream(), capture_error_mode="relaxed", check_input_liveness=False):
        x.add_(2)
    g.replay()
    assert x.tolist() == [2.0, 2.0]  # one add_(1) at the capture, then the recaptured add_(2)
    with (
        pytest.raises(NotImplementedError, match="check_input_liveness"),
        g.recapture(check_input_liveness=True),
    ):
        pass
    with (
        pytest.raises(ValueError, match="capture_error_mode"),
        g.recapture(capture_error_mode="bogus"),
    ):
        pass
    assert not mg.is_current_stream_capturing()
    g.replay()
    assert x.tolist() == [4.0, 4.0]  # the failed recaptures changed nothing


def test_debug_mode_keeps_what_update_and_recapture_need(tmp_path):
    """A graph in debug mode holds its template as with keep_graph=True: another graph can
    update from it, and a recapture replaces the template that debug_dump writes."""
    x = mg.zeros(2)
    g = MTIAGraph()
    g.enable_debug_mode()
    with mg.graph(g):
        x.add_(1)
    other = MTIAGraph()
    other.enable_debug_mode()
    with mg.graph(other):
        x.add_(5)
    g.update(other)
    g.replay()
    assert x.tolist() == [5.0, 5.0]  # other's add_(5): captures run nothing
    first = g.raw_graph()
    with g.recapture():
        x.mul_(2)
    assert g.raw_graph() != first  # the new capture's template; the old one is destroyed
    count = ffi.new("size_t *")
    assert lib.mtiart_graph_get_node_count(ffi.cast("mtiart_graph", first), count) == (
        lib.MTIART_ERROR_INVALID_HANDLE
    )
    path = tmp_path / "g.dot"
    g.debug_dump(str(path))
    assert path.read_text() == g.dot()
    g.replay()
    assert x.tolist() == [10.0, 10.0]


def test_an_external_event_of_a_device_is_recorded_by_every_replay():
    x = mg.zeros(4)
    start = mg.Event(0, enable_timing=True, external=True)
    end = mg.Event(enable_timing=True, external=True)
    g = MTIAGraph()
    with mg.graph(g):
        start.record()
        x.add_(1)
        end.record()
    assert end.device == mg.Device(0)  # bound by its record in the capture
    for _ in range(2):
        g.replay()
        end.synchronize()
        assert start.elapsed_time(end) >= 0
    assert x.tolist() == [2.0] * 4


def test_enable_debug_mode_keeps_the_graph_for_debug_dump(tmp_path):
    x = mg.zeros(3)
    g = MTIAGraph()
    g.enable_debug_mode()
    with mg.graph(g):
        x.add_(1)
    g.replay()  # instantiated at capture_end as without debug mode
    path = tmp_path / "g.dot"
    g.debug_dump(debug_path=str(path))  # torch's keyword
    assert "digraph" in path.read_text()
    assert g.num_nodes() >= 1
    plain = MTIAGraph()
    with mg.graph(plain):
        x.add_(1)
    with pytest.raises(RuntimeError, match="enable_debug_mode"):
        plain.debug_dump(str(path))
    with pytest.raises(RuntimeError, match="keep_graph=True"):
        plain.raw_graph()


def test_raw_handles_are_the_c_graph_and_executable():
    """C code gets the handles as integers, (mtiart_graph)(uintptr_t)value, and uses them
    with the C API while the MTIAGraph, which keeps ownership, lives."""
    x = mg.zeros(4)
    g = MTIAGraph(keep_graph=True)
    with mg.graph(g):
        x.add_(1)
    with pytest.raises(RuntimeError, match="instantiate"):
        g.raw_graph_exec()  # keep_graph: not instantiated yet
    graph = ffi.cast("mtiart_graph", g.raw_graph())
    count = ffi.new("size_t *")
    assert lib.mtiart_graph_get_node_count(graph, count) == 0 and count[0] == g.num_nodes()
    g.instantiate()
    exe = ffi.cast("mtiart_graph_exec", g.raw_graph_exec())
    stream = ffi.cast("mtiart_stream", mg.current_stream().native_handle)
    assert lib.mtiart_graph_launch(exe, stream) == 0  # a replay launched from "C"
    g.replay()
    assert x.tolist() == [2.0] * 4
    old = g.raw_graph_exec()
    g.instantiate()  # replaces the executable: the old handle is gone
    assert g.raw_graph_exec() != old
    assert lib.mtiart_graph_launch(ffi.cast("mtiart_graph_exec", old), stream) == (
        lib.MTIART_ERROR_INVALID_HANDLE
    )
    value = g.raw_graph()
    g.reset()
    assert lib.mtiart_graph_get_node_count(ffi.cast("mtiart_graph", value), count) == (
        lib.MTIART_ERROR_INVALID_HANDLE
    )
    with pytest.raises(RuntimeError):
        g.raw_graph_exec()


def test_graph_context_manager_takes_torch_s_arguments():
    g = MTIAGraph()
    x = mg.ones(2)
    ctx = mg.graph(g, None, None, "thread_local", False)  # torch.cuda.graph's order
    with ctx:
        y = x * 3
    g.replay()
    assert y.tolist() == [3.0, 3.0]


# --------------------------------------------------------------------- memory and devices


def test_memory_snapshot_and_snapshot_shapes():
    snap = mg.snapshot()
    assert isinstance(snap, dict) and isinstance(snap["segments"], list)
    assert isinstance(mg.memory_snapshot(), list)
    free, total = mg.mem_get_info()
    assert 0 <= free <= total


def test_device_properties_are_a_dict_with_attributes():
    p = mg.get_device_properties()
    assert isinstance(p, dict)
    assert p.total_memory == p["total_memory"] > 0
    np.testing.assert_equal(dict(p), {k: p[k] for k in p})


# --------------------------------------------------------------------- tensors


def test_tensor_arguments_as_torch_names_them():
    x = mg.ones(2, 3, 4)
    assert x.flatten().shape == (24,)
    assert x.flatten(1).shape == (2, 12) and x.flatten(0, 1).shape == (6, 4)
    assert x.flatten(start_dim=-2, end_dim=-1).shape == (2, 12)
    assert mg.tensor(5.0).flatten().shape == (1,)
    with pytest.raises(ValueError):
        x.flatten(2, 1)
    with pytest.raises(IndexError):
        x.flatten(0, 3)
    with pytest.raises(TypeError):
        x.add(1, 2)  # alpha is keyword-only, as in torch
    assert x.add(1, alpha=2).tolist()[0][0] == [3.0] * 4
    assert x.sub_(1, alpha=0.5)[0, 0].tolist() == [0.5] * 4
    assert x.numpy(force=True).shape == (2, 3, 4)
    assert mg.result_type(tensor=x, other=1.5) is mg.float32
    with pytest.raises(TypeError):
        mg.result_type(x, 1, 2)  # two operands, as torch's
    assert mg.promote_types(type1=mg.int32, type2=mg.float64) is mg.float64
    assert mg.zeros_like(input=x).shape == x.shape
    assert mg.full_like(input=x, fill_value=2).tolist()[1][2] == [2.0] * 4
    assert mg.matmul(input=mg.ones(2, 3), other=mg.ones(3)).tolist() == [3.0, 3.0]
    assert mg.from_numpy(ndarray=np.ones(2, np.float32)).tolist() == [1.0, 1.0]


def test_copy_from_host_non_blocking_keeps_the_array_until_it_ran():
    host = np.arange(1000, dtype=np.float32)
    t = mg.empty(1000)
    t.copy_(host, non_blocking=True)
    del host  # kept alive by the runtime until the copy has run
    np.testing.assert_array_equal(t.numpy(), np.arange(1000, dtype=np.float32))
    u = mg.zeros(4)
    u.copy_(mg.ones(4), True)  # device copies are enqueued either way
    assert u.tolist() == [1.0] * 4


def test_from_dlpack_copy_argument():
    a = np.arange(3, dtype=np.float32)
    assert mg.from_dlpack(ext_tensor=a, copy=True).tolist() == [0.0, 1.0, 2.0]
    assert mg.from_dlpack(a, copy=None).tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="copy=False"):
        mg.from_dlpack(a, copy=False)
    t = mg.ones(2)
    assert mg.from_dlpack(t) is t and mg.from_dlpack(t, copy=False) is t
    c = mg.from_dlpack(t, copy=True)
    assert c is not t and c.tolist() == [1.0, 1.0]
