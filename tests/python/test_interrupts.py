"""Ctrl-C during a wait for the device: every wait (stream, event and device synchronize, and
the host reads that synchronize: numpy(), item(), tolist(), __array__, __dlpack__, and the
blocking copy of tensor()) returns to the interpreter often enough that KeyboardInterrupt
arrives within 100 ms. The interrupted wait stops waiting; the work goes on, and the
runtime, its streams and tensors stay usable."""

from __future__ import annotations

import functools
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

import mtia_graph as mg
from mtia_graph import _C

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals are delivered to the main thread",
)

# The promise: KeyboardInterrupt within this long after the signal.
LATENCY = 0.1


class Blocked:
    """Block ``stream`` in a host function until :meth:`release` (or 30 s)."""

    def __init__(self, stream):
        self.release_event = threading.Event()
        self.entered = threading.Event()
        self.done = threading.Event()

        def host():
            self.entered.set()
            self.release_event.wait(30)
            self.done.set()

        stream.launch_host_func(host)
        assert self.entered.wait(10)

    def release(self):
        self.release_event.set()


def interrupt_after(delay):
    """Send this process SIGINT after ``delay`` seconds (from a timer thread, as a terminal's
    Ctrl-C does); returns (timer, list that receives the send time)."""
    sent = []

    def fire():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(delay, fire)
    timer.start()
    return timer, sent


def assert_interrupted(wait, delay=0.3):
    """``wait()`` raises KeyboardInterrupt within LATENCY of a SIGINT sent after ``delay``."""
    timer, sent = interrupt_after(delay)
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            wait()
        raised = time.monotonic()
    finally:
        timer.cancel()
    assert sent, "the wait ended before the signal was sent"
    assert raised - start >= delay * 0.9
    latency = raised - sent[0]
    assert latency < LATENCY, f"KeyboardInterrupt {latency * 1e3:.0f} ms after the signal"


@pytest.fixture
def side_stream():
    return mg.Stream()


def test_stream_synchronize_is_interruptible(side_stream):
    x = mg.zeros(4)
    with mg.stream(side_stream):
        blocked = Blocked(side_stream)
        x.add_(1)  # queued behind the host function
        assert_interrupted(side_stream.synchronize)
        assert not side_stream.query()  # the work goes on
        blocked.release()
        side_stream.synchronize()
        assert blocked.done.is_set()
        assert x.tolist() == [1.0] * 4


def test_device_synchronize_is_interruptible(side_stream):
    blocked = Blocked(side_stream)
    assert_interrupted(mg.synchronize)
    blocked.release()
    mg.synchronize()
    assert side_stream.query()


def test_event_synchronize_is_interruptible(side_stream):
    for event in (mg.Event(), mg.Event(blocking=True), mg.Event(enable_timing=True)):
        blocked = Blocked(side_stream)
        event.record(side_stream)
        assert_interrupted(event.synchronize)
        assert not event.query()
        blocked.release()
        event.synchronize()
        assert event.query()


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t.numpy(),
        lambda t: t.sum().item(),
        lambda t: t.tolist(),
        lambda t: np.asarray(t),
        lambda t: np.from_dlpack(t),
    ],
    ids=["numpy", "item", "tolist", "__array__", "__dlpack__"],
)
def test_host_reads_are_interruptible(side_stream, read):
    x = mg.zeros(1000)
    with mg.stream(side_stream):
        blocked = Blocked(side_stream)
        x.add_(2)
        assert_interrupted(lambda: read(x))
        # The copy the interrupted read left enqueued writes into a buffer kept alive for it.
        gc.collect()
        blocked.release()
        np.testing.assert_array_equal(x.numpy(), np.full(1000, 2.0, np.float32))


def test_blocking_upload_is_interruptible(side_stream):
    host = np.arange(100_000, dtype=np.float32)
    with mg.stream(side_stream):
        blocked = Blocked(side_stream)
        # tensor() copies synchronously outside a capture: it waits for the stream
        upload = functools.partial(mg.tensor, host)
        assert_interrupted(upload)
        del upload, host
        gc.collect()  # the interrupted copy still reads the array: it was kept alive
        blocked.release()
        side_stream.synchronize()
        again = mg.tensor(np.arange(5, dtype=np.float32))
        assert again.tolist() == [0, 1, 2, 3, 4]


def test_interrupted_copy_keeps_its_buffer_until_it_ran(side_stream):
    """A read interrupted while its copy is queued leaves the copy's host buffer to the
    runtime until the copy has run; then it is released."""
    x = mg.full((256,), 3.0)
    _C.release_done()
    kept_before = len(_C._kept)
    with mg.stream(side_stream):
        blocked = Blocked(side_stream)
        assert_interrupted(x.numpy)
        assert len(_C._kept) == kept_before + 1
        blocked.release()
        side_stream.synchronize()
    _C.release_done()
    assert len(_C._kept) == kept_before


def test_many_interrupts_then_everything_works(side_stream):
    """Interrupt each kind of wait in turn on the same blocked stream, then use it all."""
    x = mg.ones(8)
    with mg.stream(side_stream):
        blocked = Blocked(side_stream)
        x.mul_(3)
        event = side_stream.record_event()
        for wait in (side_stream.synchronize, event.synchronize, mg.synchronize, x.numpy):
            assert_interrupted(wait, delay=0.15)
        blocked.release()
        event.synchronize()
        assert x.tolist() == [3.0] * 8
    g = mg.MTIAGraph()
    with mg.graph(g):
        y = x * 2
    g.replay()
    assert y.tolist() == [6.0] * 8


def test_waits_do_not_return_early_without_a_signal(side_stream):
    """Slicing a wait is invisible: a 300 ms wait takes 300 ms and returns normally."""
    with mg.stream(side_stream):
        stop = threading.Event()
        side_stream.launch_host_func(lambda: stop.wait(0.3))
        start = time.monotonic()
        side_stream.synchronize()
        assert time.monotonic() - start >= 0.25


def test_slice_waits_for_work_enqueued_before_the_call(side_stream):
    """Another thread keeping the stream busy (always ~100 ms of work queued) does not keep a
    synchronize waiting past the work that was there when it was called: the wait goes on
    for that point, not for whatever the stream holds at each slice."""
    stop = threading.Event()
    lock = threading.Lock()
    queued = [0]

    def sleeper():
        time.sleep(0.01)
        with lock:
            queued[0] -= 1

    def feed():
        while not stop.is_set():
            with lock:
                more = queued[0] < 10
                if more:
                    queued[0] += 1
            if more:
                side_stream.launch_host_func(sleeper)
            else:
                time.sleep(0.001)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        time.sleep(0.2)
        start = time.monotonic()
        side_stream.synchronize()
        assert time.monotonic() - start < 5, "synchronize waited for work enqueued after it"
    finally:
        stop.set()
        feeder.join()
    side_stream.synchronize()
