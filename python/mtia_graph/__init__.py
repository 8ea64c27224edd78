"""mtia_graph: torch.mtia-style streams, memory, graph capture/replay and a small device
tensor, over libmtiart (an accelerator runtime on CPU threads) bound with cffi.

The names follow ``torch.mtia`` (the runtime surface), ``torch.mtia.mtia_graph``
(:class:`MTIAGraph`, :func:`graph`, :func:`graph_pool_handle`) and ``torch`` (tensor
factories and dtypes).

The package's modules form layers: each module imports only modules listed before it
(a test checks this), so every module can be read, and imported, knowing only those::

    _mtiart     the cffi extension: ffi and lib, generated from include/mtiart.h
    _C          the binding, the exception classes, statuses turned into exceptions
    callbacks   the registry of Python callables the runtime calls back
    device      devices and each thread's current device
    streams     Stream, Event, each thread's current stream of every device
    memory      allocator statistics, snapshots, memory history, out-of-memory observers
    dtypes      dtype, the five dtypes, type promotion
    _shapes     size arguments, broadcasting, dimensions
    _storage    device allocations, copies between host and device
    tensor      Tensor and its operations, tensor()
    factories   tensor factories and functions (zeros, arange, where, matmul, ...)
    checks      graph checks: races between unordered nodes, shared-pool replay order
    graphs      MTIAGraph, graph, graph_pool_handle, while_, if_
    kernels     user kernels: compiled (load_kernel) and Python (@kernel)
    debug       debugging graphs: compare_schedules (replays in several orders), bisect
    profiler    timeline traces of the workers' operations (trace) and their picture (view)

Programs built on the package import it as its users do, and no module imports them::

    __main__    python -m mtia_graph: capture an MLP step once, replay it, time both
    bench       python -m mtia_graph.bench: the benchmark suite
    inspect     python -m mtia_graph.inspect: print a graph saved with MTIAGraph.save
    memcheck    python -m mtia_graph.memcheck: run a script under valgrind's memcheck
"""

from __future__ import annotations

from . import debug as debug  # mtia_graph.debug.compare_schedules, ... (a submodule)
from ._C import (
    CaptureError,
    InvalidHandleError,
    KernelError,
    MTIAError,
    MTIAValueError,
    OutOfMemoryError,
)
from .checks import (
    PoolOrderWarning,
    Race,
    RaceError,
    RaceNode,
    RaceWarning,
    set_pool_order_check,
)
from .device import (
    Device,
    DeviceProperties,
    current_device,
    device,
    device_count,
    get_device_capability,
    get_device_properties,
    init,
    is_available,
    is_initialized,
    set_device,
)
from .dtypes import (
    bool_ as _bool,
    can_cast,
    dtype,
    float32,
    float64,
    get_default_dtype,
    int32,
    int64,
    promote_types,
)
from .factories import (
    arange,
    empty,
    empty_like,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    matmul,
    ones,
    ones_like,
    where,
    zeros,
    zeros_like,
)
from .graphs import MTIAGraph, graph, graph_pool_handle, if_, set_graph_fusion, while_
from .kernels import Kernel, PythonKernel, kernel, load_kernel
from .memory import (
    attach_out_of_memory_observer,
    detach_out_of_memory_observer,
    empty_cache,
    max_memory_allocated,
    max_memory_reserved,
    mem_get_info,
    memory_allocated,
    memory_reserved,
    memory_snapshot,
    memory_stats,
    record_memory_history,
    reset_accumulated_memory_stats,
    reset_peak_memory_stats,
    snapshot,
)
from .streams import (
    Event,
    Stream,
    StreamContext,
    current_stream,
    default_stream,
    is_current_stream_capturing,
    launch_host_func,
    set_stream,
    stream,
    synchronize,
)
from .tensor import Tensor, result_type, tensor

__version__ = "0.2.0"

__all__ = [  # noqa: RUF022 - grouped by topic
    # errors
    "MTIAError",
    "OutOfMemoryError",
    "InvalidHandleError",
    "KernelError",
    "CaptureError",
    "MTIAValueError",
    # devices
    "Device",
    "DeviceProperties",
    "is_available",
    "init",
    "is_initialized",
    "device_count",
    "current_device",
    "set_device",
    "device",
    "get_device_properties",
    "get_device_capability",
    # streams and events
    "Stream",
    "Event",
    "StreamContext",
    "stream",
    "current_stream",
    "default_stream",
    "set_stream",
    "synchronize",
    "is_current_stream_capturing",
    "launch_host_func",
    # memory
    "empty_cache",
    "memory_stats",
    "memory_allocated",
    "max_memory_allocated",
    "memory_reserved",
    "max_memory_reserved",
    "reset_peak_memory_stats",
    "reset_accumulated_memory_stats",
    "snapshot",
    "memory_snapshot",
    "mem_get_info",
    "record_memory_history",
    "attach_out_of_memory_observer",
    "detach_out_of_memory_observer",
    # graphs
    "MTIAGraph",
    "graph",
    "graph_pool_handle",
    "set_graph_fusion",
    "while_",
    "if_",
    # graph checks
    "Race",
    "RaceNode",
    "RaceWarning",
    "RaceError",
    "PoolOrderWarning",
    "set_pool_order_check",
    # tensors
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
    "empty_like",
    "zeros_like",
    "ones_like",
    "full_like",
    "where",
    "matmul",
    "from_dlpack",
    # user kernels
    "Kernel",
    "PythonKernel",
    "load_kernel",
    "kernel",
]

# torch's dtype names that are also Python builtins, bound last so that no code here runs
# with a builtin shadowed. Only "bool" is in __all__ (torch exports it); the short aliases
# stay out of it so that `import *` cannot shadow float and int.
bool = _bool  # noqa: A001
float = float32  # noqa: A001
double = float64
int = int32  # noqa: A001
long = int64
