"""Streams, events, stream contexts, host functions and capture state."""

import gc
import re
import threading
import time

import pytest

import mtia_graph
from mtia_graph import CaptureError, Device, Event, KernelError, Stream, callbacks


def two_devices():
    if mtia_graph.device_count() < 2:
        pytest.skip("needs two devices")


# --------------------------------------------------------------------------- Stream


def test_default_and_current_stream():
    d = mtia_graph.default_stream()
    assert mtia_graph.current_stream() == d
    assert mtia_graph.default_stream() is d  # wrapped once
    assert mtia_graph.default_stream(0) is d
    assert d.device_index == 0 and d.device == Device(0)
    assert d.priority == 0
    assert not d.is_capturing()


def test_stream_equality_hash_repr():
    a, b = Stream(), Stream()
    assert a != b and a == a
    assert hash(a) != hash(b) or a.stream_id != b.stream_id
    same = Stream._wrap(a._handle, a.device_index)
    assert same == a and hash(same) == hash(a)
    assert len({a, b, same}) == 2
    assert a != "stream" and (a == 1) is False
    assert re.fullmatch(r"<mtia_graph\.Stream device=mtia:0 id=\d+ priority=0>", repr(a))
    assert a.stream_id != b.stream_id


def test_stream_priorities_are_clamped():
    props = mtia_graph.get_device_properties()
    hi = Stream(priority=props.greatest_stream_priority)
    assert hi.priority == props.greatest_stream_priority
    assert Stream(priority=-1000).priority == props.greatest_stream_priority
    assert Stream(priority=7).priority == 0
    assert Stream().priority == 0
    assert f"priority={hi.priority}" in repr(hi)


def test_high_priority_stream_still_orders_its_own_work():
    hi = Stream(priority=mtia_graph.get_device_properties().greatest_stream_priority)
    lo = Stream()
    seen = []
    for i in range(20):
        lo.launch_host_func(lambda i=i: seen.append(("lo", i)))
        hi.launch_host_func(lambda i=i: seen.append(("hi", i)))
    mtia_graph.synchronize()
    assert [i for k, i in seen if k == "hi"] == list(range(20))
    assert [i for k, i in seen if k == "lo"] == list(range(20))


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"priority": "high"}, TypeError),
        ({"priority": 1.5}, TypeError),
        ({"priority": True}, TypeError),
        ({"device": 99}, ValueError),
        ({"device": "cpu"}, ValueError),
        ({"device": 1.0}, TypeError),
        ({"bogus": 1}, TypeError),
    ],
)
def test_stream_constructor_errors(kwargs, exc):
    with pytest.raises(exc):
        Stream(**kwargs)


def test_stream_on_other_device():
    two_devices()
    s = Stream(device=1)
    assert s.device_index == 1 and s.device == Device("mtia:1")
    s2 = Stream(device=Device(1), priority=-1)
    assert s2.device_index == 1
    assert mtia_graph.default_stream(1).device_index == 1
    assert mtia_graph.default_stream(1) != mtia_graph.default_stream(0)


def test_query_and_synchronize(gate):
    s = Stream()
    assert s.query() is True
    gate.block(s)
    assert s.query() is False
    gate.open()
    s.synchronize()
    assert s.query() is True


def test_wait_event_orders_streams(gate):
    s1, s2 = Stream(), Stream()
    order = []
    gate.block(s1)
    s1.launch_host_func(lambda: order.append("s1"))
    e = s1.record_event()
    assert isinstance(e, Event)
    s2.wait_event(e)
    s2.launch_host_func(lambda: order.append("s2"))
    assert s2.query() is False  # held back by s1's gate
    gate.open()
    s2.synchronize()
    assert order == ["s1", "s2"]


def test_wait_stream_orders_streams(gate):
    s1, s2 = Stream(), Stream()
    order = []
    gate.block(s1)
    s1.launch_host_func(lambda: order.append("s1"))
    s2.wait_stream(s1)
    s2.launch_host_func(lambda: order.append("s2"))
    assert not s2.query()
    gate.open()
    s2.synchronize()
    assert order == ["s1", "s2"]


