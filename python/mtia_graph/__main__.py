"""``python -m mtia_graph``: capture an MLP inference step once, replay it on new inputs.

The step is ``softmax(gelu(x @ W1 + b1) @ W2 + b2)`` over static input/output tensors.
The demo checks every replayed result against numpy and prints the time per step eagerly
(each op issued from Python) and replayed (one graph launch), and the speedup.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

import mtia_graph as mtia

_Array = npt.NDArray[np.float64]


def gelu_reference(x: _Array) -> _Array:
    """torch.nn.functional.gelu(approximate="tanh"), the model's activation."""
    y: _Array = 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return y


def softmax_reference(x: _Array) -> _Array:
    """Softmax over the last axis, computed stably."""
    e: _Array = np.exp(x - x.max(axis=-1, keepdims=True))
    y: _Array = e / e.sum(axis=-1, keepdims=True)
    return y


def mlp(
    x: mtia.Tensor, w1: mtia.Tensor, b1: mtia.Tensor, w2: mtia.Tensor, b2: mtia.Tensor
) -> mtia.Tensor:
    """The model step; every op is enqueued on the current stream."""
    hidden = (x @ w1 + b1).gelu(approximate="tanh")
    return (hidden @ w2 + b2).softmax(dim=-1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtia_graph", description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per mode")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    shape_x = (args.batch, args.features)
    w1_np = rng.standard_normal((args.features, args.hidden)) / np.sqrt(args.features)
    w1_np = w1_np.astype(np.float32)
    b1_np = rng.standard_normal(args.hidden).astype(np.float32) * 0.1
    w2_np = rng.standard_normal((args.hidden, args.classes)) / np.sqrt(args.hidden)
    w2_np = w2_np.astype(np.float32)
    b2_np = rng.standard_normal(args.classes).astype(np.float32) * 0.1
    w1, b1, w2, b2 = (mtia.from_numpy(a) for a in (w1_np, b1_np, w2_np, b2_np))

    def reference(x_np: npt.NDArray[np.float32]) -> _Array:
        h = gelu_reference(x_np.astype(np.float64) @ w1_np + b1_np)
        return softmax_reference(h @ w2_np + b2_np)

    print(
        f"mtia_graph {mtia.__version__} on {mtia.get_device_properties(0).name}: "
        f"{mtia.get_device_properties(0).num_workers} workers"
    )
    print(
        f"model: softmax(gelu(x @ W1 + b1) @ W2 + b2), x {shape_x}, "
        f"W1 {w1_np.shape}, W2 {w2_np.shape}"
    )

    # Capture once on a side stream (as torch's graph() does), over a static input.
    static_x = mtia.zeros(shape_x)
    s = mtia.Stream()
    s.wait_stream(mtia.current_stream())
    with mtia.stream(s):
        mlp(static_x, w1, b1, w2, b2)  # warm-up: the allocator caches the blocks
    mtia.current_stream().wait_stream(s)
    mtia.synchronize()

    g = mtia.MTIAGraph()
    with mtia.graph(g):
        static_out = mlp(static_x, w1, b1, w2, b2)
    print(f"captured {g.num_nodes()} nodes into pool {g.pool()}")

    inputs = [rng.standard_normal(shape_x).astype(np.float32) for _ in range(8)]

    # Correctness: every replay on a new input matches numpy.
    worst = 0.0
    for x_np in inputs:
        static_x.copy_(x_np)
        g.replay()
        out = static_out.numpy()
        worst = max(worst, float(np.max(np.abs(out - reference(x_np)))))
    ok = worst < 1e-5
    print(
        f"replayed {len(inputs)} new inputs: max |error| vs numpy = {worst:.2e} "
        f"({'OK' if ok else 'MISMATCH'})"
    )

    # Timing: same work, same inputs, eager (op by op) vs replay (one launch).
    x_dev = [mtia.from_numpy(x) for x in inputs]

    def eager_step(i: int) -> None:
        mlp(x_dev[i % len(x_dev)], w1, b1, w2, b2)

    def replay_step(i: int) -> None:
        static_x.copy_(x_dev[i % len(x_dev)])
        g.replay()

    def time_per_step(step: Callable[[int], None]) -> float:
        for i in range(10):
            step(i)
        mtia.synchronize()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for i in range(args.steps):
                step(i)
            mtia.synchronize()
            best = min(best, (time.perf_counter() - start) / args.steps)
        return best

    eager = time_per_step(eager_step)
    replay = time_per_step(replay_step)
    print(
        f"eager:  {eager * 1e6:8.1f} us/step  ({len(inputs)} inputs, {args.steps} steps, best of 5)"
    )
    print(f"replay: {replay * 1e6:8.1f} us/step  (input copy + one graph launch)")
    print(f"speedup of replay over eager: {eager / replay:.1f}x")
    if args.json:
        print(
            json.dumps(
                {
                    "eager_us_per_step": eager * 1e6,
                    "replay_us_per_step": replay * 1e6,
                    "speedup": eager / replay,
                    "max_abs_error": worst,
                    "nodes": g.num_nodes(),
                }
            )
        )
    g.reset()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
