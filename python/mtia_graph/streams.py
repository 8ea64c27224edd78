"""Streams and events (``torch.mtia.Stream`` / ``Event`` and the stream functions).

Each thread has a current stream per device, initially the device's default stream;
:func:`stream` / :class:`StreamContext` / :func:`set_stream` change it for the calling
thread only. Work enqueued by the package (tensor ops, host functions) goes to the
current stream of the tensor's device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn, SupportsIndex

from . import callbacks
from ._C import capture_id_of, check, ffi, lib, raise_status, wait_device, wait_event, wait_stream
from .device import (
    Device,
    _device_index,
    _device_object,
    _DeviceLike,
    _make_current,
    current_device,
    device_count,
)

__all__ = [
    "Event",
    "Stream",
    "StreamContext",
    "current_stream",
    "default_stream",
    "is_current_stream_capturing",
    "launch_host_func",
    "set_stream",
    "stream",
    "synchronize",
]


class Stream:
    """An in-order queue of work on a device.

    ``Stream(device=None, priority=0)`` creates a new stream on ``device`` (default: the
    current device). Lower priority values are more urgent; values outside the device's
    range ``[greatest_stream_priority, 0]`` are clamped, as in CUDA/torch.

    Two Stream objects are equal when they name the same runtime stream.
    """

    __slots__ = ("__weakref__", "_handle", "_id", "_priority", "device_index")

    def __init__(self, device: _DeviceLike = None, priority: int = 0, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"Stream() got unexpected keyword arguments {sorted(kwargs)}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError(f"priority must be an int, got {type(priority).__name__}")
        # Clamped, as documented, also beyond a C int (the runtime clamps the rest).
        priority = max(-(1 << 31), min(priority, (1 << 31) - 1))
        idx = _device_index(device)
        out = ffi.new("mtiart_stream *")
        check(lib.mtiart_stream_create(idx, priority, out), "Stream")
        self._init_from(ffi.gc(out[0], lib.mtiart_stream_destroy), idx)

    def _init_from(self, handle: Any, device_index: int) -> None:
        self._handle = handle
        self.device_index = device_index
        value = ffi.new("uint64_t *")
        check(lib.mtiart_stream_get_id(handle, value), "Stream")
        self._id = int(value[0])
        prio = ffi.new("int *")
        check(lib.mtiart_stream_get_priority(handle, prio), "Stream")
        self._priority = int(prio[0])

    @classmethod
    def _wrap(cls, handle: Any, device_index: int) -> Stream:
        """A Stream over an existing handle, which the object does not own."""
        self = cls.__new__(cls)
        self._init_from(handle, device_index)
        return self

    @property
    def device(self) -> Device:
        """The stream's device."""
        return _device_object(self.device_index)

    @property
    def stream_id(self) -> int:
        """Process-unique id of the stream (never reused)."""
        return self._id

    @property
    def priority(self) -> int:
        """The stream's (clamped) priority."""
        return self._priority

    @property
    def device_type(self) -> str:
        """Always ``"mtia"``."""
        return "mtia"

    @property
    def native_handle(self) -> int:
        """The runtime's ``mtiart_stream`` handle as an integer, for C code:
        ``(mtiart_stream)(uintptr_t)value``. The Stream object keeps ownership: the handle
        is valid while the object lives (a default stream's, always)."""
        return int(ffi.cast("uintptr_t", self._handle))

    def __enter__(self) -> Stream:
        """``with s:`` makes ``s`` the current stream (and its device current) for the
        block, as ``with stream(s):`` does."""
        ctx = StreamContext(self)
        ctx.__enter__()
        _entered.stack.append(ctx)
        return self

    def __exit__(self, *exc: object) -> None:
        _entered.stack.pop().__exit__(None, None, None)

    def query(self) -> bool:
        """True if all work enqueued so far has completed.

        Raises the stream's sticky error (e.g. a failed host function) if there is one,
        and :class:`CaptureError` on a capturing stream.
        """
        return check(lib.mtiart_stream_query(self._handle), "Stream.query") == 0

    def synchronize(self) -> None:
        """Wait for all work enqueued so far; raises a sticky kernel/host-function error.

        Interruptible: Ctrl-C (KeyboardInterrupt) stops the wait, not the work."""
        wait_stream(self._handle, "Stream.synchronize")

    def wait_event(self, event: Event) -> None:
        """Make work enqueued later on this stream wait for ``event``'s latest record."""
        if not isinstance(event, Event):
            raise TypeError(f"wait_event() expects an Event, got {type(event).__name__}")
        check(lib.mtiart_stream_wait_event(self._handle, event._handle), "Stream.wait_event")

    def wait_stream(self, stream: Stream) -> None:
        """Make work enqueued later on this stream wait for the work now on ``stream``."""
        if not isinstance(stream, Stream):
            raise TypeError(f"wait_stream() expects a Stream, got {type(stream).__name__}")
        self.wait_event(stream.record_event())

    def record_event(self, event: Event | None = None) -> Event:
        """Record ``event`` (a new one if None) on this stream and return it."""
        if event is None:
            event = Event()
        elif not isinstance(event, Event):
            raise TypeError(f"record_event() expects an Event, got {type(event).__name__}")
        event.record(self)
        return event

    def is_capturing(self) -> bool:
        """Whether the stream takes part in a stream capture (active or invalidated)."""
        return bool(capture_id_of(self._handle, "Stream.is_capturing"))

    def launch_host_func(self, fn: Callable[[], Any]) -> callbacks.HostCallback:
        """Enqueue ``fn()`` to run on a device worker in stream order.

        See :func:`launch_host_func` for errors and capture behaviour.
        """
        return callbacks.launch_host_func(self._handle, fn)

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "an mtia_graph.Stream names a stream of this process's runtime: it cannot be "
            "copied or pickled (use the object itself; another process makes its own streams)"
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Stream):
            return self._id == other._id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return (
            f"<mtia_graph.Stream device=mtia:{self.device_index} id={self._id} "
            f"priority={self._priority}>"
        )