def test_record_event_with_given_event():
    s = Stream()
    e = Event()
    assert s.record_event(e) is e
    e.synchronize()
    assert e.query()


@pytest.mark.parametrize("method", ["wait_event", "wait_stream", "record_event"])
def test_stream_methods_type_errors(method):
    s = Stream()
    with pytest.raises(TypeError):
        getattr(s, method)("not a stream or event")
    with pytest.raises(TypeError):
        getattr(s, method)(
            s if method == "wait_event" else Event() if method == "wait_stream" else s
        )


# --------------------------------------------------------------------------- Event


def test_event_defaults_and_query():
    e = Event()
    assert e.query() is True  # never recorded
    e.synchronize()
    assert not e.enable_timing and not e.blocking
    assert repr(e).startswith("<mtia_graph.Event 0x")
    e.record()  # current stream
    e.synchronize()
    assert e.query()


def test_event_query_pending(gate):
    s = Stream()
    e = Event(blocking=True)
    assert e.blocking
    gate.block(s)
    e.record(s)
    assert e.query() is False
    gate.open()
    e.synchronize()
    assert e.query() is True


def test_event_wait_makes_stream_wait(gate):
    s1, s2 = Stream(), Stream()
    e = Event()
    gate.block(s1)
    e.record(s1)
    e.wait(s2)
    done = []
    s2.launch_host_func(lambda: done.append(1))
    assert not s2.query()
    gate.open()
    s2.synchronize()
    assert done == [1]
    with mtia_graph.stream(s2):
        e.wait()  # current stream


def test_event_elapsed_time():
    s = Stream()
    start, end = Event(enable_timing=True), Event(enable_timing=True)
    start.record(s)
    s.launch_host_func(lambda: time.sleep(0.02))
    end.record(s)
    end.synchronize()
    ms = start.elapsed_time(end)
    assert isinstance(ms, float) and ms > 0


def test_event_elapsed_time_errors(gate):
    s = Stream()
    a, b = Event(), Event()
    a.record(s)
    b.record(s)
    s.synchronize()
    with pytest.raises(ValueError):  # not timing events
        a.elapsed_time(b)
    t1, t2 = Event(enable_timing=True), Event(enable_timing=True)
    with pytest.raises(ValueError):  # never recorded
        t1.elapsed_time(t2)
    t1.record(s)
    gate.block(s)
    t2.record(s)
    with pytest.raises(mtia_graph.MTIAError):  # not completed yet
        t1.elapsed_time(t2)
    gate.open()
    t2.synchronize()
    assert t1.elapsed_time(t2) >= 0
    with pytest.raises(TypeError):
        t1.elapsed_time(1.0)


def test_event_type_errors():
    e = Event()
    with pytest.raises(TypeError):
        e.record("stream")
    with pytest.raises(TypeError):
        e.wait(0)
    with pytest.raises(ValueError):
        Event(interprocess=True)


# --------------------------------------------------------------------------- current stream


def test_stream_context_sets_and_restores():
    s = Stream()
    d = mtia_graph.default_stream()
    ctx = mtia_graph.stream(s)
    assert isinstance(ctx, mtia_graph.StreamContext)
    with ctx as entered:
        assert entered is s
        assert mtia_graph.current_stream() == s
        s2 = Stream()
        with mtia_graph.stream(s2):
            assert mtia_graph.current_stream() == s2
        assert mtia_graph.current_stream() == s
        with ctx:  # re-entering the same context object
            assert mtia_graph.current_stream() == s
        assert mtia_graph.current_stream() == s
    assert mtia_graph.current_stream() == d


def test_stream_context_none_is_noop():
    s = Stream()
    mtia_graph.set_stream(s)
    with mtia_graph.stream(None) as entered:
        assert entered is None
        assert mtia_graph.current_stream() == s
    assert mtia_graph.current_stream() == s


def test_stream_context_restores_on_exception():
    s = Stream()
    with pytest.raises(ZeroDivisionError), mtia_graph.stream(s):
        _ = 1 / 0
    assert mtia_graph.current_stream() == mtia_graph.default_stream()


