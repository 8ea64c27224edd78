"""A small device tensor: contiguous n-d arrays in libmtiart device memory.

Design
------
* A :class:`Tensor` is a view of a :class:`_Storage` (one device allocation, freed
  stream-ordered with ``mtiart_free`` through ``ffi.gc`` when the last view dies): a data
  pointer inside it, a shape and a dtype. Every tensor is contiguous (row-major), so the
  data pointer plus the shape fully describe it; views made by ``reshape``/``view`` and
  by first-dimension indexing share the storage.
* Every operation is enqueued on the calling thread's current stream of the tensor's
  device (so it is recorded while that stream captures). Host access (``numpy()``,
  ``item()``, ...) synchronously copies on that stream and therefore fails with
  :class:`CaptureError` during capture, as in torch.
* Each tensor builds its ``mtiart_tensor_desc`` once, lazily, and hands the same cdata
  to every kernel call. The scalar fast paths of the in-place ops call the kernel
  library directly; everything else goes through ``_binary``/``_unary``/... so that new
  kernels are added by extending the op tables.
* Type promotion follows torch (``result_type``): dimensioned tensors win over 0-d
  tensors, which win over Python scalars, unless the lower class is of a higher
  category (bool < integer < floating). True division of integers gives float32.
"""

from __future__ import annotations

import builtins
import math
import operator
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from ._C import CaptureError, MTIAError, capture_info, check, ffi, lib, raise_status
from .callbacks import keep_alive_for_capture
from .device import Device, _device_index, _device_object
from .streams import Stream, _stream_handle, _thread_streams, _tls

__all__ = [
    "Tensor",
    "dtype",
    "float32",
    "float64",
    "int32",
    "int64",
    "bool",
    "get_default_dtype",
    "result_type",
    "promote_types",
    "can_cast",
    "empty",
    "zeros",
    "ones",
    "full",
    "arange",
    "tensor",
    "from_numpy",
    "from_dlpack",
    "empty_like",
    "zeros_like",
    "ones_like",
    "full_like",
    "where",
    "matmul",
]

_pybool = builtins.bool
_pyint = builtins.int
_pyfloat = builtins.float


# ---------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------

class dtype:
    """An element type of tensors (``mtia_graph.float32``, ...)."""

    __slots__ = ("name", "_code", "_np", "itemsize", "is_floating_point", "_rank", "_kind")

    def __init__(self, name: str, code: int, np_type: Any, rank: int, kind: int) -> None:
        self.name = name
        self._code = code          # MTIART_DTYPE_*
        self._np = np.dtype(np_type)
        self.itemsize = self._np.itemsize
        self.is_floating_point = kind == 2
        self._rank = rank          # promotion order: bool < int32 < int64 < float32 < float64
        self._kind = kind          # 0 bool, 1 integer, 2 floating

    @property
    def is_signed(self) -> _pybool:
        return self._kind != 0

    def to_numpy(self) -> np.dtype:
        """The matching numpy dtype."""
        return self._np

    def __repr__(self) -> str:
        return f"mtia_graph.{self.name}"

    def __reduce__(self):
        return self.name  # pickles as the module attribute of that name


float32 = dtype("float32", lib.MTIART_DTYPE_FLOAT32, np.float32, 3, 2)
float64 = dtype("float64", lib.MTIART_DTYPE_FLOAT64, np.float64, 4, 2)
int32 = dtype("int32", lib.MTIART_DTYPE_INT32, np.int32, 1, 1)
int64 = dtype("int64", lib.MTIART_DTYPE_INT64, np.int64, 2, 1)
bool = dtype("bool", lib.MTIART_DTYPE_BOOL, np.bool_, 0, 0)  # noqa: A001 - torch's name

_DTYPES = (float32, float64, int32, int64, bool)
_BY_NAME = {d.name: d for d in _DTYPES}
_BY_NAME.update({"float": float32, "double": float64, "int": int32, "long": int64})
_BY_NP = {d._np: d for d in _DTYPES}

for _d in _DTYPES:  # the C and Python views of element sizes must agree
    assert lib.mtiart_dtype_size(_d._code) == _d.itemsize, _d


def get_default_dtype() -> dtype:
    """The dtype of floating-point tensors created from Python floats (float32)."""
    return float32


def _to_dtype(d: Any) -> dtype:
    """A dtype from a dtype, a name ("float32") or a numpy dtype; None is not accepted."""
    if type(d) is dtype:
        return d
    if isinstance(d, str):
        found = _BY_NAME.get(d)
        if found is None:
            raise ValueError(f"unknown dtype {d!r}; expected one of "
                             f"{', '.join(x.name for x in _DTYPES)}")
        return found
    if isinstance(d, np.dtype) or (isinstance(d, type) and issubclass(d, np.generic)):
        found = _BY_NP.get(np.dtype(d))
        if found is None:
            raise ValueError(f"unsupported dtype {np.dtype(d)}; expected one of "
                             f"{', '.join(x.name for x in _DTYPES)}")
        return found
    if d is _pybool:
        return bool
    if d is _pyint:
        return int64
    if d is _pyfloat:
        return float32
    raise TypeError(f"dtype must be a mtia_graph.dtype, got {type(d).__name__}")


def promote_types(a: dtype, b: dtype) -> dtype:
    """The smallest dtype both ``a`` and ``b`` convert to (torch.promote_types)."""
    a, b = _to_dtype(a), _to_dtype(b)
    return a if a._rank >= b._rank else b


def can_cast(from_: dtype, to: dtype) -> _pybool:
    """Whether an in-place op may write a ``from_`` result into a ``to`` tensor (torch rule:
    no floating -> integral, no non-bool -> bool)."""
    from_, to = _to_dtype(from_), _to_dtype(to)
    if from_._kind == 2 and to._kind != 2:
        return False
    if from_._kind != 0 and to._kind == 0:
        return False
    return True


def _promote(a: Optional[dtype], b: Optional[dtype]) -> Optional[dtype]:
    if a is None:
        return b
    if b is None:
        return a
    return a if a._rank >= b._rank else b


def _combine(higher: Optional[dtype], lower: Optional[dtype]) -> Optional[dtype]:
    # torch's combine_categories: a lower-priority operand only matters when it is of a
    # higher category.
    if higher is None:
        return lower
    if lower is None or higher._kind == 2:
        return higher
    if higher is bool or lower._kind == 2:
        return _promote(higher, lower)
    return higher


def _scalar_dtype(x: Any) -> dtype:
    if isinstance(x, _pybool) or isinstance(x, np.bool_):
        return bool
    if isinstance(x, (_pyint, np.integer)):
        return int64
    return float32


def result_type(*operands: Any) -> dtype:
    """The dtype torch would compute ``operands`` in (tensors and Python scalars)."""
    dim = zero = wrapped = None
    for x in operands:
        if isinstance(x, Tensor):
            if x._shape:
                dim = _promote(dim, x._dtype)
            else:
                zero = _promote(zero, x._dtype)
        elif _is_scalar(x):
            wrapped = _promote(wrapped, _scalar_dtype(x))
        else:
            raise TypeError(f"result_type: unsupported operand type {type(x).__name__}")
    out = _combine(dim, _combine(zero, wrapped))
    if out is None:
        raise TypeError("result_type needs at least one operand")
    return out


