"""Device memory: caching-allocator statistics, snapshots, memory history, OOM observers,
empty_cache.

Names and keys follow ``torch.cuda`` / ``torch.mtia``: :func:`memory_stats` is a flat dict
(``"allocated_bytes.all.current"``, ...) plus the ``"dram"`` sub-dict that torch.mtia's
``memory_allocated()`` reads. With :func:`record_memory_history` on, every allocation keeps
the Python stack (and, with ``stacks="all"``, the C return addresses) that made it, and
:func:`memory_snapshot` returns segments, blocks with their frames and the log of
allocations and frees in the structure of ``torch.cuda.memory._snapshot()``:
:func:`_dump_snapshot` pickles it for PyTorch's memory_viz page
(https://pytorch.org/memory_viz).
"""

from __future__ import annotations

import bisect
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from ._C import check, ffi, lib
from .device import _device_index, _DeviceLike, current_device, device_count

__all__ = [
    "_dump_snapshot",
    "_record_memory_history",
    "_snapshot",
    "attach_out_of_memory_observer",
    "detach_out_of_memory_observer",
    "empty_cache",
    "max_memory_allocated",
    "max_memory_reserved",
    "mem_get_info",
    "memory_allocated",
    "memory_reserved",
    "memory_snapshot",
    "memory_stats",
    "record_memory_history",
    "reset_accumulated_memory_stats",
    "reset_peak_memory_stats",
    "snapshot",
]


def empty_cache() -> None:
    """Release cached, unused device memory of the current device.

    Frees the free segments of the default pool and of private pools that no graph uses
    any more. Raises :class:`CaptureError` while a capture is active.
    """
    check(lib.mtiart_empty_cache(current_device()), "empty_cache")


def _raw_stats(device: _DeviceLike) -> Any:
    stats = ffi.new("mtiart_memory_stats *")
    check(lib.mtiart_memory_get_stats(_device_index(device), stats), "memory_stats")
    return stats


def _stat(device: _DeviceLike, key: int) -> int:
    value = ffi.new("uint64_t *")
    check(lib.mtiart_memory_get_stat(_device_index(device), key, value), "memory_stats")
    return int(value[0])


def memory_stats(device: _DeviceLike = None) -> dict[str, Any]:
    """Allocator statistics of a device (default: the current device).

    Keys as in ``torch.cuda.memory_stats`` (``<stat>.all.current`` / ``.peak`` for
    allocated_bytes, reserved_bytes, active, active_bytes, segment, ...; counters
    ``num_alloc_retries`` and ``num_ooms``), plus ``"dram"``: ``{"allocated_bytes",
    "peak_bytes", "reserved_bytes", "peak_reserved_bytes", "capacity"}``.

    ``graph_held_bytes.all.current`` / ``.peak`` and ``graph_held.all.current`` count the
    blocks the program freed that graphs still hold (their memory returns when the last
    graph using them is reset): part of ``active_bytes``, not of ``allocated_bytes``.
    """
    s = _raw_stats(device)
    return {
        "allocated_bytes.all.current": int(s.allocated_bytes),
        "allocated_bytes.all.peak": int(s.allocated_bytes_peak),
        "requested_bytes.all.current": int(s.requested_bytes),
        "reserved_bytes.all.current": int(s.reserved_bytes),
        "reserved_bytes.all.peak": int(s.reserved_bytes_peak),
        "active.all.current": int(s.active_blocks),
        "active.all.peak": int(s.active_blocks_peak),
        "active_bytes.all.current": int(s.active_bytes),
        "active_bytes.all.peak": int(s.active_bytes_peak),
        "inactive_split.all.current": int(s.inactive_split_blocks),
        "inactive_split_bytes.all.current": int(s.inactive_split_bytes),
        "segment.all.current": int(s.segments),
        "segment.all.peak": int(s.segments_peak),
        "segment.all.allocated": int(s.segment_allocs),
        "segment.all.freed": int(s.segment_frees),
        "allocation.all.allocated": int(s.alloc_requests),
        "allocation.all.freed": int(s.free_requests),
        "num_alloc_retries": int(s.num_alloc_retries),
        "num_ooms": int(s.num_ooms),
        "private_pools": int(s.private_pools),
        "capacity": int(s.capacity),
        "graph_held_bytes.all.current": _stat(device, lib.MTIART_STAT_GRAPH_HELD_BYTES),
        "graph_held_bytes.all.peak": _stat(device, lib.MTIART_STAT_GRAPH_HELD_BYTES_PEAK),
        "graph_held.all.current": _stat(device, lib.MTIART_STAT_GRAPH_HELD_BLOCKS),
        "dram": {
            "allocated_bytes": int(s.allocated_bytes),
            "peak_bytes": int(s.allocated_bytes_peak),
            "reserved_bytes": int(s.reserved_bytes),
            "peak_reserved_bytes": int(s.reserved_bytes_peak),
            "capacity": int(s.capacity),
        },
    }


