"""Thin layer over the cffi binding of libmtiart (the role ``torch._C`` plays for torch).

Everything above this module talks to the runtime through ``lib`` and turns status codes
into exceptions with :func:`check`. The mapping is the one SPEC §7 asks for: runtime
failures are ``RuntimeError`` subclasses rooted at :class:`MTIAError`, out-of-memory is
:class:`OutOfMemoryError`, and a value the runtime rejects is also a ``ValueError``.
"""

from __future__ import annotations

from typing import NoReturn

from ._mtiart import ffi, lib

__all__ = [
    "ffi",
    "lib",
    "MTIAError",
    "OutOfMemoryError",
    "InvalidHandleError",
    "KernelError",
    "CaptureError",
    "MTIAValueError",
    "check",
    "raise_status",
    "last_error_message",
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


_CAPTURE_STATUSES = {
    lib.MTIART_ERROR_CAPTURE_UNSUPPORTED,
    lib.MTIART_ERROR_CAPTURE_INVALIDATED,
    lib.MTIART_ERROR_CAPTURE_UNJOINED,
    lib.MTIART_ERROR_CAPTURE_WRONG_STREAM,
    lib.MTIART_ERROR_CAPTURE_ISOLATION,
    lib.MTIART_ERROR_NOT_CAPTURING,
    lib.MTIART_ERROR_ALREADY_CAPTURING,
}


def _error_class(status: int) -> type[MTIAError]:
    if status == lib.MTIART_ERROR_OUT_OF_MEMORY:
        return OutOfMemoryError
    if status == lib.MTIART_ERROR_INVALID_HANDLE:
        return InvalidHandleError
    if status == lib.MTIART_ERROR_KERNEL_FAILED:
        return KernelError
    if status in _CAPTURE_STATUSES:
        return CaptureError
    if status in (lib.MTIART_ERROR_INVALID_VALUE, lib.MTIART_ERROR_INVALID_POINTER,
                  lib.MTIART_ERROR_INVALID_DEVICE):
        return MTIAValueError
    return MTIAError


def last_error_message() -> str:
    """The calling thread's last detailed error message from libmtiart."""
    return ffi.string(lib.mtiart_last_error_message()).decode("utf-8", "replace")


def raise_status(status: int, what: str | None = None) -> NoReturn:
    """Raise the exception for a failing status, with the runtime's detail message."""
    detail = last_error_message() or ffi.string(lib.mtiart_status_string(status)).decode()
    message = f"{what}: {detail}" if what else detail
    raise _error_class(status)(message, status)


def check(status: int, what: str | None = None) -> int:
    """Return ``status`` if it is not an error (0 or MTIART_NOT_READY), else raise."""
    if status < 0:
        raise_status(status, what)
    return status


# ---------------------------------------------------------------------------------------
# Helpers added for the runtime surface (streams.py, tensor.py, graphs.py).
# ---------------------------------------------------------------------------------------

import itertools as _itertools
import re as _re
import sys as _sys
import traceback as _traceback
import weakref as _weakref
from typing import Any as _Any, Callable as _Callable

__all__ += [
    "check_sync",
    "capture_id_of",
    "launch_host_func",
    "keep_alive_for_capture",
    "capture_keepalive",
    "HostCallback",
    "new_token",
    "register_callback",
    "unregister_callback",
    "take_callback",
    "report_python_failure",
]

_HOST_ERROR_RE = _re.compile(r"\[mtia_graph host error #(\d+)\]")
# Full tracebacks of failed host functions by error number: libmtiart keeps only about
# 450 bytes of a host function's message, so the message carries a marker and the
# complete text is put back when the error surfaces in Python (check_sync).
# Values are (what failed, e.g. "host function" or "kernel 'f'", traceback text).
_host_errors: dict[int, tuple[str, str]] = {}
_MAX_HOST_ERRORS = 256
_error_numbers = _itertools.count(1)


def check_sync(status: int, what: str | None = None) -> int:
    """:func:`check` for calls that report sticky stream errors (synchronize, query, ...).

    A :class:`KernelError` raised for a failed Python host function gets that function's
    complete traceback text appended to its message.
    """
    if status >= 0:
        return status
    detail = last_error_message() or ffi.string(lib.mtiart_status_string(status)).decode()
    if status == lib.MTIART_ERROR_KERNEL_FAILED:
        m = _HOST_ERROR_RE.search(detail)
        if m is not None:
            found = _host_errors.pop(int(m.group(1)), None)
            if found is not None:
                what_failed, full = found
                detail = detail[: m.start()] + f"Python {what_failed} raised:\n" + full
    message = f"{what}: {detail}" if what else detail
    raise _error_class(status)(message, status)


def capture_id_of(stream_handle: _Any) -> int:
    """The id of the capture ``stream_handle`` takes part in (active or invalidated), or 0."""
    cid = ffi.new("uint64_t *")
    check(lib.mtiart_stream_get_capture_info(stream_handle, ffi.NULL, cid, ffi.NULL))
    return int(cid[0])


class HostCallback:
    """A Python callable enqueued as a host function; its token is the C ``user_data``."""

    __slots__ = ("fn", "token", "__weakref__")

    def __init__(self, fn: _Callable[[], _Any], token: int) -> None:
        self.fn = fn
        self.token = token

    def __repr__(self) -> str:
        return f"<HostCallback #{self.token} {self.fn!r}>"


_tokens = _itertools.count(1)
# Eager launches: the entry runs once and is removed by the trampoline.
_oneshot: dict[int, HostCallback] = {}
# Captured launches: replayed any number of times; alive while something (the graph's
# keepalive list) holds the HostCallback, found through this weak mapping.
_persistent: "_weakref.WeakValueDictionary[int, HostCallback]" = _weakref.WeakValueDictionary()
# capture id -> objects that must outlive the captured graph (HostCallbacks, host buffers).
_capture_pending: dict[int, list] = {}


def _host_failure(message: str) -> int:
    lib.mtiart_kernel_set_error_message(message.encode("utf-8", "replace"))
    return 1


def report_python_failure(what: str = "host function") -> int:
    """Turn the exception being handled into the calling kernel/host function's error.

    Call from an ``except`` block inside a Python callback running on a device worker
    (host-function or kernel trampoline). The complete traceback is kept here under an
    error number and the runtime gets a short message with a marker, because libmtiart
    keeps only about 450 bytes; :func:`check_sync` puts the full text back when the
    :class:`KernelError` surfaces. Returns the failure code (1) to hand to the runtime.
    """
    exc = _sys.exc_info()[1]
    number = next(_error_numbers)
    text = _traceback.format_exc()
    _host_errors[number] = (what, text)
    while len(_host_errors) > _MAX_HOST_ERRORS:
        del _host_errors[next(iter(_host_errors))]
    # The runtime keeps ~450 bytes: marker first, then as much of the text as fits,
    # keeping the end of the traceback (where the exception is named).
    head = f"[mtia_graph host error #{number}] {type(exc).__name__}: {exc}"
    head = head.encode("utf-8", "replace")[:200].decode("utf-8", "ignore")
    budget = 440 - len(head.encode("utf-8"))
    tail = text.encode("utf-8", "replace")[-budget:].decode("utf-8", "ignore")
    return _host_failure(head + "\n" + tail)


def take_callback(token: int) -> "HostCallback | None":
    """The entry registered under ``token`` by :func:`register_callback`, or None.

    A one-shot (eager) entry is removed by this lookup; a captured one stays (it runs at
    every replay) for as long as its graph's keepalive list holds it.
    """
    entry = _oneshot.pop(token, None)
    if entry is None:
        entry = _persistent.get(token)
    return entry


@ffi.def_extern()
def _mtia_host_trampoline(user_data):  # runs on a device worker thread, GIL taken by cffi
    token = int(ffi.cast("uintptr_t", user_data))
    entry = take_callback(token)
    if entry is None:
        return _host_failure(
            f"Python host function #{token} was released before it ran (its graph was "
            "reset or garbage-collected)")
    try:
        entry.fn()
    except BaseException:  # noqa: BLE001 - everything must become a stream error
        return report_python_failure("host function")
    return 0


def new_token() -> int:
    """A fresh registry token (for :class:`HostCallback` and its subclasses)."""
    return next(_tokens)


def register_callback(stream_handle: _Any, entry: HostCallback) -> int:
    """Make ``entry`` findable by :func:`take_callback` for a launch on ``stream_handle``.

    If the stream is capturing, the entry is kept as long as the captured graph (through
    :func:`capture_keepalive`) because every replay runs it; otherwise it is a one-shot
    entry removed when it runs. Returns the capture id (0 when not capturing); pass it to
    :func:`unregister_callback` if the launch then fails.
    """
    cid = capture_id_of(stream_handle)
    if cid:
        _persistent[entry.token] = entry
        _capture_pending.setdefault(cid, []).append(entry)
    else:
        _oneshot[entry.token] = entry
    return cid


def unregister_callback(entry: HostCallback, capture_id: int) -> None:
    """Undo :func:`register_callback` after the launch it was made for failed."""
    _oneshot.pop(entry.token, None)
    if capture_id:
        _persistent.pop(entry.token, None)
        pending = _capture_pending.get(capture_id)
        if pending is not None:
            try:
                pending.remove(entry)
            except ValueError:
                pass


def launch_host_func(stream_handle: _Any, fn: _Callable[[], _Any]) -> HostCallback:
    """Enqueue ``fn()`` on a stream (cdata ``mtiart_stream``); it runs on a device worker.

    Eager launch: the callable is kept until it has run once. If the stream is capturing,
    the launch becomes a graph node that runs at every replay: the callable is kept in
    the capture's keepalive list (see :func:`capture_keepalive`) instead. An exception
    raised by ``fn`` is reported as a :class:`KernelError` (with its traceback) at the
    next synchronization of the stream; the stream stays usable.
    """
    if not callable(fn):
        raise TypeError(f"host function must be callable, got {type(fn).__name__}")
    entry = HostCallback(fn, new_token())
    cid = register_callback(stream_handle, entry)
    status = lib.mtiart_launch_host_func(stream_handle, lib._mtia_host_trampoline,
                                         ffi.cast("void *", entry.token))
    if status < 0:
        unregister_callback(entry, cid)
        raise_status(status, "launch_host_func")
    return entry


def keep_alive_for_capture(stream_handle: _Any, obj: _Any) -> bool:
    """If the stream is capturing, keep ``obj`` alive as long as the captured graph.

    Used for host buffers that captured copies read at every replay. Returns whether the
    stream was capturing (when it is not, nothing is kept).
    """
    cid = capture_id_of(stream_handle)
    if cid:
        _capture_pending.setdefault(cid, []).append(obj)
    return bool(cid)


def capture_keepalive(capture_id: int) -> list:
    """Take the objects that must live as long as the graph of capture ``capture_id``.

    While a stream captures, Python host functions launched on it (and host buffers that
    captured copies read) are registered under the capture's id (the ``capture_id`` of
    ``mtiart_stream_get_capture_info``). The graph owner calls this once, after
    ``mtiart_stream_end_capture`` (read the id *before* ending the capture), and:

    * on success stores the returned list on the graph object and drops it when the graph
      is reset/deleted: captured host functions then stop being callable (a replay after
      that reports a ``KernelError`` instead of crashing);
    * on failure (invalidated/unjoined capture) simply drops the list.

    Calling it for an unknown id returns an empty list.
    """
    return _capture_pending.pop(int(capture_id), [])
