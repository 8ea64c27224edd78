"""Debugging captured graphs: find the dependency a graph lacks by replaying it in several
orders (:func:`compare_schedules`), and the first node whose replay computes something
else than the eager run (:func:`bisect`).

A graph whose outputs depend on the order the device runs its independent operations in
lacks an edge (usually a forgotten ``wait_stream``): its replays are right or wrong by
luck. :meth:`MTIAGraph.replay` can run the operations one at a time in a chosen valid
order; :func:`compare_schedules` replays with the serial order, the reverse one and
seeded random ones and reports the first output that differs.
"""

from __future__ import annotations

import gc
import importlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import _storage, factories, kernels
from ._C import check, ffi, lib
from .dtypes import _BY_NP, _DTYPES
from .graphs import MTIAGraph, graph
from .streams import _stream_handle, synchronize
from .tensor import Tensor

__all__ = ["NodeDivergence", "ScheduleDifference", "bisect", "compare_schedules"]


@dataclass(frozen=True)
class ScheduleDifference:
    """An output of a graph that differs between two replay schedules."""

    output: int
    """Index of the output (in the ``outputs`` given) that differs."""
    schedule: str
    """The schedule that gave another result than ``"serial"``: ``"reverse"`` or
    ``"random"``."""
    seed: int
    """The random schedule's seed (replay with it to see the difference again)."""
    index: tuple[int, ...]
    """The first element that differs."""
    expected: float
    """Its value in the serial replay."""
    got: float
    """Its value in this schedule's replay."""
    max_abs_diff: float
    """The largest absolute difference over the output."""

    def __str__(self) -> str:
        which = (
            f"random schedule (seed {self.seed})"
            if self.schedule == "random"
            else (f"{self.schedule} schedule")
        )
        return (
            f"output {self.output} differs between the serial and the {which}: element "
            f"{list(self.index)} is {self.got!r} instead of {self.expected!r} (max abs "
            f"difference {self.max_abs_diff:g}); the graph lacks a dependency between "
            f"operations that touch it"
        )


def _first_difference(
    want: np.ndarray, got: np.ndarray, atol: float = 0.0
) -> tuple[tuple[int, ...], float, float, float] | None:
    """Where ``got`` first differs from ``want`` by more than ``atol`` (NaN equals NaN):
    the element's index, both values and the largest absolute difference; None if
    nowhere."""
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    differs = got != want if atol == 0 else diff > atol
    if want.dtype.kind == "f":
        nan_got, nan_want = np.isnan(got), np.isnan(want)
        differs = (differs | (nan_got != nan_want)) & ~(nan_got & nan_want)
    if not differs.any():
        return None
    first = tuple(int(i) for i in np.argwhere(differs)[0])
    return first, want[first].item(), got[first].item(), float(np.nanmax(diff))


def _snapshot(outputs: Sequence[Tensor]) -> list[np.ndarray]:
    synchronize()
    return [np.array(t.numpy(), copy=True) for t in outputs]


def compare_schedules(
    g: MTIAGraph, outputs: Sequence[Tensor], runs: int = 8, seed: int = 0
) -> ScheduleDifference | None:
    """Replay ``g`` in several schedules and report the first output that differs.

    The reference is a ``"serial"`` replay; then ``"reverse"`` and ``runs`` ``"random"``
    replays (seeds ``seed``, ``seed + 1``, ...) are compared with it, output by output
    (``outputs``: tensors the graph writes). Returns None when every schedule gives the
    same outputs. The graph must compute the same outputs at every replay (reset what it
    accumulates into); each replay is waited for. The outputs hold the last replay's
    results afterwards.
    """
    if not isinstance(g, MTIAGraph):
        raise TypeError(f"compare_schedules() expects an MTIAGraph, got {type(g).__name__}")
    outputs = list(outputs)
    if not all(isinstance(t, Tensor) for t in outputs):
        raise TypeError("compare_schedules() expects a sequence of Tensors as outputs")
    if runs < 0:
        raise ValueError(f"runs must be >= 0, got {runs}")
    g.replay(schedule="serial")
    expected = _snapshot(outputs)
    trials = [("reverse", 0)] + [("random", seed + i) for i in range(runs)]
    for schedule, trial_seed in trials:
        g.replay(schedule=schedule, seed=trial_seed)
        for k, got in enumerate(_snapshot(outputs)):
            found = _first_difference(expected[k], got)
            if found is not None:
                return ScheduleDifference(k, schedule, trial_seed, *found)
    return None