def memory_allocated(device: _DeviceLike = None) -> int:
    """Bytes currently handed out to tensors (rounded block sizes)."""
    return int(_raw_stats(device).allocated_bytes)


def max_memory_allocated(device: _DeviceLike = None) -> int:
    """Peak of :func:`memory_allocated` since start or :func:`reset_peak_memory_stats`."""
    return int(_raw_stats(device).allocated_bytes_peak)


def memory_reserved(device: _DeviceLike = None) -> int:
    """Bytes in segments the allocator holds (allocated plus cached)."""
    return int(_raw_stats(device).reserved_bytes)


def max_memory_reserved(device: _DeviceLike = None) -> int:
    """Peak of :func:`memory_reserved`."""
    return int(_raw_stats(device).reserved_bytes_peak)


def mem_get_info(device: _DeviceLike = None) -> tuple[int, int]:
    """``(free, total)`` bytes of a device (default: the current one), as
    ``torch.cuda.mem_get_info``: the capacity, and what of it no segment holds (memory the
    allocator caches counts as used, as it does for cudaMemGetInfo)."""
    s = _raw_stats(device)
    return (int(s.capacity) - int(s.reserved_bytes), int(s.capacity))


def reset_peak_memory_stats(device: _DeviceLike = None) -> None:
    """Reset every ``*.peak`` statistic to its current value."""
    check(lib.mtiart_memory_reset_peak_stats(_device_index(device)), "reset_peak_memory_stats")


def reset_accumulated_memory_stats(device: _DeviceLike = None) -> None:
    """Reset the cumulative counters (allocation counts, retries, OOMs)."""
    check(
        lib.mtiart_memory_reset_accumulated_stats(_device_index(device)),
        "reset_accumulated_memory_stats",
    )


_BLOCK_STATES = {
    0: "active_allocated",  # MTIART_BLOCK_ACTIVE
    1: "active_pending_free",  # MTIART_BLOCK_PENDING_FREE
    2: "inactive",  # MTIART_BLOCK_FREE
    3: "graph_held",  # MTIART_BLOCK_GRAPH_HELD: freed by the program, held by graphs
    4: "graph_allocation",  # MTIART_BLOCK_GRAPH_ALLOCATION: a C memory node's, not live
}


# ---------------------------------------------------------------------------------------
# Memory history. libmtiart logs allocations and frees and keeps each allocation's C stack;
# this module adds the Python stack of the allocations made through _Storage (the tensors'
# memory), by address and time: a record belongs to the allocation at its address that the
# runtime logged last before it.
# ---------------------------------------------------------------------------------------

Frame = dict[str, Any]  # {"filename", "line", "name"}, as torch's snapshots have them

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_history_lock = threading.Lock()
_recording = False  # read by _storage at every allocation
_c_stacks = False
_max_entries = 0
# address -> [(monotonic ns, frames)] of the Python allocations there, oldest first
_py_allocs: dict[int, list[tuple[int, list[Frame]]]] = {}
_py_count = 0
# pool id -> what owns it ("MTIAGraph at 0x7f..."), for the snapshot's segments
_pool_labels: dict[tuple[int, int], str] = {}


def record_memory_history(
    enabled: str | bool | None = "all", stacks: str = "python", max_entries: int = 0
) -> None:
    """Record, for every allocation from now on, the stack that made it, and log
    allocations and frees (``torch.mtia.record_memory_history``).

    Args:
        enabled: ``"all"`` (or ``True``, ``"state"``) to record; ``None`` (or ``False``)
            stops recording (what was recorded stays in :func:`snapshot`).
        stacks: ``"python"``: Python frames; ``"all"``: also the C return addresses.
        max_entries: keep the latest ``max_entries`` allocations and frees in the log
            (0: all of them).
    """
    _record_memory_history(enabled, stacks=stacks, max_entries=max_entries)


