"""Thin layer over the cffi binding of libmtiart (the role ``torch._C`` plays for torch).

Everything above this module talks to the runtime through ``ffi`` and ``lib``. This module
also holds the package's error model, in both directions:

* runtime to Python: every call's status goes through :func:`check` (or, on a hot path,
  ``if status: raise_status(status, what)``). :func:`raise_status` is the one place that
  turns a status into an exception: runtime failures are ``RuntimeError`` subclasses
  rooted at :class:`MTIAError`, out-of-memory is :class:`OutOfMemoryError`, a value the
  runtime rejects is also a ``ValueError``, and a failed Python host function or kernel
  comes back as a :class:`KernelError` carrying its complete traceback.
* Python to runtime: a Python callback running on a device worker hands an exception to
  the runtime with :func:`report_python_failure` (or a plain message with
  :func:`kernel_failure`).

Waits for the device go through :func:`wait_stream`, :func:`wait_event` and
:func:`wait_device`: the runtime's timed waits, called in slices of
:data:`WAIT_SLICE_NS`, so that a waiting thread returns to the interpreter often enough for
Ctrl-C (any signal handler) to take effect. An interrupted wait stops waiting; the work
goes on, and :func:`keep_until_done` keeps what it uses (a host buffer) alive meanwhile.
"""

from __future__ import annotations

import itertools
import re
import sys
import threading
import traceback
from typing import Any, NamedTuple, NoReturn

from ._mtiart import ffi, lib

__all__ = [
    "WAIT_SLICE_NS",
    "CaptureError",
    "CaptureInfo",
    "InvalidHandleError",
    "KernelError",
    "MTIAError",
    "MTIAValueError",
    "OutOfMemoryError",
    "capture_id_of",
    "capture_info",
    "check",
    "ffi",
    "finish_stream_wait",
    "keep_until_done",
    "kernel_failure",
    "last_error_message",
    "lib",
    "raise_status",
    "release_done",
    "report_python_failure",
    "wait_device",
    "wait_event",
    "wait_stream",
]


class MTIAError(RuntimeError):
    """Base class of every error the runtime reports.

    Attributes:
        status: the libmtiart status code (negative int).
        status_name: its symbolic name, e.g. ``"MTIART_ERROR_INVALID_HANDLE"``.
    """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.status_name = ffi.string(lib.mtiart_status_name(status)).decode() if status else ""


class OutOfMemoryError(MTIAError):
    """The device ran out of memory (after releasing cached blocks and retrying)."""


class InvalidHandleError(MTIAError):
    """A stream, event or graph handle was destroyed or is of the wrong kind."""


class KernelError(MTIAError):
    """A kernel or host function failed; reported at the next synchronization."""


class CaptureError(MTIAError):
    """A stream-capture rule was broken (unsafe call while capturing, unjoined fork, ...)."""


class MTIAValueError(MTIAError, ValueError):
    """The runtime rejected an argument value (also a ``ValueError``)."""


_CAPTURE_STATUSES = frozenset(
    (
        lib.MTIART_ERROR_CAPTURE_UNSUPPORTED,
        lib.MTIART_ERROR_CAPTURE_INVALIDATED,
        lib.MTIART_ERROR_CAPTURE_UNJOINED,
        lib.MTIART_ERROR_CAPTURE_WRONG_STREAM,
        lib.MTIART_ERROR_CAPTURE_ISOLATION,
        lib.MTIART_ERROR_NOT_CAPTURING,
        lib.MTIART_ERROR_ALREADY_CAPTURING,
    )
)
_VALUE_STATUSES = frozenset(
    (
        lib.MTIART_ERROR_INVALID_VALUE,
        lib.MTIART_ERROR_INVALID_POINTER,
        lib.MTIART_ERROR_INVALID_DEVICE,
        lib.MTIART_ERROR_LOAD_FAILED,  # a library or symbol that does not exist
    )
)


def _error_class(status: int) -> type[MTIAError]:
    if status == lib.MTIART_ERROR_OUT_OF_MEMORY:
        return OutOfMemoryError
    if status == lib.MTIART_ERROR_INVALID_HANDLE:
        return InvalidHandleError
    if status == lib.MTIART_ERROR_KERNEL_FAILED:
        return KernelError
    if status in _CAPTURE_STATUSES:
        return CaptureError
    if status in _VALUE_STATUSES:
        return MTIAValueError
    return MTIAError


def last_error_message() -> str:
    """The calling thread's last detailed error message from libmtiart."""
    return str(ffi.string(lib.mtiart_last_error_message()).decode("utf-8", "replace"))