class Event:
    """A marker in a stream: record it, wait on it, time between two of them.

    ``Event(device=None, *, enable_timing=False, blocking=False, interprocess=False,
    external=False)``, as ``torch.Event`` (``torch.mtia.Event``), with torch.cuda.Event's
    ``external``:

    * ``device``: the device whose streams record the event; None: the device of the first
      stream that records it. Recording it on a stream of another device raises.
    * ``enable_timing``: records keep a timestamp, for :meth:`elapsed_time`.
    * ``blocking``: :meth:`synchronize` sleeps at once instead of spinning first.
    * ``interprocess``: not supported (the runtime is one process's).
    * ``external``: in a capture, a record of this event is meant for the host or for
      other graphs (CUDA's external event record nodes), see below.

    Inside a graph capture, recording an ordinary event only orders the capture's streams
    (a fork or join, no node of its own). An ``external=True`` event is recorded by every
    replay of the graph instead, at the point of the capture where it was recorded, so
    :meth:`query`, :meth:`synchronize`, :meth:`wait` and :meth:`elapsed_time` see the
    replays (timing a graph's work from inside it, signalling work outside it).
    """

    __slots__ = ("__weakref__", "_device", "_handle", "blocking", "enable_timing", "external")

    def __init__(
        self,
        device: _DeviceLike = None,
        *,
        enable_timing: bool = False,
        blocking: bool = False,
        interprocess: bool = False,
        external: bool = False,
    ) -> None:
        if interprocess:
            raise ValueError("interprocess events are not supported")
        self._device: int | None = None if device is None else _device_index(device)
        flags = lib.MTIART_EVENT_DEFAULT
        if enable_timing:
            flags |= lib.MTIART_EVENT_TIMING
        if blocking:
            flags |= lib.MTIART_EVENT_BLOCKING_SYNC
        out = ffi.new("mtiart_event *")
        check(lib.mtiart_event_create(flags, out), "Event")
        self._handle = ffi.gc(out[0], lib.mtiart_event_destroy)
        self.enable_timing = bool(enable_timing)
        self.blocking = bool(blocking)
        self.external = bool(external)

    @property
    def device(self) -> Device:
        """The event's device (``mtia``, without an index, until a stream records it)."""
        return Device("mtia") if self._device is None else _device_object(self._device)

    @property
    def event_id(self) -> int:
        """The runtime's handle of the event, as an integer (stable while the event lives)."""
        return int(ffi.cast("uintptr_t", self._handle))

    def record(self, stream: Stream | None = None) -> None:
        """Record the event on ``stream`` (default: the current stream of the event's
        device, else of the current device); in a capture, an external event becomes a node
        that records it at every replay."""
        if stream is None:
            stream = current_stream(self._device)
        elif not isinstance(stream, Stream):
            raise TypeError(f"record() expects a Stream, got {type(stream).__name__}")
        if self._device is None:
            self._device = stream.device_index
        elif stream.device_index != self._device:
            raise ValueError(
                f"Event.record(): the event is of mtia:{self._device}, the stream of "
                f"mtia:{stream.device_index}"
            )
        flags = lib.MTIART_EVENT_RECORD_EXTERNAL if self.external else 0
        check(
            lib.mtiart_event_record_with_flags(self._handle, stream._handle, flags),
            "Event.record",
        )

    def wait(self, stream: Stream | None = None) -> None:
        """Make ``stream`` (default: the current stream) wait for this event.

        In a capture, a wait on an event recorded outside it (eagerly, by another graph's
        replay, or not yet) becomes a node: each replay waits for the event's most recent
        record made before that replay was launched.
        """
        if stream is None:
            stream = current_stream()
        elif not isinstance(stream, Stream):
            raise TypeError(f"wait() expects a Stream, got {type(stream).__name__}")
        stream.wait_event(self)

    def query(self) -> bool:
        """True if the latest record has completed (or the event was never recorded)."""
        return check(lib.mtiart_event_query(self._handle), "Event.query") == 0

    def synchronize(self) -> None:
        """Wait until the latest record has completed (interruptible, as
        :meth:`Stream.synchronize`)."""
        wait_event(self._handle, "Event.synchronize")

    def elapsed_time(self, end_event: Event) -> float:
        """Milliseconds from this event's record to ``end_event``'s (both timing events,
        recorded and completed)."""
        if not isinstance(end_event, Event):
            raise TypeError(f"elapsed_time() expects an Event, got {type(end_event).__name__}")
        ms = ffi.new("float *")
        status = lib.mtiart_event_elapsed_time(self._handle, end_event._handle, ms)
        if status != 0:  # MTIART_NOT_READY is an error here, as in torch
            raise_status(status, "Event.elapsed_time")
        return float(ms[0])

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "an mtia_graph.Event is an event of this process's runtime: it cannot be copied "
            "or pickled (create another Event; interprocess events are not supported)"
        )

    def __repr__(self) -> str:
        return f"<mtia_graph.Event {self.event_id:#x} device={self.device}>"


