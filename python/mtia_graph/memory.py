"""Device memory: caching-allocator statistics, snapshots, OOM observers, empty_cache.

Names and keys follow ``torch.cuda`` / ``torch.mtia``: :func:`memory_stats` is a flat dict
(``"allocated_bytes.all.current"``, ...) plus the ``"dram"`` sub-dict that torch.mtia's
``memory_allocated()`` reads.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ._C import check, ffi, lib
from .device import _device_index, _DeviceLike, current_device, device_count

__all__ = [
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


def memory_stats(device: _DeviceLike = None) -> dict[str, Any]:
    """Allocator statistics of a device (default: the current device).

    Keys as in ``torch.cuda.memory_stats`` (``<stat>.all.current`` / ``.peak`` for
    allocated_bytes, reserved_bytes, active, active_bytes, segment, ...; counters
    ``num_alloc_retries`` and ``num_ooms``), plus ``"dram"``: ``{"allocated_bytes",
    "peak_bytes", "reserved_bytes", "peak_reserved_bytes", "capacity"}``.
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
}


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


def memory_snapshot(
    mempool_id: tuple[int, int] | None = None, include_traces: bool = True
) -> list[dict[str, Any]]:
    """The allocator's segments on every device, as ``torch.cuda.memory_snapshot()``.

    A list of segment dicts (``device``, ``address``, ``total_size``, ``allocated_size``,
    ``active_size``, ``requested_size``, ``stream``, ``segment_pool_id``, ``blocks``); each
    block has ``address``, ``size``, ``requested_size`` and ``state`` (one of
    ``"active_allocated"``, ``"active_pending_free"``, ``"inactive"``).

    Args:
        mempool_id: only the segments of this pool (a graph's :meth:`MTIAGraph.pool`, a
            :func:`graph_pool_handle`, ``(0, 0)`` for the default pool).
        include_traces: torch's switch for allocation stack traces; this allocator records
            none (every ``frames`` list is empty), so there is nothing to include.
    """
    del include_traces  # no allocation history is recorded
    segments: list[dict[str, Any]] = []
    for idx in range(device_count()):
        segments.extend(_device_snapshot(idx))
    if mempool_id is not None:
        pool = (int(mempool_id[0]), int(mempool_id[1]))
        segments = [seg for seg in segments if seg["segment_pool_id"] == pool]
    return segments


def snapshot() -> dict[str, Any]:
    """The allocator's state as ``torch.mtia.snapshot()`` returns it: ``{"segments":
    memory_snapshot(), "device_traces": [...]}``, one (empty: no allocation history is
    recorded) trace list per device."""
    return {"segments": memory_snapshot(), "device_traces": [[] for _ in range(device_count())]}


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