def test_stream_context_type_error():
    with pytest.raises(TypeError):
        mtia_graph.stream("s")
    with pytest.raises(TypeError):
        mtia_graph.StreamContext(3)


def test_stream_context_other_device_switches_and_restores_device():
    # torch.cuda.StreamContext/set_stream make the stream's device current.
    two_devices()
    s1 = Stream(device=1)
    with mtia_graph.stream(s1):
        assert mtia_graph.current_device() == 1
        assert mtia_graph.current_stream() == s1
        assert mtia_graph.current_stream(0) == mtia_graph.default_stream(0)
    assert mtia_graph.current_device() == 0
    assert mtia_graph.current_stream(1) == mtia_graph.default_stream(1)
    assert mtia_graph.current_stream() == mtia_graph.default_stream(0)


def test_set_stream():
    s = Stream()
    mtia_graph.set_stream(s)
    assert mtia_graph.current_stream() == s
    mtia_graph.set_stream(None)
    assert mtia_graph.current_stream() == s
    with pytest.raises(TypeError):
        mtia_graph.set_stream(1)
    mtia_graph.set_stream(mtia_graph.default_stream())


def test_current_stream_follows_current_device():
    two_devices()
    s1 = Stream(device=1)
    mtia_graph.set_stream(s1)
    assert mtia_graph.current_device() == 1
    mtia_graph.set_device(0)
    assert mtia_graph.current_stream() == mtia_graph.default_stream(0)
    with mtia_graph.device(1):
        assert mtia_graph.current_stream() == s1
    assert mtia_graph.current_stream("mtia:1") == s1
    with pytest.raises(ValueError):
        mtia_graph.current_stream(9)


def test_current_stream_is_per_thread():
    s = Stream()
    mtia_graph.set_stream(s)
    seen = {}

    def worker():
        seen["start"] = mtia_graph.current_stream()
        mine = Stream()
        mtia_graph.set_stream(mine)
        seen["mine"] = mine
        seen["after"] = mtia_graph.current_stream()
        t = mtia_graph.ones(2)  # enqueued on this thread's stream
        seen["value"] = t.tolist()

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert seen["start"] == mtia_graph.default_stream()
    assert seen["after"] == seen["mine"]
    assert seen["value"] == [1.0, 1.0]
    assert mtia_graph.current_stream() == s


def test_device_synchronize():
    s = Stream()
    hits = []
    s.launch_host_func(lambda: hits.append(1))
    mtia_graph.synchronize()
    assert hits == [1]
    mtia_graph.synchronize(0)
    mtia_graph.synchronize("mtia:0")
    mtia_graph.synchronize(Device(mtia_graph.device_count() - 1))
    with pytest.raises(ValueError):
        mtia_graph.synchronize(mtia_graph.device_count())
    with pytest.raises(TypeError):
        mtia_graph.synchronize(0.5)


# --------------------------------------------------------------------------- host functions


def test_host_functions_run_in_order():
    s = Stream()
    out = []
    for i in range(100):
        s.launch_host_func(lambda i=i: out.append(i))
    s.synchronize()
    assert out == list(range(100))
    assert not callbacks._oneshot  # one-shot entries are released once they ran


def test_module_level_launch_host_func_uses_current_stream():
    s = Stream()
    out = []
    with mtia_graph.stream(s):
        cb = mtia_graph.launch_host_func(lambda: out.append(threading.current_thread()))
    assert isinstance(cb, callbacks.HostCallback)
    s.synchronize()
    assert out and out[0] is not threading.current_thread()  # ran on a device worker
    mtia_graph.launch_host_func(lambda: out.append(2), stream=s)
    s.synchronize()
    assert out[1] == 2


def test_host_function_type_errors():
    with pytest.raises(TypeError):
        mtia_graph.launch_host_func(42)
    with pytest.raises(TypeError):
        Stream().launch_host_func("not callable")
    with pytest.raises(TypeError):
        mtia_graph.launch_host_func(lambda: None, stream="s")


def failing_host_function():
    raise ValueError("boom from the host function")