def _record_memory_history(
    enabled: str | bool | None = "all",
    context: str | None = "all",
    stacks: str = "python",
    max_entries: int = 0,
    device: _DeviceLike = None,
) -> None:
    """:func:`record_memory_history` with the arguments of
    ``torch.cuda.memory._record_memory_history``: ``context`` (``"all"``, ``"alloc"``,
    ``"state"``, ``None``) is accepted, as allocations always keep their stack, and so is
    ``device``: history covers every device."""
    global _recording, _c_stacks, _max_entries, _py_count
    if enabled not in ("all", "state", True, None, False):
        raise ValueError(f"enabled must be 'all', 'state' or None, got {enabled!r}")
    if context not in ("all", "alloc", "state", None):
        raise ValueError(f"context must be 'all', 'alloc', 'state' or None, got {context!r}")
    if stacks not in ("python", "all"):
        raise ValueError(f"stacks must be 'python' or 'all', got {stacks!r}")
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
        raise ValueError(f"max_entries must be an int >= 0, got {max_entries!r}")
    if device is not None:
        _device_index(device)  # validated
    on = enabled not in (None, False)
    with _history_lock:
        frames = 16 if stacks == "all" else 1
        check(
            lib.mtiart_memory_record_history(1 if on else 0, frames, max_entries),
            "record_memory_history",
        )
        if on:
            _py_allocs.clear()
            _py_count = 0
        _recording, _c_stacks, _max_entries = on, stacks == "all", max_entries


def _python_frames() -> list[Frame]:
    """The calling Python stack, innermost first, without this package's own frames."""
    frames: list[Frame] = []
    f = sys._getframe(1)
    while f is not None:
        filename = f.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR):
            frames.append({"filename": filename, "line": f.f_lineno, "name": f.f_code.co_name})
        f = f.f_back  # type: ignore[assignment]
    return frames


def _note_python_alloc(address: int) -> None:
    """_storage made an allocation at ``address`` while history is recorded."""
    global _py_count
    record = (time.monotonic_ns(), _python_frames())
    with _history_lock:
        _py_allocs.setdefault(address, []).append(record)
        _py_count += 1
        if _max_entries and _py_count > 2 * _max_entries:
            # as the runtime's log forgets its oldest, so do these: keep each address's latest
            for key in list(_py_allocs):
                _py_allocs[key] = _py_allocs[key][-1:]
            _py_count = len(_py_allocs)


def _label_pool(pool: tuple[int, int], owner: str) -> None:
    """The memory pool ``pool`` belongs to ``owner`` (a graph), as snapshots say."""
    with _history_lock:
        _pool_labels[pool] = owner


def _history_log() -> list[Any]:
    count = ffi.new("size_t *")
    while True:
        check(lib.mtiart_memory_get_history(ffi.NULL, 0, count), "memory_snapshot")
        cap = int(count[0]) + 64
        events = ffi.new("mtiart_memory_event[]", cap)
        check(lib.mtiart_memory_get_history(events, cap, count), "memory_snapshot")
        if int(count[0]) <= cap:
            return [events[i] for i in range(int(count[0]))]


def _python_frames_at(address: int, since_ns: int, until_ns: int | None) -> list[Frame]:
    """The frames of the Python allocation at ``address`` made in [since, until), if any."""
    records = _py_allocs.get(address)
    if not records:
        return []
    i = bisect.bisect_left(records, since_ns, key=lambda r: r[0])
    if i < len(records) and (until_ns is None or records[i][0] < until_ns):
        return list(records[i][1])
    return []


def _c_frames(ptr: int) -> list[Frame] | None:
    """The C return addresses that made the live allocation at ``ptr``; None when it was
    made while history was not recorded."""
    count = ffi.new("size_t *")
    frames = ffi.new("void *[]", 64)
    status = lib.mtiart_memory_get_block_frames(ffi.cast("void *", ptr), frames, 64, count)
    if status or count[0] == 0:
        return None
    return [
        {"filename": "??", "line": 0, "name": hex(int(ffi.cast("uintptr_t", frames[i])))}
        for i in range(min(int(count[0]), 64))
    ]


