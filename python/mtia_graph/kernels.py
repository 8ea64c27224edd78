"""User kernels: compiled C kernels loaded from shared libraries, and Python kernels.

* :func:`load_kernel` looks up an ``mtiart_kernel_fn`` in a shared library; calling the
  returned :class:`Kernel` launches it with ``mtiart_launch_kernel``.
* :func:`kernel` turns a Python function over numpy arrays into a launchable kernel. It
  is a real runtime kernel (the ``_mtia_py_kernel`` trampoline declared in
  ``_cdef_extra.h``), not a host function, so the runtime sees its buffer arguments (for
  graph dependencies and dumps) exactly as it sees a C kernel's.

Both kinds are enqueued on the current stream (or ``stream=``), in order with all other
work on it, and are recorded into a graph when that stream captures; replaying the graph
runs them again on the same buffers. A failing kernel marks the stream with a sticky
error that surfaces as :class:`~mtia_graph.KernelError` at the next synchronization (with
the Python traceback for Python kernels); the stream keeps working afterwards.
"""

from __future__ import annotations

import functools
import os
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._C import MTIAValueError, check, ffi, lib, raise_status, report_python_failure
from .callbacks import (
    HostCallback,
    new_token,
    register_callback,
    released,
    take_callback,
    unregister_callback,
)
from .device import current_device
from .streams import Stream, _stream_handle
from .tensor import Tensor

__all__ = ["Kernel", "PythonKernel", "kernel", "load_kernel"]

_ACCESS = {
    "r": lib.MTIART_ARG_BUFFER_IN,
    "w": lib.MTIART_ARG_BUFFER_OUT,
    "rw": lib.MTIART_ARG_BUFFER_INOUT,
}
_VALUE = lib.MTIART_ARG_VALUE
_MAX_VALUE_BYTES = 4096  # mtiart_arg.size limit for VALUE arguments
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

AccessSpec = Sequence[str] | None


def _access_kinds(access: AccessSpec, n_tensors: int) -> list[int]:
    """One MTIART_ARG_BUFFER_* kind per tensor argument ("rw" when not given)."""
    if access is None:
        return [lib.MTIART_ARG_BUFFER_INOUT] * n_tensors
    if isinstance(access, str):
        # a bare string would be split into characters; demand a sequence for clarity
        raise TypeError('access must be a sequence of "r"/"w"/"rw", one per tensor argument')
    access = list(access)
    if len(access) != n_tensors:
        raise ValueError(
            f"access has {len(access)} entries but the call has {n_tensors} tensor arguments"
        )
    kinds = []
    for a in access:
        try:
            kinds.append(_ACCESS[a])
        except (KeyError, TypeError):
            raise ValueError(f'access entries must be "r", "w" or "rw", got {a!r}') from None
    return kinds


def _value_bytes(x: Any) -> bytes:
    """The bytes of a scalar VALUE argument as a C kernel receives them."""
    if isinstance(x, (bool, np.bool_)):
        return bytes((1 if x else 0,))  # C kernels read a uint8_t
    if isinstance(x, int):
        if not _INT64_MIN <= x <= _INT64_MAX:
            raise MTIAValueError(
                f"int argument {x} does not fit in int64_t (-2**63 to 2**63 - 1)",
                lib.MTIART_ERROR_INVALID_VALUE,
            )
        return x.to_bytes(8, sys.byteorder, signed=True)  # int64_t
    if isinstance(x, float):
        return struct.pack("=d", x)  # double
    if isinstance(x, np.generic):
        return x.tobytes()  # numpy scalars keep their dtype (np.float32 -> 4 bytes)
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(
        f"kernel arguments must be Tensors, numbers, numpy scalars or bytes; got {type(x).__name__}"
    )


