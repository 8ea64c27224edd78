"""Checks of captured graphs that the runtime can make because it knows every byte range
each node reads and writes, and owns the memory pools: races between nodes that no path
orders, and graphs sharing a pool replayed out of capture order or concurrently.

:meth:`MTIAGraph.check_races` returns the :class:`Race` list; ``capture_begin(...,
check_races="warn" | "error")`` (and ``graph(..., check_races=...)``) checks at the end of
the capture, warning with :class:`RaceWarning` or raising :class:`RaceError`. A shared
pool's replay order is checked at every replay (:func:`set_pool_order_check`): a
:class:`PoolOrderWarning` by default.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._C import MTIAError, check, ffi, lib

__all__ = [
    "PoolOrderWarning",
    "Race",
    "RaceError",
    "RaceNode",
    "RaceWarning",
    "check_races_mode",
    "describe_races",
    "races_of",
    "set_pool_order_check",
    "user_stacklevel",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_ACCESS_NAMES = {
    lib.MTIART_ARG_BUFFER_IN: "read",
    lib.MTIART_ARG_BUFFER_OUT: "write",
    lib.MTIART_ARG_BUFFER_INOUT: "read-write",
}
_VERBS = {"read": "reads", "write": "writes", "read-write": "reads and writes"}


@dataclass(frozen=True)
class RaceNode:
    """One side of a :class:`Race`: a node of the graph and how it touches the bytes."""

    index: int
    """The node's index in the captured graph (capture order)."""
    name: str
    """The operation: a kernel's name, ``"memcpy DtoD"``, ``"fill x4"``, ..."""
    stream: int
    """:attr:`Stream.stream_id` of the stream that captured it (0: built by hand)."""
    access: str
    """``"read"``, ``"write"`` or ``"read-write"``, on the overlapping bytes."""

    def __str__(self) -> str:
        where = f", stream {self.stream}" if self.stream else ""
        return f"node {self.index} ({self.name}{where}) {_VERBS[self.access]}"


@dataclass(frozen=True)
class Race:
    """Two nodes with no path between them that touch the same bytes, one writing: their
    order at replay is whatever the workers make it."""

    first: RaceNode
    """The earlier node in capture order."""
    second: RaceNode
    address: int
    """Where the overlapping bytes start (a device address, as ``Tensor.data_ptr()``)."""
    nbytes: int

    def __str__(self) -> str:
        return (
            f"{self.first} and {self.second} {self.nbytes} bytes at {self.address:#x} with "
            f"no path between them"
        )


class RaceWarning(UserWarning):
    """A captured graph has races (``check_races="warn"``)."""


class RaceError(MTIAError):
    """A captured graph has races (``check_races="error"``); :attr:`races` lists them."""

    races: list[Race]

    def __init__(self, message: str, races: list[Race]) -> None:
        super().__init__(message, lib.MTIART_ERROR_INVALID_VALUE)
        self.races = races


def _side(node: Any) -> RaceNode:
    return RaceNode(
        index=int(node.node),
        name=ffi.string(node.name).decode("utf-8", "replace"),
        stream=int(node.stream),
        access=_ACCESS_NAMES.get(int(node.access), "read"),
    )


def races_of(check_fn: Callable[[Any, Any, int, Any], int], handle: Any, what: str) -> list[Race]:
    """Every race of a graph or executable (``check_fn``: ``lib.mtiart_graph_check_races``
    or ``lib.mtiart_graph_exec_check_races``)."""
    count = ffi.new("size_t *")
    check(check_fn(handle, ffi.NULL, 0, count), what)
    while True:
        room = int(count[0])
        if room == 0:
            return []
        out = ffi.new("mtiart_race[]", room)
        check(check_fn(handle, out, room, count), what)
        if int(count[0]) <= room:  # else the graph changed in between: ask again
            break
    return [
        Race(_side(r.first), _side(r.second), int(r.address), int(r.bytes))
        for r in out[0 : int(count[0])]
    ]


def describe_races(races: list[Race], limit: int = 8) -> str:
    """One line per race (at most ``limit``, then how many more)."""
    lines = [f"  {race}" for race in races[:limit]]
    if len(races) > limit:
        lines.append(f"  ... and {len(races) - limit} more")
    return f"the captured graph has {len(races)} race{'s' if len(races) != 1 else ''}:\n" + (
        "\n".join(lines)
    )


def check_races_mode(mode: object) -> str | None:
    """Validate a ``check_races=`` argument."""
    if mode is None or (isinstance(mode, str) and mode in ("warn", "error")):
        return mode
    raise ValueError(f"check_races must be None, 'warn' or 'error', got {mode!r}")


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning issued by the caller point at the first
    frame outside this package (the user's line, however deep the package's calls go)."""
    level = 1
    frame = sys._getframe(1)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
        _PACKAGE_DIR
    ):
        frame = frame.f_back
        level += 1
    return level


# ----------------------------------------------------------------- shared-pool replay order


class PoolOrderWarning(UserWarning):
    """Graphs sharing a memory pool were replayed out of capture order, or concurrently:
    one may read memory another reused."""


_POOL_ORDER_MODES = {
    "warn": lib.MTIART_POOL_ORDER_WARN,
    "error": lib.MTIART_POOL_ORDER_ERROR,
    "off": lib.MTIART_POOL_ORDER_OFF,
}


@ffi.def_extern()
def _mtia_pool_order_trampoline(device: int, pool: Any, message: Any, user_data: Any) -> None:
    # On the launching thread (out of order) or on a device worker (concurrent replays).
    text = ffi.string(message).decode("utf-8", "replace")
    warnings.warn(text, PoolOrderWarning, stacklevel=user_stacklevel())


def set_pool_order_check(mode: str) -> None:
    """How replays of graphs sharing a memory pool are checked.

    Graphs that share a pool (``pool=`` of :class:`graph` or of
    :meth:`MTIAGraph.capture_begin`) are correct only when replayed in the order they were
    captured (a graph after the one captured before it, or again, or the first one to
    start a new round; graphs reset or deleted since are skipped) and never concurrently.
    ``"warn"`` (the default) issues a :class:`PoolOrderWarning` for a violation and replays
    anyway; ``"error"`` makes :meth:`MTIAGraph.replay` raise
    :class:`MTIAError` for an out-of-order replay (nothing is launched) and skips a
    concurrent one, whose stream's next synchronization raises; ``"off"`` checks nothing.
    Graphs with a pool of their own are never checked, and cost nothing.
    """
    if mode not in _POOL_ORDER_MODES:
        raise ValueError(f"mode must be one of {sorted(_POOL_ORDER_MODES)}, got {mode!r}")
    check(
        lib.mtiart_set_pool_order_check(
            _POOL_ORDER_MODES[mode], lib._mtia_pool_order_trampoline, ffi.NULL
        ),
        "set_pool_order_check",
    )


set_pool_order_check("warn")
