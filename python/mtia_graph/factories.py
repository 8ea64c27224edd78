"""Tensor factories and functions over tensors, as in torch (``zeros``, ``arange``,
``where``, ``matmul``, ...). ``tensor()`` itself lives with :class:`Tensor`, whose
constructor it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._C import capture_info, lib, raise_status
from ._shapes import _broadcast_shapes, _parse_size
from .device import _device_index, _DeviceLike
from .dtypes import _DTypeLike, _is_scalar, _Scalar, _scalar_dtype, bool_, float32, int64
from .streams import _stream_handle
from .tensor import Tensor, _cast, _empty, _matmul, _resolve, _same_device, result_type, tensor

__all__ = [
    "arange",
    "empty",
    "empty_like",
    "from_dlpack",
    "from_numpy",
    "full",
    "full_like",
    "matmul",
    "ones",
    "ones_like",
    "where",
    "zeros",
    "zeros_like",
]


def empty(
    *size: int | Sequence[int], dtype: _DTypeLike | None = None, device: _DeviceLike = None
) -> Tensor:
    """An uninitialised tensor of the given size (``empty(2, 3)`` or ``empty((2, 3))``)."""
    shape = _parse_size(size)
    dt, dev = _resolve(dtype, device)
    return _empty(shape, dt, dev)


def zeros(
    *size: int | Sequence[int], dtype: _DTypeLike | None = None, device: _DeviceLike = None
) -> Tensor:
    """A tensor of zeros."""
    return empty(*size, dtype=dtype, device=device).zero_()


def ones(
    *size: int | Sequence[int], dtype: _DTypeLike | None = None, device: _DeviceLike = None
) -> Tensor:
    """A tensor of ones."""
    return empty(*size, dtype=dtype, device=device).fill_(1)


def full(
    size: int | Sequence[int],
    fill_value: _Scalar,
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """A tensor filled with ``fill_value``; its dtype follows the value (bool, int64 or
    float32) unless given."""
    if not _is_scalar(fill_value):
        raise TypeError(f"full(): fill_value must be a number, got {type(fill_value).__name__}")
    if dtype is None:
        dtype = _scalar_dtype(fill_value)
    shape = _parse_size((size,))
    dt, dev = _resolve(dtype, device)
    return _empty(shape, dt, dev).fill_(fill_value)


def arange(
    start: int | float,
    end: int | float | None = None,
    step: int | float = 1,
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """Values ``start, start + step, ...`` below ``end`` (``arange(n)`` is 0..n-1).

    int64 when start, end and step are ints, else float32 (unless ``dtype`` is given).
    """
    if end is None:
        start, end = 0, start
    for name, v in (("start", start), ("end", end), ("step", step)):
        if not _is_scalar(v) or isinstance(v, (bool, np.bool_)):
            raise TypeError(f"arange(): {name} must be a number, got {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError(f"arange(): {name} must be finite, got {v}")
    if step == 0:
        raise ValueError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError("arange(): upper bound and larger bound inconsistent with step sign")
    all_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    if dtype is None:
        dtype = int64 if all_int else float32
    dt, dev = _resolve(dtype, device)
    if all_int:
        n = max(0, -(int(start - end) // int(step)))
    else:
        n = max(0, math.ceil((end - start) / step))
    out = _empty((n,), dt, dev)
    if n:
        st = lib.mtiart_op_arange(_stream_handle(dev), out._get_desc(), float(start), float(step))
        if st:
            raise_status(st, "arange")
    return out


def from_numpy(
    array: np.ndarray[Any, Any], *, dtype: _DTypeLike | None = None, device: _DeviceLike = None
) -> Tensor:
    """A device copy of a numpy array (same dtype unless ``dtype`` is given).

    Unlike torch.from_numpy the memory is not shared: the tensor lives on the device.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy() expects a numpy.ndarray, got {type(array).__name__}")
    return tensor(array, dtype=dtype, device=device)


