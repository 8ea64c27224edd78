"""Element types of tensors, and torch's type-promotion rules over them.

The five dtypes are ``float32``, ``float64``, ``int32``, ``int64`` and the boolean one,
which the package exports under torch's name ``mtia_graph.bool``; here it is ``bool_`` so
that the builtin keeps its meaning in the package's code.

Promotion follows torch: within a category (bool < integer < floating) the wider type
wins; across the classes of operands (dimensioned tensors, 0-d tensors, Python scalars)
a lower class only matters when it is of a higher category (``_combine``).

A Python number becomes a value of a dtype only if that dtype holds it: never by wrapping
(``_operand`` for operands of arithmetic, ``_fill_value`` for values stored as they are),
otherwise :class:`~mtia_graph.MTIAValueError` with torch's message.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

import numpy as np

from ._C import MTIAValueError, lib

__all__ = [
    "bool_",
    "can_cast",
    "dtype",
    "float32",
    "float64",
    "get_default_dtype",
    "int32",
    "int64",
    "promote_types",
]

# dtype._kind values: the promotion categories.
_KIND_BOOL, _KIND_INTEGER, _KIND_FLOATING = 0, 1, 2


class dtype:
    """An element type of tensors (``mtia_graph.float32``, ...)."""

    # Pickles and reprs name dtypes as the package exports them (mtia_graph.float32).
    __module__ = "mtia_graph"
    __slots__ = (
        "_code",
        "_kind",
        "_max",
        "_min",
        "_np",
        "_rank",
        "is_floating_point",
        "itemsize",
        "name",
    )

    def __init__(self, name: str, code: int, np_type: Any, rank: int, kind: int) -> None:
        self.name = name
        self._code = code  # MTIART_DTYPE_*
        self._np: np.dtype[Any] = np.dtype(np_type)
        self.itemsize: int = self._np.itemsize
        self.is_floating_point = kind == _KIND_FLOATING
        self._rank = rank  # promotion order: bool < int32 < int64 < float32 < float64
        self._kind = kind
        # The finite values the dtype holds (integers: exactly; floating: up to its largest).
        self._min: int | float = 0
        self._max: int | float = 1
        if kind == _KIND_FLOATING:
            self._min, self._max = float(np.finfo(self._np).min), float(np.finfo(self._np).max)
        elif kind == _KIND_INTEGER:
            self._min, self._max = int(np.iinfo(self._np).min), int(np.iinfo(self._np).max)

    @property
    def is_signed(self) -> bool:
        """Whether values of this type can be negative (all but bool)."""
        return self._kind != _KIND_BOOL

    def to_numpy(self) -> np.dtype[Any]:
        """The matching numpy dtype."""
        return self._np

    def __repr__(self) -> str:
        return f"mtia_graph.{self.name}"

    def __reduce__(self) -> str:
        return self.name  # pickled as the attribute of that name of mtia_graph


float32 = dtype("float32", lib.MTIART_DTYPE_FLOAT32, np.float32, 3, _KIND_FLOATING)
float64 = dtype("float64", lib.MTIART_DTYPE_FLOAT64, np.float64, 4, _KIND_FLOATING)
int32 = dtype("int32", lib.MTIART_DTYPE_INT32, np.int32, 1, _KIND_INTEGER)
int64 = dtype("int64", lib.MTIART_DTYPE_INT64, np.int64, 2, _KIND_INTEGER)
bool_ = dtype("bool", lib.MTIART_DTYPE_BOOL, np.bool_, 0, _KIND_BOOL)

_DTYPES = (float32, float64, int32, int64, bool_)
_BY_NAME = {d.name: d for d in _DTYPES}
_BY_NAME.update({"float": float32, "double": float64, "int": int32, "long": int64})
_BY_NP = {d._np: d for d in _DTYPES}
_SUPPORTED = ", ".join(d.name for d in _DTYPES)

for _d in _DTYPES:  # the C and Python views of element sizes must agree
    assert lib.mtiart_dtype_size(_d._code) == _d.itemsize, _d


# What the functions taking a dtype accept: a dtype, its name, a numpy dtype or scalar type,
# or one of the builtins bool, int, float.
_DTypeLike = dtype | str | type | np.dtype[Any]
# Numbers as tensor operands, fill values and factors.
_Scalar = bool | int | float | np.bool_ | np.integer[Any] | np.floating[Any]


def get_default_dtype() -> dtype:
    """The dtype of floating-point tensors created from Python floats (float32)."""
    return float32


def _to_dtype(d: object) -> dtype:
    """A dtype from a dtype, a name ("float32"), a numpy dtype or scalar type, or one of
    the builtins ``bool``, ``int``, ``float``; None is not accepted."""
    if type(d) is dtype:
        return d
    if isinstance(d, str):
        found = _BY_NAME.get(d)
        if found is None:
            raise ValueError(f"unknown dtype {d!r}; expected one of {_SUPPORTED}")
        return found
    if isinstance(d, np.dtype) or (isinstance(d, type) and issubclass(d, np.generic)):
        found = _BY_NP.get(np.dtype(d))
        if found is None:
            raise ValueError(f"unsupported dtype {np.dtype(d)}; expected one of {_SUPPORTED}")
        return found
    if d is bool:
        return bool_
    if d is int:
        return int64
    if d is float:
        return float32
    raise TypeError(f"dtype must be a mtia_graph.dtype, got {type(d).__name__}")


def promote_types(type1: _DTypeLike, type2: _DTypeLike) -> dtype:
    """The smallest dtype both ``type1`` and ``type2`` convert to (torch.promote_types)."""
    x, y = _to_dtype(type1), _to_dtype(type2)
    return x if x._rank >= y._rank else y


def can_cast(from_: _DTypeLike, to: _DTypeLike) -> bool:
    """Whether an in-place op may write a ``from_`` result into a ``to`` tensor (torch rule:
    no floating -> integral, no non-bool -> bool)."""
    src, dst = _to_dtype(from_), _to_dtype(to)
    if src._kind == _KIND_FLOATING and dst._kind != _KIND_FLOATING:
        return False
    return not (src._kind != _KIND_BOOL and dst._kind == _KIND_BOOL)


def _promote(a: dtype | None, b: dtype | None) -> dtype | None:
    """The wider of two dtypes; None stands for "no operand"."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a._rank >= b._rank else b


