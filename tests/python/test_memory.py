"""Memory statistics, snapshots, empty_cache, record_stream and out-of-memory."""

import gc

import pytest

import mtia_graph
from mtia_graph import CaptureError, Stream

MiB = 1 << 20

TORCH_KEYS = [
    "allocated_bytes.all.current",
    "allocated_bytes.all.peak",
    "reserved_bytes.all.current",
    "reserved_bytes.all.peak",
    "active.all.current",
    "active_bytes.all.current",
    "segment.all.current",
    "num_alloc_retries",
    "num_ooms",
]


def test_memory_stats_keys():
    stats = mtia_graph.memory_stats()
    for key in TORCH_KEYS:
        assert isinstance(stats[key], int), key
    dram = stats["dram"]
    for key in ("allocated_bytes", "peak_bytes", "reserved_bytes"):
        assert isinstance(dram[key], int)
    assert dram["allocated_bytes"] == stats["allocated_bytes.all.current"]
    assert stats["reserved_bytes.all.current"] >= stats["allocated_bytes.all.current"]


def test_memory_stats_move_with_tensors():
    gc.collect()
    mtia_graph.synchronize()
    before = mtia_graph.memory_allocated()
    t = mtia_graph.empty(3 * MiB // 4, dtype=mtia_graph.float32)  # 3 MiB: its own segment
    after = mtia_graph.memory_allocated()
    assert after - before >= t.nbytes
    assert mtia_graph.memory_stats()["active.all.current"] >= 1
    assert mtia_graph.memory_reserved() >= after
    assert mtia_graph.max_memory_allocated() >= after
    del t
    gc.collect()
    assert mtia_graph.memory_allocated() == before
    assert mtia_graph.max_memory_allocated() >= after


def test_reset_peak_memory_stats():
    t = mtia_graph.empty(MiB)
    del t
    assert mtia_graph.max_memory_allocated() > mtia_graph.memory_allocated()
    mtia_graph.reset_peak_memory_stats()
    assert mtia_graph.max_memory_allocated() == mtia_graph.memory_allocated()
    assert mtia_graph.max_memory_reserved() == mtia_graph.memory_reserved()
    mtia_graph.reset_accumulated_memory_stats()
    assert mtia_graph.memory_stats()["num_ooms"] == 0


def test_empty_cache_releases_free_segments():
    t = mtia_graph.empty(8 * MiB, dtype=mtia_graph.float32)
    reserved_with = mtia_graph.memory_reserved()
    del t
    mtia_graph.synchronize()
    assert mtia_graph.memory_reserved() == reserved_with  # cached
    mtia_graph.empty_cache()
    assert mtia_graph.memory_reserved() <= reserved_with - 32 * MiB


def test_memory_functions_take_a_device():
    last = mtia_graph.device_count() - 1
    for fn in (
        mtia_graph.memory_allocated,
        mtia_graph.max_memory_allocated,
        mtia_graph.memory_reserved,
        mtia_graph.max_memory_reserved,
        mtia_graph.memory_stats,
        mtia_graph.reset_peak_memory_stats,
        mtia_graph.mem_get_info,
    ):
        fn(last)
        fn(f"mtia:{last}")
        with pytest.raises(ValueError):
            fn(last + 1)
        with pytest.raises(TypeError):
            fn(1.5)


def test_memory_is_per_device():
    if mtia_graph.device_count() < 2:
        pytest.skip("needs two devices")
    before0, before1 = mtia_graph.memory_allocated(0), mtia_graph.memory_allocated(1)
    t = mtia_graph.empty(1024, device=1)
    assert mtia_graph.memory_allocated(0) == before0
    assert mtia_graph.memory_allocated(1) >= before1 + t.nbytes


def device0_blocks():
    return {
        b["address"]: b
        for seg in mtia_graph.memory_snapshot()
        if seg["device"] == 0
        for b in seg["blocks"]
    }


def test_snapshot_lists_blocks():
    t = mtia_graph.zeros(1000)
    segments = mtia_graph.memory_snapshot()
    assert isinstance(segments, list) and segments
    assert {seg["device"] for seg in segments} <= set(range(mtia_graph.device_count()))
    for seg in segments:
        for key in (
            "device",
            "address",
            "total_size",
            "allocated_size",
            "active_size",
            "requested_size",
            "stream",
            "segment_pool_id",
            "blocks",
        ):
            assert key in seg
        assert sum(b["size"] for b in seg["blocks"]) == seg["total_size"]
        for b in seg["blocks"]:
            assert b["state"] in ("active_allocated", "active_pending_free", "inactive")
    blocks = device0_blocks()
    mine = blocks[t.data_ptr()]
    assert mine["state"] == "active_allocated"
    assert mine["requested_size"] == t.nbytes
    addr = t.data_ptr()
    del t
    blocks = device0_blocks()
    assert addr not in blocks or blocks[addr]["state"] == "inactive"


def test_record_stream_delays_reuse(gate):
    side = Stream()
    t = mtia_graph.ones(256)
    addr = t.data_ptr()
    mtia_graph.synchronize()
    gate.block(side)  # the side stream has pending work "using" t
    t.record_stream(side)
    del t
    gc.collect()
    blocks = device0_blocks()
    assert blocks[addr]["state"] == "active_pending_free"
    u = mtia_graph.empty(256)  # same size, same stream: must not get the pending block
    assert u.data_ptr() != addr
    gate.open()
    side.synchronize()
    mtia_graph.synchronize()
    v = mtia_graph.empty(256)  # processed now: the block is free again
    blocks = device0_blocks()
    assert addr in (v.data_ptr(),) or blocks[addr]["state"] != "active_pending_free"


def test_snapshot_is_torch_mtia_s_dict_and_memory_snapshot_filters_pools():
    t = mtia_graph.zeros(1000)
    snap = mtia_graph.snapshot()
    assert set(snap) == {"segments", "device_traces"}
    assert snap["segments"] == mtia_graph.memory_snapshot()
    assert snap["device_traces"] == [[] for _ in range(mtia_graph.device_count())]
    assert mtia_graph.memory_snapshot(include_traces=False) == snap["segments"]
    g = mtia_graph.MTIAGraph()
    with mtia_graph.graph(g):
        u = t + 1
    mine = mtia_graph.memory_snapshot(mempool_id=g.pool())
    assert mine and all(seg["segment_pool_id"] == g.pool() for seg in mine)
    assert any(b["address"] == u.data_ptr() for seg in mine for b in seg["blocks"])
    default = mtia_graph.memory_snapshot((0, 0))
    assert any(b["address"] == t.data_ptr() for seg in default for b in seg["blocks"])
    assert not any(seg["segment_pool_id"] == g.pool() for seg in default)


def test_mem_get_info_is_free_and_total():
    free, total = mtia_graph.mem_get_info()
    assert total == mtia_graph.get_device_properties()["total_memory"]
    assert free == total - mtia_graph.memory_reserved()
    mtia_graph.synchronize()
    mtia_graph.empty_cache()
    free = mtia_graph.mem_get_info()[0]
    t = mtia_graph.empty(16 << 20)  # 64 MiB: a new segment (the cache was emptied)
    assert mtia_graph.mem_get_info()[0] <= free - t.nbytes


def test_without_record_stream_memory_is_reused_in_stream_order():
    n = 777_777  # an odd size no other test uses: the freed block is the best fit
    t = mtia_graph.ones(n)
    addr = t.data_ptr()
    del t
    u = mtia_graph.empty(n)
    assert u.data_ptr() == addr


def test_record_stream_errors():
    t = mtia_graph.ones(3)
    with pytest.raises(TypeError):
        t.record_stream("stream")
    if mtia_graph.device_count() > 1:
        with pytest.raises(ValueError):
            t.record_stream(Stream(device=1))
    mtia_graph.empty(0).record_stream(Stream())  # no memory: nothing to record


def test_empty_cache_during_capture_raises(raw_capture):
    s = Stream()
    raw_capture.track(s)
    raw_capture.begin(s)
    with pytest.raises(CaptureError, match="capturing"):
        mtia_graph.empty_cache()
    with pytest.raises(CaptureError):
        raw_capture.end(s)
    mtia_graph.empty_cache()


def test_observer_argument_checks():
    with pytest.raises(TypeError):
        mtia_graph.attach_out_of_memory_observer(3)
    with pytest.raises(ValueError):
        mtia_graph.detach_out_of_memory_observer(lambda *a: None)


def test_out_of_memory(subprocess_python):
    r = subprocess_python(
        """
        import gc
        import mtia_graph
        calls = []
        def observer(device, alloc, device_allocated, device_free):
            calls.append((device, alloc, device_allocated, device_free))
        def bad_observer(*args):
            raise KeyError("observer failure is ignored")
        mtia_graph.attach_out_of_memory_observer(bad_observer)
        mtia_graph.attach_out_of_memory_observer(observer)
        keep = mtia_graph.empty(10 << 20, dtype=mtia_graph.int32)   # 40 MiB
        try:
            mtia_graph.empty(10 << 20, dtype=mtia_graph.int32)      # another 40 MiB > 64M
        except mtia_graph.OutOfMemoryError as exc:
            msg = str(exc)
            assert isinstance(exc, RuntimeError)
            assert "out of memory" in msg, msg
            assert str(40 << 20) in msg, msg        # the requested size
            assert str(64 << 20) in msg, msg        # the capacity
        else:
            raise SystemExit("no OutOfMemoryError")
        assert len(calls) == 1, calls
        device, alloc, allocated, free = calls[0]
        assert (device, alloc) == (0, 40 << 20), calls
        assert allocated >= 40 << 20 and 0 <= free < 64 << 20, calls
        stats = mtia_graph.memory_stats()
        assert stats["num_ooms"] == 1 and stats["num_alloc_retries"] >= 1, stats
        # everything keeps working
        small = mtia_graph.ones(16)
        assert small.sum().item() == 16
        assert keep.fill_(3).sum().item() == 3 * (10 << 20)
        del keep
        gc.collect()
        big = mtia_graph.empty(10 << 20, dtype=mtia_graph.int32)  # fits again
        mtia_graph.detach_out_of_memory_observer(observer)
        try:
            mtia_graph.empty(100 << 20, dtype=mtia_graph.int32)
        except mtia_graph.OutOfMemoryError:
            pass
        assert len(calls) == 1
        print("OK")
    """,
        env={"MTIART_DEVICE_MEMORY": "64M", "MTIART_NUM_DEVICES": "1"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("OK")
    assert "observer failure is ignored" in r.stderr


def test_out_of_memory_larger_than_capacity_keeps_tensors_intact(subprocess_python):
    r = subprocess_python(
        """
        import mtia_graph
        a = mtia_graph.arange(100)
        for n in (1 << 40, 65 << 20):
            try:
                mtia_graph.empty(n, dtype=mtia_graph.bool)
            except mtia_graph.OutOfMemoryError as exc:
                assert "out of memory" in str(exc)
            else:
                raise SystemExit("no OutOfMemoryError")
        assert a.tolist() == list(range(100))
        print("OK")
    """,
        env={"MTIART_DEVICE_MEMORY": "64M"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
