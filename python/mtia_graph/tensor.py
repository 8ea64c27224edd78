"""The device tensor: contiguous n-d arrays in libmtiart device memory, and its operations.

* A :class:`Tensor` is a view of a storage (one device allocation, see ``_storage``): a
  data pointer inside it, a shape and a dtype. Every tensor is contiguous (row-major), so
  the data pointer plus the shape fully describe it; views made by ``reshape``/``view``
  and by first-dimension indexing share the storage.
* Every operation is enqueued on the calling thread's current stream of the tensor's
  device (so it is recorded while that stream captures). Host access (``numpy()``,
  ``item()``, ...) synchronously copies on that stream and therefore fails with
  :class:`~mtia_graph.CaptureError` during capture, as in torch.
* Each tensor builds its ``mtiart_tensor_desc`` once, lazily, and hands the same cdata
  to every kernel call. The scalar fast path of ``add_`` calls the kernel library
  directly; everything else goes through ``_binary``/``_unary``/... so that new kernels
  are added by extending the op tables.
* Type promotion follows torch (:func:`result_type`): dimensioned tensors win over 0-d
  tensors, which win over Python scalars, unless the lower class is of a higher
  category (bool < integer < floating). True division of integers gives float32.

The op dispatch lives here with the class: operations create tensors and the class's
methods call the operations, so neither can sit in a layer below the other.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from typing import Any, SupportsIndex, Union

import numpy as np

from ._C import (
    CaptureError,
    MTIAError,
    MTIAValueError,
    capture_id_of,
    check,
    ffi,
    lib,
    raise_status,
    wait_stream,
)
from ._shapes import (
    _INT64_MAX,
    Shape,
    _broadcast_shapes,
    _infer_shape,
    _norm_dim,
    _numel,
    _parse_size,
)
from ._storage import _copy_source, _download, _host_array, _host_view, _Storage, _upload
from .device import Device, _device_index, _device_object, _DeviceLike
from .dtypes import (
    _BY_NAME,
    _KIND_FLOATING,
    _KIND_INTEGER,
    _combine,
    _DTypeLike,
    _fill_value,
    _is_scalar,
    _operand,
    _promote,
    _Scalar,
    _scalar_dtype,
    _to_dtype,
    bool_,
    can_cast,
    dtype,
    float32,
    float64,
    int32,
    int64,
    promote_types,
)
from .streams import Stream, _recorded_stream_handle, _stream_handle

__all__ = ["Tensor", "result_type", "tensor"]

# Operands of the elementwise operations: tensors, numbers, and host data (numpy arrays,
# nested lists or tuples), which is copied to the operation's device first.
# A string forward reference cannot take part in `|` at run time.
_Operand = Union["Tensor", _Scalar, np.ndarray[Any, Any], list[Any], tuple[Any, ...]]
# The dimensions a reduction runs over: one, several, or (None) all.
_Dims = int | Sequence[int] | None
# Indexing the leading dimensions: integers, then at most one unit-step slice.
_Index = SupportsIndex | slice | tuple[SupportsIndex | slice, ...]

# Module-level aliases keep the hot paths to global lookups.
_new = ffi.new
_DESC_PTR = ffi.typeof("mtiart_tensor_desc *")
_NULL = ffi.NULL
_op_binary = lib.mtiart_op_binary
_op_binary_scalar = lib.mtiart_op_binary_scalar
_add_scalar_float = lib._mtia_add_scalar_float
_NO_CURRENT_STREAM = lib.MTIA_NO_CURRENT_STREAM
_op_unary = lib.mtiart_op_unary
_op_cast = lib.mtiart_op_cast
_op_reduce = lib.mtiart_op_reduce
_op_fill = lib.mtiart_op_fill
_op_softmax = lib.mtiart_op_softmax
_op_matmul = lib.mtiart_op_matmul
_memset_async = lib.mtiart_memset_async
_memcpy_async = lib.mtiart_memcpy_async
_object_new = object.__new__

ADD = lib.MTIART_BINARY_ADD
# add_'s fast path writes these as literals.
assert ADD == 0 and _KIND_FLOATING == 2 and _KIND_INTEGER == 1
SUB = lib.MTIART_BINARY_SUB
MUL = lib.MTIART_BINARY_MUL
DIV = lib.MTIART_BINARY_DIV
MAXIMUM = lib.MTIART_BINARY_MAXIMUM
MINIMUM = lib.MTIART_BINARY_MINIMUM
EQ, NE, LT, LE, GT, GE = (
    lib.MTIART_BINARY_EQ,
    lib.MTIART_BINARY_NE,
    lib.MTIART_BINARY_LT,
    lib.MTIART_BINARY_LE,
    lib.MTIART_BINARY_GT,
    lib.MTIART_BINARY_GE,
)
_CMP_OPS = frozenset((EQ, NE, LT, LE, GT, GE))
_BIN_NAMES = {
    ADD: "add",
    SUB: "sub",
    MUL: "mul",
    DIV: "div",
    MAXIMUM: "maximum",
    MINIMUM: "minimum",
    EQ: "eq",
    NE: "ne",
    LT: "lt",
    LE: "le",
    GT: "gt",
    GE: "ge",
}
_FLOAT_UNARY = frozenset(
    (
        lib.MTIART_UNARY_EXP,
        lib.MTIART_UNARY_LOG,
        lib.MTIART_UNARY_SQRT,
        lib.MTIART_UNARY_TANH,
        lib.MTIART_UNARY_SIGMOID,
        lib.MTIART_UNARY_GELU,
        lib.MTIART_UNARY_GELU_ERF,
    )
)
_NEG = lib.MTIART_UNARY_NEG
_GELU_OPS = {"none": lib.MTIART_UNARY_GELU_ERF, "tanh": lib.MTIART_UNARY_GELU}
_D2D = lib.MTIART_MEMCPY_DEVICE_TO_DEVICE


# ---------------------------------------------------------------------------------------
# Tensors made and converted without a user-facing call
# ---------------------------------------------------------------------------------------


def _empty(shape: Shape, dt: dtype, dev: int, stream_handle: Any = None) -> Tensor:
    """An uninitialised tensor (shape already validated), allocated in order on
    ``stream_handle`` (an op passes the handle it looked up; default: the calling thread's
    current stream of ``dev``)."""
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
        if nbytes > _INT64_MAX:
            raise MTIAValueError(
                f"size {shape} of {dt.name}: {nbytes} bytes is more than a tensor can hold, "
                f"2**63 - 1",
                lib.MTIART_ERROR_INVALID_VALUE,
            )
        h = _stream_handle(dev) if stream_handle is None else stream_handle
        storage = t._storage = _Storage(h, nbytes, dev)
        t._data = storage.ptr
    else:
        t._storage = None
        t._data = _NULL
    return t


def _view(base: Tensor, shape: Shape, offset_elems: int = 0) -> Tensor:
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


def _overlaps(a: Tensor, b: Tensor) -> bool:
    """Whether a and b share bytes without being the exact same elements."""
    if a._storage is None or a._storage is not b._storage:
        return False
    pa = int(ffi.cast("uintptr_t", a._data))
    pb = int(ffi.cast("uintptr_t", b._data))
    if pa == pb and a._numel == b._numel and a._dtype.itemsize == b._dtype.itemsize:
        return False
    return pa < pb + b._numel * b._dtype.itemsize and pb < pa + a._numel * a._dtype.itemsize


def _same_device(a: Tensor, b: Tensor) -> None:
    if a._dev != b._dev:
        raise RuntimeError(
            f"Expected all tensors to be on the same device, but found at "
            f"least two devices, mtia:{a._dev} and mtia:{b._dev}!"
        )


def _cast(t: Tensor, dt: dtype) -> Tensor:
    """``t`` itself if it has dtype ``dt``, else a converted copy."""
    if t._dtype is dt:
        return t
    out = _empty(t._shape, dt, t._dev)
    if t._numel:
        st = _op_cast(_stream_handle(t._dev), out._get_desc(), t._get_desc())
        if st:
            raise_status(st, f"cast to {dt.name}")
    return out


def _resolve(
    dt: _DTypeLike | None, device: _DeviceLike, like: Tensor | None = None
) -> tuple[dtype, int]:
    """The dtype and device index a factory gives its result: the arguments, else those of
    ``like``, else float32 on the current device."""
    if dt is not None:
        resolved = _to_dtype(dt)
    elif like is not None:
        resolved = like._dtype
    else:
        resolved = float32
    if device is None and like is not None:
        return resolved, like._dev
    return resolved, _device_index(device)


def _scalar_args(x: _Scalar, dt: dtype) -> tuple[float, int]:
    """(fscalar, iscalar) for a kernel computing in ``dt`` (MTIAValueError for a value
    ``dt`` does not hold: see ``dtypes._operand``)."""
    v = _operand(x, dt)
    if dt._kind == _KIND_FLOATING:
        return v, 0
    return 0.0, int(v)


# a OP b for b beyond every value of a's integer dtype: (b above, b below) -> the result.
_BEYOND = {
    EQ: (False, False),
    NE: (True, True),
    LT: (True, False),
    LE: (True, False),
    GT: (False, True),
    GE: (False, True),
}
_REVERSED = {EQ: EQ, NE: NE, LT: GT, LE: GE, GT: LT, GE: LE}


def _compare_beyond(a: Tensor, dt: dtype, b: _Scalar, op: int, reverse: bool) -> Tensor | None:
    """``a OP b`` (``b OP a`` when reverse) compared in the integer dtype ``dt``, for an
    integer ``b`` that ``dt`` cannot hold: the answer is the same for every element (as numpy
    gives it), where torch would wrap ``b``. None when ``b`` fits."""
    v = int(b)
    if dt._min <= v <= dt._max:
        return None
    above, below = _BEYOND[_REVERSED[op] if reverse else op]
    return _empty(a._shape, bool_, a._dev).fill_(above if v > dt._max else below)


def result_type(tensor: Tensor | _Scalar, other: Tensor | _Scalar) -> dtype:
    """The dtype torch computes an operation of ``tensor`` and ``other`` in (tensors or
    Python scalars), as ``torch.result_type``."""
    return _result_type(tensor, other)


def _result_type(*operands: Tensor | _Scalar) -> dtype:
    """:func:`result_type` of any number of operands."""
    dim: dtype | None = None
    zero: dtype | None = None
    wrapped: dtype | None = None
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


# ---------------------------------------------------------------------------------------
# Op implementations shared by methods, operators and functions
# ---------------------------------------------------------------------------------------


def _binary(a: Tensor, b: object, op: int, reverse: bool = False) -> Tensor:
    """Out-of-place ``a OP b`` (``b OP a`` when reverse) with broadcasting and promotion.

    Returns NotImplemented for an operand of another type, so that an operator lets
    Python try the other operand's reflected method.
    """
    if isinstance(b, Tensor):
        _same_device(a, b)
        dt = a._dtype if a._dtype is b._dtype else result_type(a, b)
    elif _is_scalar(b):
        dt = result_type(a, b)
    elif isinstance(b, (np.ndarray, list, tuple)):
        b = _from_host(b, None, a._dev, _BIN_NAMES[op])
        dt = result_type(a, b)
    else:
        return NotImplemented  # type: ignore[no-any-return]  # operators pass it to Python
    if op == DIV and dt._kind != _KIND_FLOATING:
        dt = float32
    out_dt = bool_ if op in _CMP_OPS else dt
    if out_dt is bool_ and dt._kind == _KIND_INTEGER and not isinstance(b, Tensor):
        beyond = _compare_beyond(a, dt, b, op, reverse)
        if beyond is not None:
            return beyond
    x = a if a._dtype is dt else _cast(a, dt)
    h = _stream_handle(a._dev)
    if isinstance(b, Tensor):
        y = b if b._dtype is dt else _cast(b, dt)
        out = _empty(_broadcast_shapes(a._shape, b._shape), out_dt, a._dev, h)
        if reverse:
            x, y = y, x
        st = _op_binary(h, op, out._get_desc(), x._get_desc(), y._get_desc())
    else:
        out = _empty(a._shape, out_dt, a._dev, h)
        f, i = _scalar_args(b, dt)
        st = _op_binary_scalar(h, op, out._get_desc(), x._get_desc(), f, i, 1 if reverse else 0)
    if st:
        raise_status(st, _BIN_NAMES[op])
    return out


def _binary_method(a: Tensor, b: object, op: int) -> Tensor:
    """:func:`_binary` for the named methods (``add``, ``eq``, ...), which raise TypeError
    where an operator returns NotImplemented."""
    out = _binary(a, b, op)
    if out is NotImplemented:
        raise TypeError(
            f"{_BIN_NAMES[op]}(): expected a Tensor or a number, got {type(b).__name__}"
        )
    return out


def _binary_(self: Tensor, b: object, op: int) -> Tensor:
    """In-place ``self OP= b``; the result must keep self's shape and be castable to its dtype."""
    if isinstance(b, Tensor):
        _same_device(self, b)
    elif not _is_scalar(b):
        if isinstance(b, (np.ndarray, list, tuple)):
            b = _from_host(b, None, self._dev, _BIN_NAMES[op] + "_")
        else:
            raise TypeError(
                f"{_BIN_NAMES[op]}_(): expected a Tensor or a number, got {type(b).__name__}"
            )
    dt = result_type(self, b)
    if op == DIV and dt._kind != _KIND_FLOATING:
        dt = float32
    if not can_cast(dt, self._dtype):
        raise RuntimeError(
            f"result type {dt.name} can't be cast to the desired output type {self._dtype.name}"
        )
    h = _stream_handle(self._dev)
    d = self._get_desc()
    if isinstance(b, Tensor):
        shape = _broadcast_shapes(self._shape, b._shape)
        if shape != self._shape:
            raise ValueError(
                f"output with shape {self._shape} doesn't match the broadcast shape {shape}"
            )
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


