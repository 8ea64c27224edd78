"""The device memory behind tensors, and copies between it and host memory.

A :class:`_Storage` is one device allocation, freed stream-ordered (``mtiart_free``
through ``ffi.gc``) when the last object referring to it goes.

Copies to the device are synchronous, except on a capturing stream, where they become
graph nodes. The one rule for host memory in a capture: a captured copy reads the host
memory it was given at every replay, and the graph keeps that memory alive. Memory the
caller holds (a numpy array, any buffer-protocol object) is therefore used in place,
never through a converted copy, so it must already be C-contiguous, of the tensor's dtype
and shape (:func:`_host_array`, :func:`_copy_source` say how to fix one that is not);
numbers and sequences become a private array, i.e. their values at capture time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import memory
from ._C import (
    WAIT_SLICE_NS,
    CaptureError,
    check,
    ffi,
    finish_stream_wait,
    keep_until_done,
    lib,
    raise_status,
)
from ._shapes import _MAX_DIMS, Shape, _numel
from .callbacks import keep_for_capture
from .dtypes import _BY_NP, _KIND_INTEGER, _SUPPORTED, _overflow, bool_, dtype, float32, int64

_gc = ffi.gc
_malloc_async = lib._mtia_malloc_async
_helper_status = lib._mtia_helper_status
_free = lib.mtiart_free
_H2D = lib.MTIART_MEMCPY_HOST_TO_DEVICE
_D2H = lib.MTIART_MEMCPY_DEVICE_TO_HOST
_memcpy_timeout = lib.mtiart_memcpy_timeout
_NOT_READY = lib.MTIART_NOT_READY


class _Storage:
    """One device allocation of ``nbytes`` (> 0) on ``device``, made in stream order on
    the stream ``stream_handle``; freed in stream order when the object dies."""

    __slots__ = ("__weakref__", "device", "nbytes", "ptr")

    def __init__(self, stream_handle: Any, nbytes: int, device: int) -> None:
        ptr = _malloc_async(stream_handle, nbytes)
        if not ptr:  # NULL
            raise_status(_helper_status(), "allocate")
        self.ptr = _gc(ptr, _free)
        self.nbytes = nbytes
        self.device = device
        if memory._recording:
            memory._note_python_alloc(int(ffi.cast("uintptr_t", ptr)))


def _copy_and_wait(
    stream_handle: Any, dst: Any, src: Any, nbytes: int, kind: int, host: Any, what: str
) -> None:
    """A blocking copy between ``host`` (the host side's owner) and device memory, waited
    for in slices (interruptible). If the wait is interrupted, the copy still runs in stream
    order, so ``host`` is kept alive until it has."""
    pending = True  # until the copy is known to be done or refused
    try:
        status = _memcpy_timeout(stream_handle, dst, src, nbytes, kind, WAIT_SLICE_NS)
        if status != _NOT_READY:
            pending = False
            if status:
                raise_status(status, what)
            return
        finish_stream_wait(stream_handle, status, what)
        pending = False
    except BaseException:
        if pending:
            keep_until_done(stream_handle, host)
        raise


def _upload(
    stream_handle: Any,
    dst: Any,
    arr: np.ndarray[Any, Any],
    what: str,
    capture_id: int,
    non_blocking: bool = False,
) -> None:
    """Copy the C-contiguous host array ``arr`` to device memory at ``dst``.

    Synchronous when the stream is not capturing (``capture_id`` 0; the host buffer may go
    away at once), unless ``non_blocking``: then enqueued, ``arr`` kept alive until it has
    run. While the stream captures, the copy becomes a graph node reading ``arr`` at every
    replay, so ``arr`` is kept alive as long as the graph.
    """
    if not arr.nbytes:
        return
    src = ffi.from_buffer(arr)
    if capture_id or non_blocking:
        check(lib.mtiart_memcpy_async(stream_handle, dst, src, arr.nbytes, _H2D), what)
        if capture_id:
            keep_for_capture(capture_id, arr)
        else:
            keep_until_done(stream_handle, arr)
    else:
        _copy_and_wait(stream_handle, dst, src, arr.nbytes, _H2D, arr, what)


def _download(
    stream_handle: Any, src: Any, shape: Shape, np_dtype: np.dtype[Any]
) -> np.ndarray[Any, Any]:
    """A host copy of the device array at ``src`` (waits for the stream)."""
    arr = np.empty(shape, dtype=np_dtype)
    if arr.nbytes:
        dst = ffi.from_buffer(arr, require_writable=True)
        _copy_and_wait(stream_handle, dst, src, arr.nbytes, _D2H, arr, "copy to host")
    return arr


class _ExportedMemory:
    """numpy ``__array_interface__`` over device memory.

    The base of the zero-copy numpy view behind ``Tensor.__dlpack__``: the view (and every
    DLPack capsule / consumer array made from it) keeps this object, which keeps the
    :class:`_Storage` and so the device allocation alive.
    """

    __slots__ = ("__array_interface__", "_storage")

    def __init__(self, storage: _Storage, ptr: Any, shape: Shape, np_dtype: np.dtype[Any]) -> None:
        self._storage = storage
        self.__array_interface__ = {
            "shape": shape,
            "typestr": np_dtype.str,
            "data": (int(ffi.cast("uintptr_t", ptr)), False),
            "version": 3,
        }


def _host_view(
    storage: _Storage | None, ptr: Any, shape: Shape, np_dtype: np.dtype[Any]
) -> np.ndarray[Any, Any]:
    """A writable numpy array aliasing the device array at ``ptr`` inside ``storage`` (no
    synchronization here). An empty array has no memory to share."""
    if storage is None or _numel(shape) == 0:
        return np.empty(shape, dtype=np_dtype)
    return np.asarray(_ExportedMemory(storage, ptr, shape, np_dtype))


def _numeric_array(data: Any, failure: str) -> np.ndarray[Any, Any]:
    """``data`` (a number, nested sequences of numbers, an array-like) as a numpy array of
    bools or numbers (Python ints beyond int64 included: numpy makes those uint64, float64
    or objects, which :func:`_python_values` judges); otherwise TypeError, its message
    starting with ``failure``."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{failure} {type(data).__name__}: {exc}") from None
    kind = arr.dtype.kind
    if kind not in "biuf" and not (kind == "O" and all(map(_is_number, arr.flat))):
        raise TypeError(f"{failure} {type(data).__name__} (elements of type {arr.dtype})")
    return arr


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.number, np.bool_))