# --------------------------------------------------------------------------- bisect

# Node kinds whose effect an eager operation reproduces one for one.
_OP_KINDS = (lib.MTIART_NODE_KERNEL, lib.MTIART_NODE_MEMCPY, lib.MTIART_NODE_FILL)
# Node kinds that change memory but have no eager counterpart to compare with. The other
# kinds (event records and waits, empty and memory nodes) write no data.
_NOT_COMPARED = {
    lib.MTIART_NODE_HOST: "host function",
    lib.MTIART_NODE_CHILD_GRAPH: "child graph",
    lib.MTIART_NODE_CONDITIONAL: "conditional",
}
_WRITES = lib.MTIART_ARG_BUFFER_OUT
_READS = lib.MTIART_ARG_BUFFER_IN


@dataclass(frozen=True)
class _Buffer:
    address: int
    nbytes: int
    access: int


@dataclass(frozen=True)
class _Node:
    kind: int
    name: str
    buffers: tuple[_Buffer, ...]

    @property
    def written(self) -> list[_Buffer]:
        return [b for b in self.buffers if b.access & _WRITES]


def _nodes(graph: Any) -> list[_Node]:
    """The top-level nodes of ``graph``."""
    count = ffi.new("size_t *")
    check(lib.mtiart_graph_get_node_count(graph, count), "bisect")
    info = ffi.new("mtiart_node_info *")
    use = ffi.new("mtiart_buffer_use *")
    nodes = []
    for node in range(int(count[0])):
        check(lib.mtiart_graph_get_node_info(graph, node, info), "bisect")
        buffers = []
        for i in range(int(info.num_buffers)):
            check(lib.mtiart_graph_get_node_buffer(graph, node, i, use), "bisect")
            buffers.append(_Buffer(int(use.address), int(use.bytes), int(use.access)))
        name = ffi.string(info.name).decode(errors="replace")
        nodes.append(_Node(int(info.kind), name, tuple(buffers)))
    return nodes


def _read(address: int, nbytes: int) -> bytes:
    """The bytes of device memory at ``address`` (device memory is host-addressable; the
    caller has waited for the work that writes it)."""
    return bytes(ffi.buffer(ffi.cast("char *", address), nbytes))


@dataclass(frozen=True)
class _Layout:
    """What a buffer holds, where the eager run could tell (a tensor there)."""

    np_dtype: np.dtype[Any]
    shape: tuple[int, ...]


@dataclass
class _EagerOp:
    """One node's worth of an eager operation: what it is, and what it wrote."""

    node: _Node
    written: list[bytes]
    layouts: dict[int, _Layout]  # by buffer address


def _desc_layouts(args: Sequence[Any], layouts: dict[int, _Layout]) -> None:
    for a in args:
        if isinstance(a, ffi.CData) and ffi.typeof(a) in _DESC_TYPES:
            shape = tuple(int(a.shape[i]) for i in range(int(a.ndim)))
            np_dtype = _NP_BY_CODE.get(int(a.dtype))
            if np_dtype is not None:
                layouts[int(ffi.cast("uintptr_t", a.data))] = _Layout(np_dtype, shape)


def _tensor_layouts(addresses: set[int], layouts: dict[int, _Layout]) -> None:
    """Layouts of the live tensors that start at ``addresses`` (for kernels' buffers, which
    carry no dtype)."""
    for obj in gc.get_objects():
        if type(obj) is Tensor and obj.numel():
            address = obj.data_ptr()
            if address in addresses and address not in layouts:
                layouts[address] = _Layout(obj.dtype._np, tuple(obj.shape))


_DESC_TYPES = (ffi.typeof("mtiart_tensor_desc *"), ffi.typeof("const mtiart_tensor_desc *"))
_NP_BY_CODE = {d._code: d._np for d in _DTYPES}
# The runtime calls that enqueue device work on the stream that is their first argument.
_ENQUEUE = frozenset(
    [name for name in dir(lib) if name.startswith("mtiart_op_")]
    + [
        "mtiart_launch_kernel",
        "mtiart_launch_kernel_described",
        "mtiart_memset_async",
        "mtiart_memcpy_async",
    ]
)


