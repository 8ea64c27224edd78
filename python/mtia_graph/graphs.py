"""MTIA graphs: capture a stream of device work once, replay it many times.

This module rebuilds the surface of PyTorch's ``torch/mtia/mtia_graph.py`` exactly
(``MTIAGraph``, ``graph``, ``graph_pool_handle``) on libmtiart's stream capture, with what
``torch.cuda`` graphs add, under their names: ``capture_begin(pool=None,
capture_error_mode=..., check_input_liveness=...)``, ``debug_dump(debug_path)``,
``enable_debug_mode()``, the C handles (``raw_graph()``, ``raw_graph_exec()``, torch's
``raw_cuda_graph``/``raw_cuda_graph_exec``); an improved ``graph.__exit__`` that
abandons a capture cleanly when the body raises; and what CUDA graphs add: updating an
executable in place (:meth:`MTIAGraph.update`, :meth:`MTIAGraph.recapture`), replays
captured into another graph as child graphs, and conditional bodies (:func:`while_`,
:func:`if_`).

Memory a graph uses stays valid while the graph lives: a tensor a captured operation reads
or writes that lies outside the graph's own pool (a static input, another graph's output)
is held by the graph, so deleting it frees nothing a replay still touches; its memory
returns when the last graph using it is reset. Tensors of the graph's own pool follow
PyTorch's pool contract.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, SupportsIndex

from typing_extensions import Self

from ._C import (
    InvalidHandleError,
    MTIAError,
    MTIAValueError,
    capture_info,
    check,
    ffi,
    keep_until_done,
    lib,
    raise_status,
    release_done,
)
from .callbacks import capture_id_of, capture_keepalive, keep_for_capture
from .checks import (
    Race,
    RaceError,
    RaceWarning,
    check_races_mode,
    describe_races,
    races_of,
    user_stacklevel,
)
from .device import device as _device_context
from .dtypes import bool_, int32
from .memory import _label_pool, empty_cache
from .streams import (
    Stream,
    current_stream,
    stream as _stream_context,
    synchronize,
)
from .tensor import Tensor

__all__ = ["MTIAGraph", "graph", "graph_pool_handle", "if_", "set_graph_fusion", "while_"]

_POOL_HANDLE = tuple[int, int]

_CAPTURE_MODES: dict[str, int] = {
    "global": lib.MTIART_CAPTURE_MODE_GLOBAL,
    "thread_local": lib.MTIART_CAPTURE_MODE_THREAD_LOCAL,
    "relaxed": lib.MTIART_CAPTURE_MODE_RELAXED,
}

# Whether graphs instantiated from now on fuse nodes; None: libmtiart's default.
_fusion: bool | None = None


def set_graph_fusion(enabled: bool | None) -> None:
    """Whether graphs instantiated from now on fuse nodes (an extra of this package).

    A fused executable runs a matmul and the chain of elementwise operations on its
    result (bias add, activation, scalar ops, softmax over the last dim) as one kernel
    launch, tile by tile while the tile is in cache. Results do not change: every tensor
    the captured operations wrote is written, with bitwise the same values. ``None``
    restores the default: fusion, unless the environment has ``MTIART_GRAPH_FUSION=0``.
    Graphs already instantiated keep their plan. :meth:`MTIAGraph.update` of a fused graph
    fuses the new tensors the same way; where they cannot be (say, an output that overlaps
    an input of the matmul) it raises :class:`MTIAValueError` and changes nothing: graphs
    instantiated with fusion off update without that limit.
    """
    global _fusion
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_graph_fusion() takes a bool or None, not {type(enabled).__name__}")
    _fusion = enabled


def _check_pool(pool: Any) -> tuple[int, int]:
    if (
        not isinstance(pool, tuple)
        or len(pool) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in pool)
    ):
        raise TypeError(
            f"pool must be a tuple of two ints (a value from graph_pool_handle() or "
            f"MTIAGraph.pool(), or (0, 0) for a new private pool), got {pool!r}"
        )
    if not all(0 <= x < 1 << 64 for x in pool) or (pool[0] and pool[1]):
        raise MTIAValueError(
            f"invalid pool id {pool!r}: expected (0, 0), (n, 0) from MTIAGraph.pool() or "
            f"(0, n) from graph_pool_handle(), with 0 <= n < 2**64",
            lib.MTIART_ERROR_INVALID_VALUE,
        )
    return pool


def _capture_mode(mode: str) -> int:
    if not isinstance(mode, str):
        raise TypeError(f"capture_error_mode must be a str, got {type(mode).__name__}")
    try:
        return _CAPTURE_MODES[mode]
    except KeyError:
        raise ValueError(
            f"capture_error_mode must be one of {sorted(_CAPTURE_MODES)}, got {mode!r}"
        ) from None


_SCHEDULES: dict[str, int] = {
    "serial": lib.MTIART_SCHEDULE_SERIAL,
    "reverse": lib.MTIART_SCHEDULE_REVERSE,
    "random": lib.MTIART_SCHEDULE_RANDOM,
}


def _schedule_mode(schedule: str | None) -> int:
    if schedule is None:
        return int(lib.MTIART_SCHEDULE_DEFAULT)
    if not isinstance(schedule, str) or schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be None or one of {sorted(_SCHEDULES)}, got {schedule!r}")
    return _SCHEDULES[schedule]


def _render_dot(text: str, fmt: str) -> bytes:
    """DOT text rendered by Graphviz's ``dot`` program as ``fmt`` ("svg", "png")."""
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(
            f"debug_dump: rendering .{fmt} needs Graphviz's 'dot' program, which is not on "
            "PATH (install Graphviz, e.g. apt-get install graphviz, or dump to a .dot file)"
        )
    done = subprocess.run(
        [program, f"-T{fmt}"], input=text.encode(), capture_output=True, check=False
    )
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"debug_dump: Graphviz failed to render .{fmt}: {detail}")
    return done.stdout