def from_dlpack(obj: Any, *, device: _DeviceLike = None) -> Tensor:
    """A device tensor from any DLPack exporter (numpy arrays, torch CPU tensors, ...).

    An :class:`Tensor` is returned as is. Anything else is imported with
    ``numpy.from_dlpack`` (so it must be CPU memory; the exporter synchronizes its own
    work per the protocol) and then *copied* into a new device tensor: importing cannot
    be zero-copy, because tensors must live in libmtiart's device arena, which foreign
    memory is not part of. Supported dtypes: float32, float64, int32, int64, bool.

    Eagerly the copy completes before this returns, so the source may change afterwards.
    While the current stream captures, the values are snapshotted at capture time and
    the graph's copy node replays them.
    """
    if isinstance(obj, Tensor):
        if device is None or _device_index(device) == obj._dev:
            return obj
        return obj.to(device=device)
    if not hasattr(obj, "__dlpack__"):
        raise TypeError(
            f"from_dlpack() expects an object with __dlpack__, got {type(obj).__name__}"
        )
    arr = np.from_dlpack(obj)
    dev = _device_index(device)
    h = _stream_handle(dev)
    if capture_info(h, "from_dlpack").capturing:
        # the captured copy reads its source at every replay: give it a private snapshot
        # instead of the exporter's memory
        arr = np.array(arr, copy=True, order="C")
    else:
        arr = np.ascontiguousarray(arr)
    return tensor(arr, device=dev)


def empty_like(t: Tensor, *, dtype: _DTypeLike | None = None, device: _DeviceLike = None) -> Tensor:
    """An uninitialised tensor with t's shape (and dtype/device unless given)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"empty_like() expects a Tensor, got {type(t).__name__}")
    dt, dev = _resolve(dtype, device, like=t)
    return _empty(t._shape, dt, dev)


def zeros_like(t: Tensor, *, dtype: _DTypeLike | None = None, device: _DeviceLike = None) -> Tensor:
    """Zeros with t's shape (and dtype/device unless given)."""
    return empty_like(t, dtype=dtype, device=device).zero_()


def ones_like(t: Tensor, *, dtype: _DTypeLike | None = None, device: _DeviceLike = None) -> Tensor:
    """Ones with t's shape (and dtype/device unless given)."""
    return empty_like(t, dtype=dtype, device=device).fill_(1)


def full_like(
    t: Tensor,
    fill_value: _Scalar,
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """``fill_value`` everywhere, with t's shape (and dtype/device unless given)."""
    return empty_like(t, dtype=dtype, device=device).fill_(fill_value)


def where(
    condition: Tensor,
    input: Tensor | _Scalar,  # noqa: A002 - torch's name
    other: Tensor | _Scalar,
) -> Tensor:
    """Elementwise ``input if condition else other`` with broadcasting."""
    if not isinstance(condition, Tensor):
        raise TypeError(f"where(): condition must be a Tensor, got {type(condition).__name__}")
    dev = condition._dev
    dt = result_type(*(x for x in (input, other)))
    ops = []
    for x in (input, other):
        if isinstance(x, Tensor):
            _same_device(condition, x)
            ops.append(_cast(x, dt))
        elif _is_scalar(x):
            ops.append(full((), x, dtype=dt, device=dev))
        else:
            raise TypeError(f"where(): expected a Tensor or a number, got {type(x).__name__}")
    cond = _cast(condition, bool_)
    shape = _broadcast_shapes(cond._shape, _broadcast_shapes(ops[0]._shape, ops[1]._shape))
    out = _empty(shape, dt, dev)
    st = lib.mtiart_op_where(
        _stream_handle(dev),
        out._get_desc(),
        cond._get_desc(),
        ops[0]._get_desc(),
        ops[1]._get_desc(),
    )
    if st:
        raise_status(st, "where")
    return out


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product (see :meth:`Tensor.matmul`)."""
    if not isinstance(a, Tensor):
        raise TypeError(f"matmul() expects Tensors, got {type(a).__name__}")
    return _matmul(a, b)
