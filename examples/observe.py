"""See what the runtime did: a picture of a captured graph and a timeline of its replays.

    MTIART_NUM_WORKERS=2 python examples/observe.py OUTDIR
    python -m mtia_graph.profiler view OUTDIR/trace.json -o OUTDIR/trace.png

writes OUTDIR/graph.png (the graph drawn by Graphviz: needs its `dot` program) and
OUTDIR/trace.json (open it in https://ui.perfetto.dev); the second line draws the trace
(needs matplotlib). The graph forks onto a second stream and joins back: two branches of
an MLP-like step whose Python kernels sleep a little, so that the timeline shows the two
workers running the branches at the same time.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import mtia_graph as mtia
from mtia_graph import MTIAGraph, profiler


@mtia.kernel
def slow_scale(x):  # type: ignore[no-untyped-def]
    time.sleep(0.002)  # stands for a long kernel; the GIL is released meanwhile
    x *= 0.5


def main(outdir: str) -> None:
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(0)
    x = mtia.from_numpy(rng.standard_normal((32, 256), dtype=np.float32))
    w1 = mtia.from_numpy(rng.standard_normal((256, 128), dtype=np.float32))
    w2 = mtia.from_numpy(rng.standard_normal((256, 128), dtype=np.float32))
    w1.name, w2.name = "w1", "w2"
    side = mtia.Stream()
    g = MTIAGraph(keep_graph=True)
    with mtia.graph(g):
        main_stream = mtia.current_stream()
        side.wait_stream(main_stream)
        a = x.matmul(w1).relu()
        slow_scale(a)
        with mtia.stream(side):
            b = x.matmul(w2).sigmoid()
            slow_scale(b)
        main_stream.wait_stream(side)
        out = (a + b).sum(1)
    g.debug_dump(os.path.join(outdir, "graph.png"))
    g.replay()  # the first replay instantiates
    mtia.synchronize()
    with profiler.trace(os.path.join(outdir, "trace.json")):
        for _ in range(3):
            g.replay()
    print(f"wrote {outdir}/graph.png and {outdir}/trace.json; out[:4] = {out.numpy()[:4]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