def _is_scalar(x: Any) -> _pybool:
    return isinstance(x, (_pyint, _pyfloat, np.bool_, np.integer, np.floating))


# ---------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------

_MAX_DIMS = lib.MTIART_MAX_DIMS


def _index(x: Any, what: str) -> int:
    if isinstance(x, _pybool) or not hasattr(x, "__index__"):
        raise TypeError(f"{what} must be an int, got {type(x).__name__}")
    return operator.index(x)


def _parse_size(size: Sequence[Any], what: str = "size") -> Tuple[int, ...]:
    """``(2, 3)`` from ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``."""
    if len(size) == 1 and not hasattr(size[0], "__index__"):
        inner = size[0]
        if isinstance(inner, (str, bytes)) or not isinstance(inner, Iterable):
            raise TypeError(f"{what} must be a tuple of ints, got {type(inner).__name__}")
        size = tuple(inner)
    shape = tuple(_index(s, what) for s in size)
    for s in shape:
        if s < 0:
            raise ValueError(f"negative dimension {s} in {what} {shape}")
    if len(shape) > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {len(shape)}")
    return shape


def _numel(shape: Tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _broadcast_shapes(a: Tuple[int, ...], b: Tuple[int, ...]) -> Tuple[int, ...]:
    if a == b:
        return a
    n = max(len(a), len(b))
    out = []
    for i in range(-n, 0):
        x = a[i] if -i <= len(a) else 1
        y = b[i] if -i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ValueError(f"shapes {a} and {b} cannot be broadcast together: size {x} "
                             f"vs {y} at non-singleton dimension {n + i}")
    return tuple(out)


def _norm_dim(dim: Any, ndim: int) -> int:
    d = _index(dim, "dim")
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= d <= hi:
        raise IndexError(f"dimension out of range (expected to be in range of [{lo}, {hi}], "
                         f"but got {d})")
    return d + ndim if d < 0 else d


# ---------------------------------------------------------------------------------------
# Storage and raw helpers (module-level aliases keep the hot paths to local lookups)
# ---------------------------------------------------------------------------------------

_new = ffi.new
_gc = ffi.gc
_NULL = ffi.NULL
_malloc_async = lib.mtiart_malloc_async
_free = lib.mtiart_free
_op_binary = lib.mtiart_op_binary
_op_binary_scalar = lib.mtiart_op_binary_scalar
_op_unary = lib.mtiart_op_unary
_op_cast = lib.mtiart_op_cast
_op_fill = lib.mtiart_op_fill
_op_reduce = lib.mtiart_op_reduce
_op_matmul = lib.mtiart_op_matmul
_op_softmax = lib.mtiart_op_softmax
_op_where = lib.mtiart_op_where
_op_arange = lib.mtiart_op_arange
_memset_async = lib.mtiart_memset_async
_memcpy = lib.mtiart_memcpy
_memcpy_async = lib.mtiart_memcpy_async
_object_new = object.__new__

ADD = lib.MTIART_BINARY_ADD
assert ADD == 0  # add_'s fast path passes the literal
SUB = lib.MTIART_BINARY_SUB
MUL = lib.MTIART_BINARY_MUL
DIV = lib.MTIART_BINARY_DIV
MAXIMUM = lib.MTIART_BINARY_MAXIMUM
MINIMUM = lib.MTIART_BINARY_MINIMUM
EQ, NE, LT, LE, GT, GE = (lib.MTIART_BINARY_EQ, lib.MTIART_BINARY_NE, lib.MTIART_BINARY_LT,
                          lib.MTIART_BINARY_LE, lib.MTIART_BINARY_GT, lib.MTIART_BINARY_GE)
_CMP_OPS = frozenset((EQ, NE, LT, LE, GT, GE))
# a OP b == b SWAPPED[OP] a, for the reflected comparisons
_SWAPPED = {EQ: EQ, NE: NE, LT: GT, LE: GE, GT: LT, GE: LE}
_BIN_NAMES = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", MAXIMUM: "maximum",
              MINIMUM: "minimum", EQ: "eq", NE: "ne", LT: "lt", LE: "le", GT: "gt", GE: "ge"}
_FLOAT_UNARY = frozenset((lib.MTIART_UNARY_EXP, lib.MTIART_UNARY_LOG, lib.MTIART_UNARY_SQRT,
                          lib.MTIART_UNARY_TANH, lib.MTIART_UNARY_SIGMOID,
                          lib.MTIART_UNARY_GELU))
_H2D = lib.MTIART_MEMCPY_HOST_TO_DEVICE
_D2H = lib.MTIART_MEMCPY_DEVICE_TO_HOST
_D2D = lib.MTIART_MEMCPY_DEVICE_TO_DEVICE


class _Storage:
    """One device allocation; freed (stream-ordered) when the last tensor using it dies."""

    __slots__ = ("ptr", "nbytes", "device", "__weakref__")

    def __init__(self, ptr: Any, nbytes: int, device: int) -> None:
        self.ptr = ptr
        self.nbytes = nbytes
        self.device = device


def _empty(shape: Tuple[int, ...], dt: dtype, dev: int) -> "Tensor":
    """An uninitialised tensor (shape already validated)."""
    t = _object_new(Tensor)
    n = 1
    for s in shape:
        n *= s
    t._shape = shape
    t._dtype = dt
    t._dev = dev
    t._numel = n
    t._desc = None
    if n:
        nbytes = n * dt.itemsize
        out = _new("void **")
        try:
            h = _tls.handles[dev]
        except IndexError:
            h = _thread_streams().handles[dev]
        st = _malloc_async(h, nbytes, out)
        if st:
            raise_status(st, "allocate")
        ptr = _gc(out[0], _free)
        t._storage = _Storage(ptr, nbytes, dev)
        t._data = ptr
    else:
        t._storage = None
        t._data = _NULL
    return t


def _view(base: "Tensor", shape: Tuple[int, ...], offset_elems: int = 0) -> "Tensor":
    t = _object_new(Tensor)
    t._shape = shape
    t._dtype = base._dtype
    t._dev = base._dev
    t._numel = _numel(shape)
    t._desc = None
    t._storage = base._storage
    if t._numel == 0:
        t._data = _NULL
    elif offset_elems:
        offset = offset_elems * base._dtype.itemsize
        t._data = ffi.cast("void *", ffi.cast("char *", base._data) + offset)
    else:
        t._data = base._data
    return t


def _overlaps(a: "Tensor", b: "Tensor") -> _pybool:
    """Whether a and b share bytes without being the exact same elements."""
    if a._storage is None or a._storage is not b._storage:
        return False
    pa = _pyint(ffi.cast("uintptr_t", a._data))
    pb = _pyint(ffi.cast("uintptr_t", b._data))
    if pa == pb and a._numel == b._numel and a._dtype.itemsize == b._dtype.itemsize:
        return False
    return pa < pb + b._numel * b._dtype.itemsize and pb < pa + a._numel * a._dtype.itemsize


