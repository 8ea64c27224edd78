"""Shapes of contiguous tensors: parsing size arguments, broadcasting, dimensions."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from ._C import MTIAValueError, lib

Shape = tuple[int, ...]

_MAX_DIMS: int = lib.MTIART_MAX_DIMS
# Sizes are int64 in the runtime: the largest dimension, and the most bytes of a tensor.
_INT64_MAX = (1 << 63) - 1


def _index(x: Any, what: str) -> int:
    """``x`` as an int (anything with ``__index__`` but bool), else TypeError."""
    if isinstance(x, bool) or not hasattr(x, "__index__"):
        raise TypeError(f"{what} must be an int, got {type(x).__name__}")
    return operator.index(x)


def _size_arguments(size: Sequence[Any], what: str) -> Sequence[Any]:
    """The dimensions of ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``: ``size`` itself, or
    its only element when that is a sequence."""
    if len(size) == 1 and not hasattr(size[0], "__index__"):
        inner = size[0]
        if isinstance(inner, (str, bytes)) or not isinstance(inner, Iterable):
            raise TypeError(f"{what} must be a tuple of ints, got {type(inner).__name__}")
        return tuple(inner)
    return size


def _parse_size(size: Sequence[Any]) -> Shape:
    """``(2, 3)`` from ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``."""
    shape = tuple(_index(s, "size") for s in _size_arguments(size, "size"))
    for s in shape:
        if s < 0:
            raise ValueError(f"negative dimension {s} in size {shape}")
        if s > _INT64_MAX:
            raise MTIAValueError(
                f"size {shape}: dimension {s} is larger than the largest, 2**63 - 1",
                lib.MTIART_ERROR_INVALID_VALUE,
            )
    if len(shape) > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {len(shape)}")
    return shape


def _infer_shape(size: Sequence[Any], numel: int) -> Shape:
    """The shape ``reshape(*size)`` gives a tensor of ``numel`` elements (one dimension may
    be -1, inferred)."""
    dims = [_index(s, "shape") for s in _size_arguments(size, "shape")]
    if dims.count(-1) > 1:
        raise ValueError("only one dimension can be inferred")
    known = 1
    for s in dims:
        if s != -1:
            if s < 0:
                raise ValueError(f"invalid shape dimension {s}")
            known *= s
    if -1 in dims:
        if known == 0 or numel % known:
            raise ValueError(f"shape {tuple(dims)} is invalid for input of size {numel}")
        dims[dims.index(-1)] = numel // known
    shape = tuple(dims)
    if _numel(shape) != numel:
        raise ValueError(f"shape {shape} is invalid for input of size {numel}")
    if len(shape) > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported")
    return shape


def _numel(shape: Shape) -> int:
    """Number of elements of a tensor of that shape."""
    n = 1
    for s in shape:
        n *= s
    return n


def _broadcast_shapes(a: Shape, b: Shape) -> Shape:
    """The shape ``a`` and ``b`` broadcast to (numpy/torch rules), else ValueError."""
    if a == b:
        return a
    la, lb = len(a), len(b)
    if lb < la and a[la - lb :] == b:  # e.g. a bias added to a batch
        return a
    if la < lb and b[lb - la :] == a:
        return b
    n = max(la, lb)
    out = []
    for i in range(-n, 0):
        x = a[i] if -i <= len(a) else 1
        y = b[i] if -i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError(
                f"shapes {a} and {b} cannot be broadcast together: size {x} "
                f"vs {y} at non-singleton dimension {n + i}"
            )
    return tuple(out)


def _norm_dim(dim: Any, ndim: int) -> int:
    """``dim`` of an ``ndim``-d tensor as an index in ``[0, ndim)`` (0-d: -1 and 0 are 0)."""
    d = _index(dim, "dim")
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= d <= hi:
        raise IndexError(
            f"dimension out of range (expected to be in range of [{lo}, {hi}], but got {d})"
        )
    return d + ndim if d < 0 else d
