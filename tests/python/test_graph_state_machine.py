"""Stateful test of graph capture / replay / reset against a simple model.

Hypothesis drives a sequence of: tensor creation and deletion, eager ops, reads,
capture_begin (private pool, a graph_pool_handle(), or another graph's pool), ops recorded
during the capture, unsafe reads during the capture (which invalidate it), capture_end,
replay (on the default stream or on a side stream joined back), reset, dropping a graph
object, empty_cache. The model keeps

* the expected value of every tensor (a numpy float32 array, or None while undefined: a
  tensor made inside a capture has no value before the graph's first replay);
* which MTIAGraph objects hold a graph, and the ops each captured (replayed against the
  model's values, in order);
* which tensors are alive (visible ones plus those a live graph still references), hence
  memory_allocated() exactly, and which pool each lives in, hence each pool's use count
  and existence (checked through ``mtiart_pool_get_info``).

Every call must succeed except where the model predicts an error (CaptureError for
unsafe calls while capturing and for everything after an invalidation).

Pool-sharing hazards are kept out of the model deliberately (they are specified to be the
user's responsibility, see test_graphs.test_three_successive_graphs_out_of_order_replay):
a temporary freed inside a capture only really frees its block when the capture has a
pool of its own, and such a pool is never shared afterwards.
"""

import gc
import warnings

import numpy as np
from hypothesis import HealthCheck, event, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import mtia_graph as mtia
from mtia_graph import CaptureError, MTIAGraph, Stream
from mtia_graph._C import ffi, lib

N = 8  # elements per tensor: 32 bytes, one 512-byte block each
BLOCK = 512
NUM_GRAPHS = 3
NUM_HANDLES = 2
VALUES = st.lists(st.integers(-4, 4), min_size=N, max_size=N)
SCALARS = st.sampled_from([2.0, -1.0, 0.5, 3.0])


def pool_info(pool):
    info = ffi.new("mtiart_pool_info *")
    mtia._C.check(lib.mtiart_pool_get_info(0, {"first": pool[0], "second": pool[1]}, info))
    return bool(info.exists), int(info.use_count)


class Rec:
    """A tensor of the model: the device tensor (None once really freed), its expected value
    (None: undefined) and the pool its block came from."""

    __slots__ = ("pool", "t", "value")

    def __init__(self, t, value, pool):
        self.t = t
        self.value = value
        self.pool = pool


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def apply(op):
    """Run one recorded op on the model's values (None propagates)."""
    kind = op[0]
    if kind == "upload":
        _, out, arr = op
        out.value = arr.copy()
    elif kind == "fill_":
        _, dst, v = op
        dst.value = np.full(N, v, dtype=np.float32)
    elif kind == "copy_":
        _, dst, src = op
        dst.value = None if src.value is None else src.value.copy()
    elif kind == "add_":
        _, dst, src = op
        dst.value = None if dst.value is None or src.value is None else _f32(dst.value + src.value)
    elif kind == "mul_":
        _, dst, k = op
        dst.value = None if dst.value is None else _f32(dst.value * np.float32(k))
    elif kind == "add":
        _, out, a, b = op
        out.value = None if a.value is None or b.value is None else _f32(a.value + b.value)
    elif kind == "muls":
        _, out, a, k = op
        out.value = None if a.value is None else _f32(a.value * np.float32(k))
    else:  # pragma: no cover
        raise AssertionError(kind)


def op_tensors(op):
    return [x for x in op[1:] if isinstance(x, Rec)]


class GraphModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.visible = []  # Recs the test may name
        self.graphs = [MTIAGraph() for _ in range(NUM_GRAPHS)]
        self.captured = [None] * NUM_GRAPHS  # ops of each held graph, or None
        self.pools = [None] * NUM_GRAPHS  # pool of each held graph
        self.dirty_pools = set()  # private pools with freed temporaries
        self.known_pools = set()
        self.capture = None  # the capture in progress (a dict)
        self.cap_stream = Stream()
        self.side = Stream()
        self.handles = []
        self.baseline = 0

    # ------------------------------------------------------------------ model helpers

    def live_recs(self):
        recs = {id(r): r for r in self.visible}
        for ops in self.captured:
            for op in ops or ():
                for r in op_tensors(op):
                    recs[id(r)] = r
        if self.capture is not None:
            for op in self.capture["ops"]:
                for r in op_tensors(op):
                    recs[id(r)] = r
        return [r for r in recs.values() if r.t is not None]

    def model_use(self, pool):
        n = sum(
            1 for i in range(NUM_GRAPHS) if self.captured[i] is not None and self.pools[i] == pool
        )
        if self.capture is not None and self.capture["pool"] == pool:
            n += 1
        return n

    def capturing(self):
        return self.capture is not None

    def capture_valid(self):
        return self.capture is not None and self.capture["valid"]

    def pick(self, data, label="tensor"):
        return data.draw(st.sampled_from(self.visible), label=label)

    def new_pool_for_output(self):
        return self.capture["pool"] if self.capturing() else (0, 0)

    def run_op(self, op, device_call):
        """Eagerly: run and apply. Capturing: run (records) and remember. Invalidated
        capture: the call must raise CaptureError and nothing changes."""
        if self.capturing() and not self.capture["valid"]:
            try:
                device_call()
            except CaptureError:
                return False
            raise AssertionError("an op on an invalidated capture did not raise")
        result = device_call()
        if self.capturing():
            self.capture["ops"].append(op)
        else:
            apply(op)
        return result

    # ------------------------------------------------------------- step helpers

    def _new_tensor(self, values):
        arr = _f32(values)
        rec = Rec(None, None, self.new_pool_for_output())

        def call():
            rec.t = mtia.tensor(arr.tolist())

        if self.run_op(("upload", rec, arr), call) is False:
            return
        if self.capturing():
            self.capture["created"].add(id(rec))
        self.visible.append(rec)

    def _delete_tensor(self, data):
        rec = self.pick(data)
        self.visible.remove(rec)
        if (
            self.capture_valid()
            and id(rec) in self.capture["created"]
            and self.capture["exclusive"]
        ):
            # A temporary of a capture with a pool of its own: really freed now, its block
            # reusable by later allocations of the same capture.
            rec.t = None
            self.dirty_pools.add(self.capture["pool"])
            event("temporary freed inside a capture")
        elif not any(r is rec for r in self.live_recs()):
            rec.t = None  # nothing references it any more: freed by refcounting
        # else: a graph (or the capture) still references it and keeps it alive

    def _in_place_op(self, data, kind, k):
        dst = self.pick(data, "dst")
        if kind in ("add_", "copy_"):
            src = self.pick(data, "src")
            if kind == "copy_" and src is dst:
                kind, k = "mul_", 1.0  # self-copy enqueues nothing; multiply by one instead
        if kind == "add_":
            op, call = (kind, dst, src), (lambda: dst.t.add_(src.t))
        elif kind == "copy_":
            op, call = (kind, dst, src), (lambda: dst.t.copy_(src.t))
        elif kind == "mul_":
            op, call = (kind, dst, k), (lambda: dst.t.mul_(k))
        else:
            op, call = (kind, dst, k), (lambda: dst.t.fill_(k))
        self.run_op(op, call)

    def _out_of_place_op(self, data, kind, k):
        a = self.pick(data, "a")
        out = Rec(None, None, self.new_pool_for_output())
        if kind == "add":
            b = self.pick(data, "b")
            op = ("add", out, a, b)

            def call():
                out.t = a.t + b.t
        else:
            op = ("muls", out, a, k)

            def call():
                out.t = a.t * k

        if self.run_op(op, call) is False:
            return
        if self.capturing():
            self.capture["created"].add(id(out))
        self.visible.append(out)

    def _begin_capture(self, data, how, on_default):
        empty = [i for i in range(NUM_GRAPHS) if self.captured[i] is None]
        gi = data.draw(st.sampled_from(empty), label="graph")
        g = self.graphs[gi]
        candidates = [
            self.pools[j]
            for j in range(NUM_GRAPHS)
            if self.captured[j] is not None and self.pools[j] not in self.dirty_pools
        ]
        if how == "share" and not candidates:
            how = "handle"
        if how == "handle":
            pool_arg = data.draw(st.sampled_from(self.handles), label="handle")
        elif how == "share":
            pool_arg = data.draw(st.sampled_from(candidates), label="shared pool")
        else:
            pool_arg = (0, 0)
        stream = mtia.default_stream() if on_default else self.cap_stream
        mtia.set_stream(stream)
        g.capture_begin(pool_arg)
        pool = g.pool()
        if how != "private":
            assert pool == pool_arg
        else:
            assert pool[0] > 0 and pool[1] == 0 and pool not in self.known_pools
        self.known_pools.add(pool)
        event(f"capture_begin: {how} pool")
        self.capture = {
            "gi": gi,
            "pool": pool,
            "ops": [],
            "created": set(),
            "valid": True,
            "exclusive": how == "private",
            "stream": stream,
        }

    def _record_on_default_stream(self, cap):
        """Tensors a capture made on the side capture stream are used on the default stream
        from now on (eager ops, reads, replays): record_stream, as torch requires. (Without
        it libmtiart may unmap the block's segment while default-stream work still reads it;
        see test_graphs.test_graph_output_used_on_another_stream_then_freed.)"""
        if cap["stream"] == mtia.default_stream():
            return
        for r in self.visible:
            if id(r) in cap["created"] and r.t is not None:
                r.t.record_stream(mtia.default_stream())
        for op in cap["ops"]:
            for r in op_tensors(op):
                if id(r) in cap["created"] and r.t is not None:
                    r.t.record_stream(mtia.default_stream())

    def _end_capture(self):
        cap = self.capture
        g = self.graphs[cap["gi"]]
        event(
            f"capture_end: {'valid' if cap['valid'] else 'invalidated'}, "
            f"{'with ops' if cap['ops'] else 'empty'}"
        )
        try:
            if cap["valid"]:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    g.capture_end()
                empty = [
                    w
                    for w in caught
                    if issubclass(w.category, UserWarning) and "empty" in str(w.message)
                ]
                assert bool(empty) == (not cap["ops"])
                self.captured[cap["gi"]] = cap["ops"]
                self.pools[cap["gi"]] = cap["pool"]
                self.capture = None
            else:
                try:
                    g.capture_end()
                except CaptureError:
                    pass
                else:
                    raise AssertionError("capture_end of an invalidated capture succeeded")
                self.abandon_capture_model()
        finally:
            mtia.set_stream(mtia.default_stream())
            self.capture = None
        assert not cap["stream"].is_capturing()
        self._record_on_default_stream(cap)

    def abandon_capture_model(self):
        """The capture is discarded: its recorded ops vanish (temporaries they pinned die)."""
        cap = self.capture
        self.capture = None
        live_ids = {id(r) for r in self.live_recs()}
        for op in cap["ops"]:
            for r in op_tensors(op):
                if id(r) not in live_ids:
                    r.t = None

    def _forget_graph(self, gi):
        ops = self.captured[gi]
        self.captured[gi] = None
        self.pools[gi] = None
        if ops:
            live_ids = {id(r) for r in self.live_recs()}
            for op in ops:
                for r in op_tensors(op):
                    if id(r) not in live_ids:
                        r.t = None

    def captured_graphs(self):
        return [i for i in range(NUM_GRAPHS) if self.captured[i] is not None]

    def can_begin(self):
        return not self.capturing() and any(c is None for c in self.captured)

    # ------------------------------------------------------------------------ rules

    @initialize(values=VALUES)
    def setup(self, values):
        gc.collect()
        mtia.synchronize()
        self.baseline = mtia.memory_allocated()
        self.handles = [mtia.graph_pool_handle() for _ in range(NUM_HANDLES)]
        self.known_pools.update(self.handles)
        self._new_tensor(values)

    @rule(values=VALUES)
    def new_tensor(self, values):
        self._new_tensor(values)

    @precondition(lambda self: self.visible)
    @rule(data=st.data())
    def delete_tensor(self, data):
        self._delete_tensor(data)

    @precondition(lambda self: self.visible)
    @rule(data=st.data(), kind=st.sampled_from(["add_", "mul_", "copy_", "fill_"]), k=SCALARS)
    def in_place_op(self, data, kind, k):
        self._in_place_op(data, kind, k)

    @precondition(lambda self: self.visible)
    @rule(data=st.data(), kind=st.sampled_from(["add", "muls"]), k=SCALARS)
    def out_of_place_op(self, data, kind, k):
        self._out_of_place_op(data, kind, k)

    @precondition(lambda self: self.visible and not self.capturing())
    @rule(data=st.data())
    def read(self, data):
        rec = self.pick(data)
        got = rec.t.numpy()
        if rec.value is not None:
            np.testing.assert_array_equal(got, rec.value)

    @precondition(lambda self: self.visible and self.capture_valid())
    @rule(data=st.data(), really=st.integers(0, 2))
    def unsafe_read_during_capture(self, data, really):
        if really:
            return  # keep invalidations rarer than the other capture steps
        rec = self.pick(data)
        try:
            rec.t.numpy()
        except CaptureError:
            self.capture["valid"] = False
            return
        raise AssertionError("reading a tensor during capture did not raise")

    @precondition(lambda self: self.can_begin())
    @rule(
        data=st.data(),
        how=st.sampled_from(["private", "handle", "share"]),
        on_default=st.booleans(),
    )
    def begin_capture(self, data, how, on_default):
        self._begin_capture(data, how, on_default)

    @precondition(lambda self: self.capturing())
    @rule()
    def end_capture(self):
        self._end_capture()

    @precondition(lambda self: self.can_begin() and self.visible)
    @rule(
        data=st.data(),
        how=st.sampled_from(["private", "handle", "share"]),
        steps=st.lists(
            st.sampled_from(["add_", "mul_", "copy_", "fill_", "add", "muls", "new", "delete"]),
            min_size=1,
            max_size=5,
        ),
        k=SCALARS,
    )
    def capture_graph(self, data, how, steps, k):
        """A whole capture in one step: begin, a few ops, end."""
        self._begin_capture(data, how, on_default=False)
        for step in steps:
            if not self.visible:
                break
            if step in ("add", "muls"):
                self._out_of_place_op(data, step, k)
            elif step == "new":
                self._new_tensor(data.draw(VALUES, label="values"))
            elif step == "delete":
                self._delete_tensor(data)
            else:
                self._in_place_op(data, step, k)
        self._end_capture()

    @precondition(lambda self: not self.capturing() and self.captured_graphs())
    @rule(data=st.data(), on_side=st.booleans(), times=st.integers(1, 3))
    def replay(self, data, on_side, times):
        gi = data.draw(st.sampled_from(self.captured_graphs()), label="graph")
        ops = self.captured[gi]
        g = self.graphs[gi]
        if on_side:
            self.side.wait_stream(mtia.current_stream())
            with mtia.stream(self.side):
                for _ in range(times):
                    g.replay()
            mtia.current_stream().wait_stream(self.side)
        else:
            for _ in range(times):
                g.replay()
        for _ in range(times):
            for op in ops:
                apply(op)
        event(f"replay of a graph with {min(len(ops), 3)}{'+' if len(ops) >= 3 else ''} ops")

    @rule(gi=st.integers(0, NUM_GRAPHS - 1))
    def reset(self, gi):
        cap = self.capture
        if cap is not None and cap["gi"] == gi:
            # reset() abandons the capture in progress.
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                self.graphs[gi].reset()
            assert not cap["stream"].is_capturing()
            mtia.set_stream(mtia.default_stream())
            self.abandon_capture_model()
            self._record_on_default_stream(cap)
            event("reset abandons a capture")
            return
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # reset() must neither raise nor warn here
            self.graphs[gi].reset()
        self._forget_graph(gi)

    @precondition(lambda self: self.captured_graphs())
    @rule(data=st.data())
    def drop_graph_object(self, data):
        gi = data.draw(st.sampled_from(self.captured_graphs()), label="graph")
        self.graphs[gi] = MTIAGraph()  # the old object is collected: its graph goes too
        gc.collect()
        self._forget_graph(gi)

    @precondition(lambda self: not self.capturing())
    @rule(empty=st.booleans())
    def sync_and_check_pools(self, empty):
        mtia.synchronize()
        if empty:
            mtia.empty_cache()
        pools_with_tensors = {r.pool for r in self.live_recs()}
        for pool in self.known_pools:
            exists, use = pool_info(pool)
            assert use == self.model_use(pool), (pool, use, self.model_use(pool))
            if use > 0 or pool in pools_with_tensors:
                assert exists, pool
                if use > 1:
                    event("pool shared by several graphs")
            elif empty:
                assert not exists, pool

    # -------------------------------------------------------------------- invariants

    @invariant()
    def memory_allocated_matches_live_tensors(self):
        expected = BLOCK * len(self.live_recs())
        assert mtia.memory_allocated() - self.baseline == expected

    @invariant()
    def values_match_the_model(self):
        if self.capturing():
            return  # reading would invalidate the capture (a rule does that on purpose)
        for rec in self.visible:
            if rec.value is not None:
                np.testing.assert_array_equal(rec.t.numpy(), rec.value)

    @invariant()
    def pool_use_counts_are_sane(self):
        for pool in self.known_pools:
            exists, use = pool_info(pool)
            # Pending replays of a reset graph may hold a use a little longer.
            assert use >= self.model_use(pool) >= 0
            if use:
                assert exists

    @invariant()
    def capture_state_matches(self):
        assert mtia.is_current_stream_capturing() == self.capturing()
        for i, g in enumerate(self.graphs):
            if self.captured[i] is not None:
                assert g.pool() == self.pools[i]

    def teardown(self):
        try:
            if self.capture is not None:
                self.graphs[self.capture["gi"]].reset()
                self.capture = None
        finally:
            mtia.set_stream(mtia.default_stream())
        for g in self.graphs:
            g.reset()
        self.graphs = []
        self.captured = [None] * NUM_GRAPHS
        self.visible = []
        gc.collect()
        mtia.synchronize()
        mtia.empty_cache()
        assert mtia.memory_allocated() == self.baseline
        for pool in self.known_pools:
            exists, use = pool_info(pool)
            assert use == 0 and not exists, pool


GraphModel.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestGraphModel = GraphModel.TestCase