def _resolve_stream(tensors: Sequence[Tensor], stream: Stream | None) -> tuple[Any, int]:
    """(stream handle, device index) for a launch, checking tensors' devices."""
    if stream is not None:
        if not isinstance(stream, Stream):
            raise TypeError(f"stream must be an mtia_graph.Stream, got {type(stream).__name__}")
        handle, dev = stream._handle, stream.device_index
    else:
        dev = tensors[0]._dev if tensors else current_device()
        handle = _stream_handle(dev)
    for t in tensors:
        if t._dev != dev:
            raise RuntimeError(f"kernel launched on mtia:{dev} got a tensor on mtia:{t._dev}")
    return handle, dev


class _ArgBuilder:
    """Builds the ``mtiart_arg`` array of one launch.

    The cffi buffers are referenced from ``keep`` only until the launch returns:
    ``mtiart_launch_kernel`` copies VALUE bytes and buffer descriptions at the call (and
    into the graph node when capturing), so nothing has to outlive the call.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[int, Any, int, int]] = []  # kind, value cdata, size, extent
        self.keep: list[Any] = []

    def value(self, data: bytes) -> None:
        if not 1 <= len(data) <= _MAX_VALUE_BYTES:
            raise ValueError(
                f"value arguments must be 1..{_MAX_VALUE_BYTES} bytes, got {len(data)}"
            )
        buf = ffi.new("char[]", data)
        self.keep.append(buf)
        self.entries.append((_VALUE, buf, len(data), 0))

    def tensor(self, t: Tensor, kind: int) -> None:
        if t._numel == 0:
            # An empty tensor has no allocation, and the runtime only accepts buffers inside
            # live allocations. A VALUE argument holding a NULL pointer looks the same to
            # the kernel (*(void **)args[i] == NULL) and touches no memory.
            self.value(bytes(ffi.sizeof("void *")))
            return
        self.entries.append((kind, t._data, 0, t.nbytes))

    def build(self) -> Any:
        arr = ffi.new("mtiart_arg[]", max(1, len(self.entries)))
        for i, (kind, value, size, extent) in enumerate(self.entries):
            a = arr[i]
            a.kind = kind
            a.size = size
            a.value = value
            a.extent = extent
        self.keep.append(arr)
        return arr


def _check_blocks(blocks: Any) -> int:
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)):
        raise TypeError(f"blocks must be an int, got {type(blocks).__name__}")
    if not 1 <= blocks <= 0xFFFFFFFF:
        raise ValueError(f"blocks must be in [1, 2**32), got {blocks}")
    return int(blocks)


class Kernel:
    """A compiled kernel (``mtiart_kernel_fn``) loaded with :func:`load_kernel`.

    Attributes:
        name: the symbol name.
        path: the shared library it came from.
    """

    __slots__ = ("_fn", "name", "path")

    def __init__(self, fn: Any, name: str, path: str) -> None:
        self._fn = fn
        self.name = name
        self.path = path

    def __call__(
        self,
        *args: Any,
        blocks: int = 1,
        access: AccessSpec = None,
        stream: Stream | None = None,
    ) -> None:
        """Enqueue the kernel on ``stream`` (default: the current stream of the first
        tensor argument's device, else of the current device).

        Args:
            *args: kernel arguments in order. A :class:`~mtia_graph.Tensor` becomes a
                buffer argument (the kernel reads ``*(void **)args[i]``, the tensor's data
                pointer, and may touch ``tensor.nbytes`` bytes; an empty tensor arrives as
                NULL). Scalars become VALUE arguments: ``bool`` -> ``uint8_t``, ``int`` ->
                ``int64_t``, ``float`` -> ``double``, numpy scalars keep their dtype,
                ``bytes`` are passed as raw bytes (1..4096).
            blocks: number of blocks; the kernel runs once per block index, possibly
                concurrently.
            access: optional ``"r"``/``"w"``/``"rw"`` per tensor argument (default
                ``"rw"``): tells the runtime how each buffer is used.
            stream: the stream to launch on.

        Asynchronous: returns once enqueued; errors from the kernel surface at the next
        synchronization as :class:`~mtia_graph.KernelError`. During capture the launch
        is recorded into the graph (VALUE arguments are copied at capture time).
        """
        blocks = _check_blocks(blocks)
        tensors = [a for a in args if isinstance(a, Tensor)]
        kinds = iter(_access_kinds(access, len(tensors)))
        handle, _ = _resolve_stream(tensors, stream)
        b = _ArgBuilder()
        for a in args:
            if isinstance(a, Tensor):
                b.tensor(a, next(kinds))
            else:
                b.value(_value_bytes(a))
        c_args = b.build()
        check(
            lib.mtiart_launch_kernel(handle, self._fn, blocks, c_args, len(b.entries)),
            f"launch kernel {self.name!r}",
        )

    def __repr__(self) -> str:
        return f"<mtia_graph.Kernel {self.name!r} from {self.path!r}>"


def load_kernel(path: str | os.PathLike[str], name: str) -> Kernel:
    """Load kernel ``name`` (an ``mtiart_kernel_fn`` symbol) from the shared library at
    ``path`` (dlopen + dlsym; the library stays loaded for the life of the process).

    Raises :class:`~mtia_graph.MTIAValueError` when the library or the symbol cannot be
    loaded, or when either contains a NUL character (C would see a shorter name).
    """
    path = os.fspath(path)
    if not isinstance(name, str) or not name:
        raise TypeError("kernel name must be a non-empty str")
    raw_path = os.fsencode(path)
    if b"\0" in raw_path or "\0" in name:
        raise MTIAValueError(
            f"load_kernel(): the library path and the symbol name must not contain NUL "
            f"characters (got {path!r}, {name!r})",
            lib.MTIART_ERROR_INVALID_VALUE,
        )
    out = ffi.new("mtiart_kernel_fn *")
    check(
        lib.mtiart_kernel_load(raw_path, name.encode(), out),
        f"load kernel {name!r} from {path!r}",
    )
    return Kernel(out[0], name, os.fsdecode(path))


# ---------------------------------------------------------------------------------------
# Python kernels
# ---------------------------------------------------------------------------------------


class _TensorSlot:
    """How a tensor argument is presented to a Python kernel (layout, fixed at launch)."""

    __slots__ = ("dtype", "nbytes", "shape", "writable")

    def __init__(self, t: Tensor, writable: bool) -> None:
        self.dtype = t._dtype._np
        self.shape = t._shape
        self.nbytes = t.nbytes
        self.writable = writable


class _PyKernelLaunch(HostCallback):
    """One launch of a Python kernel: the registry entry that the uint64 key names.

    Registered through :func:`mtia_graph.callbacks.register_callback`, like a host function: a
    one-shot entry for an eager launch, kept by the graph (capture keepalive) when the
    launch is captured, since every replay runs it again.
    """

    __slots__ = ("layout", "name")

    def __init__(self, fn: Callable[..., Any], token: int, name: str, layout: list[Any]) -> None:
        super().__init__(fn, token)
        self.name = name
        self.layout = layout  # _TensorSlot for tensors (buffer args, in order), else value


_named = False


@ffi.def_extern()
def _mtia_py_kernel(args: Any, block: int, num_blocks: int) -> int:
    # Runs on a device worker thread; cffi takes the GIL around it.
    what = "kernel"
    try:
        token = int(ffi.cast("uint64_t *", args[0])[0])
        entry = take_callback(token)
        if not isinstance(entry, _PyKernelLaunch):
            return released("kernel", token)
        what = f"kernel {entry.name!r}"
        values = []
        i = 1
        for item in entry.layout:
            if isinstance(item, _TensorSlot):
                ptr = ffi.cast("char **", args[i])[0]
                i += 1
                if item.nbytes:
                    arr = np.frombuffer(ffi.buffer(ptr, item.nbytes), item.dtype)
                    arr = arr.reshape(item.shape)
                else:
                    arr = np.empty(item.shape, item.dtype)
                if not item.writable:
                    arr.flags.writeable = False
                values.append(arr)
            else:
                values.append(item)
        entry.fn(*values)
    except BaseException:  # noqa: BLE001 - everything must become a stream error
        return report_python_failure(what)
    return 0


class PythonKernel:
    """A Python function launched as a runtime kernel (made by :func:`kernel`).

    Calling it enqueues one launch; see :meth:`__call__`. The undecorated function is
    available as ``__wrapped__``.
    """

    def __init__(self, fn: Callable[..., Any], access: AccessSpec = None) -> None:
        if not callable(fn):
            raise TypeError(f"kernel expects a callable, got {type(fn).__name__}")
        self.__wrapped__ = fn
        self._access = None if access is None else tuple(access)
        self.name = getattr(fn, "__qualname__", None) or repr(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, access: AccessSpec = None, stream: Stream | None = None) -> None:
        """Enqueue ``fn(*args)`` on ``stream`` (default: the current stream of the first
        tensor argument's device, else of the current device).

        Each :class:`~mtia_graph.Tensor` argument reaches the function as a zero-copy
        numpy array over the device memory, with the tensor's shape and dtype; it is
        read-only when its access is ``"r"`` (``access`` per tensor argument, or the one
        given to the decorator, default ``"rw"``). Other arguments are passed unchanged;
        they are stored at launch, so a captured graph replays with the values of
        capture time. The arrays are only valid during the call: do not keep them.

        The function runs as one block on a device worker, in stream order; it must not
        call into the runtime (no launches, no synchronization). If it raises, the
        stream gets a sticky :class:`~mtia_graph.KernelError` carrying the traceback,
        reported at the next synchronization.
        """
        global _named
        tensors = [a for a in args if isinstance(a, Tensor)]
        kinds = _access_kinds(access if access is not None else self._access, len(tensors))
        handle, _ = _resolve_stream(tensors, stream)
        if not _named:
            # every Python kernel shares one C entry point; name it for graph dumps
            check(lib.mtiart_kernel_set_name(lib._mtia_py_kernel, b"mtia_graph.python"))
            _named = True

        layout: list[Any] = []
        b = _ArgBuilder()
        token = new_token()
        b.value(np.uint64(token).tobytes())  # args[0]: the registry key
        kind_iter = iter(kinds)
        for a in args:
            if isinstance(a, Tensor):
                kind = next(kind_iter)
                layout.append(_TensorSlot(a, kind != lib.MTIART_ARG_BUFFER_IN))
                b.tensor(a, kind)  # a buffer arg, so the runtime tracks the memory
            else:
                layout.append(a)
        c_args = b.build()
        entry = _PyKernelLaunch(self.__wrapped__, token, self.name, layout)
        cid = register_callback(handle, entry)
        status = lib.mtiart_launch_kernel(handle, lib._mtia_py_kernel, 1, c_args, len(b.entries))
        if status < 0:
            unregister_callback(entry, cid)
            raise_status(status, f"launch kernel {self.name!r}")

    def __repr__(self) -> str:
        return f"<mtia_graph.PythonKernel {self.name}>"


def kernel(fn: Callable[..., Any] | None = None, *, access: AccessSpec = None) -> Any:
    """Decorator: make a Python function over numpy arrays a launchable kernel.

    ``@kernel`` or ``@kernel(access=("r", "w"))`` (default access per tensor argument;
    a call can override it). Calling the result, e.g. ``kf(x, out, 3.0)``, enqueues
    ``fn`` on the current stream with numpy views of the tensors (see
    :meth:`PythonKernel.__call__`); the launch is captured into graphs and replayed.

    Example::

        @mtia_graph.kernel
        def axpy(x, y, a):
            y += a * x

        axpy(x, y, 2.0)      # asynchronous, ordered with the other work on the stream
    """
    if fn is None:
        return lambda f: PythonKernel(f, access)
    return PythonKernel(fn, access)