# The modules that enqueue device work. The package re-exports the function tensor() under
# the tensor module's name, so that module is looked up as a module.
_TRACED_MODULES = (
    importlib.import_module(".tensor", __package__),
    factories,
    kernels,
    _storage,
)


class _EagerTrace:
    """While active, every operation the package enqueues runs as it would eagerly, one at
    a time, and its written buffers are copied as it completes.

    Each call is captured alone (relaxed mode) and its one-node graph launched at once and
    waited for: the capture tells which buffers the call writes, whatever its signature,
    and the launch runs exactly what the call would have run. Blocking copies to the
    device (``tensor(...)``) are recorded as the copy node a capture makes of them. The
    package's module-level references to these calls are replaced meanwhile, so work
    other threads enqueue through the package is traced too (and serialized).
    """

    def __init__(self) -> None:
        self.ops: list[_EagerOp] = []
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> _EagerTrace:
        for module in _TRACED_MODULES:
            for name, value in list(vars(module).items()):
                if value is lib:
                    self._patch(module, name, _TracedLib(self))
                elif getattr(value, "__name__", None) in _ENQUEUE:
                    self._patch(module, name, self._traced(value))
                elif getattr(value, "__name__", None) == "mtiart_memcpy_timeout":
                    self._patch(module, name, self._traced_blocking_copy(value))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, value in reversed(self._saved):
            setattr(module, name, value)
        self._saved.clear()

    def _patch(self, module: Any, name: str, value: Any) -> None:
        self._saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    def _traced(self, fn: Any) -> Any:
        def traced(stream: Any, *args: Any) -> int:
            return self._run_alone(fn, stream, args)

        traced.__name__ = fn.__name__
        return traced

    def _traced_blocking_copy(self, fn: Any) -> Any:
        def traced(stream: Any, dst: Any, src: Any, nbytes: int, kind: int, timeout: int) -> int:
            status = int(fn(stream, dst, src, nbytes, kind, timeout))
            if status == 0 and nbytes and kind != lib.MTIART_MEMCPY_DEVICE_TO_HOST:
                address = int(ffi.cast("uintptr_t", dst))
                name = "memcpy HtoD" if kind == lib.MTIART_MEMCPY_HOST_TO_DEVICE else "memcpy DtoD"
                node = _Node(lib.MTIART_NODE_MEMCPY, name, (_Buffer(address, nbytes, _WRITES),))
                layouts: dict[int, _Layout] = {}
                _tensor_layouts({address}, layouts)
                self.ops.append(_EagerOp(node, [_read(address, nbytes)], layouts))
            return status

        return traced

    def _run_alone(self, fn: Any, stream: Any, args: tuple[Any, ...]) -> int:
        check(
            lib.mtiart_stream_begin_capture(stream, lib.MTIART_CAPTURE_MODE_RELAXED, (0, 0)),
            "bisect (eager run)",
        )
        status = int(fn(stream, *args))
        graph = ffi.new("mtiart_graph *")
        ended = lib.mtiart_stream_end_capture(stream, graph)
        if status:
            if ended == 0:
                lib.mtiart_graph_destroy(graph[0])
            # A refused call did nothing: made again outside the capture, it leaves its own
            # error (the one its caller reports), not the capture's.
            return int(fn(stream, *args))
        check(ended, "bisect (eager run)")
        try:
            nodes = _nodes(graph[0])
            exec_ = ffi.new("mtiart_graph_exec *")
            check(lib.mtiart_graph_instantiate(graph[0], exec_), "bisect (eager run)")
            try:
                check(lib.mtiart_graph_launch(exec_[0], stream), "bisect (eager run)")
                check(lib.mtiart_stream_synchronize(stream), "bisect (eager run)")
            finally:
                lib.mtiart_graph_exec_destroy(exec_[0])
        finally:
            lib.mtiart_graph_destroy(graph[0])
        layouts: dict[int, _Layout] = {}
        _desc_layouts(args, layouts)
        unknown = {b.address for n in nodes for b in n.buffers} - layouts.keys()
        if unknown:
            _tensor_layouts(unknown, layouts)
        for node in nodes:
            written = [_read(b.address, b.nbytes) for b in node.written]
            self.ops.append(_EagerOp(node, written, layouts))
        return 0