def _unary(a: Tensor, op: int, name: str, out: Tensor | None = None) -> Tensor:
    x = a
    if op in _FLOAT_UNARY and a._dtype._kind != _KIND_FLOATING:
        x = _cast(a, float32)
    elif op == _NEG and a._dtype is bool_:
        raise RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` operator instead."
        )
    h = _stream_handle(a._dev)
    if out is None:
        out = _empty(a._shape, x._dtype, a._dev, h)
    elif out._dtype is not x._dtype:
        raise RuntimeError(
            f"{name}_(): result type {x._dtype.name} can't be cast to the "
            f"desired output type {out._dtype.name}"
        )
    st = _op_unary(h, op, out._get_desc(), x._get_desc())
    if st:
        raise_status(st, name)
    return out


def _reduce(a: Tensor, op: int, dim: _Dims, keepdim: bool, out_dt: dtype, name: str) -> Tensor:
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        dims: Shape = tuple(range(len(a._shape)))
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
        st = _op_reduce(
            h, op, out._get_desc(), a._get_desc(), lib.MTIART_REDUCE_ALL, 1 if keepdim else 0
        )
        if st:
            raise_status(st, name)
        return out
    cur = a
    for d in sorted(dims, reverse=True):  # one dimension at a time, highest first
        shape = (*cur._shape[:d], 1, *cur._shape[d + 1 :])
        out = _empty(shape, out_dt, a._dev)
        st = _op_reduce(h, op, out._get_desc(), cur._get_desc(), d, 1)
        if st:
            raise_status(st, name)
        cur = out  # a mean of equal-sized group means is the mean: chaining is exact
    if not keepdim:
        cur = _view(cur, tuple(s for i, s in enumerate(cur._shape) if i not in dims))
    return cur


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    if not isinstance(b, Tensor):
        raise TypeError(f"matmul(): expected a Tensor, got {type(b).__name__}")
    _same_device(a, b)
    if not a._shape or not b._shape:
        raise ValueError("matmul(): both arguments need at least 1 dimension")
    dt = a._dtype if a._dtype is b._dtype else promote_types(a._dtype, b._dtype)
    if dt is bool_:
        raise RuntimeError("matmul() is not supported for bool tensors")
    x = a if a._dtype is dt else _cast(a, dt)
    y = b if b._dtype is dt else _cast(b, dt)
    # Reduce every case to the kernel's 2-D (m,k)x(k,n) or 3-D (B,m,k)x(B,k,n) with views.
    xs, ys = x._shape, y._shape
    squeeze_front = squeeze_back = False
    if len(xs) == 1:
        xs = (1, *xs)
        squeeze_front = True
    if len(ys) == 1:
        ys = (*ys, 1)
        squeeze_back = True
    if xs[-1] != ys[-2]:
        raise ValueError(
            f"matmul(): shapes {a._shape} and {b._shape} cannot be multiplied "
            f"({xs[-2]}x{xs[-1]} and {ys[-2]}x{ys[-1]})"
        )
    m, k, n = xs[-2], xs[-1], ys[-1]
    if len(ys) == 2:
        # (..., m, k) @ (k, n): fold the batch into the rows (views only where the shapes
        # differ: the plain 2-D case uses the operands' own cached descs)
        batch = xs[:-2]
        rows = _numel(batch) * m
        x2 = x if x._shape == (rows, k) else _view(x, (rows, k))
        y2 = y if y._shape is ys else _view(y, ys)
        h = _stream_handle(a._dev)
        out = _empty((rows, n), dt, a._dev, h)
        st = _op_matmul(h, out._get_desc(), x2._get_desc(), y2._get_desc())
        result_shape = (*batch, m, n)
    else:
        batch = _broadcast_shapes(xs[:-2], ys[:-2])
        if xs[:-2] != batch or ys[:-2] != batch:
            if xs[:-2] != batch:
                x = x.expand_copy((*batch, m, k))
            if ys[:-2] != batch:
                y = y.expand_copy((*batch, k, n))
        nb = _numel(batch)
        out = _empty((nb, m, n), dt, a._dev)
        st = _op_matmul(
            _stream_handle(a._dev),
            out._get_desc(),
            _view(x, (nb, m, k))._get_desc(),
            _view(y, (nb, k, n))._get_desc(),
        )
        result_shape = (*batch, m, n)
    if st:
        raise_status(st, "matmul")
    if squeeze_front:
        result_shape = result_shape[:-2] + result_shape[-1:]
    if squeeze_back:
        result_shape = result_shape[:-1]
    return out if out._shape == result_shape else _view(out, result_shape)


# ---------------------------------------------------------------------------------------
# Tensor
# ---------------------------------------------------------------------------------------


class Tensor:
    """A contiguous n-d array in device memory (see the module docstring).

    Create tensors with the factories (:func:`tensor`, :func:`zeros`, :func:`empty`, ...);
    ``Tensor(data)`` is ``tensor(data, dtype=float32)`` as in torch.
    """

    __slots__ = ("__weakref__", "_data", "_desc", "_dev", "_dtype", "_numel", "_shape", "_storage")

    _storage: _Storage | None  # None for an empty tensor, which has no memory
    _data: Any  # cdata void *, the first element (NULL when empty)
    _shape: Shape
    _dtype: dtype
    _dev: int  # device index
    _numel: int
    _desc: Any  # cdata mtiart_tensor_desc *, built on first use (_get_desc)

    # numpy must hand mixed expressions (ndarray + Tensor) to our reflected operators
    # instead of converting the tensor element by element.
    __array_priority__ = 1000
    __array_ufunc__ = None

    def __new__(
        cls, *args: Any, dtype: _DTypeLike | None = float32, device: _DeviceLike = None
    ) -> Tensor:
        if cls is not Tensor:
            raise TypeError("mtia_graph.Tensor cannot be subclassed")
        if len(args) == 1:
            return tensor(args[0], dtype=dtype, device=device)
        return _empty(_parse_size(args or (0,)), *_resolve(dtype, device))

    # -- attributes -----------------------------------------------------------------

    @property
    def shape(self) -> Shape:
        """The shape (a tuple of ints)."""
        return self._shape

    @property
    def dtype(self) -> dtype:
        """The element type."""
        return self._dtype

    @property
    def device(self) -> Device:
        """The tensor's device (prints as ``mtia:N``)."""
        return _device_object(self._dev)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the elements (``numel() * itemsize``)."""
        return self._numel * self._dtype.itemsize

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self._dtype.itemsize

    @property
    def name(self) -> str | None:
        """The name of the tensor's device allocation, shown by graph dumps
        (:meth:`MTIAGraph.debug_dump`), traces and memory snapshots; None if unnamed.

        Setting it names the allocation, so every view of it shares the name (``None`` or
        ``""`` removes it); a graph node keeps the name its buffers had when it was
        captured. An empty tensor has no allocation: its name is None and cannot be set.
        """
        if self._storage is None:
            return None
        length = ffi.new("size_t *")
        check(lib.mtiart_memory_get_name(self._data, ffi.NULL, 0, length), "Tensor.name")
        if length[0] == 0:
            return None
        buf = ffi.new("char[]", length[0] + 1)
        check(lib.mtiart_memory_get_name(self._data, buf, length[0] + 1, length), "Tensor.name")
        text: bytes = ffi.string(buf)
        return text.decode(errors="replace")

    @name.setter
    def name(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"Tensor.name must be a str or None, got {type(value).__name__}")
        if self._storage is None:
            raise ValueError("an empty tensor has no device memory to name")
        encoded = ffi.NULL if value is None else value.encode()
        check(lib.mtiart_memory_set_name(self._data, encoded), "Tensor.name")

    @property
    def is_mtia(self) -> bool:
        """Always True: every tensor lives on an mtia device."""
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

    def size(self, dim: int | None = None) -> Shape | int:
        """The shape, or the size of one dimension (negative dims count from the end)."""
        if dim is None:
            return self._shape
        return self._shape[_norm_dim(dim, len(self._shape))] if self._shape else 1

    def data_ptr(self) -> int:
        """Address of the first element (0 for an empty tensor)."""
        return int(ffi.cast("uintptr_t", self._data))

    def is_contiguous(self) -> bool:
        """Always True: tensors are contiguous (row-major)."""
        return True

    def is_floating_point(self) -> bool:
        """Whether the dtype is float32 or float64."""
        return self._dtype._kind == _KIND_FLOATING

    def _get_desc(self) -> Any:
        """The cached ``mtiart_tensor_desc *`` of this tensor (built on first use)."""
        d = self._desc
        if d is None:
            shape = self._shape
            d = self._desc = _new(_DESC_PTR, (self._data, self._dtype._code, len(shape), shape))
        return d

    # -- host access ------------------------------------------------------------------

    def numpy(self, *, force: bool = False) -> np.ndarray:
        """A host copy (waits for the current stream; CaptureError while it captures).

        The result is always a copy in host memory, so torch's ``force`` (copy when the
        tensor cannot be shared as it is) changes nothing here.
        """
        return _download(_stream_handle(self._dev), self._data, self._shape, self._dtype._np)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype, copy=False)

    # -- DLPack ------------------------------------------------------------------------

    def __dlpack__(
        self,
        *,
        stream: Stream | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> Any:
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
            raise BufferError(
                f"__dlpack__: stream must be None or an mtia_graph.Stream "
                f"(the tensor is exported as CPU memory), got {stream!r}"
            )
        if capture_id_of(h, "__dlpack__"):
            raise CaptureError(
                "__dlpack__: cannot export a tensor while its stream is capturing "
                "(exporting synchronizes the stream)",
                lib.MTIART_ERROR_CAPTURE_UNSUPPORTED,
            )
        wait_stream(h, "__dlpack__")
        view = _host_view(self._storage, self._data, self._shape, self._dtype._np)
        kwargs: dict[str, Any] = {}
        if max_version is not None:
            kwargs["max_version"] = max_version
        if dl_device is not None:
            kwargs["dl_device"] = dl_device
        if copy is not None:
            kwargs["copy"] = copy
        return view.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        """``(kDLCPU, 0)``: device memory is exported as host-addressable CPU memory."""
        return (1, 0)

    def tolist(self) -> Any:
        """The elements as (nested lists of) Python numbers."""
        return self.numpy().tolist()

    def item(self) -> int | float | bool:
        """The value of a one-element tensor as a Python number."""
        if self._numel != 1:
            raise ValueError(f"a Tensor with {self._numel} elements cannot be converted to Scalar")
        value: int | float | bool = self.numpy().reshape(()).item()
        return value

    def __bool__(self) -> bool:
        if self._numel != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self._numel} values is ambiguous")
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._dtype._kind == _KIND_FLOATING or self._numel != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def __repr__(self) -> str:
        suffix = f"device='mtia:{self._dev}'"
        if self._dtype is not float32 and self._dtype is not int64 and self._dtype is not bool_:
            suffix += f", dtype={self._dtype!r}"
        try:
            capturing = bool(capture_id_of(_stream_handle(self._dev), "repr"))
        except MTIAError:
            capturing = True
        if capturing:
            # Reading would invalidate the capture: describe the tensor instead.
            return (
                f"<mtia_graph.Tensor shape={self._shape} dtype={self._dtype.name} "
                f"device=mtia:{self._dev} (current stream is capturing)>"
            )
        if self._numel == 0 and self._shape != (0,):
            return f"tensor([], size={self._shape}, {suffix})"
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, {suffix})"

    def __hash__(self) -> int:
        return id(self)

    # -- in-place -------------------------------------------------------------------------

    def fill_(self, value: _Scalar | Tensor) -> Tensor:
        """Set every element to ``value`` (a number or a one-element tensor)."""
        if isinstance(value, Tensor):
            if value._numel != 1:
                raise ValueError(
                    f"fill_ only supports 0-dimension value tensor but got "
                    f"tensor with {value.ndim} dimensions"
                )
            return self.copy_(value)
        if not _is_scalar(value):
            raise TypeError(f"fill_(): expected a number, got {type(value).__name__}")
        if self._numel:
            v = _fill_value(value, self._dtype)
            h = _stream_handle(self._dev)
            if self._dtype._kind == _KIND_FLOATING:
                st = _op_fill(h, self._get_desc(), v, 0)
            else:
                st = _op_fill(h, self._get_desc(), 0.0, int(v))
            if st:
                raise_status(st, "fill_")
        return self

    def zero_(self) -> Tensor:
        """Set every element to zero."""
        if self._numel:
            st = _memset_async(_stream_handle(self._dev), self._data, 0, self.nbytes)
            if st:
                raise_status(st, "zero_")
        return self

    def copy_(
        self,
        src: Tensor | _Scalar | np.ndarray[Any, Any] | Sequence[Any],
        non_blocking: bool = False,
    ) -> Tensor:
        """Copy ``src`` (a Tensor, numpy array or nested sequence / number) into self,
        broadcasting it to self's shape and converting its dtype.

        From host data, the copy is synchronous unless ``non_blocking``: then it is enqueued
        on the current stream (the host array is kept alive until it has run; write to it
        again only after synchronizing). Device copies are always enqueued.
        """
        if not isinstance(src, Tensor):
            h = _stream_handle(self._dev)
            cid = capture_id_of(h, "copy_")
            if (
                type(src) is np.ndarray
                and src.dtype is self._dtype._np
                and src.shape == self._shape
                and src.flags.c_contiguous
            ):
                arr = src  # the common case: nothing to broadcast or convert, captured or not
            else:
                arr = _copy_source(src, self._dtype, self._shape, "copy_", in_place=bool(cid))
            _upload(h, self._data, arr, "copy_", cid, non_blocking)
            return self
        if src._dev != self._dev:
            # numpy() refuses during a capture, which cannot copy between devices
            return self.copy_(src.numpy())
        shape = _broadcast_shapes(self._shape, src._shape)
        if shape != self._shape:
            raise ValueError(
                f"copy_(): source of shape {src._shape} cannot be broadcast to {self._shape}"
            )
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

    def add_(self, other: _Operand, *, alpha: _Scalar = 1) -> Tensor:
        """``self += alpha * other`` in place."""
        # Fast path (a Python number, alpha 1): straight to the kernel library. The dtype
        # kinds are literals (2 floating, 1 integer, asserted at the top), saving lookups.
        tp = type(other)
        if (tp is float or tp is int) and alpha == 1:
            dt = self._dtype
            d = self._desc or self._get_desc()
            if dt._kind == 2:
                try:  # on the current stream, which the helper looks up itself
                    st = _add_scalar_float(self._dev, d, other)
                except OverflowError:  # an int too big for a double: the slow path says so
                    return _binary_(self, other, ADD)
                if st == _NO_CURRENT_STREAM:  # the thread's first use of its streams
                    h = _recorded_stream_handle(self._dev)
                    st = _op_binary_scalar(h, ADD, d, d, other, 0, 0)
            elif tp is int and dt._kind == 1 and dt._min <= other <= dt._max:  # type: ignore[operator]
                st = _op_binary_scalar(_stream_handle(self._dev), ADD, d, d, 0.0, other, 0)
            else:
                return _binary_(self, other, ADD)
            if st:
                raise_status(st, "add_")
            return self
        if alpha == 1:
            return _binary_(self, other, ADD)
        return _binary_(self, _scaled(self, other, alpha), ADD)

    def sub_(self, other: _Operand, *, alpha: _Scalar = 1) -> Tensor:
        """``self -= alpha * other`` in place."""
        if alpha != 1:
            other = _scaled(self, other, alpha)
        return _binary_(self, other, SUB)

    def mul_(self, other: _Operand) -> Tensor:
        """``self *= other`` in place."""
        return _binary_(self, other, MUL)

    def div_(self, other: _Operand) -> Tensor:
        """``self /= other`` in place (true division; integer tensors cannot hold it)."""
        return _binary_(self, other, DIV)

    def relu_(self) -> Tensor:
        """``self = max(self, 0)`` in place."""
        _unary(self, lib.MTIART_UNARY_RELU, "relu", out=self)
        return self

    def record_stream(self, stream: Stream) -> None:
        """Mark the memory as in use by ``stream``: when the tensor is freed, its memory is
        not reused before the work enqueued on ``stream`` up to then is done."""
        if not isinstance(stream, Stream):
            raise TypeError(f"record_stream() expects a Stream, got {type(stream).__name__}")
        if stream.device_index != self._dev:
            raise ValueError(
                f"record_stream(): stream is on mtia:{stream.device_index} but "
                f"the tensor on mtia:{self._dev}"
            )
        if self._storage is not None:
            st = lib.mtiart_record_stream(self._storage.ptr, stream._handle)
            if st:
                raise_status(st, "record_stream")

    # -- out-of-place -----------------------------------------------------------------

    def add(self, other: _Operand, *, alpha: _Scalar = 1) -> Tensor:
        """``self + alpha * other``."""
        if alpha != 1:
            other = _scaled(self, other, alpha)
        return _binary_method(self, other, ADD)

    def sub(self, other: _Operand, *, alpha: _Scalar = 1) -> Tensor:
        """``self - alpha * other``."""
        if alpha != 1:
            other = _scaled(self, other, alpha)
        return _binary_method(self, other, SUB)

    def mul(self, other: _Operand) -> Tensor:
        """``self * other``."""
        return _binary_method(self, other, MUL)

    def div(self, other: _Operand) -> Tensor:
        """``self / other`` (true division: integer operands give float32)."""
        return _binary_method(self, other, DIV)

    def maximum(self, other: Tensor) -> Tensor:
        """Elementwise maximum (NaN-propagating)."""
        return _binary_method(self, other, MAXIMUM)

    def minimum(self, other: Tensor) -> Tensor:
        """Elementwise minimum (NaN-propagating)."""
        return _binary_method(self, other, MINIMUM)

    def __add__(self, other: _Operand) -> Tensor:
        return _binary(self, other, ADD)

    def __radd__(self, other: _Scalar) -> Tensor:
        return _binary(self, other, ADD, True)

    def __sub__(self, other: _Operand) -> Tensor:
        return _binary(self, other, SUB)

    def __rsub__(self, other: _Scalar) -> Tensor:
        return _binary(self, other, SUB, True)

    def __mul__(self, other: _Operand) -> Tensor:
        return _binary(self, other, MUL)

    def __rmul__(self, other: _Scalar) -> Tensor:
        return _binary(self, other, MUL, True)

    def __truediv__(self, other: _Operand) -> Tensor:
        return _binary(self, other, DIV)

    def __rtruediv__(self, other: _Scalar) -> Tensor:
        return _binary(self, other, DIV, True)

    def __iadd__(self, other: _Operand) -> Tensor:
        return self.add_(other)

    def __isub__(self, other: _Operand) -> Tensor:
        return _binary_(self, other, SUB)

    def __imul__(self, other: _Operand) -> Tensor:
        return _binary_(self, other, MUL)

    def __itruediv__(self, other: _Operand) -> Tensor:
        return _binary_(self, other, DIV)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _binary(self, other, EQ)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _binary(self, other, NE)

    # numpy's type stubs say that ndarray > Tensor gives an ndarray, which type checkers take
    # for an unsafe overlap with Tensor.__lt__(ndarray); at run time numpy defers to the
    # Tensor (__array_ufunc__ = None), so both orders give a Tensor.
    def __lt__(self, other: _Operand) -> Tensor:  # type: ignore[misc]
        return _binary(self, other, LT)

    def __le__(self, other: _Operand) -> Tensor:  # type: ignore[misc]
        return _binary(self, other, LE)

    def __gt__(self, other: _Operand) -> Tensor:  # type: ignore[misc]
        return _binary(self, other, GT)

    def __ge__(self, other: _Operand) -> Tensor:  # type: ignore[misc]
        return _binary(self, other, GE)

    def eq(self, other: _Operand) -> Tensor:
        """Elementwise ``self == other`` (a bool tensor)."""
        return _binary_method(self, other, EQ)

    def ne(self, other: _Operand) -> Tensor:
        """Elementwise ``self != other`` (a bool tensor)."""
        return _binary_method(self, other, NE)

    def lt(self, other: _Operand) -> Tensor:
        """Elementwise ``self < other`` (a bool tensor)."""
        return _binary_method(self, other, LT)

    def le(self, other: _Operand) -> Tensor:
        """Elementwise ``self <= other`` (a bool tensor)."""
        return _binary_method(self, other, LE)

    def gt(self, other: _Operand) -> Tensor:
        """Elementwise ``self > other`` (a bool tensor)."""
        return _binary_method(self, other, GT)

    def ge(self, other: _Operand) -> Tensor:
        """Elementwise ``self >= other`` (a bool tensor)."""
        return _binary_method(self, other, GE)

    def __and__(self, other: Tensor | bool) -> Tensor:
        if self._dtype is not bool_ or (isinstance(other, Tensor) and other._dtype is not bool_):
            raise TypeError("& is only supported for bool tensors")
        return _binary(self, other, MUL)

    __rand__ = __and__

    def __or__(self, other: Tensor | bool) -> Tensor:
        if self._dtype is not bool_ or (isinstance(other, Tensor) and other._dtype is not bool_):
            raise TypeError("| is only supported for bool tensors")
        return _binary(self, other, ADD)

    __ror__ = __or__

    def __invert__(self) -> Tensor:
        if self._dtype is not bool_:
            raise TypeError("~ is only supported for bool tensors")
        return _binary(self, False, EQ)

    def __neg__(self) -> Tensor:
        return _unary(self, lib.MTIART_UNARY_NEG, "neg")

    def neg(self) -> Tensor:
        """Elementwise ``-self`` (not for bool tensors)."""
        return _unary(self, lib.MTIART_UNARY_NEG, "neg")

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _unary(self, lib.MTIART_UNARY_ABS, "abs")

    def abs(self) -> Tensor:
        """Elementwise absolute value."""
        return _unary(self, lib.MTIART_UNARY_ABS, "abs")

    def relu(self) -> Tensor:
        """Elementwise ``max(self, 0)``."""
        return _unary(self, lib.MTIART_UNARY_RELU, "relu")

    def exp(self) -> Tensor:
        """Elementwise exponential (integer inputs give float32)."""
        return _unary(self, lib.MTIART_UNARY_EXP, "exp")

    def log(self) -> Tensor:
        """Elementwise natural logarithm (integer inputs give float32)."""
        return _unary(self, lib.MTIART_UNARY_LOG, "log")

    def sqrt(self) -> Tensor:
        """Elementwise square root (integer inputs give float32)."""
        return _unary(self, lib.MTIART_UNARY_SQRT, "sqrt")

    def tanh(self) -> Tensor:
        """Elementwise hyperbolic tangent (integer inputs give float32)."""
        return _unary(self, lib.MTIART_UNARY_TANH, "tanh")

    def sigmoid(self) -> Tensor:
        """Elementwise logistic sigmoid (integer inputs give float32)."""
        return _unary(self, lib.MTIART_UNARY_SIGMOID, "sigmoid")

    def gelu(self, approximate: str = "none") -> Tensor:
        """GELU, as torch's: ``x * Phi(x)`` (Phi the standard normal CDF, computed through
        erfc) with ``approximate="none"``, or the tanh approximation
        ``0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`` with ``"tanh"``. Integer
        inputs give float32."""
        op = _GELU_OPS.get(approximate) if isinstance(approximate, str) else None
        if op is None:
            raise MTIAValueError(
                f"gelu(): approximate must be 'none' or 'tanh', got {approximate!r}",
                lib.MTIART_ERROR_INVALID_VALUE,
            )
        return _unary(self, op, "gelu")

    def clone(self) -> Tensor:
        """A copy in new memory."""
        out = _empty(self._shape, self._dtype, self._dev)
        if self._numel:
            st = _memcpy_async(_stream_handle(self._dev), out._data, self._data, self.nbytes, _D2D)
            if st:
                raise_status(st, "clone")
        return out

    def to(
        self,
        dtype: _DTypeLike | _DeviceLike = None,
        device: _DeviceLike = None,
        copy: bool = False,
    ) -> Tensor:
        """This tensor converted to ``dtype`` and/or moved to ``device`` (``to(device)``
        works too); ``copy=True`` copies even when nothing changes."""
        if isinstance(dtype, (Device, str)) and not (isinstance(dtype, str) and dtype in _BY_NAME):
            dtype, device = None, dtype
        dt = self._dtype if dtype is None else _to_dtype(dtype)
        dev = self._dev if device is None else _device_index(device)
        if dev != self._dev:
            return tensor(self.numpy(), dtype=dt, device=dev)
        out = _cast(self, dt)
        return out.clone() if copy and out is self else out

    def sum(
        self, dim: _Dims = None, keepdim: bool = False, *, dtype: _DTypeLike | None = None
    ) -> Tensor:
        """Sum over all elements or the given dim(s); integer and bool sums are int64."""
        src = self if dtype is None else _cast(self, _to_dtype(dtype))
        out_dt = src._dtype if src._dtype._kind == _KIND_FLOATING else int64
        return _reduce(src, lib.MTIART_REDUCE_SUM, dim, keepdim, out_dt, "sum")

    def mean(
        self, dim: _Dims = None, keepdim: bool = False, *, dtype: _DTypeLike | None = None
    ) -> Tensor:
        """Mean over all elements or the given dim(s) (floating dtypes, as in torch)."""
        src = self if dtype is None else _cast(self, _to_dtype(dtype))
        if src._dtype._kind != _KIND_FLOATING:
            raise RuntimeError(
                f"mean(): could not infer output dtype. Input dtype must be "
                f"floating point, got {src._dtype.name}"
            )
        return _reduce(src, lib.MTIART_REDUCE_MEAN, dim, keepdim, src._dtype, "mean")

    def amax(self, dim: _Dims = None, keepdim: bool = False) -> Tensor:
        """Maximum over all elements or the given dim(s)."""
        return _reduce(self, lib.MTIART_REDUCE_MAX, dim, keepdim, self._dtype, "amax")

    def amin(self, dim: _Dims = None, keepdim: bool = False) -> Tensor:
        """Minimum over all elements or the given dim(s)."""
        return _reduce(self, lib.MTIART_REDUCE_MIN, dim, keepdim, self._dtype, "amin")

    def max(self) -> Tensor:
        """Maximum of all elements (a 0-d tensor)."""
        return _reduce(self, lib.MTIART_REDUCE_MAX, None, False, self._dtype, "max")

    def min(self) -> Tensor:
        """Minimum of all elements (a 0-d tensor)."""
        return _reduce(self, lib.MTIART_REDUCE_MIN, None, False, self._dtype, "min")

    def matmul(self, other: Tensor) -> Tensor:
        """Matrix product with numpy/torch rules for 1-D, 2-D and batched operands."""
        return _matmul(self, other)

    def __matmul__(self, other: Tensor | np.ndarray[Any, Any]) -> Tensor:
        if isinstance(other, np.ndarray):
            other = _from_host(other, None, self._dev, "matmul")
        elif not isinstance(other, Tensor):
            return NotImplemented
        return _matmul(self, other)

    def __rmatmul__(self, other: np.ndarray[Any, Any]) -> Tensor:
        if isinstance(other, np.ndarray):
            return _matmul(_from_host(other, None, self._dev, "matmul"), self)
        return NotImplemented

    def softmax(self, dim: int) -> Tensor:
        """Softmax along ``dim`` (integer inputs are computed in float32)."""
        x = self if self._dtype._kind == _KIND_FLOATING else _cast(self, float32)
        d = _norm_dim(dim, len(self._shape))
        h = _stream_handle(self._dev)
        out = _empty(self._shape, x._dtype, self._dev, h)
        if not self._shape:
            return out.fill_(1.0)
        st = _op_softmax(h, out._get_desc(), x._get_desc(), d)
        if st:
            raise_status(st, "softmax")
        return out

    # -- views ------------------------------------------------------------------------

    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        """A view with another shape (one dimension may be -1); shares storage."""
        return _view(self, _infer_shape(shape, self._numel))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """A view with dimensions ``start_dim`` to ``end_dim`` merged into one (all of them by
        default: 1-D); shares storage."""
        nd = len(self._shape)
        if nd == 0:  # a scalar flattens to one element; its dims are 0 and -1
            _norm_dim(start_dim, 0)
            _norm_dim(end_dim, 0)
            return _view(self, (1,))
        lo, hi = _norm_dim(start_dim, nd), _norm_dim(end_dim, nd)
        if lo > hi:
            raise ValueError("flatten() has invalid args: start_dim cannot come after end_dim")
        merged = _numel(self._shape[lo : hi + 1])
        return _view(self, (*self._shape[:lo], merged, *self._shape[hi + 1 :]))

    def unsqueeze(self, dim: int) -> Tensor:
        """A view with a dimension of size 1 inserted at ``dim``; shares storage."""
        d = _norm_dim(dim, len(self._shape) + 1)
        return self.reshape((*self._shape[:d], 1, *self._shape[d:]))

    def squeeze(self, dim: int | None = None) -> Tensor:
        """A view without the size-1 dimensions (or without ``dim`` if that has size 1);
        shares storage."""
        if dim is None:
            return _view(self, tuple(s for s in self._shape if s != 1))
        d = _norm_dim(dim, len(self._shape))
        if not self._shape or self._shape[d] != 1:
            return _view(self, self._shape)
        return _view(self, self._shape[:d] + self._shape[d + 1 :])

    def expand_copy(self, *shape: int | Sequence[int]) -> Tensor:
        """A new contiguous tensor holding self broadcast to ``shape``."""
        target = _parse_size(shape)
        out = _empty(target, self._dtype, self._dev)
        return out.copy_(self)

    def __getitem__(self, index: _Index) -> Tensor:
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
                    raise ValueError("only unit-step slices are supported (tensors are contiguous)")
                if k != len(index) - 1:
                    raise ValueError("a slice must be the last index")
                stop = max(start, stop)
                t = _view(t, (stop - start, *t._shape[1:]), start * inner)
            elif hasattr(idx, "__index__") and not isinstance(idx, (bool, Tensor)):
                i = operator.index(idx)
                n = t._shape[0]
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for dimension 0 with size {n}")
                i += n if i < 0 else 0
                t = _view(t, t._shape[1:], i * inner)
            else:
                raise TypeError(
                    f"unsupported index {idx!r}: only ints and unit-step slices "
                    f"of the leading dimensions"
                )
        return t

    def __setitem__(
        self, index: _Index, value: Tensor | _Scalar | np.ndarray[Any, Any] | Sequence[Any]
    ) -> None:
        target = self[index]
        if _is_scalar(value):
            target.fill_(value)
        else:
            target.copy_(value)

    def __iter__(self) -> Iterator[Tensor]:
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self._shape[0]):
            yield self[i]

    def __reduce__(self) -> tuple[Any, ...]:
        return (tensor, (self.numpy(),), None)

    # -- dtype conversions, named as torch names them ---------------------------------
    # Last in the class: after these, the names float, int and bool in the class body
    # would be the methods, not the builtins (type checkers read annotations there).

    def float(self) -> Tensor:
        """This tensor as float32 (itself if it is)."""
        return _cast(self, float32)

    def double(self) -> Tensor:
        """This tensor as float64 (itself if it is)."""
        return _cast(self, float64)

    def int(self) -> Tensor:
        """This tensor as int32 (itself if it is)."""
        return _cast(self, int32)

    def long(self) -> Tensor:
        """This tensor as int64 (itself if it is)."""
        return _cast(self, int64)

    def bool(self) -> Tensor:
        """This tensor as bool (itself if it is)."""
        return _cast(self, bool_)


def _scaled(self: Tensor, other: _Operand, alpha: _Scalar) -> _Operand:
    """``alpha * other`` for add/sub's alpha argument (torch's rules on alpha)."""
    if not _is_scalar(alpha):
        raise TypeError(f"alpha must be a number, got {type(alpha).__name__}")
    if isinstance(alpha, (float, np.floating)) and self._dtype._kind != _KIND_FLOATING:
        raise TypeError(
            "For integral input tensors, argument alpha must not be a floating point number."
        )
    if isinstance(other, Tensor):
        return _binary(other, alpha, MUL)
    if _is_scalar(other):
        return other * alpha
    return _binary(_from_host(other, None, self._dev, "alpha * other"), alpha, MUL)


def tensor(data: Any, *, dtype: _DTypeLike | None = None, device: _DeviceLike = None) -> Tensor:
    """A new tensor holding a copy of ``data`` (numbers, nested sequences, numpy arrays or
    tensors). Python floats give float32, ints int64, bools bool; numpy arrays keep their
    dtype.

    While the current stream captures, the copy is a graph node that reads ``data`` at
    every replay when it is an array (or buffer) the caller holds, which the graph keeps
    alive; numbers and sequences are read once, at capture. See the README's "Graph
    semantics".
    """
    if isinstance(data, Tensor):
        dt, dev = _resolve(dtype, device, like=data)
        return data.to(dtype=dt, device=dev, copy=True)
    return _from_host(
        data, None if dtype is None else _to_dtype(dtype), _device_index(device), "tensor"
    )


def _from_host(data: Any, dt: dtype | None, dev: int, what: str) -> Tensor:
    """A new tensor on device ``dev`` holding host ``data`` (of dtype ``dt``, else inferred);
    ``what`` names the call in errors. In a capture, arrays are read in place at every replay
    (``_storage._host_array``)."""
    h = _stream_handle(dev)
    cid = capture_id_of(h)
    arr, dt = _host_array(data, dt, what, in_place=bool(cid))
    out = _empty(arr.shape, dt, dev)
    _upload(h, out._data, arr, what, cid)
    return out