def _same_device(a: "Tensor", b: "Tensor") -> None:
    if a._dev != b._dev:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at "
                           f"least two devices, mtia:{a._dev} and mtia:{b._dev}!")


def _cast(t: "Tensor", dt: dtype) -> "Tensor":
    """``t`` itself if it has dtype ``dt``, else a converted copy."""
    if t._dtype is dt:
        return t
    out = _empty(t._shape, dt, t._dev)
    if t._numel:
        st = _op_cast(_stream_handle(t._dev), out._get_desc(), t._get_desc())
        if st:
            raise_status(st, f"cast to {dt.name}")
    return out


def _upload(t: "Tensor", arr: np.ndarray, what: str) -> None:
    """Copy a C-contiguous host array of t's dtype and size into t.

    Synchronous when the stream is not capturing (the host buffer may go away at once);
    while it captures, the copy becomes a graph node reading ``arr`` at every replay, so
    ``arr`` is kept alive as long as the graph.
    """
    if t._numel == 0:
        return
    h = _stream_handle(t._dev)
    src = ffi.from_buffer(arr)
    if keep_alive_for_capture(h, arr):
        st = _memcpy_async(h, t._data, src, t._numel * t._dtype.itemsize, _H2D)
        if st:
            raise_status(st, what)
    else:
        check(_memcpy(h, t._data, src, t._numel * t._dtype.itemsize, _H2D), what)


def _download(t: "Tensor") -> np.ndarray:
    arr = np.empty(t._shape, dtype=t._dtype._np)
    if t._numel:
        check(_memcpy(_stream_handle(t._dev), ffi.from_buffer(arr, require_writable=True),
                      t._data, t._numel * t._dtype.itemsize, _D2H), "copy to host")
    return arr


class _ExportedMemory:
    """numpy ``__array_interface__`` over a tensor's device memory.

    Used as the base of the zero-copy numpy view behind ``Tensor.__dlpack__``: the view
    (and every DLPack capsule / consumer array made from it) keeps this object, which
    keeps the tensor's :class:`_Storage` and so the device allocation alive.
    """

    __slots__ = ("__array_interface__", "_storage")

    def __init__(self, t: "Tensor") -> None:
        self._storage = t._storage
        self.__array_interface__ = {
            "shape": t._shape,
            "typestr": t._dtype._np.str,
            "data": (_pyint(ffi.cast("uintptr_t", t._data)), False),
            "version": 3,
        }


def _host_view(t: "Tensor") -> np.ndarray:
    """A writable numpy array aliasing ``t``'s memory (no synchronization here)."""
    if t._numel == 0:
        return np.empty(t._shape, dtype=t._dtype._np)  # nothing to share
    return np.asarray(_ExportedMemory(t))


def _host_array(data: Any, dt: Optional[dtype]) -> Tuple[np.ndarray, dtype]:
    """Host data as a C-contiguous array of a supported dtype (torch's inference rules)."""
    if isinstance(data, np.ndarray) or isinstance(data, np.generic):
        arr = np.asarray(data)
        if dt is None:
            found = _BY_NP.get(arr.dtype)
            if found is None:
                raise TypeError(f"can't convert numpy array of type {arr.dtype}; supported: "
                                f"{', '.join(x.name for x in _DTYPES)}")
            dt = found
    else:
        try:
            arr = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"cannot build a tensor from {type(data).__name__}: {exc}") from None
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise TypeError(f"cannot build a tensor from {type(data).__name__} "
                            f"(elements of type {arr.dtype})")
        if dt is None:
            kind = arr.dtype.kind
            dt = bool if kind == "b" else int64 if kind in "iu" else float32
    if arr.ndim > _MAX_DIMS:
        raise ValueError(f"at most {_MAX_DIMS} dimensions are supported, got {arr.ndim}")
    return arr.astype(dt._np, order="C", copy=False), dt  # keeps 0-d arrays 0-d


def _resolve(dt: Any, device: Any, like: Optional["Tensor"] = None) -> Tuple[dtype, int]:
    if dt is None:
        dt = like._dtype if like is not None else float32
    else:
        dt = _to_dtype(dt)
    if device is None and like is not None:
        dev = like._dev
    else:
        dev = _device_index(device)
    return dt, dev


def _scalar_args(x: Any, dt: dtype) -> Tuple[float, int]:
    """(fscalar, iscalar) for a kernel computing in ``dt``."""
    if dt._kind == 2:
        return _pyfloat(x), 0
    return 0.0, _pyint(x)


# ---------------------------------------------------------------------------------------
# Op implementations shared by methods, operators and functions
# ---------------------------------------------------------------------------------------

def _binary(a: "Tensor", b: Any, op: int, reverse: _pybool = False) -> "Tensor":
    """Out-of-place ``a OP b`` (``b OP a`` when reverse) with broadcasting and promotion."""
    if isinstance(b, Tensor):
        _same_device(a, b)
        dt = result_type(a, b)
    elif _is_scalar(b):
        dt = result_type(a, b)
    elif isinstance(b, (np.ndarray, list, tuple)):
        b = tensor(b, device=a._dev)
        dt = result_type(a, b)
    else:
        return NotImplemented
    if op == DIV and dt._kind != 2:
        dt = float32
    out_dt = bool if op in _CMP_OPS else dt
    x = _cast(a, dt)
    h = _stream_handle(a._dev)
    if isinstance(b, Tensor):
        y = _cast(b, dt)
        out = _empty(_broadcast_shapes(a._shape, b._shape), out_dt, a._dev)
        if reverse:
            x, y = y, x
        st = _op_binary(h, op, out._get_desc(), x._get_desc(), y._get_desc())
    else:
        out = _empty(a._shape, out_dt, a._dev)
        f, i = _scalar_args(b, dt)
        st = _op_binary_scalar(h, op, out._get_desc(), x._get_desc(), f, i, 1 if reverse else 0)
    if st:
        raise_status(st, _BIN_NAMES[op])
    return out


def _binary_(self: "Tensor", b: Any, op: int) -> "Tensor":
    """In-place ``self OP= b``; the result must keep self's shape and be castable to its dtype."""
    if isinstance(b, Tensor):
        _same_device(self, b)
    elif not _is_scalar(b):
        if isinstance(b, (np.ndarray, list, tuple)):
            b = tensor(b, device=self._dev)
        else:
            raise TypeError(f"{_BIN_NAMES[op]}_(): expected a Tensor or a number, got "
                            f"{type(b).__name__}")
    dt = result_type(self, b)
    if op == DIV and dt._kind != 2:
        dt = float32
    if not can_cast(dt, self._dtype):
        raise RuntimeError(f"result type {dt.name} can't be cast to the desired output type "
                           f"{self._dtype.name}")
    h = _stream_handle(self._dev)
    d = self._get_desc()
    if isinstance(b, Tensor):
        shape = _broadcast_shapes(self._shape, b._shape)
        if shape != self._shape:
            raise ValueError(f"output with shape {self._shape} doesn't match the broadcast "
                             f"shape {shape}")
        if _overlaps(self, b):
            b = b.clone()
        y = _cast(b, dt)
        if dt is self._dtype:
            st = _op_binary(h, op, d, d, y._get_desc())
        else:
            # Temporaries stay in locals until the launch: a desc does not keep its
            # tensor's memory alive.
            tmp = _empty(self._shape, dt, self._dev)
            x = _cast(self, dt)
            st = _op_binary(h, op, tmp._get_desc(), x._get_desc(), y._get_desc())
            if not st:
                st = _op_cast(h, d, tmp._get_desc())
    else:
        f, i = _scalar_args(b, dt)
        if dt is self._dtype:
            st = _op_binary_scalar(h, op, d, d, f, i, 0)
        else:
            tmp = _cast(self, dt)
            st = _op_binary_scalar(h, op, tmp._get_desc(), tmp._get_desc(), f, i, 0)
            if not st:
                st = _op_cast(h, d, tmp._get_desc())
    if st:
        raise_status(st, _BIN_NAMES[op] + "_")
    return self