def _only_integers(arr: np.ndarray[Any, Any], data: Any) -> bool:
    """Whether Python ``data`` that numpy made the array ``arr`` (not of an integer dtype)
    held integers only: ints too big for int64 are what make numpy choose uint64, objects,
    or (with negative ones) float64 for them."""
    kind = arr.dtype.kind
    if kind == "u":
        return True
    if kind == "f" and (not arr.size or float(np.abs(arr).max()) < 2.0**63):
        return False  # integers this small would have made an int64 array: a float is there
    flat = np.asarray(data, dtype=object).ravel()
    return not any(isinstance(v, (float, np.floating)) for v in flat)


def _python_values(
    arr: np.ndarray[Any, Any], data: Any, dt: dtype | None
) -> tuple[np.ndarray[Any, Any], dtype]:
    """Python numbers (``data``, and ``arr``, the private array numpy made of it) as a
    C-contiguous array of ``dt``, or of the dtype torch infers (bools: bool, integers:
    int64, any float: float32) when ``dt`` is None.

    Nothing wraps: a value an integer ``dt`` does not hold raises MTIAValueError (as torch
    raises), also for NaN and inf; a float beyond a floating ``dt`` becomes inf (as torch's).
    """
    kind = arr.dtype.kind
    integers = kind in "biu" or _only_integers(arr, data)
    if dt is None:
        dt = bool_ if kind == "b" else int64 if integers else float32
    if dt._kind == _KIND_INTEGER and arr.size:
        if integers:
            lo, hi = int(arr.min()), int(arr.max())
            bad = hi if hi > dt._max else lo if lo < dt._min else None
        else:
            out = ~(np.isfinite(arr) & (arr > dt._min - 1) & (arr < dt._max + 1))
            bad = arr.flat[int(np.argmax(out))].item() if out.any() else None
        if bad is not None:
            raise _overflow(bad, dt)
    elif kind == "O":
        try:
            arr = arr.astype(np.float64)
        except OverflowError:
            raise _overflow(max(arr.flat, key=abs), dt) from None
    with np.errstate(over="ignore"):
        return arr.astype(dt._np, order="C", copy=False), dt  # keeps 0-d arrays 0-d


