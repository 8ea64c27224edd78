"""Stateful test of the caching allocator's figures, against a model.

Hypothesis drives tensors allocated on two streams in sizes that repeat (so that a stream
takes back the blocks it freed), freed in any order, some after ``record_stream`` on the
other stream, some after work on the other stream, with ``empty_cache``, synchronizations
and peak resets in between. After every step the figures are exactly the model's:
allocated and requested bytes, the allocated peak, the allocation and free counters; the
active block count once ``empty_cache`` settled the deferred frees; every live tensor
keeps its value (no block is handed out twice); and ``empty_cache`` with nothing live
gives every segment back.
"""

import gc

import numpy as np
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mtia_graph as mtia

# float32 elements: all small requests (<= 1 MiB), whose blocks are the rounded size.
SIZES = st.sampled_from([1, 100, 128, 129, 1000, 4096, 65536, 262144])


def _rounded(nbytes):
    return (nbytes + 511) // 512 * 512


class Live:
    __slots__ = ("stream", "t", "tag")

    def __init__(self, t, tag, stream):
        self.t = t
        self.tag = tag
        self.stream = stream


class AllocatorFigures(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        gc.collect()
        mtia.synchronize()
        mtia.empty_cache()
        self.streams = [mtia.Stream(), mtia.Stream()]
        self.live = []
        self.next_tag = 1.0
        mtia.reset_peak_memory_stats()
        s = mtia.memory_stats()
        self.base_allocated = s["allocated_bytes.all.current"]
        self.base_requested = s["requested_bytes.all.current"]
        self.base_active = s["active.all.current"]
        self.base_allocs = s["allocation.all.allocated"]
        self.base_frees = s["allocation.all.freed"]
        self.allocs = self.frees = 0
        self.peak = self.base_allocated

    def allocated(self):
        return self.base_allocated + sum(_rounded(r.t.nbytes) for r in self.live)

    @rule(n=SIZES, which=st.integers(0, 1))
    def allocate(self, n, which):
        stream = self.streams[which]
        with mtia.stream(stream):
            t = mtia.empty(n, dtype=mtia.float32)
            t.fill_(self.next_tag)
        self.allocs += 1
        self.live.append(Live(t, self.next_tag, which))
        self.next_tag += 1.0
        self.peak = max(self.peak, self.allocated())

    @precondition(lambda self: self.live)
    @rule(data=st.data(), record=st.booleans(), other_work=st.booleans())
    def free(self, data, record, other_work):
        r = self.live.pop(data.draw(st.integers(0, len(self.live) - 1)))
        other = self.streams[1 - r.stream]
        if other_work:  # the other stream reads it (after the fill, in stream order)
            other.wait_stream(self.streams[r.stream])
            with mtia.stream(other):
                r.t.add_(0.0)
        if record or other_work:
            r.t.record_stream(other)
        self.check_value(r)
        del r
        gc.collect()
        self.frees += 1

    @rule()
    def empty_cache(self):
        mtia.empty_cache()
        s = mtia.memory_stats()
        # Deferred frees are settled: only live tensors are active.
        assert s["active.all.current"] == self.base_active + len(self.live)
        if not self.live and self.base_active == 0:
            assert s["reserved_bytes.all.current"] == 0
            assert s["segment.all.current"] == 0

    @rule()
    def synchronize(self):
        mtia.synchronize()

    @rule()
    def reset_peak(self):
        mtia.reset_peak_memory_stats()
        self.peak = self.allocated()

    @invariant()
    def figures_match(self):
        s = mtia.memory_stats()
        assert s["allocated_bytes.all.current"] == self.allocated()
        requested = self.base_requested + sum(r.t.nbytes for r in self.live)
        assert s["requested_bytes.all.current"] == requested
        assert s["allocated_bytes.all.peak"] == self.peak
        assert s["allocation.all.allocated"] - self.base_allocs == self.allocs
        assert s["allocation.all.freed"] - self.base_frees == self.frees
        assert s["active.all.current"] >= self.base_active + len(self.live)
        assert s["reserved_bytes.all.current"] >= s["allocated_bytes.all.current"]

    def check_value(self, r):
        # read in the order of the stream that filled it (reads follow the current stream)
        with mtia.stream(self.streams[r.stream]):
            np.testing.assert_array_equal(r.t.numpy(), np.float32(r.tag))

    @invariant()
    def live_tensors_keep_their_values(self):
        for r in self.live[-3:]:  # the latest: those most likely to have reused a block
            self.check_value(r)

    def teardown(self):
        self.live.clear()
        gc.collect()
        mtia.synchronize()
        mtia.empty_cache()


TestAllocatorFigures = AllocatorFigures.TestCase
TestAllocatorFigures.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