def _unary(a: "Tensor", op: int, name: str, out: Optional["Tensor"] = None) -> "Tensor":
    x = a
    if op in _FLOAT_UNARY and a._dtype._kind != 2:
        x = _cast(a, float32)
    elif op == lib.MTIART_UNARY_NEG and a._dtype is bool:
        raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                           "If you are trying to invert a mask, use the `~` operator instead.")
    if out is None:
        out = _empty(a._shape, x._dtype, a._dev)
    elif out._dtype is not x._dtype:
        raise RuntimeError(f"{name}_(): result type {x._dtype.name} can't be cast to the "
                           f"desired output type {out._dtype.name}")
    st = _op_unary(_stream_handle(a._dev), op, out._get_desc(), x._get_desc())
    if st:
        raise_status(st, name)
    return out


def _reduce(a: "Tensor", op: int, dim: Any, keepdim: _pybool, out_dt: dtype,
            name: str) -> "Tensor":
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        dims: Tuple[int, ...] = tuple(range(len(a._shape)))
        full = True
    elif isinstance(dim, (tuple, list)):
        dims = tuple(sorted({_norm_dim(d, len(a._shape)) for d in dim}, reverse=True))
        full = len(dims) == len(a._shape)
    else:
        dims = (_norm_dim(dim, len(a._shape)),)
        full = len(a._shape) <= 1
    h = _stream_handle(a._dev)
    if full:
        shape = tuple(1 for _ in a._shape) if keepdim else ()
        out = _empty(shape, out_dt, a._dev)
        st = _op_reduce(h, op, out._get_desc(), a._get_desc(), lib.MTIART_REDUCE_ALL,
                        1 if keepdim else 0)
        if st:
            raise_status(st, name)
        return out
    cur = a
    for d in sorted(dims, reverse=True):  # one dimension at a time, highest first
        shape = cur._shape[:d] + (1,) + cur._shape[d + 1:]
        out = _empty(shape, out_dt, a._dev)
        st = _op_reduce(h, op, out._get_desc(), cur._get_desc(), d, 1)
        if st:
            raise_status(st, name)
        cur = out  # a mean of equal-sized group means is the mean: chaining is exact
    if not keepdim:
        cur = _view(cur, tuple(s for i, s in enumerate(cur._shape) if i not in dims))
    return cur


