"""Stateful test of the memory graphs hold, against a model.

Hypothesis drives: static tensors created and deleted (really freed: nothing but the
runtime keeps them), graphs captured over them (in-place ops reading and writing them,
with or without ``check_input_liveness``), replays, resets, sentinel tensors allocated at
any time (never used by a graph), empty_cache. The model keeps every tensor's value, also
after its deletion while a graph still holds it (a replay keeps updating held memory), so:

* no replay ever writes into a block that is live and not the graph's: every sentinel
  keeps its value, and every live tensor has exactly the model's value;
* a checked replay fails exactly when the graph reads, before writing it, a tensor that was
  deleted; an unchecked one replays on the memory the graph still holds;
* ``graph_held.all.current`` counts exactly the deleted tensors some live graph uses.
"""

import gc

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mtia_graph as mtia
from mtia_graph import MTIAGraph, MTIAValueError

N = 8
NUM_GRAPHS = 3
SCALARS = st.sampled_from([2.0, -1.0, 0.5, 3.0])
OPS = st.sampled_from(["add_", "mul_", "fill_", "copy_"])


class Rec:
    """A static tensor of the model: the device tensor (None once deleted) and its value."""

    __slots__ = ("t", "value")

    def __init__(self, t, value):
        self.t = t
        self.value = value


def _reads_before_writes(ops):
    """The Recs a graph's ops read before any of them wrote the Rec: its inputs."""
    written, inputs = set(), []
    for kind, dst, arg in ops:
        reads = {"add_": [dst, arg], "mul_": [dst], "fill_": [], "copy_": [arg]}[kind]
        for r in reads:
            if id(r) not in written and all(r is not x for x in inputs):
                inputs.append(r)
        written.add(id(dst))
    return inputs


def _apply(ops):
    for kind, dst, arg in ops:
        if kind == "add_":
            dst.value = (dst.value + arg.value).astype(np.float32)
        elif kind == "mul_":
            dst.value = (dst.value * np.float32(arg)).astype(np.float32)
        elif kind == "fill_":
            dst.value = np.full(N, arg, dtype=np.float32)
        else:
            dst.value = arg.value.copy()


class HeldMemory(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        mtia.synchronize()
        gc.collect()
        self.recs = []  # every Rec: alive (t set) or deleted (t None)
        self.sentinels = []  # (tensor, value)
        self.graphs = [None] * NUM_GRAPHS  # (MTIAGraph, ops, checked) or None
        self.next_tag = 100.0
        self.held_baseline = mtia.memory_stats()["graph_held.all.current"]

    def alive(self):
        return [r for r in self.recs if r.t is not None]

    def held(self):
        """Deleted Recs some live graph uses."""
        out = {}
        for g in self.graphs:
            for _, dst, arg in g[1] if g else ():
                for r in (dst, arg):
                    if isinstance(r, Rec) and r.t is None:
                        out[id(r)] = r
        return list(out.values())

    @rule(k=SCALARS)
    def new_tensor(self, k):
        value = np.arange(N, dtype=np.float32) * np.float32(k)
        self.recs.append(Rec(mtia.tensor(value.tolist()), value))

    @precondition(lambda self: self.alive())
    @rule(data=st.data())
    def delete_tensor(self, data):
        rec = data.draw(st.sampled_from(self.alive()))
        rec.t = None  # the model's reference was the only one
        gc.collect()

    @rule()
    def sentinel(self):
        self.next_tag += 1
        self.sentinels.append((mtia.full((N,), self.next_tag), self.next_tag))

    @precondition(lambda self: self.alive() and None in self.graphs)
    @rule(
        data=st.data(),
        kinds=st.lists(OPS, min_size=1, max_size=4),
        k=SCALARS,
        checked=st.booleans(),
    )
    def capture(self, data, kinds, k, checked):
        gi = self.graphs.index(None)
        ops = []
        for kind in kinds:
            dst = data.draw(st.sampled_from(self.alive()), label="dst")
            src = data.draw(st.sampled_from(self.alive()), label="src")
            if kind == "copy_" and src is dst:
                continue  # a self-copy records nothing: the graph neither reads nor holds it
            ops.append((kind, dst, src if kind in ("add_", "copy_") else k))
        if not ops:
            return
        g = MTIAGraph()
        with mtia.graph(g, check_input_liveness=checked):
            for kind, dst, arg in ops:
                if kind == "add_":
                    dst.t.add_(arg.t)
                elif kind == "mul_":
                    dst.t.mul_(arg)
                elif kind == "fill_":
                    dst.t.fill_(arg)
                else:
                    dst.t.copy_(arg.t)
        self.graphs[gi] = (g, ops, checked)

    @precondition(lambda self: any(self.graphs))
    @rule(data=st.data(), times=st.integers(1, 3))
    def replay(self, data, times):
        g, ops, checked = data.draw(st.sampled_from([x for x in self.graphs if x]))
        dead = [r for r in _reads_before_writes(ops) if r.t is None]
        for _ in range(times):
            if checked and dead:
                try:
                    g.replay()
                except MTIAValueError as exc:
                    assert "input check" in str(exc)
                    continue
                raise AssertionError("a replay reading a deleted tensor was not refused")
            g.replay()
            _apply(ops)

    @precondition(lambda self: any(self.graphs))
    @rule(data=st.data())
    def reset(self, data):
        gi = data.draw(st.sampled_from([i for i, x in enumerate(self.graphs) if x]))
        self.graphs[gi][0].reset()
        self.graphs[gi] = None
        gc.collect()

    @rule()
    def empty_cache(self):
        mtia.synchronize()
        mtia.empty_cache()

    @invariant()
    def nothing_live_was_overwritten(self):
        mtia.synchronize()
        for t, value in self.sentinels:
            assert (t.numpy() == value).all(), "a replay wrote into a sentinel"
        for r in self.alive():
            np.testing.assert_array_equal(r.t.numpy(), r.value)

    @invariant()
    def held_blocks_are_counted(self):
        held = mtia.memory_stats()["graph_held.all.current"] - self.held_baseline
        assert held == len(self.held()), (held, len(self.held()))

    def teardown(self):
        for g in self.graphs:
            if g:
                g[0].reset()
        self.recs.clear()
        self.sentinels.clear()
        gc.collect()
        mtia.synchronize()
        assert mtia.memory_stats()["graph_held.all.current"] == self.held_baseline


TestHeldMemory = HeldMemory.TestCase
TestHeldMemory.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
