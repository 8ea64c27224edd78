"""Debugging captured graphs: find the dependency a graph lacks by replaying it in several
orders (:func:`compare_schedules`).

A graph whose outputs depend on the order the device runs its independent operations in
lacks an edge (usually a forgotten ``wait_stream``): its replays are right or wrong by
luck. :meth:`MTIAGraph.replay` can run the operations one at a time in a chosen valid
order; :func:`compare_schedules` replays with the serial order, the reverse one and
seeded random ones and reports the first output that differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .graphs import MTIAGraph
from .streams import synchronize
from .tensor import Tensor

__all__ = ["ScheduleDifference", "compare_schedules"]


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
            want = expected[k]
            differs = got != want
            if want.dtype.kind == "f":
                differs &= ~(np.isnan(got) & np.isnan(want))
            if not differs.any():
                continue
            first = tuple(int(i) for i in np.argwhere(differs)[0])
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            return ScheduleDifference(
                output=k,
                schedule=schedule,
                seed=trial_seed,
                index=first,
                expected=want[first].item(),
                got=got[first].item(),
                max_abs_diff=float(np.nanmax(diff)),
            )
    return None