# libmtiart keeps only about 450 bytes of a kernel's error message, too little for a Python
# traceback. A failing Python callback therefore leaves the complete text here under a
# number and gives the runtime a short message carrying the number in a marker;
# raise_status puts the complete text back when the error surfaces.
_FAILURE_MARKER = "[mtia_graph host error #{}]"
_FAILURE_MARKER_RE = re.compile(r"\[mtia_graph host error #(\d+)\]")
_RUNTIME_MESSAGE_BUDGET = 440
_MAX_KEPT_FAILURES = 256
# error number -> (what failed, e.g. "host function" or "kernel 'f'", traceback text)
_python_failures: dict[int, tuple[str, str]] = {}
# Workers fail, and threads report failures, concurrently.
_python_failures_lock = threading.Lock()
_failure_numbers = itertools.count(1)


def _with_python_traceback(detail: str) -> str:
    found = _FAILURE_MARKER_RE.search(detail)
    if found is None:
        return detail
    with _python_failures_lock:
        failure = _python_failures.pop(int(found.group(1)), None)
    if failure is None:
        return detail
    what_failed, text = failure
    return detail[: found.start()] + f"Python {what_failed} raised:\n" + text


def raise_status(status: int, what: str | None = None) -> NoReturn:
    """Raise the exception for the failing ``status`` of the last runtime call.

    The message is ``"<what>: <the runtime's detail message>"``; for a kernel or host
    function that failed in Python, the detail is that function's complete traceback.
    """
    detail = last_error_message() or ffi.string(lib.mtiart_status_string(status)).decode()
    if status == lib.MTIART_ERROR_KERNEL_FAILED:
        detail = _with_python_traceback(detail)
    raise _error_class(status)(f"{what}: {detail}" if what else detail, status)


def check(status: int, what: str | None = None) -> int:
    """Return ``status`` if it is not an error (0 or MTIART_NOT_READY), else raise."""
    if status < 0:
        raise_status(status, what)
    return status


def kernel_failure(message: str) -> int:
    """Make ``message`` the running kernel's error; returns the failure code to return.

    Only for code running as a kernel or host function on a device worker.
    """
    lib.mtiart_kernel_set_error_message(message.encode("utf-8", "replace"))
    return 1


def report_python_failure(what: str) -> int:
    """Turn the exception being handled into the running kernel's error.

    Call from an ``except`` block of a Python callback running on a device worker
    (``what`` names it: ``"host function"``, ``"kernel 'f'"``). The complete traceback is
    kept here and comes back with the :class:`KernelError` that reports the failure.
    Returns the failure code to hand to the runtime.
    """
    exc = sys.exc_info()[1]
    number = next(_failure_numbers)
    text = traceback.format_exc()
    with _python_failures_lock:
        _python_failures[number] = (what, text)
        while len(_python_failures) > _MAX_KEPT_FAILURES:
            del _python_failures[next(iter(_python_failures))]  # the oldest
    # Marker first, then as much of the traceback as fits, keeping its end (where the
    # exception is named), for whoever reads the runtime's message directly.
    head = f"{_FAILURE_MARKER.format(number)} {type(exc).__name__}: {exc}"
    head = head.encode("utf-8", "replace")[:200].decode("utf-8", "ignore")
    budget = _RUNTIME_MESSAGE_BUDGET - len(head.encode("utf-8"))
    tail = text.encode("utf-8", "replace")[-budget:].decode("utf-8", "ignore")
    return kernel_failure(head + "\n" + tail)


_NOT_CAPTURING: int = lib.MTIART_CAPTURE_STATUS_NONE


class CaptureInfo(NamedTuple):
    """A stream's part in a stream capture (``mtiart_stream_get_capture_info``)."""

    status: int
    """``MTIART_CAPTURE_STATUS_*``."""
    id: int
    """The capture's id (0 when the stream takes part in none)."""
    pool: tuple[int, int]
    """The memory pool the capture allocates from."""

    @property
    def capturing(self) -> bool:
        """Whether the stream takes part in a capture (active or invalidated)."""
        return self.status != _NOT_CAPTURING


def capture_info(stream_handle: Any, what: str = "capture_info") -> CaptureInfo:
    """Where the stream (cdata ``mtiart_stream``) stands in a stream capture."""
    status = ffi.new("mtiart_capture_status *")
    capture_id = ffi.new("uint64_t *")
    pool = ffi.new("mtiart_pool_id *")
    check(lib.mtiart_stream_get_capture_info(stream_handle, status, capture_id, pool), what)
    return CaptureInfo(int(status[0]), int(capture_id[0]), (int(pool.first), int(pool.second)))