class _TracedLib:
    """Stands for the cffi ``lib`` in a module while an :class:`_EagerTrace` is active."""

    def __init__(self, trace: _EagerTrace) -> None:
        self._trace = trace

    def __getattr__(self, name: str) -> Any:
        value = getattr(lib, name)
        if name in _ENQUEUE:
            return self._trace._traced(value)
        if name == "mtiart_memcpy_timeout":
            return self._trace._traced_blocking_copy(value)
        return value


@dataclass(frozen=True)
class NodeDivergence:
    """The first node of a captured graph whose written buffers differ from what the same
    operation wrote when the function ran eagerly."""

    node: int
    """Index of the node in the captured graph."""
    op: str
    """The node's operation: the kernel's name, ``"memcpy HtoD"``, ..."""
    input_shapes: tuple[str, ...]
    """What the node reads, one entry per buffer: ``"float32[4, 8]"`` where a tensor
    starting there tells the layout, else ``"<n> bytes"``."""
    buffer: int
    """Which of the node's written buffers differs (0: the first it writes)."""
    index: tuple[int, ...]
    """The first element that differs, in that buffer's layout."""
    expected: float
    """Its value in the eager run."""
    got: float
    """Its value in the replay."""
    max_abs_diff: float
    """The largest absolute difference over the buffer (bytes compared where the buffer's
    dtype is unknown)."""
    not_compared: tuple[str, ...] = ()
    """The nodes before it that could not be compared (see :func:`bisect`)."""

    def __str__(self) -> str:
        return (
            f"node {self.node} ({self.op}, inputs {', '.join(self.input_shapes) or 'none'}) "
            f"diverged: written buffer {self.buffer}, element {list(self.index)} is "
            f"{self.got!r} in the replay instead of {self.expected!r} eagerly (max abs "
            f"difference {self.max_abs_diff:g})"
        )


def _layout(buffer: _Buffer, layouts: dict[int, _Layout]) -> _Layout | None:
    """The layout of a tensor that covers exactly ``buffer``, if the eager run saw one."""
    found = layouts.get(buffer.address)
    if found is not None and found.np_dtype.itemsize * math.prod(found.shape) == buffer.nbytes:
        return found
    return None


def _describe(buffer: _Buffer, layouts: dict[int, _Layout]) -> str:
    found = _layout(buffer, layouts)
    if found is None:
        return f"{buffer.nbytes} bytes"
    return f"{_BY_NP[found.np_dtype].name}{list(found.shape)}"


def _difference(
    graph_node: int, eager: _EagerOp, replayed: list[bytes], atol: float
) -> NodeDivergence | None:
    written = eager.node.written
    for k, (want_bytes, got_bytes) in enumerate(zip(eager.written, replayed, strict=True)):
        if want_bytes == got_bytes:
            continue
        layout = _layout(written[k], eager.layouts) or _Layout(
            np.dtype(np.uint8), (written[k].nbytes,)
        )
        want = np.frombuffer(want_bytes, layout.np_dtype).reshape(layout.shape)
        got = np.frombuffer(got_bytes, layout.np_dtype).reshape(layout.shape)
        found = _first_difference(want, got, atol)
        if found is None:
            continue
        reads = eager.node.buffers
        shapes = tuple(_describe(b, eager.layouts) for b in reads if b.access & _READS)
        return NodeDivergence(graph_node, eager.node.name, shapes, k, *found)
    return None


def _replay_prefix(
    template: Any, count: int, initial: list[tuple[_Buffer, bytes]], stream: Any
) -> None:
    """Run the graph's first ``count`` nodes one at a time, in node order, on ``stream``,
    from the memory state ``initial`` (what the nodes read, as it was before the eager
    run)."""
    check(lib.mtiart_stream_synchronize(stream), "bisect (replay)")
    for buffer, content in initial:
        ffi.memmove(ffi.cast("char *", buffer.address), content, buffer.nbytes)
    prefix = ffi.new("mtiart_graph *")
    check(lib.mtiart_graph_clone_prefix(template, count, prefix), "bisect (replay)")
    try:
        exec_ = ffi.new("mtiart_graph_exec *")
        check(lib.mtiart_graph_instantiate(prefix[0], exec_), "bisect (replay)")
        try:
            check(
                lib.mtiart_graph_exec_set_schedule(exec_[0], lib.MTIART_SCHEDULE_SERIAL, 0),
                "bisect (replay)",
            )
            check(lib.mtiart_graph_launch(exec_[0], stream), "bisect (replay)")
            check(lib.mtiart_stream_synchronize(stream), "bisect (replay)")
        finally:
            lib.mtiart_graph_exec_destroy(exec_[0])
    finally:
        lib.mtiart_graph_destroy(prefix[0])


