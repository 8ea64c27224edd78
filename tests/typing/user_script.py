"""A user's program, fully typed: checked with ``mypy --strict`` against the installed
package (tests/python/test_typing.py), and run, so that it stays a working program.

It captures a small step on a side stream, replays it on new inputs through a shared
memory pool, and times it with events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

import mtia_graph as mg

if TYPE_CHECKING:
    from typing_extensions import assert_type
else:
    # typing_extensions grew assert_type in 4.2; the package supports 4.0, and the script
    # must run wherever the package does. At run time it only hands its value back.
    _T = TypeVar("_T")

    def assert_type(value: _T, typ: Any) -> _T:
        return value


def step(x: mg.Tensor, w: mg.Tensor, b: mg.Tensor) -> mg.Tensor:
    """One layer: relu(x @ w + b), every op enqueued on the current stream."""
    return (x @ w + b).relu()


def main() -> int:
    assert_type(mg.device_count(), int)
    props = mg.get_device_properties(0)
    assert_type(props.total_memory, int)

    w = mg.from_numpy(np.eye(4, dtype=np.float32))
    b = mg.full((4,), 0.5)
    static_x = mg.zeros(2, 4)
    assert_type(static_x.shape, tuple[int, ...])
    assert_type(static_x.dtype, mg.dtype)
    assert_type(static_x.device, mg.Device)

    side = mg.Stream(priority=-1)
    side.wait_stream(mg.current_stream())
    with mg.stream(side):
        step(static_x, w, b)  # warm-up on the capture stream
    mg.current_stream().wait_stream(side)
    mg.synchronize()

    pool = mg.graph_pool_handle()
    assert_type(pool, tuple[int, int])
    g = mg.MTIAGraph()
    with mg.graph(g, pool=pool, stream=side):
        static_out = step(static_x, w, b)
        doubled = static_out * 2 - 1.0
    assert_type(doubled, mg.Tensor)

    start, end = mg.Event(enable_timing=True), mg.Event(enable_timing=True)
    start.record()
    results: list[float] = []
    for i in range(3):
        static_x.copy_(np.full((2, 4), float(i), dtype=np.float32))
        g.replay()
        total = doubled.sum()
        assert_type(total, mg.Tensor)
        results.append(float(total.item()))
    end.record()
    end.synchronize()
    elapsed = start.elapsed_time(end)
    assert_type(elapsed, float)

    expected = [float((np.maximum(np.full((2, 4), i) + 0.5, 0) * 2 - 1).sum()) for i in range(3)]
    assert results == expected, (results, expected)

    t = mg.arange(6, dtype=mg.int64).reshape(2, 3)
    assert_type(t[0], mg.Tensor)
    mask = (t > 2) & (t < 5)
    assert mg.where(mask, t, 0).tolist() == [[0, 0, 0], [3, 4, 0]]
    assert t.to(mg.float).mean().item() == 2.5
    assert mg.result_type(t, 1.5) is mg.float32

    ran: list[int] = []
    mg.launch_host_func(lambda: ran.append(1))
    mg.synchronize()
    assert ran == [1]

    g.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
