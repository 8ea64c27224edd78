"""Tensor factories and functions over tensors, as in torch (``zeros``, ``arange``,
``where``, ``matmul``, ...). ``tensor()`` itself lives with :class:`Tensor`, whose
constructor it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._C import MTIAValueError, lib, raise_status
from ._shapes import _broadcast_shapes, _parse_size
from .device import _device_index, _DeviceLike
from .dtypes import (
    _KIND_FLOATING,
    _DTypeLike,
    _fill_value,
    _is_scalar,
    _Scalar,
    _scalar_dtype,
    _to_dtype,
    bool_,
    float32,
    int64,
)
from .streams import _stream_handle
from .tensor import (
    Tensor,
    _cast,
    _empty,
    _from_host,
    _matmul,
    _resolve,
    _same_device,
    result_type,
)

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
        if isinstance(v, (float, np.floating)) and not math.isfinite(v):
            raise ValueError(f"arange(): {name} must be finite, got {v}")
    if step == 0:
        raise ValueError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError("arange(): upper bound and larger bound inconsistent with step sign")
    all_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    if dtype is None:
        dtype = int64 if all_int else float32
    dt, dev = _resolve(dtype, device)
    try:
        if all_int:
            n = max(0, -(int(start - end) // int(step)))
        else:
            n = max(0, math.ceil((end - start) / step))
        fstart, fstep = float(start), float(step)
    except OverflowError:
        raise MTIAValueError(
            f"arange(): {start}, {end}, {step} are beyond what a double holds",
            lib.MTIART_ERROR_INVALID_VALUE,
        ) from None
    exact = False
    if n and dt._kind != _KIND_FLOATING:
        # The values must fit the dtype (torch wraps them): the first and the last are the
        # extremes. Beyond 2**53 a double (the kernel's start and step) is not exact.
        first, last = _fill_value(start, dt), _fill_value(start + (n - 1) * step, dt)
        exact = all_int and max(abs(first), abs(last)) > 2**53
    out = _empty((n,), dt, dev)
    if n:
        h = _stream_handle(dev)
        st = lib.mtiart_op_arange(
            h, out._get_desc(), 0.0 if exact else fstart, 1.0 if exact else fstep
        )
        if st:
            raise_status(st, "arange")
        if exact:  # start + step * i, in the integer dtype
            out.mul_(int(step)).add_(int(start))
    return out


def from_numpy(
    ndarray: np.ndarray[Any, Any], *, dtype: _DTypeLike | None = None, device: _DeviceLike = None
) -> Tensor:
    """A device copy of a numpy array (same dtype unless ``dtype`` is given).

    Unlike torch.from_numpy the memory is not shared: the tensor lives on the device. In a
    capture the copy reads ``ndarray`` at every replay (see :func:`tensor`).
    """
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy() expects a numpy.ndarray, got {type(ndarray).__name__}")
    dt = None if dtype is None else _to_dtype(dtype)
    return _from_host(ndarray, dt, _device_index(device), "from_numpy")


def from_dlpack(ext_tensor: Any, *, device: _DeviceLike = None, copy: bool | None = None) -> Tensor:
    """A device tensor from any DLPack exporter (numpy arrays, torch CPU tensors, ...).

    An :class:`Tensor` is returned as is. Anything else is imported with
    ``numpy.from_dlpack`` (so it must be CPU memory; the exporter synchronizes its own
    work per the protocol) and then *copied* into a new device tensor: importing cannot
    be zero-copy, because tensors must live in libmtiart's device arena, which foreign
    memory is not part of. Supported dtypes: float32, float64, int32, int64, bool.

    Eagerly the copy completes before this returns, so the source may change afterwards.
    While the current stream captures, the graph's copy node reads the exporter's memory
    at every replay, as for any host array (which must then be C-contiguous), and the
    graph keeps it alive.

    ``copy`` as torch's: True copies (a Tensor too), None copies only what must be, and
    False, which forbids a copy, is refused for anything but a Tensor of the device.
    """
    if isinstance(ext_tensor, Tensor):
        if device is None or _device_index(device) == ext_tensor._dev:
            return ext_tensor.clone() if copy else ext_tensor
        if copy is False:
            raise ValueError("from_dlpack(copy=False): moving to another device copies")
        return ext_tensor.to(device=device)
    if not hasattr(ext_tensor, "__dlpack__"):
        raise TypeError(
            f"from_dlpack() expects an object with __dlpack__, got {type(ext_tensor).__name__}"
        )
    if copy is False:
        raise ValueError(
            "from_dlpack(copy=False): importing copies into device memory (foreign memory "
            "cannot become a tensor's storage)"
        )
    return _from_host(np.from_dlpack(ext_tensor), None, _device_index(device), "from_dlpack")


def empty_like(
    input: Tensor,  # noqa: A002 - torch's name
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """An uninitialised tensor with input's shape (and dtype/device unless given)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"empty_like() expects a Tensor, got {type(input).__name__}")
    dt, dev = _resolve(dtype, device, like=input)
    return _empty(input._shape, dt, dev)


def zeros_like(
    input: Tensor,  # noqa: A002 - torch's name
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """Zeros with input's shape (and dtype/device unless given)."""
    return empty_like(input, dtype=dtype, device=device).zero_()


def ones_like(
    input: Tensor,  # noqa: A002 - torch's name
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """Ones with input's shape (and dtype/device unless given)."""
    return empty_like(input, dtype=dtype, device=device).fill_(1)


def full_like(
    input: Tensor,  # noqa: A002 - torch's name
    fill_value: _Scalar,
    *,
    dtype: _DTypeLike | None = None,
    device: _DeviceLike = None,
) -> Tensor:
    """``fill_value`` everywhere, with input's shape (and dtype/device unless given)."""
    return empty_like(input, dtype=dtype, device=device).fill_(fill_value)


def where(
    condition: Tensor,
    input: Tensor | _Scalar,  # noqa: A002 - torch's name
    other: Tensor | _Scalar,
) -> Tensor:
    """Elementwise ``input if condition else other`` with broadcasting."""
    if not isinstance(condition, Tensor):
        raise TypeError(f"where(): condition must be a Tensor, got {type(condition).__name__}")
    dev = condition._dev
    dt = result_type(input, other)
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


def matmul(input: Tensor, other: Tensor) -> Tensor:  # noqa: A002 - torch's name
    """Matrix product (see :meth:`Tensor.matmul`)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"matmul() expects Tensors, got {type(input).__name__}")
    return _matmul(input, other)