class _EnteredStreams(threading.local):
    """The contexts of the ``with stream_object:`` blocks the calling thread is in."""

    def __init__(self) -> None:
        self.stack: list[StreamContext] = []


_entered = _EnteredStreams()

_default_streams: dict[int, Stream] = {}


def default_stream(device: _DeviceLike = None) -> Stream:
    """The default stream of a device (default: the current device)."""
    idx = _device_index(device)
    s = _default_streams.get(idx)
    if s is None:
        out = ffi.new("mtiart_stream *")
        check(lib.mtiart_stream_get_default(idx, out), "default_stream")
        s = _default_streams.setdefault(idx, Stream._wrap(out[0], idx))
    return s


class _ThreadStreams(threading.local):
    """The calling thread's current stream of every device.

    ``handles[d]`` is the cdata handle of ``streams[d]``: the tensor fast paths read it
    directly. The lists stay empty until the thread first needs a stream
    (:func:`_thread_streams`), so importing the package does not start the runtime.
    """

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.handles: list[Any] = []


_tls = _ThreadStreams()
# The C helpers' copy of each thread's current streams (tensor fast paths); kept equal to
# _tls.handles wherever that changes.
_set_current_stream = lib._mtia_set_current_stream


def _thread_streams() -> _ThreadStreams:
    """The calling thread's streams, filled in with the default streams on first use."""
    tls = _tls
    if not tls.handles:
        defaults = [default_stream(i) for i in range(device_count())]
        tls.streams = defaults
        tls.handles = [s._handle for s in defaults]
        for i, s in enumerate(defaults):
            _set_current_stream(i, s._handle)
    return tls