def _device_snapshot(idx: int) -> list[dict[str, Any]]:
    count = ffi.new("size_t *")
    # The block list can grow between sizing and filling (other threads allocate).
    while True:
        check(lib.mtiart_memory_snapshot(idx, ffi.NULL, 0, count), "snapshot")
        cap = int(count[0]) + 16
        blocks = ffi.new("mtiart_block_info[]", cap)
        check(lib.mtiart_memory_snapshot(idx, blocks, cap, count), "snapshot")
        if int(count[0]) <= cap:
            break
    segments: list[dict[str, Any]] = []
    by_address: dict[int, dict[str, Any]] = {}
    for i in range(int(count[0])):
        b = blocks[i]
        seg_addr = int(b.segment_address)
        seg = by_address.get(seg_addr)
        if seg is None:
            seg = {
                "device": idx,
                "address": seg_addr,
                "total_size": int(b.segment_size),
                "allocated_size": 0,
                "active_size": 0,
                "requested_size": 0,
                "stream": int(b.stream_id),
                "segment_pool_id": (int(b.pool.first), int(b.pool.second)),
                "is_expandable": False,
                "frames": [],
                "blocks": [],
            }
            by_address[seg_addr] = seg
            segments.append(seg)
        state = _BLOCK_STATES.get(int(b.state), "unknown")
        size = int(b.size)
        requested = int(b.requested_size) if state != "inactive" else 0
        seg["blocks"].append(
            {
                "address": int(b.address),
                "size": size,
                "requested_size": requested,
                "state": state,
                "frames": [],
            }
        )
        if state == "active_allocated":
            seg["allocated_size"] += size
            seg["requested_size"] += requested
        if state != "inactive":
            seg["active_size"] += size
    return segments


def _add_history(segments: list[dict[str, Any]], log: list[Any], with_frames: bool = True) -> None:
    """Graph pools' labels and (``with_frames``) frames for the active blocks: the Python
    allocation at the block's address made after the runtime's latest allocation there,
    and the C stack (stacks="all")."""
    latest: dict[int, int] = {}
    for e in log:
        if e.action == lib.MTIART_MEMORY_ALLOC:
            latest[int(e.address)] = int(e.time_ns)
    for seg in segments:
        pool = seg["segment_pool_id"]
        if pool in _pool_labels:
            seg["pool_label"] = _pool_labels[pool]
        for block in seg["blocks"]:
            if not with_frames or block["state"] == "inactive":
                continue
            address = block["address"]
            c_frames = _c_frames(address)
            if c_frames is None:  # allocated while not recording
                continue
            frames = _python_frames_at(address, latest.get(address, 0), None)
            block["frames"] = frames + c_frames if _c_stacks else frames


def _device_traces(log: list[Any]) -> list[list[dict[str, Any]]]:
    """The log of allocations and frees per device, torch's ``device_traces`` entries."""
    traces: list[list[dict[str, Any]]] = [[] for _ in range(device_count())]
    next_alloc: dict[int, int | None] = {}
    allocs = [i for i, e in enumerate(log) if e.action == lib.MTIART_MEMORY_ALLOC]
    until: dict[int, int | None] = {}
    for i in reversed(allocs):
        address = int(log[i].address)
        until[i] = next_alloc.get(address)
        next_alloc[address] = int(log[i].time_ns)
    for i, e in enumerate(log):
        address = int(e.address)
        alloc = e.action == lib.MTIART_MEMORY_ALLOC
        entry = {
            "action": "alloc" if alloc else "free_requested",
            "addr": address,
            "size": int(e.size),
            "stream": int(e.stream_id),
            "time_us": int(e.time_ns) // 1000,
            "frames": _python_frames_at(address, int(e.time_ns), until[i]) if alloc else [],
        }
        if 0 <= e.device < len(traces):
            traces[e.device].append(entry)
    return traces


