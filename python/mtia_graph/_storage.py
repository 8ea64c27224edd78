"""The device memory behind tensors, and copies between it and host memory.

A :class:`_Storage` is one device allocation, freed stream-ordered (``mtiart_free``
through ``ffi.gc``) when the last object referring to it goes. Copies to the device are
synchronous, except on a capturing stream, where they become graph nodes that read their
host buffer at every replay (so the buffer is kept as long as the graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import memory
from ._C import check, ffi, lib, raise_status
from ._shapes import _MAX_DIMS, Shape, _numel
from .callbacks import keep_alive_for_capture
from .dtypes import _BY_NP, _SUPPORTED, bool_, dtype, float32, int64

_new = ffi.new
_gc = ffi.gc
_malloc_async = lib.mtiart_malloc_async
_free = lib.mtiart_free
_H2D = lib.MTIART_MEMCPY_HOST_TO_DEVICE
_D2H = lib.MTIART_MEMCPY_DEVICE_TO_HOST


class _Storage:
    """One device allocation of ``nbytes`` (> 0) on ``device``, made in stream order on
    the stream ``stream_handle``; freed in stream order when the object dies."""

    __slots__ = ("__weakref__", "device", "nbytes", "ptr")

    def __init__(self, stream_handle: Any, nbytes: int, device: int) -> None:
        out = _new("void **")
        status = _malloc_async(stream_handle, nbytes, out)
        if status:
            raise_status(status, "allocate")
        self.ptr = _gc(out[0], _free)
        self.nbytes = nbytes
        self.device = device
        if memory._recording:
            memory._note_python_alloc(int(ffi.cast("uintptr_t", out[0])))


def _upload(stream_handle: Any, dst: Any, arr: np.ndarray[Any, Any], what: str) -> None:
    """Copy the C-contiguous host array ``arr`` to device memory at ``dst``.

    Synchronous when the stream is not capturing (the host buffer may go away at once);
    while it captures, the copy becomes a graph node reading ``arr`` at every replay, so
    ``arr`` is kept alive as long as the graph.
    """
    if not arr.nbytes:
        return
    src = ffi.from_buffer(arr)
    if keep_alive_for_capture(stream_handle, arr):
        status = lib.mtiart_memcpy_async(stream_handle, dst, src, arr.nbytes, _H2D)
    else:
        status = lib.mtiart_memcpy(stream_handle, dst, src, arr.nbytes, _H2D)
    check(status, what)


def _download(
    stream_handle: Any, src: Any, shape: Shape, np_dtype: np.dtype[Any]
) -> np.ndarray[Any, Any]:
    """A host copy of the device array at ``src`` (waits for the stream)."""
    arr = np.empty(shape, dtype=np_dtype)
    if arr.nbytes:
        check(
            lib.mtiart_memcpy(
                stream_handle, ffi.from_buffer(arr, require_writable=True), src, arr.nbytes, _D2H
            ),
            "copy to host",
        )
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
    bools or numbers; otherwise TypeError, its message starting with ``failure``."""
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{failure} {type(data).__name__}: {exc}") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"{failure} {type(data).__name__} (elements of type {arr.dtype})")
    return arr


def _host_array(data: Any, dt: dtype | None) -> tuple[np.ndarray[Any, Any], dtype]:
    """Host data as a C-contiguous array of a supported dtype (torch's inference rules:
    numpy arrays keep their dtype, Python floats give float32, ints int64)."""
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
        if dt is None:
            kind = arr.dtype.kind
            dt = bool_ if kind == "b" else int64 if kind in "iu" else float32
    if arr.ndim > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {arr.ndim}")
    return arr.astype(dt._np, order="C", copy=False), dt  # keeps 0-d arrays 0-d