def _raise_graph_call(status: int, what: str, reset_meanwhile: bool) -> NoReturn:
    """Raise for a failed call on one of a graph's handles. A handle another thread's
    reset() destroyed during the call gets a message saying so."""
    if reset_meanwhile and status == lib.MTIART_ERROR_INVALID_HANDLE:
        raise InvalidHandleError(
            f"{what}: the graph was reset by another thread during the call", status
        )
    raise_status(status, what)


# The input check's message names the buffer as "reads [0x<address>, +<bytes> bytes)".
_DEAD_INPUT_RE = re.compile(r"reads \[0x([0-9a-f]+), \+(\d+) bytes\)")


def _buffers_read(graph: Any, read: set[tuple[int, int]]) -> None:
    """Add the (address, bytes) of every buffer the graph's nodes read, bodies included."""
    count = ffi.new("size_t *")
    check(lib.mtiart_graph_get_node_count(graph, count))
    info = ffi.new("mtiart_node_info *")
    use = ffi.new("mtiart_buffer_use *")
    for node in range(int(count[0])):
        check(lib.mtiart_graph_get_node_info(graph, node, info))
        for i in range(int(info.num_buffers)):
            check(lib.mtiart_graph_get_node_buffer(graph, node, i, use))
            if use.access & lib.MTIART_ARG_BUFFER_IN:
                read.add((int(use.address), int(use.bytes)))
        if info.kind in (lib.MTIART_NODE_CHILD_GRAPH, lib.MTIART_NODE_CONDITIONAL):
            body = ffi.new("mtiart_graph *")
            check(lib.mtiart_graph_get_node_body(graph, node, body))
            try:
                _buffers_read(body[0], read)
            finally:
                check(lib.mtiart_graph_destroy(body[0]))


def _graph_inputs(graph: Any) -> dict[tuple[int, int], str]:
    """What the tensors a captured graph reads are, by (address, bytes) of the buffer: for
    the input check's messages, which the runtime can only give as addresses."""
    read: set[tuple[int, int]] = set()
    _buffers_read(graph, read)
    names: dict[tuple[int, int], str] = {}
    if read:
        # The tensors themselves are alive now (they are being captured); only their
        # description is kept, so the graph keeps none of them.
        for obj in gc.get_objects():
            if type(obj) is Tensor:
                key = (obj.data_ptr(), obj.nbytes)
                if key in read:
                    names[key] = f"a tensor of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return names


def _raise_dead_input(status: int, names: dict[tuple[int, int], str]) -> NoReturn:
    """Raise the input check's error, naming the freed tensor's shape and dtype."""
    try:
        raise_status(status, "MTIAGraph.replay")
    except MTIAError as exc:
        found = _DEAD_INPUT_RE.search(str(exc))
        what = names.get((int(found.group(1), 16), int(found.group(2)))) if found else None
        if what is None:
            raise
        raise type(exc)(f"{exc} (the buffer was {what})", status) from None


def graph_pool_handle() -> _POOL_HANDLE:
    """Return a fresh memory-pool id that several graph captures can share.

    Pass it as ``pool=`` to :class:`graph` or to :meth:`MTIAGraph.capture_begin`. Graphs
    sharing a pool must be replayed in the order they were captured and never
    concurrently (as in PyTorch).
    """
    out = ffi.new("mtiart_pool_id *")
    check(lib.mtiart_pool_handle_create(out), "graph_pool_handle")
    return (int(out.first), int(out.second))