def bisect(
    fn: Callable[..., object], inputs: Sequence[object] = (), atol: float = 0.0
) -> NodeDivergence | None:
    """Find the first node of ``fn``'s captured graph that computes something else than
    ``fn`` run eagerly.

    ``fn(*inputs)`` is captured into a graph, then run eagerly with every operation
    recorded one at a time (each waited for, and a copy taken of every buffer it writes),
    then the graph's first 1, 2, ... nodes are replayed on their own, one node at a time
    in node order, each time from the memory state the graph's reads saw before the eager
    run, and the buffers the last node wrote are compared with what the same operation
    wrote eagerly. Returns the first node that differs by more than ``atol`` (op name,
    what it reads, the first element and the largest absolute difference), or None when
    every node matches.

    The graph's operation nodes are taken to be, in order, the eager run's operations:
    ``fn`` must enqueue the same operations in the same order both times (deterministic, with
    no branches on data). With several streams the operations are compared in the order
    ``fn`` enqueued them, which is a topological order of the graph; the eager run then
    waits for each operation before the next one starts. Nodes with no eager counterpart
    cannot be compared: host functions (their side effects happen in both runs and cannot
    be replayed in isolation), child graphs (an executable replayed inside ``fn``) and
    conditional nodes. They still run in the replayed prefixes, and they are listed in a
    :class:`UserWarning` (and in ``not_compared`` of the result). Event records and
    waits write no data and are passed over.

    ``fn`` runs twice (captured, then eagerly). The memory the graph reads is reset to its
    content from before the eager run ahead of every replayed prefix, and holds what the
    last prefix left in it afterwards. The replays cost O(n^2) node runs for n nodes. Not
    thread safe: other threads must not enqueue work through the package meanwhile.
    """
    inputs = list(inputs)
    g = MTIAGraph(keep_graph=True)
    with graph(g):
        fn(*inputs)
    template = ffi.cast("mtiart_graph", g.raw_graph())
    captured = _nodes(template)
    device = ffi.new("int *")
    check(lib.mtiart_graph_get_device(template, device), "bisect")
    stream = _stream_handle(int(device[0]))
    # What the graph reads, as it is now: the state every replayed prefix starts from.
    synchronize()
    reads = {b for n in captured for b in n.buffers if b.access & _READS}
    initial = [(b, _read(b.address, b.nbytes)) for b in sorted(reads, key=lambda b: b.address)]
    with _EagerTrace() as trace:
        fn(*inputs)
    synchronize()
    eager = iter(trace.ops)
    skipped: list[str] = []
    for index, node in enumerate(captured):
        if node.kind not in _OP_KINDS:
            if node.kind in _NOT_COMPARED:
                skipped.append(f"node {index} ({_NOT_COMPARED[node.kind]})")
            continue
        op = next(eager, None)
        if op is None or op.node.name != node.name or len(op.node.written) != len(node.written):
            eager_name = "nothing" if op is None else repr(op.node.name)
            raise RuntimeError(
                f"bisect: the eager run and the capture enqueued different operations: "
                f"node {index} is {node.name!r}, the eager run's operation there is "
                f"{eager_name}; fn must enqueue the same operations each time"
            )
        _replay_prefix(template, index + 1, initial, stream)
        found = _difference(index, op, [_read(b.address, b.nbytes) for b in node.written], atol)
        if found is not None:
            _warn_not_compared(skipped)
            return replace(found, not_compared=tuple(skipped))
    _warn_not_compared(skipped)
    return None


def _warn_not_compared(skipped: list[str]) -> None:
    if skipped:
        warnings.warn(
            f"bisect: {len(skipped)} nodes have no eager counterpart and were not compared: "
            f"{', '.join(skipped)}",
            UserWarning,
            stacklevel=3,
        )