def _held_by_caller(arr: np.ndarray[Any, Any], data: Any) -> bool:
    """Whether ``arr`` (``np.asarray(data)``) is memory the caller holds (an array or a
    buffer), not a private array numpy built from numbers or sequences."""
    return arr is data or arr.base is not None


def _check_in_place(
    arr: np.ndarray[Any, Any], dt: dtype, what: str, shape: Shape | None = None
) -> None:
    """CaptureError unless the graph can read ``arr`` as it is at every replay, as the
    contents of a ``dt`` tensor (of ``shape`` when given)."""
    if arr.dtype != dt._np:
        problem = f"it is {arr.dtype} and the tensor {dt.name}: pass an array of dtype {dt._np}"
    elif not arr.flags.c_contiguous:
        problem = "it is not C-contiguous: pass np.ascontiguousarray(a)"
    elif shape is not None and arr.size != _numel(shape):
        problem = f"it has shape {arr.shape}, broadcast to {shape}: pass an array of shape {shape}"
    else:
        return
    raise CaptureError(
        f"{what}(): in a capture, the copy of a host array reads the array itself at every "
        f"replay, so it cannot convert this one ({problem}, and update that array between "
        f"replays)",
        lib.MTIART_ERROR_CAPTURE_UNSUPPORTED,
    )


def _host_array(
    data: Any, dt: dtype | None, what: str, in_place: bool = False
) -> tuple[np.ndarray[Any, Any], dtype]:
    """Host data as a C-contiguous array of a supported dtype, inferred as torch does when
    ``dt`` is None: numpy arrays keep theirs, Python floats give float32, ints int64.

    Arrays are converted as casts are; Python numbers only to a dtype that holds them
    (:func:`_python_values`). ``in_place`` (the stream captures): memory the caller holds is
    returned itself, so the graph reads it at every replay (see the module docstring);
    CaptureError if it would need converting.
    """
    if isinstance(data, (np.ndarray, np.generic)):
        arr = np.asarray(data)
        if dt is None:
            found = _BY_NP.get(arr.dtype)
            if found is None:
                raise TypeError(
                    f"can't convert numpy array of type {arr.dtype}; supported: {_SUPPORTED}"
                )
            dt = found
    else:
        arr = _numeric_array(data, "cannot build a tensor from")
        if not _held_by_caller(arr, data):
            if arr.ndim > _MAX_DIMS:
                raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {arr.ndim}")
            return _python_values(arr, data, dt)
        if dt is None:
            kind = arr.dtype.kind
            dt = bool_ if kind == "b" else int64 if kind in "iu" else float32
    if arr.ndim > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {arr.ndim}")
    if in_place and _held_by_caller(arr, data):
        _check_in_place(arr, dt, what)
        return arr, dt
    return arr.astype(dt._np, order="C", copy=False), dt  # keeps 0-d arrays 0-d


def _copy_source(
    data: Any, dt: dtype, shape: Shape, what: str, in_place: bool = False
) -> np.ndarray[Any, Any]:
    """Host data to copy into a ``dt`` tensor of ``shape``: broadcast and converted, as a
    C-contiguous array of ``shape`` elements (with ``in_place``, as :func:`_host_array`)."""
    arr = _numeric_array(data, f"{what}(): cannot copy from")
    held = _held_by_caller(arr, data)
    if not held:
        arr, _ = _python_values(arr, data, dt)
    try:
        view = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"{what}(): source of shape {arr.shape} cannot be broadcast to {shape}"
        ) from None
    if in_place and held:
        _check_in_place(arr, dt, what, shape)
        return arr
    return view.astype(dt._np, order="C", copy=False)