def test_host_function_exception_is_sticky_kernel_error():
    s = Stream()
    s.launch_host_func(failing_host_function)
    after = []
    s.launch_host_func(lambda: after.append(1))  # later work still runs
    with pytest.raises(KernelError) as info:
        s.synchronize()
    msg = str(info.value)
    assert "Traceback (most recent call last)" in msg
    assert "failing_host_function" in msg
    assert "ValueError: boom from the host function" in msg
    assert after == [1]
    s.synchronize()  # reported once, then cleared
    out = []
    s.launch_host_func(lambda: out.append(1))
    s.synchronize()
    assert out == [1]


def test_host_function_error_reported_by_device_synchronize():
    s = Stream()
    s.launch_host_func(failing_host_function)
    with pytest.raises(KernelError, match="boom from the host function"):
        mtia_graph.synchronize()
    mtia_graph.synchronize()


def test_host_function_error_reported_by_query():
    s = Stream()
    s.launch_host_func(failing_host_function)
    s.record_event().synchronize()
    # The event can complete a moment before the stream counts its last op as done, so
    # query may still say "not ready" once or twice; it must end in the error, not True.
    with pytest.raises(KernelError, match="boom"):
        while not s.query():
            pass
    assert s.query()


def test_host_function_long_traceback_is_complete_in_python():
    s = Stream()
    long_text = "x" * 5000

    def fail():
        raise RuntimeError(long_text)

    s.launch_host_func(fail)
    with pytest.raises(KernelError) as info:
        s.synchronize()
    assert long_text in str(info.value)


def _report_by_stream_synchronize(s):
    s.synchronize()


def _report_by_device_synchronize(s):
    mtia_graph.synchronize(s.device_index)


def _report_by_query(s):
    s.record_event().synchronize()
    while not s.query():
        pass


def _report_by_copy_to_host(s):
    with mtia_graph.stream(s):
        mtia_graph.zeros(2).numpy()


@pytest.mark.parametrize(
    "report",
    [
        _report_by_stream_synchronize,
        _report_by_device_synchronize,
        _report_by_query,
        _report_by_copy_to_host,
    ],
)
def test_failed_host_function_traceback_is_complete_whichever_call_reports_it(report):
    s = Stream()
    long_text = "y" * 3000

    def fail_deep_inside():
        raise LookupError(long_text)

    s.launch_host_func(fail_deep_inside)
    with pytest.raises(KernelError) as info:
        report(s)
    msg = str(info.value)
    assert "Python host function raised:" in msg
    assert "fail_deep_inside" in msg and f"LookupError: {long_text}" in msg
    assert "host error #" not in msg  # the marker is replaced by the text it stands for
    s.synchronize()


def test_concurrent_host_function_failures_each_report_their_own_traceback():
    # Streams on several workers fail at once, from several threads, more often than
    # the package keeps tracebacks: each failure still comes back complete and its own.
    rounds, threads = 150, 4
    wrong, reported = [], []

    def fail(tag):
        raise KeyError(f"failure {tag} " + "z" * 600)

    def run(worker):
        try:
            s = Stream()
            for i in range(rounds):
                tag = f"{worker}-{i}"
                s.launch_host_func(lambda tag=tag: fail(tag))
                with pytest.raises(KernelError) as info:
                    s.synchronize()
                msg = str(info.value)
                if f"failure {tag} " + "z" * 600 not in msg or "raised:" not in msg:
                    wrong.append(f"{tag}: {msg[:200]}")
                reported.append(tag)
        except BaseException as exc:  # noqa: BLE001 - the main thread reports it
            wrong.append(f"worker {worker}: {exc!r}")

    pool = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not wrong
    assert len(reported) == rounds * threads


