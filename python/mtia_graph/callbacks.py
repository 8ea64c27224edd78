"""Python callables the runtime calls back: the registry behind host functions and kernels.

The runtime knows a Python callable only as an integer token in a launch's user data; the
cffi trampolines (``extern "Python"`` in ``_cdef_extra.h``) look the token up here. An
entry lives as long as something may still run it:

* an eager launch registers a one-shot entry, removed when it runs;
* a launch on a capturing stream becomes a graph node that runs at every replay, so its
  entry is kept with the capture (:func:`capture_keepalive`, taken by the graph owner once
  the capture ends) and found through a weak mapping for as long as the graph keeps it.
  A replay after the graph let go reports a :class:`~mtia_graph.KernelError` instead of
  calling a dead object.

Host buffers that captured copies read at every replay are kept the same way
(:func:`keep_for_capture`).

The caller hook tells the runtime who makes a call that invalidates a capture: the Python
thread's name, the package function called and the user's line, which the capture's error
messages then carry.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from ._C import capture_id_of, ffi, kernel_failure, lib, raise_status, report_python_failure

__all__ = [
    "HostCallback",
    "capture_id_of",
    "capture_keepalive",
    "keep_for_capture",
    "launch_host_func",
    "new_token",
    "register_callback",
    "released",
    "take_callback",
    "unregister_callback",
]


class HostCallback:
    """A Python callable enqueued as a host function; its token is the C ``user_data``."""

    __slots__ = ("__weakref__", "fn", "token")

    def __init__(self, fn: Callable[..., Any], token: int) -> None:
        self.fn = fn
        self.token = token

    def __repr__(self) -> str:
        return f"<HostCallback #{self.token} {self.fn!r}>"


_tokens = itertools.count(1)
# Eager launches: the entry runs once and is removed by the trampoline.
_oneshot: dict[int, HostCallback] = {}
# Captured launches: alive while something (the graph's keepalive list) holds the entry.
_persistent: weakref.WeakValueDictionary[int, HostCallback] = weakref.WeakValueDictionary()
# capture id -> objects that must outlive the captured graph (HostCallbacks, host buffers).
_capture_pending: dict[int, list[Any]] = {}


def new_token() -> int:
    """A fresh registry token (for :class:`HostCallback` and its subclasses)."""
    return next(_tokens)


def register_callback(stream_handle: Any, entry: HostCallback) -> int:
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
        if pending is not None and entry in pending:
            pending.remove(entry)


def take_callback(token: int) -> HostCallback | None:
    """The entry registered under ``token`` by :func:`register_callback`, or None.

    A one-shot (eager) entry is removed by this lookup; a captured one stays (it runs at
    every replay) for as long as its graph's keepalive list holds it.
    """
    entry = _oneshot.pop(token, None)
    if entry is None:
        entry = _persistent.get(token)
    return entry


def released(what: str, token: int) -> int:
    """Report, from a trampoline, that the entry of ``token`` is gone; returns the failure
    code to hand to the runtime. ``what`` names the callable (``"host function"``, ...)."""
    return kernel_failure(
        f"Python {what} #{token} was released before it ran (its graph "
        "was reset or garbage-collected)"
    )


@ffi.def_extern()
def _mtia_host_trampoline(user_data: Any) -> int:
    # Runs on a device worker thread; cffi takes the GIL around it.
    token = int(ffi.cast("uintptr_t", user_data))
    entry = take_callback(token)
    if entry is None:
        return released("host function", token)
    try:
        entry.fn()
    except BaseException:  # noqa: BLE001 - whatever it is must become the stream's error
        return report_python_failure("host function")
    return 0


def launch_host_func(stream_handle: Any, fn: Callable[[], Any]) -> HostCallback:
    """Enqueue ``fn()`` on a stream (cdata ``mtiart_stream``); it runs on a device worker.

    Eager launch: the callable is kept until it has run once. If the stream is capturing,
    the launch becomes a graph node that runs at every replay: the callable is kept in
    the capture's keepalive list (see :func:`capture_keepalive`) instead. An exception
    raised by ``fn`` is reported as a :class:`~mtia_graph.KernelError` (with its
    traceback) at the next synchronization of the stream; the stream stays usable.
    """
    if not callable(fn):
        raise TypeError(f"host function must be callable, got {type(fn).__name__}")
    entry = HostCallback(fn, new_token())
    cid = register_callback(stream_handle, entry)
    status = lib.mtiart_launch_host_func(
        stream_handle, lib._mtia_host_trampoline, ffi.cast("void *", entry.token)
    )
    if status < 0:
        unregister_callback(entry, cid)
        raise_status(status, "launch_host_func")
    return entry


def keep_for_capture(capture_id: int, obj: Any) -> None:
    """Keep ``obj`` alive as long as the graph of capture ``capture_id`` (nonzero).

    For host buffers that captured copies read at every replay.
    """
    _capture_pending.setdefault(capture_id, []).append(obj)


def capture_keepalive(capture_id: int) -> list[Any]:
    """Take the objects that must live as long as the graph of capture ``capture_id``.

    While a stream captures, Python host functions and kernels launched on it (and host
    buffers that captured copies read) are registered under the capture's id. The graph
    owner calls this once, after ``mtiart_stream_end_capture`` (read the id *before*
    ending the capture), and:

    * on success stores the returned list on the graph object and drops it when the graph
      is reset/deleted: captured callables then stop being callable (a replay after that
      reports a ``KernelError`` instead of crashing);
    * on failure (invalidated/unjoined capture) simply drops the list.

    Calling it for an unknown id returns an empty list.
    """
    return _capture_pending.pop(int(capture_id), [])


# ----------------------------------------------------------------- who broke a capture

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _in_package(frame: FrameType) -> bool:
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR)


def _shown_path(filename: str) -> str:
    path = os.path.abspath(filename)
    cwd = os.getcwd() + os.sep
    return path[len(cwd) :] if path.startswith(cwd) else path


def _fill(field: Any, text: str) -> bytes:
    return text.encode("utf-8", "replace")[: len(field) - 1]


@ffi.def_extern()
def _mtia_caller_hook(info: Any, user_data: Any) -> None:
    # Runs on the thread whose runtime call invalidates a capture, before the call returns
    # its error: the frame above this one made that call.
    try:
        frame: FrameType | None = sys._getframe(1)
        api = None
        while frame is not None and _in_package(frame):
            api = frame  # the outermost package frame: what the user called
            frame = frame.f_back
        info.thread = _fill(info.thread, threading.current_thread().name)
        if api is not None:
            code = api.f_code
            info.call = _fill(info.call, f"{getattr(code, 'co_qualname', code.co_name)}()")
        if frame is not None:
            where = f"{_shown_path(frame.f_code.co_filename)}:{frame.f_lineno}"
            if frame.f_code.co_name != "<module>":
                where += f" in {frame.f_code.co_name}"
            info.location = _fill(info.location, where)
    except Exception:  # noqa: BLE001 - naming the caller must never fail the call
        pass


def _install_caller_hook() -> None:
    status = lib.mtiart_set_caller_hook(lib._mtia_caller_hook, ffi.NULL)
    if status:
        raise_status(status, "mtia_graph: installing the caller hook")


_install_caller_hook()