_capture_id = lib._mtia_capture_id


def capture_id_of(stream_handle: Any, what: str = "capture_id_of") -> int:
    """The id of the capture the stream (cdata ``mtiart_stream``) takes part in (active or
    invalidated), or 0: :func:`capture_info`'s ``id`` in one allocation-free call, for the
    hot paths."""
    cid: int = _capture_id(stream_handle)
    if cid < 0:
        raise_status(cid, what)
    return cid


# ---------------------------------------------------------------------------------------
# Waiting for the device
# ---------------------------------------------------------------------------------------

WAIT_SLICE_NS: int = 20_000_000
"""How long one timed wait stays in the runtime (20 ms): a waiting thread runs the
interpreter's signal handlers (KeyboardInterrupt) at least this often."""

_NOT_READY: int = lib.MTIART_NOT_READY
_stream_sync = lib.mtiart_stream_synchronize_timeout
_event_sync = lib.mtiart_event_synchronize_timeout


def _private_event(what: str) -> Any:
    out = ffi.new("mtiart_event *")
    check(lib.mtiart_event_create(lib.MTIART_EVENT_DEFAULT, out), what)
    return ffi.gc(out[0], lib.mtiart_event_destroy)


def wait_event(event_handle: Any, what: str) -> None:
    """Wait for the event's most recent record (as ``mtiart_event_synchronize``), in slices."""
    status = _event_sync(event_handle, WAIT_SLICE_NS)
    while status == _NOT_READY:
        status = _event_sync(event_handle, WAIT_SLICE_NS)
    if status:
        raise_status(status, what)


def wait_stream(stream_handle: Any, what: str) -> None:
    """Wait for the work enqueued on the stream so far (as ``mtiart_stream_synchronize``:
    its sticky error is raised), in slices."""
    status = _stream_sync(stream_handle, WAIT_SLICE_NS)
    if status:
        finish_stream_wait(stream_handle, status, what)
    if _kept:
        release_done()


def finish_stream_wait(stream_handle: Any, status: int, what: str) -> None:
    """The rest of a wait on a stream whose first timed call returned ``status``: raise its
    error, or (``MTIART_NOT_READY``) keep waiting in slices.

    The rest of the wait is for an event recorded now, so that work other threads enqueue
    meanwhile does not prolong it; the stream's sticky error is then reported once the
    stream is idle, within one more slice (a worker marks a record's op done just after
    the event itself, and may be preempted in between), and otherwise by its next
    synchronization.
    """
    if status != _NOT_READY:
        raise_status(status, what)
    event = _private_event(what)
    check(lib.mtiart_event_record(event, stream_handle), what)
    wait_event(event, what)
    status = _stream_sync(stream_handle, WAIT_SLICE_NS)
    if status < 0:
        raise_status(status, what)


def wait_device(device: int, what: str) -> None:
    """Wait for all work on the device (as ``mtiart_device_synchronize``), in slices.

    Each slice waits for the work enqueued before it, so the wait ends once every stream
    of the device has been idle within one slice.
    """
    sync = lib.mtiart_device_synchronize_timeout
    status = sync(device, WAIT_SLICE_NS)
    while status == _NOT_READY:
        status = sync(device, WAIT_SLICE_NS)
    if status:
        raise_status(status, what)
    if _kept:
        release_done()


# (event recorded after the work that uses the object, or None: kept for good; the object)
_kept: list[tuple[Any, Any]] = []
_kept_lock = threading.Lock()


def release_done() -> None:
    """Drop what :func:`keep_until_done` kept for work that has completed since (done by
    every synchronize that finds something kept)."""
    with _kept_lock:
        _kept[:] = [
            (event, obj)
            for event, obj in _kept
            if event is None or lib.mtiart_event_query(event) == _NOT_READY
        ]


def keep_until_done(stream_handle: Any, obj: Any) -> None:
    """Keep ``obj`` alive until the work enqueued on the stream so far has run.

    For what work left running still uses: a host buffer of a copy whose wait was
    interrupted, the callables of a graph reset while a replay may be running. On a
    capturing stream (where a record would join the capture) ``obj`` is kept for good.
    """
    event = None
    if not capture_id_of(stream_handle, "keep_until_done"):
        event = _private_event("keep_until_done")
        if lib.mtiart_event_record(event, stream_handle):
            event = None
    release_done()
    with _kept_lock:
        _kept.append((event, obj))