def _matmul(a: "Tensor", b: "Tensor") -> "Tensor":
    if not isinstance(b, Tensor):
        raise TypeError(f"matmul(): expected a Tensor, got {type(b).__name__}")
    _same_device(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul(): both arguments need at least 1 dimension")
    dt = _promote(a._dtype, b._dtype)
    if dt is bool:
        raise RuntimeError("matmul() is not supported for bool tensors")
    x, y = _cast(a, dt), _cast(b, dt)
    # Reduce every case to the kernel's 2-D (m,k)x(k,n) or 3-D (B,m,k)x(B,k,n) with views.
    xs, ys = x._shape, y._shape
    squeeze_front = squeeze_back = False
    if len(xs) == 1:
        xs = (1,) + xs
        squeeze_front = True
    if len(ys) == 1:
        ys = ys + (1,)
        squeeze_back = True
    if xs[-1] != ys[-2]:
        raise ValueError(f"matmul(): shapes {a._shape} and {b._shape} cannot be multiplied "
                         f"({xs[-2]}x{xs[-1]} and {ys[-2]}x{ys[-1]})")
    m, k, n = xs[-2], xs[-1], ys[-1]
    if len(ys) == 2:
        # (..., m, k) @ (k, n): fold the batch into the rows
        batch = xs[:-2]
        x2 = _view(x, (_numel(batch) * m, k))
        out = _empty((_numel(batch) * m, n), dt, a._dev)
        st = _op_matmul(_stream_handle(a._dev), out._get_desc(), x2._get_desc(),
                        _view(y, ys)._get_desc())
        result_shape = batch + (m, n)
    else:
        batch = _broadcast_shapes(xs[:-2], ys[:-2])
        if xs[:-2] != batch or ys[:-2] != batch:
            if xs[:-2] != batch:
                x = x.expand_copy(batch + (m, k))
            if ys[:-2] != batch:
                y = y.expand_copy(batch + (k, n))
        nb = _numel(batch)
        out = _empty((nb, m, n), dt, a._dev)
        st = _op_matmul(_stream_handle(a._dev), out._get_desc(),
                        _view(x, (nb, m, k))._get_desc(), _view(y, (nb, k, n))._get_desc())
        result_shape = batch + (m, n)
    if st:
        raise_status(st, "matmul")
    if squeeze_front:
        result_shape = result_shape[:-2] + result_shape[-1:]
    if squeeze_back:
        result_shape = result_shape[:-1]
    return _view(out, result_shape)


# ---------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------

class Tensor:
    """A contiguous n-d array in device memory (see the module docstring).

    Create tensors with the factories (:func:`tensor`, :func:`zeros`, :func:`empty`, ...);
    ``Tensor(data)`` is ``tensor(data, dtype=float32)`` as in torch.
    """

    __slots__ = ("_storage", "_data", "_shape", "_dtype", "_dev", "_numel", "_desc",
                 "__weakref__")

    # numpy must hand mixed expressions (ndarray + Tensor) to our reflected operators
    # instead of converting the tensor element by element.
    __array_priority__ = 1000
    __array_ufunc__ = None

    def __new__(cls, *args: Any, **kwargs: Any) -> "Tensor":
        if cls is not Tensor:
            raise TypeError("mtia_graph.Tensor cannot be subclassed")
        if not args:
            return empty(0, **kwargs)
        if len(args) == 1:
            return tensor(args[0], dtype=kwargs.pop("dtype", float32), **kwargs)
        return empty(*args, **kwargs)

    # -- attributes -----------------------------------------------------------------

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape (a tuple of ints)."""
        return self._shape

    @property
    def dtype(self) -> dtype:
        return self._dtype

    @property
    def device(self) -> Device:
        """The tensor's device (prints as ``mtia:N``)."""
        return _device_object(self._dev)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def nbytes(self) -> int:
        return self._numel * self._dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self._dtype.itemsize

    @property
    def is_mtia(self) -> _pybool:
        return True

    def dim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    def numel(self) -> int:
        """Number of elements."""
        return self._numel

    def element_size(self) -> int:
        """Bytes per element."""
        return self._dtype.itemsize

    def size(self, dim: Optional[int] = None) -> Union[Tuple[int, ...], int]:
        """The shape, or the size of one dimension (negative dims count from the end)."""
        if dim is None:
            return self._shape
        return self._shape[_norm_dim(dim, len(self._shape))] if self._shape else 1

    def data_ptr(self) -> int:
        """Address of the first element (0 for an empty tensor)."""
        return _pyint(ffi.cast("uintptr_t", self._data))

    def is_contiguous(self) -> _pybool:
        return True

    def is_floating_point(self) -> _pybool:
        return self._dtype._kind == 2

    def _get_desc(self) -> Any:
        """The cached ``mtiart_tensor_desc *`` of this tensor (built on first use)."""
        d = self._desc
        if d is None:
            d = _new("mtiart_tensor_desc *")
            d.data = self._data
            d.dtype = self._dtype._code
            d.ndim = len(self._shape)
            for i, s in enumerate(self._shape):
                d.shape[i] = s
            self._desc = d
        return d

    # -- host access ------------------------------------------------------------------

    def numpy(self) -> np.ndarray:
        """A host copy (waits for the current stream; CaptureError while it captures)."""
        return _download(self)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = _download(self)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    # -- DLPack ------------------------------------------------------------------------

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None,
                   dl_device: Any = None, copy: Any = None) -> Any:
        """Export as a DLPack capsule sharing this tensor's memory (zero-copy).

        The device memory is host-addressable (libmtiart's arena is CPU memory), so the
        export describes it as ``kDLCPU`` memory (see :meth:`__dlpack_device__`).

        Synchronization rules:

        * Before exporting, the work that may still write the tensor is waited for: the
          calling thread's current stream of the tensor's device, or ``stream`` when an
          :class:`~mtia_graph.Stream` is given. Work enqueued on *other* streams must be
          ordered before that stream by the caller (events / ``wait_stream``), as in torch.
          ``stream=None`` is what DLPack prescribes for CPU consumers.
        * After the export, the consumer's reads and writes are ordinary host memory
          accesses, unordered with device work enqueued later: synchronize before
          reading results of later device work, and do not let device work run on the
          memory while the consumer writes it.
        * The capsule (and anything the consumer builds from it) keeps the tensor's
          storage alive, so ``del tensor`` does not free memory still shared.

        Raises :class:`~mtia_graph.CaptureError` while the stream captures (exporting
        synchronizes, which a capturing stream forbids). ``copy=True`` exports a
        private host copy instead; ``max_version``/``dl_device`` are passed to numpy's
        exporter (which implements the protocol versions).
        """
        if stream is None:
            h = _stream_handle(self._dev)
        elif isinstance(stream, Stream):
            h = stream._handle
        else:
            raise BufferError(f"__dlpack__: stream must be None or an mtia_graph.Stream "
                              f"(the tensor is exported as CPU memory), got {stream!r}")
        if capture_info(h, "__dlpack__").capturing:
            raise CaptureError(
                "__dlpack__: cannot export a tensor while its stream is capturing "
                "(exporting synchronizes the stream)", lib.MTIART_ERROR_CAPTURE_UNSUPPORTED)
        check(lib.mtiart_stream_synchronize(h), "__dlpack__")
        view = _host_view(self)
        kwargs = {}
        if max_version is not None:
            kwargs["max_version"] = max_version
        if dl_device is not None:
            kwargs["dl_device"] = dl_device
        if copy is not None:
            kwargs["copy"] = copy
        return view.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Tuple[int, int]:
        """``(kDLCPU, 0)``: device memory is exported as host-addressable CPU memory."""
        return (1, 0)

    def tolist(self) -> Any:
        """The elements as (nested lists of) Python numbers."""
        return _download(self).tolist()

    def item(self) -> Union[int, float, _pybool]:
        """The value of a one-element tensor as a Python number."""
        if self._numel != 1:
            raise ValueError(f"a Tensor with {self._numel} elements cannot be converted to "
                             f"Scalar")
        return _download(self).reshape(()).item()

    def __bool__(self) -> _pybool:
        if self._numel != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self._numel} values is "
                               f"ambiguous")
        return _pybool(self.item())

    def __float__(self) -> float:
        return _pyfloat(self.item())

    def __int__(self) -> int:
        return _pyint(self.item())

    def __index__(self) -> int:
        if self._dtype._kind == 2 or self._numel != 1:
            raise TypeError("only integer tensors of a single element can be converted "
                            "to an index")
        return _pyint(self.item())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def __repr__(self) -> str:
        suffix = f"device='mtia:{self._dev}'"
        if self._dtype is not float32 and self._dtype is not int64 and self._dtype is not bool:
            suffix += f", dtype={self._dtype!r}"
        try:
            capturing = capture_info(_stream_handle(self._dev), "repr").capturing
        except MTIAError:
            capturing = True
        if capturing:
            # Reading would invalidate the capture: describe the tensor instead.
            return (f"<mtia_graph.Tensor shape={self._shape} dtype={self._dtype.name} "
                    f"device=mtia:{self._dev} (current stream is capturing)>")
        if self._numel == 0 and self._shape != (0,):
            return f"tensor([], size={self._shape}, {suffix})"
        body = np.array2string(_download(self), separator=", ", prefix="tensor(")
        return f"tensor({body}, {suffix})"

    def __hash__(self) -> int:
        return id(self)

    # -- in-place -------------------------------------------------------------------------

    def fill_(self, value: Any) -> "Tensor":
        """Set every element to ``value`` (a number or a one-element tensor)."""
        if isinstance(value, Tensor):
            if value._numel != 1:
                raise ValueError(f"fill_ only supports 0-dimension value tensor but got "
                                 f"tensor with {value.ndim} dimensions")
            return self.copy_(value)
        if not _is_scalar(value):
            raise TypeError(f"fill_(): expected a number, got {type(value).__name__}")
        if self._numel:
            if self._dtype._kind == 2:
                st = _op_fill(_stream_handle(self._dev), self._get_desc(), _pyfloat(value), 0)
            elif self._dtype is bool:
                st = _op_fill(_stream_handle(self._dev), self._get_desc(), 0.0,
                              1 if value else 0)
            else:
                if isinstance(value, (_pyfloat, np.floating)) and not math.isfinite(value):
                    raise ValueError(f"cannot fill an integer tensor with {value}")
                st = _op_fill(_stream_handle(self._dev), self._get_desc(), 0.0, _pyint(value))
            if st:
                raise_status(st, "fill_")
        return self

    def zero_(self) -> "Tensor":
        """Set every element to zero."""
        if self._numel:
            st = _memset_async(_stream_handle(self._dev), self._data, 0, self.nbytes)
            if st:
                raise_status(st, "zero_")
        return self

    def copy_(self, src: Any) -> "Tensor":
        """Copy ``src`` (a Tensor, numpy array or nested sequence / number) into self,
        broadcasting it to self's shape and converting its dtype."""
        if not isinstance(src, Tensor):
            try:
                arr = np.asarray(src)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"copy_(): cannot copy from {type(src).__name__}: {exc}") from None
            if arr.dtype == object or arr.dtype.kind not in "biuf":
                raise TypeError(f"copy_(): cannot copy from {type(src).__name__}")
            try:
                arr = np.broadcast_to(arr, self._shape)
            except ValueError:
                raise ValueError(f"copy_(): source of shape {arr.shape} cannot be broadcast "
                                 f"to {self._shape}") from None
            _upload(self, arr.astype(self._dtype._np, order="C"), "copy_")
            return self
        if src._dev != self._dev:
            _upload(self, np.broadcast_to(src.numpy(), self._shape).astype(
                self._dtype._np, order="C"), "copy_")
            return self
        shape = _broadcast_shapes(self._shape, src._shape)
        if shape != self._shape:
            raise ValueError(f"copy_(): source of shape {src._shape} cannot be broadcast to "
                             f"{self._shape}")
        if self._numel == 0 or src is self:
            return self
        if _overlaps(self, src):
            src = src.clone()
        h = _stream_handle(self._dev)
        if src._shape == self._shape:
            if src._dtype is self._dtype:
                if src._data == self._data:
                    return self
                st = _memcpy_async(h, self._data, src._data, self.nbytes, _D2D)
            else:
                st = _op_cast(h, self._get_desc(), src._get_desc())
        else:
            # maximum(x, x) == x: the broadcasting binary kernel is the broadcast copy
            x = _cast(src, self._dtype)
            xd = x._get_desc()
            st = _op_binary(h, MAXIMUM, self._get_desc(), xd, xd)
        if st:
            raise_status(st, "copy_")
        return self

    def add_(self, other: Any, alpha: Any = 1) -> "Tensor":
        """``self += alpha * other`` in place."""
        # Fast path (a Python number, alpha 1): straight to the kernel library.
        tp = type(other)
        if alpha == 1:
            kind = self._dtype._kind
            if (kind == 2 and (tp is _pyfloat or tp is _pyint)) or (kind == 1 and tp is _pyint):
                d = self._desc
                if d is None:
                    d = self._get_desc()
                try:
                    h = _tls.handles[self._dev]
                except IndexError:
                    h = _thread_streams().handles[self._dev]
                if kind == 2:
                    st = _op_binary_scalar(h, 0, d, d, other, 0, 0)
                else:
                    st = _op_binary_scalar(h, 0, d, d, 0.0, other, 0)
                if st:
                    raise_status(st, "add_")
                return self
            return _binary_(self, other, ADD)
        return _binary_(self, _scaled(self, other, alpha), ADD)

    def sub_(self, other: Any, alpha: Any = 1) -> "Tensor":
        """``self -= alpha * other`` in place."""
        if alpha != 1:
            other = _scaled(self, other, alpha)
        return _binary_(self, other, SUB)

    def mul_(self, other: Any) -> "Tensor":
        """``self *= other`` in place."""
        return _binary_(self, other, MUL)

    def div_(self, other: Any) -> "Tensor":
        """``self /= other`` in place (true division; integer tensors cannot hold it)."""
        return _binary_(self, other, DIV)

    def relu_(self) -> "Tensor":
        """``self = max(self, 0)`` in place."""
        _unary(self, lib.MTIART_UNARY_RELU, "relu", out=self)
        return self

    def record_stream(self, stream: Any) -> None:
        """Mark the memory as in use by ``stream``: when the tensor is freed, its memory is
        not reused before the work enqueued on ``stream`` up to then is done."""
        if not isinstance(stream, Stream):
            raise TypeError(f"record_stream() expects a Stream, got {type(stream).__name__}")
        if stream.device_index != self._dev:
            raise ValueError(f"record_stream(): stream is on mtia:{stream.device_index} but "
                             f"the tensor on mtia:{self._dev}")
        if self._storage is not None:
            st = lib.mtiart_record_stream(self._storage.ptr, stream._handle)
            if st:
                raise_status(st, "record_stream")

    # -- out-of-place -----------------------------------------------------------------

    def add(self, other: Any, alpha: Any = 1) -> "Tensor":
        """``self + alpha * other``."""
        if alpha != 1:
            other = _scaled(self, other, alpha)
        return _binary(self, other, ADD)

    def sub(self, other: Any, alpha: Any = 1) -> "Tensor":
        """``self - alpha * other``."""
        if alpha != 1:
            other = _scaled(self, other, alpha)
        return _binary(self, other, SUB)

    def mul(self, other: Any) -> "Tensor":
        return _binary(self, other, MUL)

    def div(self, other: Any) -> "Tensor":
        return _binary(self, other, DIV)

    def maximum(self, other: "Tensor") -> "Tensor":
        """Elementwise maximum (NaN-propagating)."""
        return _binary(self, other, MAXIMUM)

    def minimum(self, other: "Tensor") -> "Tensor":
        """Elementwise minimum (NaN-propagating)."""
        return _binary(self, other, MINIMUM)

    def __add__(self, other: Any) -> "Tensor":
        return _binary(self, other, ADD)

    def __radd__(self, other: Any) -> "Tensor":
        return _binary(self, other, ADD, True)

    def __sub__(self, other: Any) -> "Tensor":
        return _binary(self, other, SUB)

    def __rsub__(self, other: Any) -> "Tensor":
        return _binary(self, other, SUB, True)

    def __mul__(self, other: Any) -> "Tensor":
        return _binary(self, other, MUL)

    def __rmul__(self, other: Any) -> "Tensor":
        return _binary(self, other, MUL, True)

    def __truediv__(self, other: Any) -> "Tensor":
        return _binary(self, other, DIV)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return _binary(self, other, DIV, True)

    def __iadd__(self, other: Any) -> "Tensor":
        return self.add_(other)

    def __isub__(self, other: Any) -> "Tensor":
        return _binary_(self, other, SUB)

    def __imul__(self, other: Any) -> "Tensor":
        return _binary_(self, other, MUL)

    def __itruediv__(self, other: Any) -> "Tensor":
        return _binary_(self, other, DIV)

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return _binary(self, other, EQ)

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return _binary(self, other, NE)

    def __lt__(self, other: Any) -> "Tensor":
        return _binary(self, other, LT)

    def __le__(self, other: Any) -> "Tensor":
        return _binary(self, other, LE)

    def __gt__(self, other: Any) -> "Tensor":
        return _binary(self, other, GT)

    def __ge__(self, other: Any) -> "Tensor":
        return _binary(self, other, GE)

    def eq(self, other: Any) -> "Tensor":
        return _binary(self, other, EQ)

    def ne(self, other: Any) -> "Tensor":
        return _binary(self, other, NE)

    def lt(self, other: Any) -> "Tensor":
        return _binary(self, other, LT)

    def le(self, other: Any) -> "Tensor":
        return _binary(self, other, LE)

    def gt(self, other: Any) -> "Tensor":
        return _binary(self, other, GT)

    def ge(self, other: Any) -> "Tensor":
        return _binary(self, other, GE)

    def __and__(self, other: Any) -> "Tensor":
        if self._dtype is not bool or (isinstance(other, Tensor) and other._dtype is not bool):
            raise TypeError("& is only supported for bool tensors")
        return _binary(self, other, MUL)

    __rand__ = __and__

    def __or__(self, other: Any) -> "Tensor":
        if self._dtype is not bool or (isinstance(other, Tensor) and other._dtype is not bool):
            raise TypeError("| is only supported for bool tensors")
        return _binary(self, other, ADD)

    __ror__ = __or__

    def __invert__(self) -> "Tensor":
        if self._dtype is not bool:
            raise TypeError("~ is only supported for bool tensors")
        return _binary(self, False, EQ)

    def __neg__(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_NEG, "neg")

    def neg(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_NEG, "neg")

    def __pos__(self) -> "Tensor":
        return self

    def __abs__(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_ABS, "abs")

    def abs(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_ABS, "abs")

    def relu(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_RELU, "relu")

    def exp(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_EXP, "exp")

    def log(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_LOG, "log")

    def sqrt(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_SQRT, "sqrt")

    def tanh(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_TANH, "tanh")

    def sigmoid(self) -> "Tensor":
        return _unary(self, lib.MTIART_UNARY_SIGMOID, "sigmoid")

    def gelu(self) -> "Tensor":
        """GELU, tanh approximation."""
        return _unary(self, lib.MTIART_UNARY_GELU, "gelu")

    def clone(self) -> "Tensor":
        """A copy in new memory."""
        out = _empty(self._shape, self._dtype, self._dev)
        if self._numel:
            st = _memcpy_async(_stream_handle(self._dev), out._data, self._data, self.nbytes,
                               _D2D)
            if st:
                raise_status(st, "clone")
        return out

    def to(self, dtype: Any = None, device: Any = None, copy: _pybool = False) -> "Tensor":
        """This tensor converted to ``dtype`` and/or moved to ``device``."""
        if isinstance(dtype, (Device, str)) and not (isinstance(dtype, str) and dtype in _BY_NAME):
            dtype, device = None, dtype
        dt = self._dtype if dtype is None else _to_dtype(dtype)
        dev = self._dev if device is None else _device_index(device)
        if dev != self._dev:
            return tensor(self.numpy(), dtype=dt, device=dev)
        out = _cast(self, dt)
        return out.clone() if copy and out is self else out

    def float(self) -> "Tensor":
        return _cast(self, float32)

    def double(self) -> "Tensor":
        return _cast(self, float64)

    def int(self) -> "Tensor":
        return _cast(self, int32)

    def long(self) -> "Tensor":
        return _cast(self, int64)

    def bool(self) -> "Tensor":
        return _cast(self, bool)

    def sum(self, dim: Any = None, keepdim: _pybool = False, *, dtype: Any = None) -> "Tensor":
        """Sum over all elements or the given dim(s); integer and bool sums are int64."""
        src = self if dtype is None else _cast(self, _to_dtype(dtype))
        out_dt = src._dtype if src._dtype._kind == 2 else int64
        return _reduce(src, lib.MTIART_REDUCE_SUM, dim, keepdim, out_dt, "sum")

    def mean(self, dim: Any = None, keepdim: _pybool = False, *, dtype: Any = None) -> "Tensor":
        """Mean over all elements or the given dim(s) (floating dtypes, as in torch)."""
        src = self if dtype is None else _cast(self, _to_dtype(dtype))
        if src._dtype._kind != 2:
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be "
                               f"floating point, got {src._dtype.name}")
        return _reduce(src, lib.MTIART_REDUCE_MEAN, dim, keepdim, src._dtype, "mean")

    def amax(self, dim: Any = None, keepdim: _pybool = False) -> "Tensor":
        """Maximum over all elements or the given dim(s)."""
        return _reduce(self, lib.MTIART_REDUCE_MAX, dim, keepdim, self._dtype, "amax")

    def amin(self, dim: Any = None, keepdim: _pybool = False) -> "Tensor":
        """Minimum over all elements or the given dim(s)."""
        return _reduce(self, lib.MTIART_REDUCE_MIN, dim, keepdim, self._dtype, "amin")

    def max(self) -> "Tensor":
        """Maximum of all elements (a 0-d tensor)."""
        return _reduce(self, lib.MTIART_REDUCE_MAX, None, False, self._dtype, "max")

    def min(self) -> "Tensor":
        """Minimum of all elements (a 0-d tensor)."""
        return _reduce(self, lib.MTIART_REDUCE_MIN, None, False, self._dtype, "min")

    def matmul(self, other: "Tensor") -> "Tensor":
        """Matrix product with numpy/torch rules for 1-D, 2-D and batched operands."""
        return _matmul(self, other)

    def __matmul__(self, other: Any) -> "Tensor":
        if isinstance(other, np.ndarray):
            other = tensor(other, device=self._dev)
        elif not isinstance(other, Tensor):
            return NotImplemented
        return _matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        if isinstance(other, np.ndarray):
            return _matmul(tensor(other, device=self._dev), self)
        return NotImplemented

    def softmax(self, dim: int = -1) -> "Tensor":
        """Softmax along ``dim`` (integer inputs are computed in float32)."""
        x = self if self._dtype._kind == 2 else _cast(self, float32)
        d = _norm_dim(dim, len(self._shape))
        out = _empty(self._shape, x._dtype, self._dev)
        if not self._shape:
            return out.fill_(1.0)
        st = _op_softmax(_stream_handle(self._dev), out._get_desc(), x._get_desc(), d)
        if st:
            raise_status(st, "softmax")
        return out

    # -- views ------------------------------------------------------------------------

    def reshape(self, *shape: Any) -> "Tensor":
        """A view with another shape (one dimension may be -1); shares storage."""
        dims = [_index(s, "shape") for s in
                (shape[0] if len(shape) == 1 and not hasattr(shape[0], "__index__")
                 else shape)]
        if dims.count(-1) > 1:
            raise ValueError("only one dimension can be inferred")
        known = 1
        for s in dims:
            if s != -1:
                if s < 0:
                    raise ValueError(f"invalid shape dimension {s}")
                known *= s
        if -1 in dims:
            if known == 0 or self._numel % known:
                raise ValueError(f"shape {tuple(dims)} is invalid for input of size "
                                 f"{self._numel}")
            dims[dims.index(-1)] = self._numel // known
        new = tuple(dims)
        if _numel(new) != self._numel:
            raise ValueError(f"shape {new} is invalid for input of size {self._numel}")
        if len(new) > _MAX_DIMS:
            raise ValueError(f"at most {_MAX_DIMS} dimensions are supported")
        return _view(self, new)

    view = reshape

    def flatten(self) -> "Tensor":
        return _view(self, (self._numel,))

    def unsqueeze(self, dim: int) -> "Tensor":
        d = _norm_dim(dim, len(self._shape) + 1)
        return self.reshape(self._shape[:d] + (1,) + self._shape[d:])

    def squeeze(self, dim: Optional[int] = None) -> "Tensor":
        if dim is None:
            return _view(self, tuple(s for s in self._shape if s != 1))
        d = _norm_dim(dim, len(self._shape))
        if not self._shape or self._shape[d] != 1:
            return _view(self, self._shape)
        return _view(self, self._shape[:d] + self._shape[d + 1:])

    def expand_copy(self, *shape: Any) -> "Tensor":
        """A new contiguous tensor holding self broadcast to ``shape``."""
        target = _parse_size(shape)
        out = _empty(target, self._dtype, self._dev)
        return out.copy_(self)

    def __getitem__(self, index: Any) -> "Tensor":
        """Views by integer or unit-step slice indexing of the leading dimensions."""
        if not isinstance(index, tuple):
            index = (index,)
        t = self
        for k, idx in enumerate(index):
            if not t._shape:
                raise IndexError("too many indices for tensor")
            inner = _numel(t._shape[1:])
            if isinstance(idx, slice):
                start, stop, step = idx.indices(t._shape[0])
                if step != 1:
                    raise ValueError("only unit-step slices are supported (tensors are "
                                     "contiguous)")
                if k != len(index) - 1:
                    raise ValueError("a slice must be the last index")
                stop = max(start, stop)
                t = _view(t, (stop - start,) + t._shape[1:], start * inner)
            elif hasattr(idx, "__index__") and not isinstance(idx, (_pybool, Tensor)):
                i = operator.index(idx)
                n = t._shape[0]
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for dimension 0 with size {n}")
                i += n if i < 0 else 0
                t = _view(t, t._shape[1:], i * inner)
            else:
                raise TypeError(f"unsupported index {idx!r}: only ints and unit-step slices "
                                f"of the leading dimensions")
        return t

    def __setitem__(self, index: Any, value: Any) -> None:
        target = self[index]
        if _is_scalar(value):
            target.fill_(value)
        else:
            target.copy_(value)

    def __iter__(self):
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self._shape[0]):
            yield self[i]

    def __reduce__(self):
        return (tensor, (self.numpy(),), None)