def test_failure_after_a_wait_of_several_slices_is_reported():
    # The synchronize outlasts its first timed slice, so it finishes on an event recorded
    # behind the failing function: the failure is still the synchronize's error, on
    # streams whose workers are also busy elsewhere.
    def late_failure(tag):
        time.sleep(0.025)
        raise ValueError(f"late failure {tag}")

    wrong = []

    def run(worker):
        s = Stream()
        for i in range(8):
            s.launch_host_func(lambda tag=(worker, i): late_failure(tag))
            try:
                s.synchronize()
                wrong.append((worker, i, "no error"))
            except KernelError as e:
                if f"late failure {(worker, i)}" not in str(e):
                    wrong.append((worker, i, str(e)[:200]))

    pool = [threading.Thread(target=run, args=(w,)) for w in range(3)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert wrong == []


def test_host_function_must_not_synchronize():
    s = Stream()
    s.launch_host_func(lambda: mtia_graph.synchronize())
    with pytest.raises(KernelError, match="host function"):
        s.synchronize()


def test_tensor_ops_from_host_function():
    s = Stream()
    t = mtia_graph.zeros(3)
    mtia_graph.synchronize()
    s.launch_host_func(lambda: t.add_(5))  # enqueues on the worker thread's own stream
    s.synchronize()
    mtia_graph.synchronize()
    assert t.tolist() == [5.0, 5.0, 5.0]


# --------------------------------------------------------------------------- capture state


def test_capture_state_and_unsafe_calls(raw_capture):
    s = Stream()
    raw_capture.track(s)
    assert not s.is_capturing()
    raw_capture.begin(s)
    assert s.is_capturing()
    assert not mtia_graph.is_current_stream_capturing()
    with mtia_graph.stream(s):
        assert mtia_graph.is_current_stream_capturing()
        with pytest.raises(CaptureError, match="capturing"):
            mtia_graph.synchronize()
    assert s.is_capturing()  # invalidated, still part of the capture until it ends
    with pytest.raises(CaptureError):
        raw_capture.end(s)
    assert not s.is_capturing()
    s.synchronize()
    assert not mtia_graph.is_current_stream_capturing()


@pytest.mark.parametrize("call", ["stream_sync", "stream_query", "event_sync", "empty_cache"])
def test_unsafe_calls_during_capture_raise_and_invalidate(raw_capture, call):
    s = Stream()
    raw_capture.track(s)
    e = Event()
    raw_capture.begin(s)
    e.record(s)
    with pytest.raises(CaptureError, match="capturing"):
        if call == "stream_sync":
            s.synchronize()
        elif call == "stream_query":
            s.query()
        elif call == "event_sync":
            e.synchronize()
        else:
            mtia_graph.empty_cache()
    with pytest.raises(CaptureError, match="invalid"):
        raw_capture.end(s)
    s.synchronize()
    mtia_graph.empty_cache()


def test_captured_host_function_replays_and_keepalive(raw_capture):
    s = Stream()
    raw_capture.track(s)
    hits = []
    cid = raw_capture.begin(s)
    assert cid > 0 and callbacks.capture_id_of(s._handle) == cid
    cb = s.launch_host_func(lambda: hits.append(1))
    callbacks.keep_for_capture(cid, "host buffer")
    graph = raw_capture.end(s)
    keep = callbacks.capture_keepalive(cid)
    assert cb in keep and "host buffer" in keep
    assert callbacks.capture_keepalive(cid) == []  # taken once
    assert hits == []  # captured, not run
    exe = raw_capture.instantiate(graph)
    raw_capture.launch(exe, s)
    raw_capture.launch(exe, s)
    s.synchronize()
    assert hits == [1, 1]
    # Once the graph owner drops the keepalive list the callable is gone: a replay then
    # reports an error instead of crashing.
    del keep, cb
    gc.collect()
    raw_capture.launch(exe, s)
    with pytest.raises(KernelError, match="released"):
        s.synchronize()
    s.synchronize()


def test_keepalive_helpers_outside_capture():
    s = Stream()
    assert callbacks.capture_keepalive(123456789) == []
    assert callbacks.capture_id_of(s._handle) == 0


def test_graph_capture_with_host_function_via_mtiagraph():
    hits = []
    g = mtia_graph.MTIAGraph()
    with mtia_graph.graph(g):
        mtia_graph.launch_host_func(lambda: hits.append(1))
    g.replay()
    g.replay()
    mtia_graph.synchronize()
    assert hits == [1, 1]
    g.reset()
