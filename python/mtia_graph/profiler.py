"""Timeline traces of what the device workers ran, in the spirit of ``torch.profiler``.

``with profiler.trace("trace.json"):`` records every stream operation and, inside graph
replays, every node: its name ("matmul 32x256 @ 256x512", a Python kernel's qualified
name), stream, worker thread, start and end, the bytes it touches, its graph and replay.
The file is Chrome trace-event JSON: open it in https://ui.perfetto.dev or
chrome://tracing. One process per device, one thread per worker, a slice per operation,
flow arrows from event records to the waits they release and along a replay's edges
between streams.

A picture without a browser::

    python -m mtia_graph.profiler view trace.json -o trace.png

draws one lane per worker with the operations coloured by stream (needs matplotlib: the
``plot`` extra, ``pip install 'mtia-graph[plot]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ._C import check, ffi, lib
from .device import device_count

__all__ = ["flush", "load", "start", "stop", "trace", "view"]


def start() -> None:
    """Start recording (one trace at a time: :class:`~mtia_graph.MTIAError` if one runs)."""
    check(lib.mtiart_trace_start(), "profiler.start")


def flush(path: str | os.PathLike[str]) -> None:
    """Write what the running trace has recorded so far to ``path`` (work enqueued but not
    yet run is not in it). The file is complete or absent."""
    check(lib.mtiart_trace_flush(os.fsencode(path)), "profiler.flush")


def stop(path: str | os.PathLike[str] | None) -> None:
    """Stop the running trace and write it to ``path`` (None: discard it)."""
    target = ffi.NULL if path is None else os.fsencode(path)
    check(lib.mtiart_trace_stop(target), "profiler.stop")


@contextlib.contextmanager
def trace(path: str | os.PathLike[str]) -> Iterator[None]:
    """Record the body's device work into ``path`` (Chrome trace-event JSON).

    On exit every device is synchronized first, so the work the body enqueued is in the
    trace; the trace is written even when the body raises (then the body's exception is
    the one that propagates).
    """
    start()
    try:
        yield
    finally:
        try:
            with contextlib.suppress(Exception):
                for d in range(device_count()):
                    check(lib.mtiart_device_synchronize(d), "profiler.trace")
        finally:
            stop(path)


def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The events of a trace file (its ``traceEvents``)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    events: list[dict[str, Any]] = data["traceEvents"] if isinstance(data, dict) else data
    return events


def view(path: str | os.PathLike[str], output: str | os.PathLike[str]) -> None:
    """Draw the trace at ``path`` as a timeline into ``output`` (any format matplotlib
    writes, from the extension): one lane per worker, operations coloured by stream."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as missing:
        raise RuntimeError(
            "profiler view needs matplotlib: pip install 'mtia-graph[plot]' (or matplotlib)"
        ) from missing
    events = load(path)
    names = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    slices = [e for e in events if e.get("ph") == "X"]
    lanes = sorted({(e["pid"], e["tid"]) for e in slices})
    streams = sorted({e["args"].get("stream", 0) for e in slices})
    palette = plt.get_cmap("tab10")
    color = {s: palette(i % 10) for i, s in enumerate(streams)}
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.6 * max(1, len(lanes))))
    for row, lane in enumerate(lanes):
        for e in slices:
            if (e["pid"], e["tid"]) != lane:
                continue
            graph_op = e.get("cat") == "graph"
            ax.broken_barh(
                [(e["ts"], max(e["dur"], 1e-3))],
                (row - 0.4, 0.8) if not graph_op else (row - 0.45, 0.9),
                facecolors="none" if graph_op else color[e["args"].get("stream", 0)],
                edgecolors="black" if graph_op else "none",
                linewidth=0.8,
            )
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(
        [f"mtia:{pid} {names.get((pid, tid), f'thread {tid}')}" for pid, tid in lanes]
    )
    ax.invert_yaxis()
    ax.set_xlabel("time (µs)")
    ax.set_title(os.path.basename(os.fspath(path)))
    ax.legend(
        handles=[Patch(color=color[s], label=f"stream {s}") for s in streams],
        loc="upper right",
        fontsize="small",
    )
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtia_graph.profiler view TRACE -o OUT``."""
    parser = argparse.ArgumentParser(prog="python -m mtia_graph.profiler")
    commands = parser.add_subparsers(dest="command", required=True)
    v = commands.add_parser("view", help="draw a trace's timeline (one lane per worker)")
    v.add_argument("trace", help="a trace file written by profiler.trace")
    v.add_argument("-o", "--output", required=True, help="the picture to write (.png, .svg)")
    args = parser.parse_args(argv)
    try:
        view(args.trace, args.output)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"mtia_graph.profiler: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
