"""The device memory graphs use: tensors a graph touches outside its own pool stay valid
while the graph lives (deleting them frees nothing a replay writes), the statistics and
snapshots say so, and ``check_input_liveness`` turns a replay that would read a deleted
tensor into an error. Also the order of a graph's replays across re-instantiation."""

import gc
import shutil
import subprocess
import textwrap
import time

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import MTIAGraph, MTIAValueError
from mtia_graph._C import check, ffi, lib

N = 4096

C_SOURCE = textwrap.dedent(r"""
    #include <stdint.h>

    /* out[i] = 2 * in[i] over n floats. */
    int32_t twice(void *const *args, uint32_t block, uint32_t num_blocks) {
        const float *in = *(float *const *)args[0];
        float *out = *(float *const *)args[1];
        int64_t n = *(const int64_t *)args[2];
        for (int64_t i = 0; i < n; i++) out[i] = 2 * in[i];
        (void)block; (void)num_blocks;
        return 0;
    }
""")


@pytest.fixture(scope="module")
def twice_c(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the test kernel")
    d = tmp_path_factory.mktemp("graph_memory_kernels")
    src = d / "twice.c"
    src.write_text(C_SOURCE)
    so = d / "libtwice.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src)], check=True)
    return mtia.load_kernel(so, "twice")


@mtia.kernel(access=("r", "w"))
def _twice_py(src, dst):
    dst[...] = 2 * src


def _held_bytes():
    return mtia.memory_stats()["graph_held_bytes.all.current"]


def _states():
    return {
        b["address"]: b["state"]
        for seg in mtia.memory_snapshot()
        if seg["device"] == 0
        for b in seg["blocks"]
    }


# The ways a captured operation reads `x` and writes `out` (same shape, float32).
def _op_tensor(x, out, _c):
    out.copy_(x * 2)


def _op_copy(x, out, _c):
    out.copy_(x)


def _op_c_kernel(x, out, c):
    c(x, out, N, access=("r", "w"))


def _op_python_kernel(x, out, _c):
    _twice_py(x, out)


OPS = {"tensor_op": _op_tensor, "copy": _op_copy, "c_kernel": _op_c_kernel}
OPS["python_kernel"] = _op_python_kernel


def _inputs(kind):
    """A static input of N floats: made on the device, or imported with DLPack."""
    if kind == "dlpack":
        return mtia.from_dlpack(np.arange(N, dtype=np.float32))
    return mtia.arange(N, dtype=mtia.float32)


@pytest.fixture(params=sorted(OPS))
def op(request, twice_c):
    fn = OPS[request.param]
    return lambda x, out: fn(x, out, twice_c)


# ----------------------------------------------------------------------------- holds


def test_reset_recapture():
    """PyTorch's test_graph_capture_reset_recapture: the first capture's output is read
    and dropped by the second capture of the same object, after reset() released the
    first pool."""
    s = mtia.Stream()
    with mtia.stream(s):
        a = mtia.full((1000,), 1)
        g = MTIAGraph()
        mtia.empty_cache()
        g.capture_begin()
        b = a
        for _ in range(10):
            b = b + 1
        g.capture_end()
    mtia.current_stream().wait_stream(s)
    g.replay()
    assert b.sum().item() == 11000.0
    g.reset()
    with mtia.stream(s):
        g.capture_begin()
        b.fill_(2.0)
        for _ in range(10):
            b = b + 2
        g.capture_end()
    mtia.current_stream().wait_stream(s)
    g.replay()
    assert b.sum().item() == 22000.0
    g.reset()
    del g


def test_output_of_a_deleted_graph_read_and_dropped_in_the_next_capture():
    g1 = MTIAGraph()
    with mtia.graph(g1):
        b = mtia.ones(1000) + 1
    g1.replay()
    del g1
    g2 = MTIAGraph()
    with mtia.graph(g2):
        c = b * 2
        address = b.data_ptr()
        del b
    gc.collect()
    # held by g2: not unmapped by empty_cache, not handed out again
    assert _held_bytes() >= 4000
    assert _states()[address] == "graph_held"
    mtia.empty_cache()
    others = [mtia.zeros(1000) for _ in range(4)]
    assert address not in {t.data_ptr() for t in others}
    g2.replay()
    assert c.sum().item() == 4000.0
    assert all(t.sum().item() == 0 for t in others)
    del g2
    gc.collect()
    assert _held_bytes() == 0


@pytest.mark.parametrize("source", ["device", "dlpack"])
def test_deleted_static_tensors_stay_held(op, source):
    """A static input and a static output deleted after the capture, then empty_cache():
    replays neither crash nor write into the tensors allocated since."""
    x = _inputs(source)
    out = mtia.zeros(N)
    g = MTIAGraph()
    with mtia.graph(g):
        op(x, out)
    g.replay()
    mtia.synchronize()
    expected = out.numpy().copy()
    addresses = {x.data_ptr(), out.data_ptr()}
    del x, out
    gc.collect()
    mtia.empty_cache()
    assert _held_bytes() >= 2 * N * 4
    fresh = [mtia.full((N,), 7.0) for _ in range(6)]
    assert not addresses & {t.data_ptr() for t in fresh}
    for _ in range(5):
        g.replay()
    mtia.synchronize()
    for t in fresh:
        np.testing.assert_array_equal(t.numpy(), np.full(N, 7.0, np.float32))
    assert expected.any()
    g.reset()
    assert _held_bytes() == 0


def test_fill_into_a_deleted_tensor_stays_held():
    out = mtia.zeros(N)
    g = MTIAGraph()
    with mtia.graph(g):
        out.fill_(3.0)
    del out
    gc.collect()
    fresh = [mtia.full((N,), 7.0) for _ in range(4)]
    g.replay()
    mtia.synchronize()
    for t in fresh:
        assert (t.numpy() == 7.0).all()
    g.reset()


def test_memory_stats_and_snapshot_account_for_held_blocks():
    x = mtia.ones(N)
    g = MTIAGraph()
    with mtia.graph(g):
        y = x + 1
    before = mtia.memory_stats()
    address = x.data_ptr()
    del x
    gc.collect()
    after = mtia.memory_stats()
    assert after["graph_held_bytes.all.current"] == before["graph_held_bytes.all.current"] + N * 4
    assert after["graph_held.all.current"] == before["graph_held.all.current"] + 1
    assert after["graph_held_bytes.all.peak"] >= after["graph_held_bytes.all.current"]
    assert after["allocated_bytes.all.current"] == before["allocated_bytes.all.current"] - N * 4
    assert after["active_bytes.all.current"] == before["active_bytes.all.current"]
    assert _states()[address] == "graph_held"
    g.replay()
    assert y.sum().item() == 2 * N
    g.reset()
    assert mtia.memory_stats()["graph_held_bytes.all.current"] == 0
    assert _states().get(address) != "graph_held"


def test_own_pool_tensors_follow_the_pool_contract():
    """A tensor of the graph's own pool deleted after the capture is not held: later
    captures sharing the pool reuse its memory, as in PyTorch."""
    pool = mtia.graph_pool_handle()
    g1 = MTIAGraph()
    with mtia.graph(g1, pool=pool):
        out = mtia.full((N,), 3.0)
    address = out.data_ptr()
    del out
    gc.collect()
    assert _held_bytes() == 0
    g2 = MTIAGraph()
    with mtia.graph(g2, pool=pool):
        again = mtia.zeros(N)
    assert again.data_ptr() == address
    g1.reset()
    g2.reset()


# ----------------------------------------------------------------------------- structure


def test_replay_captured_as_a_child_holds_what_it_uses():
    """g1's replay captured into g2: g2 keeps g1's static input after g1 is reset and the
    input deleted; a tensor allocated since is never written; a checked capture names the
    deleted tensor."""
    x = mtia.ones(N)
    out = mtia.zeros(N)
    g1 = MTIAGraph()
    with mtia.graph(g1):
        out.add_(x)
    g2, g3 = MTIAGraph(), MTIAGraph()
    with mtia.graph(g2):
        g1.replay()
    with mtia.graph(g3, check_input_liveness=True):
        g1.replay()
    g1.reset()
    held = _held_bytes()
    address = x.data_ptr()
    del x
    gc.collect()
    assert _held_bytes() >= held + N * 4
    assert _states()[address] == "graph_held"
    sentinel = mtia.full((N,), 7.0)
    for _ in range(3):
        g2.replay()
    mtia.synchronize()
    assert (out.numpy() == 3).all() and (sentinel.numpy() == 7).all()
    with pytest.raises(MTIAValueError) as info:
        g3.replay()
    message = str(info.value)
    assert "graph node 0 (child graph" in message and f"0x{address:x}" in message
    assert f"a tensor of shape ({N},) and dtype mtia_graph.float32" in message
    g2.reset()
    g3.reset()
    gc.collect()
    assert address not in _states() or _states()[address] != "graph_held"


def test_update_holds_the_new_captures_tensors():
    a, b = mtia.ones(N), mtia.full((N,), 2.0)
    out = mtia.zeros(N)
    g = MTIAGraph()
    with mtia.graph(g, check_input_liveness=True):
        out.add_(a)
    with g.recapture():
        out.add_(b)
    address = b.data_ptr()
    del b
    gc.collect()
    assert _states()[address] == "graph_held"
    sentinel = mtia.full((N,), 7.0)
    with pytest.raises(MTIAValueError, match="input check: graph node 0"):
        g.replay()
    assert (out.numpy() == 0).all() and (sentinel.numpy() == 7).all()
    g.reset()


# ----------------------------------------------------------------------------- input check


@pytest.mark.parametrize("source", ["device", "dlpack"])
def test_input_check_names_the_deleted_input(op, source):
    x = _inputs(source)
    out = mtia.zeros(N)
    counter = mtia.zeros(1)
    g = MTIAGraph()
    with mtia.graph(g, check_input_liveness=True):
        counter.add_(1)
        op(x, out)
    g.replay()
    mtia.synchronize()
    address = x.data_ptr()
    del x
    gc.collect()
    with pytest.raises(MTIAValueError) as info:
        g.replay()
    message = str(info.value)
    assert message.startswith("MTIAGraph.replay: mtiart_graph_launch: input check: graph node 1")
    assert f"0x{address:x}" in message and f"+{N * 4} bytes" in message
    assert f"a tensor of shape ({N},) and dtype mtia_graph.float32" in message
    # nothing ran: the counter saw the first replay only
    assert counter.item() == 1.0
    g.reset()


def test_input_check_ignores_deleted_outputs():
    x = mtia.ones(N)
    out = mtia.zeros(N)
    g = MTIAGraph()
    g.capture_begin(check_input_liveness=True)
    out.copy_(x + 1)
    tmp = out * 2  # produced by the graph, dropped during the capture
    del tmp
    g.capture_end()
    del out
    gc.collect()
    for _ in range(3):
        g.replay()
    mtia.synchronize()
    g.reset()


def test_input_check_sees_memory_reused_by_a_shared_pool():
    pool = mtia.graph_pool_handle()
    g1 = MTIAGraph()
    with mtia.graph(g1, pool=pool):
        t = mtia.ones(N)
    g2 = MTIAGraph()
    with mtia.graph(g2, pool=pool, check_input_liveness=True):
        u = t * 2
    address = t.data_ptr()
    del t
    gc.collect()
    g3 = MTIAGraph()
    with mtia.graph(g3, pool=pool):
        w = mtia.zeros(N)
    assert w.data_ptr() == address
    with pytest.raises(MTIAValueError, match="now belongs to another allocation"):
        g2.replay()
    del u
    for graph in (g1, g2, g3):
        graph.reset()


def test_input_check_keyword_and_keep_graph():
    with pytest.raises(TypeError, match="check_input_liveness must be a bool"):
        MTIAGraph().capture_begin(check_input_liveness=1)
    x = mtia.ones(8)
    g = MTIAGraph(keep_graph=True)
    g.capture_begin(check_input_liveness=True)
    y = x + 1
    g.capture_end()
    g.instantiate()
    g.replay()
    assert y.sum().item() == 16
    del x
    gc.collect()
    with pytest.raises(MTIAValueError, match="input check"):
        g.replay()
    g.instantiate()  # a new executable keeps the check
    with pytest.raises(MTIAValueError, match="input check"):
        g.replay()
    g.reset()
    # without the check, the same misuse replays on the memory the graph still holds
    x = mtia.ones(8)
    g = MTIAGraph()
    with mtia.graph(g):
        y = x + 1
    del x
    gc.collect()
    g.replay()
    assert y.sum().item() == 16
    g.reset()


# ----------------------------------------------------------------------------- replay order


@mtia.kernel
def _slow_increment(x):
    value = x[0]
    time.sleep(0.05)  # a read-modify-write that overlapping replays would both see start
    x[0] = value + 1


def test_reinstantiation_while_a_replay_runs_does_not_overlap():
    x = mtia.zeros(1)
    g = MTIAGraph(keep_graph=True)
    side = mtia.Stream()
    with mtia.stream(side):
        g.capture_begin()
        _slow_increment(x)
        g.capture_end()
    g.instantiate()
    s1, s2 = mtia.Stream(), mtia.Stream()
    with mtia.stream(s1):
        g.replay()
    g.instantiate()  # a new executable while the first replay runs
    with mtia.stream(s2):
        g.replay()
    s1.synchronize()
    s2.synchronize()
    assert x.item() == 2.0
    g.reset()


# ----------------------------------------------------------------------------- pools, streams


def test_pool_ids_never_issued_are_refused():
    g = MTIAGraph()
    with mtia.graph(g):
        mtia.ones(4)
    issued = g.pool()
    for made_up in ((issued[0] + 1, 0), (0, mtia.graph_pool_handle()[1] + 1), (10**9, 0)):
        with pytest.raises(ValueError, match="never issued"):
            MTIAGraph().capture_begin(made_up)
        assert not mtia.is_current_stream_capturing()
    # the id refused above is what the next default capture gets: it was in no one's use
    h = MTIAGraph()
    with mtia.graph(h):
        out = mtia.ones(4) * 30
    assert h.pool() == (issued[0] + 1, 0)
    g2 = MTIAGraph()
    with mtia.graph(g2, pool=g.pool()):  # issued ids are fine, shared on purpose
        mtia.zeros(4)
    h.replay()
    assert out.tolist() == [30.0] * 4
    for graph in (g, g2, h):
        graph.reset()


def _quarantined_bytes():
    value = ffi.new("uint64_t *")
    check(lib.mtiart_memory_get_stat(0, lib.MTIART_STAT_VALGRIND_QUARANTINE_BYTES, value))
    return int(value[0])


def _rss_bytes():
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


def test_short_lived_streams_keep_reserved_memory_flat():
    """A destroyed stream's cached memory goes to the streams after it once its work is
    done (here: synchronized before the stream is dropped)."""
    mtia.synchronize()
    mtia.empty_cache()
    rss_before = _rss_bytes()
    most = 0
    for i in range(1000):
        s = mtia.Stream()
        with mtia.stream(s):
            t = mtia.full((1 << 18,), float(i))  # 1 MiB
            del t
        s.synchronize()
        del s
        # under valgrind, freed blocks wait in a quarantine, each keeping a segment
        most = max(most, mtia.memory_reserved() - 2 * _quarantined_bytes())
    assert mtia.memory_allocated() == 0
    assert most <= 8 << 20, f"{most >> 20} MiB reserved at most"
    # under valgrind, released segments stay mapped and the quarantine keeps blocks that
    # were written: that much resident memory is the quarantine's, not a leak
    grown = _rss_bytes() - rss_before - _quarantined_bytes()
    assert grown <= 64 << 20, f"{grown >> 20} MiB more resident"