class MTIAGraph:
    """Wrapper around a MTIA graph.

    Args:
        keep_graph: if False (default), the captured graph is instantiated at
            ``capture_end()`` and the un-instantiated template is dropped. If True, the
            template is kept: call ``instantiate()`` yourself (or let the first
            ``replay()`` do it), and ``debug_dump()`` can print it.
    """

    __slots__ = (
        "__weakref__",
        "_capture_id",
        "_capture_stream",
        "_captured",
        "_check_inputs",
        "_check_races",
        "_debug",
        "_device",
        "_exec",
        "_graph",
        "_input_names",
        "_keep_graph",
        "_keepalive",
        "_last_replay_stream",
        "_pool",
    )

    _keep_graph: bool
    _graph: Any  # cdata mtiart_graph: the captured template, while kept
    _exec: Any  # cdata mtiart_graph_exec, once instantiated
    _pool: _POOL_HANDLE | None
    _device: int
    _capture_stream: Stream | None  # while capturing
    _capture_id: int
    _captured: bool
    _debug: bool  # keep the template for debug_dump() even without keep_graph
    _keepalive: list[Any]  # what the graph's host functions and copies need at replay
    _last_replay_stream: Stream | None
    _check_races: str | None  # the capture's check_races= (None, "warn", "error")
    _check_inputs: bool  # check_input_liveness of the capture
    _input_names: dict[tuple[int, int], str]  # what the inputs are, for the check's errors

    def __new__(cls, keep_graph: bool = False) -> Self:
        self = super().__new__(cls)
        self._keep_graph = bool(keep_graph)
        self._graph = None
        self._exec = None
        self._pool = None
        self._device = 0
        self._capture_stream = None
        self._capture_id = 0
        self._captured = False
        self._debug = False
        self._keepalive = []
        self._last_replay_stream = None
        self._check_races = None
        self._check_inputs = False
        self._input_names = {}
        return self

    def __init__(self, keep_graph: bool = False) -> None:
        # Everything happens in __new__, which is where torch.mtia's MTIAGraph takes
        # keep_graph too.
        pass

    def capture_begin(
        self,
        pool: _POOL_HANDLE | None = None,
        capture_error_mode: str = "global",
        check_input_liveness: bool = False,
        check_races: str | None = None,
    ) -> None:
        """Begin capturing a MTIA graph on the current stream.

        Args:
            pool: None (or ``(0, 0)``) for a new private memory pool, or a pool id from
                :func:`graph_pool_handle` / another graph's :meth:`pool` to share it (a
                pool id the runtime never issued is a ``ValueError``).
            capture_error_mode: ``"global"`` (an unsafe call on any thread invalidates the
                capture), ``"thread_local"`` (only this thread's) or ``"relaxed"``.
            check_input_liveness: if True (torch.cuda's keyword), every :meth:`replay`
                first checks that the tensors the graph reads before writing them (its
                inputs, whatever the operation: tensor ops, compiled and Python kernels,
                copies, fills) are still alive: a replay that would read one deleted since
                the capture (or whose memory went to another tensor since) raises before
                anything runs, naming the node, the buffer and the tensor's shape and dtype.
                Deleting an output is no error.
            check_races: ``"warn"`` or ``"error"`` to check the captured graph for races
                (see :meth:`check_races`) at ``capture_end()``: a :class:`RaceWarning`,
                or a :class:`RaceError` that discards the capture; None (default): no
                check.
        """
        if pool is None:
            pool = (0, 0)
        pool = _check_pool(pool)
        mode = _capture_mode(capture_error_mode)
        races_mode = check_races_mode(check_races)
        if not isinstance(check_input_liveness, bool):
            raise TypeError(
                f"check_input_liveness must be a bool, got {type(check_input_liveness).__name__}"
            )
        if self._captured or self._capture_stream is not None:
            raise RuntimeError(
                "This MTIAGraph instance already owns a captured graph. To capture a new "
                "graph, create a new instance (or call reset() first)."
            )
        stream = current_stream()
        pool_id = ffi.new("mtiart_pool_id *", {"first": pool[0], "second": pool[1]})
        check(
            lib.mtiart_stream_begin_capture(stream._handle, mode, pool_id[0]),
            "MTIAGraph.capture_begin",
        )
        info = capture_info(stream._handle, "MTIAGraph.capture_begin")
        self._capture_stream = stream
        self._capture_id = info.id
        self._device = stream.device_index
        self._pool = info.pool
        self._check_races = races_mode
        self._check_inputs = check_input_liveness
        _label_pool(info.pool, f"MTIAGraph at {hex(id(self))}")

    def capture_end(self) -> None:
        """End the capture of a MTIA graph (on the stream that began it)."""
        stream = self._capture_stream
        if stream is None:
            raise RuntimeError("MTIAGraph.capture_end() called without a preceding capture_begin()")
        if current_stream(stream.device_index) != stream:
            raise RuntimeError(
                f"Capture must end on the same stream it began on ({stream!r}), but the "
                f"current stream is {current_stream(stream.device_index)!r}"
            )
        graph_out = ffi.new("mtiart_graph *")
        status = lib.mtiart_stream_end_capture(stream._handle, graph_out)
        self._capture_stream = None
        self._collect_keepalive()
        if status < 0:
            # The runtime discarded the capture and released its use of the pool.
            self._pool = None
            self._retire_keepalive()
            raise_status(status, "MTIAGraph.capture_end")
        self._graph = graph_out[0]
        if self._check_races is not None:
            self._check_captured_races(self._check_races)
        try:
            if self._check_inputs:
                self._input_names = _graph_inputs(self._graph)
            count = ffi.new("size_t *")
            check(lib.mtiart_graph_get_node_count(self._graph, count))
            if count[0] == 0:
                warnings.warn(
                    "The MTIA graph is empty: nothing was captured. This usually means that "
                    "the graph was captured on the wrong device or stream.",
                    UserWarning,
                    stacklevel=2,
                )
            if not self._keep_graph:
                try:
                    self._instantiate()
                finally:
                    if not self._debug:
                        self._destroy_template()
        finally:
            # Last: a replay() on another thread sees the whole graph or none of it.
            self._captured = True

    def instantiate(self) -> None:
        """Instantiate the captured MTIA graph (``keep_graph=True`` only; may repeat)."""
        if not self._captured:
            raise RuntimeError("MTIAGraph.instantiate() called before a successful capture_end()")
        if not self._keep_graph:
            raise RuntimeError(
                "instantiate() is intended to be called by the user only when keep_graph=True"
            )
        self._instantiate()

    def replay(self, schedule: str | None = None, seed: int = 0) -> None:
        """Replay the captured MTIA graph on the current stream (asynchronously).

        Args:
            schedule: None (default) runs the graph's plan, independent branches on all
                workers at once. A debug schedule runs its operations one at a time in a
                valid order chosen by a rule: ``"serial"`` (the ready operation captured
                first goes first), ``"reverse"`` (captured last goes first) or
                ``"random"`` (drawn from ``seed``). A graph whose results change between
                schedules lacks a dependency (see :func:`mtia_graph.debug.compare_schedules`).
                Graphs that wait for events recorded outside them cannot be scheduled.
            seed: the random schedule's seed (the same seed, the same order).
        """
        mode = _schedule_mode(schedule)
        exec_ = self._exec
        if exec_ is None:
            if not self._captured:
                raise RuntimeError(
                    "Called MTIAGraph.replay() without a preceding successful capture."
                )
            self._instantiate()
            exec_ = self._exec
        stream = current_stream(self._device)
        if mode:
            status = lib.mtiart_graph_exec_set_schedule(exec_, mode, seed & (2**64 - 1))
            if status:
                _raise_graph_call(status, "MTIAGraph.replay", self._exec is not exec_)
            try:
                status = lib.mtiart_graph_launch(exec_, stream._handle)
            finally:  # the launch keeps its schedule; later ones run the plan again
                lib.mtiart_graph_exec_set_schedule(exec_, lib.MTIART_SCHEDULE_DEFAULT, 0)
        else:
            status = lib.mtiart_graph_launch(exec_, stream._handle)
        if status:
            if status == lib.MTIART_ERROR_INVALID_POINTER and self._input_names:
                _raise_dead_input(status, self._input_names)
            _raise_graph_call(status, "MTIAGraph.replay", self._exec is not exec_)
        # On a capturing stream the replay became a child graph of that capture, which runs
        # this graph's host functions (and reads its host buffers) as well.
        if self._keepalive:
            capture_id = capture_id_of(stream._handle)
            if capture_id:
                keep_for_capture(capture_id, list(self._keepalive))
            else:
                self._last_replay_stream = stream

    def reset(self) -> None:
        """Destroy the captured graph and reset the states (never raises; warns)."""
        try:
            self._reset()
        except Exception as exc:  # noqa: BLE001 - reset() must not raise, as in torch
            warnings.warn(f"MTIAGraph.reset() failed: {exc}", RuntimeWarning, stacklevel=2)

    def pool(self) -> _POOL_HANDLE:
        """Return an opaque token representing the id of this graph's memory pool."""
        if self._pool is None or not (self._captured or self._capture_stream is not None):
            raise RuntimeError(
                "MTIAGraph.pool() called before a successful capture_begin()/capture_end()"
            )
        return self._pool

    # ---------------------------------------------------------------- extras

    def update(self, other: MTIAGraph) -> None:
        """Update this graph's executable in place from ``other``'s captured graph.

        ``other`` must be topologically identical to this graph (the same operations in
        the same order, with the same dependencies) and hold its template
        (``MTIAGraph(keep_graph=True)``, or :meth:`enable_debug_mode`); what may differ are
        the tensors and values the operations use. Replays already launched finish with
        the old ones; every replay launched afterwards uses ``other``'s. Anything else
        raises :class:`MTIAValueError` naming the first operation that differs, and leaves
        this graph unchanged. This graph's own template (``keep_graph=True``) stays the one
        it captured.
        """
        if not isinstance(other, MTIAGraph):
            raise TypeError(f"update() expects an MTIAGraph, got {type(other).__name__}")
        template = other._graph
        if template is None:
            raise RuntimeError(
                "MTIAGraph.update() needs the other graph's template: capture it with "
                "MTIAGraph(keep_graph=True) or after enable_debug_mode() (or capture again "
                "with recapture())"
            )
        exec_ = self._exec
        if exec_ is None:
            if not self._captured:
                raise RuntimeError("MTIAGraph.update() called before a successful capture")
            self._instantiate()
            exec_ = self._exec
        status = lib.mtiart_graph_exec_update(exec_, template, ffi.NULL)
        if status:
            _raise_graph_call(
                status, "MTIAGraph.update", self._exec is not exec_ or other._graph is not template
            )
        # The executable runs other's host functions and reads its host buffers now.
        self._keepalive.extend(other._keepalive)
        if self._check_inputs:  # and the input check names other's tensors
            self._input_names.update(other._input_names or _graph_inputs(template))

    @contextlib.contextmanager
    def recapture(
        self,
        stream: Stream | None = None,
        capture_error_mode: str = "global",
        check_input_liveness: bool = False,
        check_races: str | None = None,
    ) -> Iterator[None]:
        r"""Capture the body again and update this graph's executable in place from it.

        ``with g.recapture(): ...`` captures like ``with graph(g): ...`` (into this graph's
        pool) work of the same structure as the first capture, on other tensors or with
        other values, and then :meth:`update`\ s this graph's executable from it: no new
        instantiation, and later replays run the new capture. The capture must match the
        first one operation for operation; otherwise :class:`MTIAValueError` is raised and
        the graph is left as it was. With ``keep_graph=True`` (or :meth:`enable_debug_mode`)
        the new capture also becomes this graph's template. The arguments are
        :class:`graph`'s.
        """
        if not self._captured:
            raise RuntimeError("MTIAGraph.recapture() called before a successful capture")
        fresh = MTIAGraph(keep_graph=True)
        try:
            with graph(
                fresh,
                pool=self.pool(),
                stream=stream,
                capture_error_mode=capture_error_mode,
                check_input_liveness=check_input_liveness,
                check_races=check_races,
            ):
                yield
            self.update(fresh)
            fresh._keepalive = []  # moved into this graph by update()
            if self._keep_graph or self._debug:
                self._graph, fresh._graph = fresh._graph, self._graph
        finally:
            fresh.reset()

    def save(
        self,
        path: str | os.PathLike[str],
        inputs: Mapping[str, Tensor] | None = None,
        outputs: Mapping[str, Tensor] | None = None,
        constants: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Save the captured graph to ``path``, for a C, C++ or Python program to load.

        Memory the graph allocated while it was captured is saved as offsets into its
        pool. Every other tensor an operation uses must be named: ``inputs`` and
        ``outputs`` are the tensors a loader binds (``mtiart_graph_exec_bind(exec, name,
        ptr, bytes)``), ``constants`` the tensors (weights) whose contents go into the file.
        Graphs with Python kernels or host functions cannot be saved. The file is written
        whole or not at all (a temporary file renamed over ``path``). The format is
        documented in the repository's ``docs/graph-format.md``; print a file with
        ``python -m mtia_graph.inspect FILE``.

        Raises:
            MTIAValueError: naming the operation that cannot be saved, or the binding that
                is wrong (a repeated name, overlapping tensors).
        """
        named: list[tuple[str, Tensor, int]] = []
        for flags, group in (
            (lib.MTIART_BINDING_INPUT, inputs),
            (lib.MTIART_BINDING_OUTPUT, outputs),
            (lib.MTIART_BINDING_CONSTANT, constants),
        ):
            for name, tensor in (group or {}).items():
                if not isinstance(name, str) or not isinstance(tensor, Tensor):
                    raise TypeError(
                        f"MTIAGraph.save: bindings map names (str) to tensors, got "
                        f"{type(name).__name__} -> {type(tensor).__name__}"
                    )
                named.append((name, tensor, flags))
        names = [ffi.new("char[]", name.encode()) for name, _, _ in named]
        bindings = ffi.new("mtiart_graph_binding[]", max(len(named), 1))
        for i, (_, tensor, flags) in enumerate(named):
            bindings[i].name = names[i]
            bindings[i].ptr = ffi.cast("void *", tensor.data_ptr())
            bindings[i].bytes = tensor.nbytes
            bindings[i].flags = flags
        exec_, graph_ = self._exec, self._graph
        if graph_ is not None:
            status = lib.mtiart_graph_save(graph_, os.fsencode(path), bindings, len(named))
        elif exec_ is not None:
            status = lib.mtiart_graph_exec_save(exec_, os.fsencode(path), bindings, len(named))
        else:
            raise RuntimeError("MTIAGraph.save() called before a successful capture")
        if status:
            _raise_graph_call(
                status, "MTIAGraph.save", self._graph is not graph_ or self._exec is not exec_
            )

    def enable_debug_mode(self) -> None:
        """Keep the captured graph for :meth:`debug_dump` (and :meth:`dot`,
        :meth:`raw_graph`) even without ``keep_graph=True``; call it before the capture
        ends."""
        self._debug = True

    def debug_dump(self, debug_path: str | os.PathLike[str], verbose: bool = False) -> None:
        """Write a picture of the captured graph to ``debug_path`` (needs ``keep_graph=True``
        or :meth:`enable_debug_mode` before the capture ended).

        The format follows the file's extension: ``.svg`` and ``.png`` are rendered with
        Graphviz's ``dot`` program (a :class:`RuntimeError` says so when it is missing),
        anything else gets the Graphviz DOT text. Nodes are labelled by what they do,
        shaped by kind and grouped by the stream that captured them; buffers are shown by
        dtype, shape and :attr:`Tensor.name`. ``verbose=True`` adds their addresses and
        sizes and the kernels' block counts.

        The file appears complete or not at all: it is written to a temporary file beside
        it and renamed, so a failure leaves no partial or empty file behind.
        """
        text = self.dot(verbose=verbose)
        target = os.fspath(debug_path)
        fmt = os.path.splitext(target)[1].lower().lstrip(".")
        data = _render_dot(text, fmt) if fmt in ("svg", "png") else text.encode()
        if os.path.exists(target) and not os.path.isfile(target):
            with open(target, "wb") as f:  # a device or pipe (/dev/null): nothing to rename
                f.write(data)
            return
        directory = os.path.dirname(os.path.abspath(target))
        mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o644
        fd, tmp = tempfile.mkstemp(prefix=".debug_dump.", dir=directory)
        try:
            os.fchmod(fd, mode)  # mkstemp's 0600 would stick to the renamed file
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def dot(self, verbose: bool = False) -> str:
        """The captured graph as Graphviz DOT text (needs ``keep_graph=True`` or
        :meth:`enable_debug_mode`); see :meth:`debug_dump` for what it shows."""
        graph = self._template("MTIAGraph.dot")
        flags = lib.MTIART_DOT_VERBOSE if verbose else lib.MTIART_DOT_DEFAULT
        length = ffi.new("size_t *")
        status = lib.mtiart_graph_to_dot_with_flags(graph, flags, ffi.NULL, 0, length)
        if status == 0:
            buf = ffi.new("char[]", length[0] + 1)
            status = lib.mtiart_graph_to_dot_with_flags(graph, flags, buf, length[0] + 1, length)
        if status:
            _raise_graph_call(status, "MTIAGraph.dot", self._graph is not graph)
        text: bytes = ffi.string(buf)
        return text.decode(errors="replace")

    def raw_graph(self) -> int:
        """The captured graph's ``mtiart_graph`` handle as an integer, for C code
        (torch's ``raw_cuda_graph``): ``(mtiart_graph)(uintptr_t)value``.

        Needs ``keep_graph=True`` (or :meth:`enable_debug_mode`). The MTIAGraph keeps
        ownership: the handle is valid until :meth:`reset` or the object's end, and C code
        must not destroy it.
        """
        return int(ffi.cast("uintptr_t", self._template("MTIAGraph.raw_graph")))

    def raw_graph_exec(self) -> int:
        """The executable graph's ``mtiart_graph_exec`` handle as an integer, for C code
        (torch's ``raw_cuda_graph_exec``): ``(mtiart_graph_exec)(uintptr_t)value``, e.g. to
        launch it with ``mtiart_graph_launch``.

        Exists after :meth:`capture_end` (``keep_graph=False``) or :meth:`instantiate`. The
        MTIAGraph keeps ownership: the handle is valid until :meth:`reset`, a new
        :meth:`instantiate` (which replaces the executable) or the object's end, and C code
        must not destroy it.
        """
        exec_ = self._exec
        if exec_ is None:
            raise RuntimeError(
                "MTIAGraph.raw_graph_exec(): no executable graph: capture first "
                "(with keep_graph=True, call instantiate() first)"
            )
        return int(ffi.cast("uintptr_t", exec_))

    def num_nodes(self) -> int:
        """Number of nodes of the captured graph."""
        count = ffi.new("size_t *")
        exec_, graph = self._exec, self._graph
        if exec_ is not None:
            status = lib.mtiart_graph_exec_get_node_count(exec_, count)
            reset_meanwhile = self._exec is not exec_
        elif graph is not None:
            status = lib.mtiart_graph_get_node_count(graph, count)
            reset_meanwhile = self._graph is not graph
        else:
            raise RuntimeError("MTIAGraph.num_nodes() called before a successful capture")
        if status:
            _raise_graph_call(status, "MTIAGraph.num_nodes", reset_meanwhile)
        return int(count[0])

    def check_races(self) -> list[Race]:
        """The races of the captured graph: every pair of operations that no stream order
        or event puts one after the other and that touch the same device bytes, one of
        them writing. Their order at replay is whatever the device's workers make it, so
        results may change from replay to replay. The typical cause is a side stream whose
        work the capturing stream uses without waiting for it (a forgotten
        ``wait_stream``). Reads of the same bytes, and disjoint slices of one tensor,
        never race. Each :class:`Race` names both operations (index, name, capturing
        stream), how each touches the bytes, and the overlapping range.
        """
        graph, exec_ = self._graph, self._exec
        if graph is not None:
            return races_of(lib.mtiart_graph_check_races, graph, "MTIAGraph.check_races")
        if exec_ is not None:
            return races_of(lib.mtiart_graph_exec_check_races, exec_, "MTIAGraph.check_races")
        raise RuntimeError("MTIAGraph.check_races() called before a successful capture")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(
            "an MTIAGraph owns its captured graph and executable: it cannot be copied or "
            "pickled (capture the work again into another MTIAGraph, or share this object)"
        )

    def __repr__(self) -> str:
        state = (
            "capturing"
            if self._capture_stream is not None
            else "captured"
            if self._captured
            else "empty"
        )
        return f"<mtia_graph.MTIAGraph {state} keep_graph={self._keep_graph} pool={self._pool}>"

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer has no one to raise to
            self._reset()

    # ---------------------------------------------------------------- internals

    def _template(self, what: str) -> Any:
        graph = self._graph
        if graph is None:
            raise RuntimeError(
                f"{what}(): no captured graph is kept: capture with MTIAGraph(keep_graph=True), "
                f"or call enable_debug_mode() before the capture ends"
            )
        return graph

    def _instantiate(self) -> None:
        if self._exec is not None:
            check(lib.mtiart_graph_exec_destroy(self._exec))
            self._exec = None
        exec_out = ffi.new("mtiart_graph_exec *")
        flags = lib.MTIART_GRAPH_INSTANTIATE_CHECK_INPUT_LIVENESS if self._check_inputs else 0
        if _fusion is not None:
            flags |= (
                lib.MTIART_GRAPH_INSTANTIATE_FUSION
                if _fusion
                else lib.MTIART_GRAPH_INSTANTIATE_NO_FUSION
            )
        check(
            lib.mtiart_graph_instantiate_with_flags(self._graph, flags, exec_out),
            "MTIAGraph.instantiate",
        )
        self._exec = exec_out[0]

    def _check_captured_races(self, mode: str) -> None:
        races = races_of(lib.mtiart_graph_check_races, self._graph, "MTIAGraph.capture_end")
        if not races:
            return
        text = describe_races(races)
        if mode == "warn":
            warnings.warn(text, RaceWarning, stacklevel=user_stacklevel())
            return
        # The capture is discarded, as for any failed capture_end().
        self._destroy_template()
        self._pool = None
        self._retire_keepalive()
        raise RaceError(f"MTIAGraph.capture_end: {text}", races)

    def _destroy_template(self) -> None:
        if self._graph is not None:
            graph, self._graph = self._graph, None
            check(lib.mtiart_graph_destroy(graph))

    def _collect_keepalive(self) -> None:
        if self._capture_id:
            self._keepalive.extend(capture_keepalive(self._capture_id))

    def _retire_keepalive(self) -> None:
        if not self._keepalive:
            return
        stream = self._last_replay_stream
        keepalive, self._keepalive = self._keepalive, []
        self._last_replay_stream = None
        if stream is not None:
            # A replay may still be running: keep the callables until it has completed.
            keep_until_done(stream._handle, keepalive)
        else:
            # Never replayed (or the capture failed): nothing can call them any more. What
            # earlier resets kept may be done by now.
            release_done()

    def _reset(self) -> None:
        # First: a replay() on another thread that finds no executable now reports an
        # empty graph instead of instantiating one.
        self._captured = False
        stream = self._capture_stream
        if stream is not None:
            # Abandon an unfinished capture: end it and drop whatever it produced.
            self._capture_stream = None
            graph_out = ffi.new("mtiart_graph *")
            if lib.mtiart_stream_end_capture(stream._handle, graph_out) == 0:
                lib.mtiart_graph_destroy(graph_out[0])
            self._collect_keepalive()
        if self._exec is not None:
            exec_, self._exec = self._exec, None
            check(lib.mtiart_graph_exec_destroy(exec_))
        self._destroy_template()
        self._retire_keepalive()
        self._pool = None
        self._capture_id = 0
        self._check_races = None
        self._check_inputs = False
        self._input_names = {}


class graph:
    """Context manager that captures the work of its body into an :class:`MTIAGraph`.

    Args:
        mtia_graph: the graph object to capture into.
        pool: a pool id to share (see :func:`graph_pool_handle`), or None for a new one.
        stream: the capture stream; by default one stream per process, taken from
            ``current_stream()`` at the first use (as in torch).
        capture_error_mode, check_input_liveness: see :meth:`MTIAGraph.capture_begin`.
        check_races: see :meth:`MTIAGraph.capture_begin`.

    If the body raises, the capture is abandoned (its pool released, the graph left
    empty and reusable), the previous stream is restored, and the original exception
    propagates unchanged.
    """

    default_capture_stream: Stream | None = None

    def __init__(
        self,
        mtia_graph: MTIAGraph,
        pool: _POOL_HANDLE | None = None,
        stream: Stream | None = None,
        capture_error_mode: str = "global",
        check_input_liveness: bool = False,
        check_races: str | None = None,
    ):
        if not isinstance(mtia_graph, MTIAGraph):
            raise TypeError(f"graph() expects an MTIAGraph, got {type(mtia_graph).__name__}")
        if self.__class__.default_capture_stream is None:
            self.__class__.default_capture_stream = current_stream()

        self.pool: tuple[()] | tuple[_POOL_HANDLE] = () if pool is None else (_check_pool(pool),)
        self.capture_stream = (
            stream if stream is not None else self.__class__.default_capture_stream
        )
        assert self.capture_stream is not None
        self.capture_error_mode = capture_error_mode
        self.check_input_liveness = bool(check_input_liveness)
        _capture_mode(capture_error_mode)
        self.check_races = check_races_mode(check_races)
        self.stream_ctx = _stream_context(self.capture_stream)
        # capture_begin() captures the current stream of the current device, so the capture
        # stream's device is made current for the body (torch gets this from set_stream,
        # which switches the device; entering it here keeps that true whatever the stream
        # context does) and restored afterwards.
        self.device_ctx = _device_context(self.capture_stream.device_index)
        self.mtia_graph = mtia_graph

    def __enter__(self) -> None:
        synchronize()
        empty_cache()

        self.device_ctx.__enter__()
        self.stream_ctx.__enter__()

        pool_arg = self.pool[0] if self.pool else None
        try:
            self.mtia_graph.capture_begin(
                pool_arg,
                capture_error_mode=self.capture_error_mode,
                check_input_liveness=self.check_input_liveness,
                check_races=self.check_races,
            )
        except BaseException:
            self.stream_ctx.__exit__(None, None, None)
            self.device_ctx.__exit__(None, None, None)
            raise

    def __exit__(self, *args: object) -> None:
        exc_type, exc, tb = args if len(args) == 3 else (None, None, None)
        if exc_type is None:
            try:
                self.mtia_graph.capture_end()
            finally:
                self.stream_ctx.__exit__(None, None, None)
                self.device_ctx.__exit__(None, None, None)
            return None
        # The body raised: abandon the capture but let the original exception through.
        try:
            self.mtia_graph._reset()
        except Exception as cleanup_error:  # noqa: BLE001 - the body's exception comes first
            warnings.warn(
                f"abandoning the capture failed: {cleanup_error}", RuntimeWarning, stacklevel=2
            )
        finally:
            self.stream_ctx.__exit__(exc_type, exc, tb)
            self.device_ctx.__exit__(exc_type, exc, tb)
        return None


class _Conditional:
    """The context manager of :func:`while_` and :func:`if_`."""

    __slots__ = ("_flag", "_name", "_stream", "_type")

    def __init__(self, flag: Tensor, conditional_type: int, name: str) -> None:
        if not isinstance(flag, Tensor):
            raise TypeError(f"{name}() expects a Tensor flag, got {type(flag).__name__}")
        if flag.numel() != 1 or flag.dtype not in (int32, bool_):
            raise ValueError(
                f"{name}() needs a one-element int32 or bool tensor as its flag, got shape "
                f"{tuple(flag.shape)} and dtype {flag.dtype}"
            )
        self._flag = flag
        self._type = conditional_type
        self._name = name
        self._stream: Stream | None = None

    def __enter__(self) -> None:
        stream = current_stream(self._flag._dev)
        check(
            lib.mtiart_stream_begin_conditional(
                stream._handle,
                self._type,
                ffi.cast("void *", self._flag.data_ptr()),
                self._flag.dtype.itemsize,
            ),
            self._name,
        )
        self._stream = stream

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        stream, self._stream = self._stream, None
        assert stream is not None
        status = lib.mtiart_stream_end_conditional(stream._handle)
        if status and exc_type is None:
            raise_status(status, self._name)
        # With the body raising, its exception comes first (the capture is abandoned).


def while_(flag: Tensor) -> _Conditional:
    """Inside a graph capture, capture the body of a loop the graph runs on the device.

    ``with while_(flag): ...`` captures the body's work into a conditional node: at each
    replay the body runs as long as ``flag`` (a one-element ``int32`` or ``bool`` tensor) is
    non-zero, tested before every iteration, with no return to the host. An operation of
    the body usually sets the flag, e.g. ``flag.copy_(residual > tol)``. Bodies nest, and
    hold the current stream's work only. Raises :class:`CaptureError` outside a capture.
    """
    return _Conditional(flag, lib.MTIART_CONDITIONAL_WHILE, "while_")


def if_(flag: Tensor) -> _Conditional:
    """Inside a graph capture, capture work the graph runs only when ``flag`` is non-zero.

    As :func:`while_`, but the body runs at most once per replay.
    """
    return _Conditional(flag, lib.MTIART_CONDITIONAL_IF, "if_")