def _scaled(self: Tensor, other: Any, alpha: Any) -> Any:
    """``alpha * other`` for add/sub's alpha argument (torch's rules on alpha)."""
    if not _is_scalar(alpha):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    if isinstance(alpha, (_pyfloat, np.floating)) and self._dtype._kind != 2:
        raise TypeError("For integral input tensors, argument alpha must not be a floating "
                        "point number.")
    if isinstance(other, Tensor):
        return _binary(other, alpha, MUL)
    if _is_scalar(other):
        return other * alpha
    return _binary(tensor(other, device=self._dev), alpha, MUL)


# ---------------------------------------------------------------------------------------
# Factories and functions
# ---------------------------------------------------------------------------------------

def empty(*size: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """An uninitialised tensor of the given size (``empty(2, 3)`` or ``empty((2, 3))``)."""
    shape = _parse_size(size)
    dt, dev = _resolve(dtype, device)
    return _empty(shape, dt, dev)


def zeros(*size: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """A tensor of zeros."""
    return empty(*size, dtype=dtype, device=device).zero_()


def ones(*size: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """A tensor of ones."""
    return empty(*size, dtype=dtype, device=device).fill_(1)


def full(size: Any, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """A tensor filled with ``fill_value``; its dtype follows the value (bool, int64 or
    float32) unless given."""
    if not _is_scalar(fill_value):
        raise TypeError(f"full(): fill_value must be a number, got {type(fill_value).__name__}")
    if dtype is None:
        dtype = _scalar_dtype(fill_value)
    shape = _parse_size((size,))
    dt, dev = _resolve(dtype, device)
    return _empty(shape, dt, dev).fill_(fill_value)


def arange(start: Any, end: Any = None, step: Any = 1, *, dtype: Any = None,
           device: Any = None) -> Tensor:
    """Values ``start, start + step, ...`` below ``end`` (``arange(n)`` is 0..n-1).

    int64 when start, end and step are ints, else float32 (unless ``dtype`` is given).
    """
    if end is None:
        start, end = 0, start
    for name, v in (("start", start), ("end", end), ("step", step)):
        if not _is_scalar(v) or isinstance(v, (_pybool, np.bool_)):
            raise TypeError(f"arange(): {name} must be a number, got {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError(f"arange(): {name} must be finite, got {v}")
    if step == 0:
        raise ValueError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError("arange(): upper bound and larger bound inconsistent with step sign")
    all_int = all(isinstance(v, (_pyint, np.integer)) for v in (start, end, step))
    if dtype is None:
        dtype = int64 if all_int else float32
    dt, dev = _resolve(dtype, device)
    if all_int:
        n = max(0, -((start - end) // step))
    else:
        n = max(0, math.ceil((end - start) / step))
    out = _empty((n,), dt, dev)
    if n:
        st = _op_arange(_stream_handle(dev), out._get_desc(), _pyfloat(start), _pyfloat(step))
        if st:
            raise_status(st, "arange")
    return out


def tensor(data: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """A new tensor holding a copy of ``data`` (numbers, nested sequences, numpy arrays or
    tensors). Python floats give float32, ints int64, bools bool; numpy arrays keep their
    dtype."""
    if isinstance(data, Tensor):
        dt, dev = _resolve(dtype, device, like=data)
        return data.to(dtype=dt, device=dev, copy=True)
    dt = None if dtype is None else _to_dtype(dtype)
    arr, dt = _host_array(data, dt)
    dev = _device_index(device)
    out = _empty(arr.shape, dt, dev)
    _upload(out, arr, "tensor")
    return out


def from_numpy(array: np.ndarray, *, dtype: Any = None, device: Any = None) -> Tensor:
    """A device copy of a numpy array (same dtype unless ``dtype`` is given).

    Unlike torch.from_numpy the memory is not shared: the tensor lives on the device.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy() expects a numpy.ndarray, got {type(array).__name__}")
    return tensor(array, dtype=dtype, device=device)



def from_dlpack(obj: Any, *, device: Any = None) -> Tensor:
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
        raise TypeError(f"from_dlpack() expects an object with __dlpack__, got "
                        f"{type(obj).__name__}")
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

def empty_like(t: Tensor, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An uninitialised tensor with t's shape (and dtype/device unless given)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"empty_like() expects a Tensor, got {type(t).__name__}")
    dt, dev = _resolve(dtype, device, like=t)
    return _empty(t._shape, dt, dev)


def zeros_like(t: Tensor, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Zeros with t's shape (and dtype/device unless given)."""
    return empty_like(t, dtype=dtype, device=device).zero_()


def ones_like(t: Tensor, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Ones with t's shape (and dtype/device unless given)."""
    return empty_like(t, dtype=dtype, device=device).fill_(1)


def full_like(t: Tensor, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """``fill_value`` everywhere, with t's shape (and dtype/device unless given)."""
    return empty_like(t, dtype=dtype, device=device).fill_(fill_value)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
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
    cond = _cast(condition, bool)
    shape = _broadcast_shapes(cond._shape, _broadcast_shapes(ops[0]._shape, ops[1]._shape))
    out = _empty(shape, dt, dev)
    st = _op_where(_stream_handle(dev), out._get_desc(), cond._get_desc(), ops[0]._get_desc(),
                   ops[1]._get_desc())
    if st:
        raise_status(st, "where")
    return out


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product (see :meth:`Tensor.matmul`)."""
    if not isinstance(a, Tensor):
        raise TypeError(f"matmul() expects Tensors, got {type(a).__name__}")
    return _matmul(a, b)