def _recorded_stream_handle(dev: int) -> Any:
    """The calling thread's current stream handle on ``dev``, recorded again for the C
    helpers that read it themselves (for when they found none: see _cffi_source.c)."""
    handle = _stream_handle(dev)
    _set_current_stream(dev, handle)
    return handle


def _stream_handle(dev: int) -> Any:
    """The calling thread's current stream handle on device ``dev``."""
    try:
        return _tls.handles[dev]
    except IndexError:
        return _thread_streams().handles[dev]


def current_stream(device: _DeviceLike = None) -> Stream:
    """The calling thread's current stream on a device (default: the current device)."""
    idx = _device_index(device)
    return _thread_streams().streams[idx]


def set_stream(stream: Stream | None) -> None:
    """Make ``stream`` the calling thread's current stream, and its device the current
    device, as ``torch.cuda.set_stream`` does (None: no-op).

    Prefer the :func:`stream` context manager, which restores the previous stream and
    device.
    """
    if stream is None:
        return
    if not isinstance(stream, Stream):
        raise TypeError(f"set_stream() expects a Stream, got {type(stream).__name__}")
    tls = _thread_streams()
    tls.streams[stream.device_index] = stream
    tls.handles[stream.device_index] = stream._handle
    _set_current_stream(stream.device_index, stream._handle)
    _make_current(stream.device_index)


class StreamContext:
    """Context manager that makes a stream current (``None``: does nothing).

    As in torch, the stream becomes current and its device becomes the current device; on
    exit the previous current streams of both devices and the previous device are restored.
    """

    def __init__(self, stream: Stream | None) -> None:
        if stream is not None and not isinstance(stream, Stream):
            raise TypeError(f"stream() expects a Stream or None, got {type(stream).__name__}")
        self.stream = stream
        self._saved: list[tuple[Stream, Stream]] = []

    def __enter__(self) -> Stream | None:
        cur = self.stream
        if cur is None:
            return None
        tls = _thread_streams()
        src_prev = tls.streams[current_device()]
        dst_prev = tls.streams[cur.device_index]
        self._saved.append((src_prev, dst_prev))
        set_stream(cur)
        return cur

    def __exit__(self, type: Any, value: Any, traceback: Any) -> None:  # noqa: A002 - torch's names
        if self.stream is None:
            return
        src_prev, dst_prev = self._saved.pop()
        set_stream(dst_prev)
        set_stream(src_prev)


def stream(stream: Stream | None) -> StreamContext:
    """``with stream(s): ...`` runs the body with ``s`` as the current stream."""
    return StreamContext(stream)


def synchronize(device: _DeviceLike = None) -> None:
    """Wait for all work on all streams of a device (default: the current device).

    Raises the first sticky kernel/host-function error of its streams, and
    :class:`CaptureError` while a capture is active. Interruptible: Ctrl-C
    (KeyboardInterrupt) stops the wait, not the work.
    """
    wait_device(_device_index(device), "synchronize")


def is_current_stream_capturing() -> bool:
    """Whether the current stream of the current device is capturing."""
    handle = _stream_handle(current_device())
    return bool(capture_id_of(handle, "is_current_stream_capturing"))


def launch_host_func(fn: Callable[[], Any], stream: Stream | None = None) -> callbacks.HostCallback:
    """Enqueue ``fn()`` on ``stream`` (default: the current stream).

    It runs on a device worker thread, in stream order; while the stream captures it
    becomes a graph node that runs at each replay. An exception raised by ``fn`` is
    reported, with its traceback, as :class:`KernelError` at the next synchronization of
    the stream (or device); the stream stays usable. ``fn`` must not synchronize.
    """
    if stream is None:
        stream = current_stream()
    elif not isinstance(stream, Stream):
        raise TypeError(f"launch_host_func() expects a Stream, got {type(stream).__name__}")
    return callbacks.launch_host_func(stream._handle, fn)