def memory_snapshot(
    mempool_id: tuple[int, int] | None = None, include_traces: bool = True
) -> list[dict[str, Any]]:
    """The allocator's segments on every device, as ``torch.cuda.memory_snapshot()``.

    A list of segment dicts (``device``, ``address``, ``total_size``, ``allocated_size``,
    ``active_size``, ``requested_size``, ``stream``, ``segment_pool_id``, ``blocks``, and
    ``pool_label`` for a graph's pool: the graph that owns it); each block has
    ``address``, ``size``, ``requested_size``, ``state`` (one of ``"active_allocated"``,
    ``"active_pending_free"``, ``"inactive"``, or ``"graph_held"`` for a block the program
    freed that graphs still hold) and ``frames``: the stack that allocated it when
    :func:`record_memory_history` was on (innermost first).

    Args:
        mempool_id: only the segments of this pool (a graph's :meth:`MTIAGraph.pool`, a
            :func:`graph_pool_handle`, ``(0, 0)`` for the default pool).
        include_traces: False leaves every block's ``frames`` empty.
    """
    segments: list[dict[str, Any]] = []
    for idx in range(device_count()):
        segments.extend(_device_snapshot(idx))
    if mempool_id is not None:
        pool = (int(mempool_id[0]), int(mempool_id[1]))
        segments = [seg for seg in segments if seg["segment_pool_id"] == pool]
    with _history_lock:
        _add_history(segments, _history_log(), with_frames=bool(include_traces))
    return segments


def snapshot() -> dict[str, Any]:
    """The allocator's state as ``torch.mtia.snapshot()`` returns it, in the structure of
    ``torch.cuda.memory._snapshot()`` (which PyTorch's memory_viz page opens):
    ``{"segments": memory_snapshot(), "device_traces": [per device: the logged allocations
    and frees, oldest first, each {"action": "alloc" | "free_requested", "addr", "size",
    "stream", "time_us", "frames"}], "allocator_settings": {}}``; the traces are empty
    unless :func:`record_memory_history` is on."""
    segments = memory_snapshot()
    with _history_lock:
        traces = _device_traces(_history_log())
    return {"segments": segments, "device_traces": traces, "allocator_settings": {}}


_snapshot = snapshot


def _dump_snapshot(filename: str | os.PathLike[str] = "dump_snapshot.pickle") -> None:
    """Pickle :func:`snapshot` to ``filename``, for https://pytorch.org/memory_viz."""
    data = snapshot()
    with open(filename, "wb") as f:
        pickle.dump(data, f)


# ---------------------------------------------------------------------------------------
# Out-of-memory observers. libmtiart gets one C observer (the trampoline) the first time a
# Python observer is attached; the trampoline calls the Python observers in order.
# ---------------------------------------------------------------------------------------

OOMObserver = Callable[[int, int, int, int], Any]
_observers: list[OOMObserver] = []
_observers_lock = threading.Lock()
_trampoline_attached = False


@ffi.def_extern()
def _mtia_oom_trampoline(
    device: int, requested: int, allocated: int, reserved: int, capacity: int, user_data: Any
) -> None:
    # Runs on the allocating thread before the allocation fails with out-of-memory.
    for fn in list(_observers):
        try:
            fn(int(device), int(requested), int(allocated), int(capacity) - int(reserved))
        except Exception:  # noqa: BLE001 - an observer must not hide the OOM nor stop the others
            print(
                f"Exception ignored in mtia_graph out-of-memory observer {fn!r}:", file=sys.stderr
            )
            traceback.print_exc()


def attach_out_of_memory_observer(observer: OOMObserver) -> None:
    """Call ``observer(device, alloc, device_allocated, device_free)`` before an
    allocation fails with out-of-memory (torch's signature).

    ``alloc`` is the requested size, ``device_allocated`` the bytes allocated on the
    device and ``device_free`` its capacity minus the bytes the allocator reserves, all
    as seen after the allocator released its cache and retried. The observer runs on the
    allocating thread; exceptions it raises are printed and ignored.
    """
    global _trampoline_attached
    if not callable(observer):
        raise TypeError(f"observer must be callable, got {type(observer).__name__}")
    with _observers_lock:
        if not _trampoline_attached:
            check(
                lib.mtiart_attach_oom_observer(lib._mtia_oom_trampoline, ffi.NULL),
                "attach_out_of_memory_observer",
            )
            _trampoline_attached = True
        _observers.append(observer)


def detach_out_of_memory_observer(observer: OOMObserver) -> None:
    """Remove an observer added by :func:`attach_out_of_memory_observer` (ValueError if
    it is not attached)."""
    with _observers_lock:
        try:
            _observers.remove(observer)
        except ValueError:
            raise ValueError("observer is not attached") from None