def _combine(higher: dtype | None, lower: dtype | None) -> dtype | None:
    """torch's combine_categories: the dtype of a higher-priority operand class, widened by
    a lower-priority one only when that one is of a higher category."""
    if higher is None:
        return lower
    if lower is None or higher._kind == _KIND_FLOATING:
        return higher
    if higher is bool_ or lower._kind == _KIND_FLOATING:
        return _promote(higher, lower)
    return higher


def _is_scalar(x: object) -> TypeGuard[_Scalar]:
    """Whether ``x`` is a Python or numpy number (bools included)."""
    return isinstance(x, (int, float, np.bool_, np.integer, np.floating))


def _overflow(x: object, dt: dtype) -> MTIAValueError:
    """torch's error for a value ``dt`` does not hold, with the value and the range."""
    shown = str(x)
    if len(shown) > 24:
        shown = f"an integer of {len(shown.lstrip('-'))} digits"
    return MTIAValueError(
        f"value cannot be converted to type {dt.name} without overflow ({shown}; {dt.name} "
        f"holds {dt._min} to {dt._max})",
        lib.MTIART_ERROR_INVALID_VALUE,
    )


def _operand(x: _Scalar, dt: dtype) -> int | float:
    """The Python or numpy number ``x`` as an operand of arithmetic computed in ``dt``.

    An integer outside an integer ``dt`` (or one too big for a float) raises, where torch
    would wrap it; a finite float beyond a floating ``dt`` stays as it is, so the result is
    inf, as numpy's and torch's.
    """
    if dt._kind == _KIND_FLOATING:
        try:
            return float(x)
        except OverflowError:
            raise _overflow(x, dt) from None
    v = int(x)
    if not dt._min <= v <= dt._max:
        raise _overflow(x, dt)
    return v


def _fill_value(x: _Scalar, dt: dtype) -> int | float:
    """The Python or numpy number ``x`` stored as a ``dt`` value (fill, full, where): it must
    be in ``dt``'s range (floats into integers truncate; NaN and inf do not fit them; inf and
    NaN do fit floating dtypes), as torch requires; bool takes any number."""
    if dt._kind == _KIND_BOOL:
        return 1 if x else 0
    if dt._kind == _KIND_FLOATING:
        try:
            f = float(x)
        except OverflowError:
            raise _overflow(x, dt) from None
        if math.isfinite(f) and not -dt._max <= f <= dt._max:
            raise _overflow(x, dt)
        return f
    if isinstance(x, (float, np.floating)):
        if not (math.isfinite(x) and dt._min - 1 < x < dt._max + 1):
            raise _overflow(x, dt)
        return int(x)
    return _operand(x, dt)


def _scalar_dtype(x: object) -> dtype:
    """The dtype torch gives a Python scalar: bool, int64 or float32."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)):
        return int64
    return float32
