"""The Python benchmarks: mtia_graph against numpy (always) and torch CPU (when installed),
measured interleaved in this process. benchmarks/README.md says what every row measures."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ._rows import Row, interleave, make_row, quartiles, summary

_now = time.perf_counter_ns

# numpy's OpenBLAS threads and torch's OpenMP threads keep spinning for up to ~0.1 s after a
# call, the runtime's workers for tens of microseconds: each side sleeps this long, untimed,
# before each of its reps, or the interleaving would make each pay for the other's spinning.
SETTLE_S = 0.12

ADD_ROWS = ("py_add_inplace_np_out_a", "py_add_inplace_np_out_b", "py_add_inplace_torch")
GRAPH_ROWS = ("py_replay_1000", "py_replay_speedup_vs_eager", "py_capture_instantiate")
MATMUL_ROWS = ("py_matmul_512", "py_matmul_1024")
MLP_ROWS = ("py_mlp_eager_sync", "py_mlp_replay_sync", "py_mlp_replay_copy_io",
            "py_mlp_replay_b2b", "py_mlp_torch_eager", "py_mlp_replay_copy_io_vs_torch",
            "py_mlp_replay_copy_io_unfused")
MEMCHECK_ROW = "memcheck_py_mlp_example"
PY_ROW_NAMES = (MEMCHECK_ROW,) + ADD_ROWS + GRAPH_ROWS + MATMUL_ROWS + MLP_ROWS

# The MLP inference step of the rows above: batch 32, 256 -> 512 -> 256, relu, softmax.
MLP_BATCH, MLP_IN, MLP_HIDDEN, MLP_OUT = 32, 256, 512, 256


def _want(name: str, filters: Sequence[str]) -> bool:
    return not filters or any(f in name for f in filters)


def import_torch() -> Tuple[Any, Optional[str]]:
    """(torch, None), or (None, why it is not there)."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - any import failure means "no peer"
        return None, (f"torch is not importable ({type(e).__name__}: {e}); install the "
                      f"optional peer with pip install 'mtia-graph[bench]'")
    return torch, None


def _settled(fn: Callable[[], float]) -> Callable[[], float]:
    def rep() -> float:
        time.sleep(SETTLE_S)
        return fn()
    return rep


def python_benchmarks(quick: bool = False, reps: Optional[int] = None,
                      filters: Sequence[str] = (),
                      plot_data: Optional[Dict[str, Any]] = None) -> Iterator[Row]:
    """Yield the Python benchmark rows (a row with ``skipped`` set when something it needs
    is missing)."""
    reps = reps or (3 if quick else 9)
    if _want(MEMCHECK_ROW, filters):
        # first: its processes would otherwise compete with this one's runtime workers
        yield _memcheck_mlp_row()
    try:
        import mtia_graph as mg
    except Exception as e:  # noqa: BLE001 - report, do not crash
        for name in PY_ROW_NAMES:
            if _want(name, filters):
                yield make_row(name, None, "-", skipped=f"import mtia_graph failed: {e}")
        return
    missing = [a for a in ("zeros", "synchronize", "MTIAGraph", "graph", "from_numpy")
               if not hasattr(mg, a)]
    reason = f"mtia_graph lacks {', '.join(missing)}" if missing else None
    torch, no_torch = import_torch()

    if any(_want(n, filters) for n in ADD_ROWS + GRAPH_ROWS):
        yield from _add_and_graph_rows(mg, torch, no_torch, reason, quick, reps, filters,
                                       plot_data)
    for n in (512, 1024):
        name = f"py_matmul_{n}"
        if _want(name, filters):
            try:
                yield _matmul_row(name, n, quick, reps)
            except Exception as e:  # noqa: BLE001
                yield make_row(name, None, "GFLOP/s", better="higher", skipped=str(e))
    if any(_want(n, filters) for n in MLP_ROWS):
        yield from _mlp_rows(mg, torch, no_torch, reason, quick, reps, filters)


# --------------------------------------------------------------------------- valgrind


MEMCHECK_RUNS = 5


def _memcheck_mlp_row() -> Row:
    """examples/mlp.py, the whole process, under valgrind memcheck (its default scheduler,
    the default worker count) against natively: the worst of five memcheck runs against
    the native median."""
    import os
    import shutil
    import statistics
    import subprocess
    import sys

    name, unit = MEMCHECK_ROW, "s"
    script = os.path.join(os.getcwd(), "examples", "mlp.py")
    valgrind = shutil.which(os.environ.get("VALGRIND") or "valgrind")
    if not os.path.isfile(script):
        return make_row(name, None, unit, skipped="examples/mlp.py not found (run from the "
                                                  "repository root, as tools/bench.sh does)")
    if valgrind is None:
        return make_row(name, None, unit, skipped="valgrind is not installed")
    env = {k: v for k, v in os.environ.items() if k != "MTIART_NUM_WORKERS"}

    def run(cmd: List[str]) -> float:
        t0 = _now()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return (_now() - t0) / 1e9

    native_cmd = [sys.executable, script]
    vg_cmd = [valgrind, "--tool=memcheck", "-q", "--log-file=/dev/null"] + native_cmd
    try:
        native, vg = [], []
        for _ in range(MEMCHECK_RUNS):
            native.append(run(native_cmd))
            vg.append(run(vg_cmd))
    except (OSError, subprocess.CalledProcessError) as e:
        return make_row(name, None, unit, skipped=f"a run of examples/mlp.py failed: {e}")
    return make_row(name, max(vg), unit, baseline=statistics.median(native),
                    baseline_name="examples/mlp.py natively (median of 5 runs)",
                    ratio_target=100.0, reps=MEMCHECK_RUNS, vmin=min(vg), vmax=max(vg),
                    params={"memcheck_median_s": statistics.median(vg), "valgrind": valgrind},
                    note="python examples/mlp.py (interpreter start to exit) under valgrind "
                         "memcheck, default scheduler and worker count: the worst of 5 runs")


# --------------------------------------------------------------------------- t.add_(1)


def _add_and_graph_rows(mg: Any, torch: Any, no_torch: Optional[str], reason: Optional[str],
                        quick: bool, reps: int, filters: Sequence[str],
                        plot_data: Optional[Dict[str, Any]]) -> Iterator[Row]:
    import numpy as np

    n_eager = 2000 if quick else 20000
    graph_nodes = 1000
    a = np.zeros(1, dtype=np.float32)
    b = np.zeros(1, dtype=np.float32)

    def numpy_rep(n: int, out: np.ndarray) -> Callable[[], float]:
        def rep() -> float:
            add = np.add
            t0 = _now()
            for _ in range(n):
                add(a, 1, out=out)
            return (_now() - t0) / n
        return rep

    t = None
    if reason is None:
        try:
            t = mg.zeros(1)
            t.add_(1)
            mg.synchronize()
        except Exception as e:  # noqa: BLE001
            reason = f"mtia_graph.zeros(1).add_(1) failed: {e}"

    def eager_rep(n: int) -> Callable[[], float]:
        def rep() -> float:
            x = t
            t0 = _now()
            for _ in range(n):
                x.add_(1)
            mg.synchronize()
            return (_now() - t0) / n
        return rep

    def torch_rep(n: int) -> Callable[[], float]:
        x = torch.zeros(1)

        def rep() -> float:
            t0 = _now()
            for _ in range(n):
                x.add_(1)
            return (_now() - t0) / n
        return rep

    # ---- t.add_(1): one figure, three baselines, all interleaved
    if any(_want(n, filters) for n in ADD_ROWS):
        fns = [eager_rep(n_eager), numpy_rep(n_eager, a), numpy_rep(n_eager, b)]
        if torch is not None:
            fns.append(torch_rep(n_eager))
        samples = interleave(fns, reps) if reason is None else []
        note = ("t.add_(1) on a one-element float32 tensor, per op, including a final "
                "synchronize after the run of ops")
        specs = [("py_add_inplace_np_out_a", 1, "np.add(a, 1, out=a) (numpy's in-place path)",
                  None),
                 ("py_add_inplace_np_out_b", 2, "np.add(a, 1, out=b) (numpy's ordinary add "
                  "into another array)", 0.6),
                 ("py_add_inplace_torch", 3, "torch CPU eager x.add_(1) on a one-element "
                  "tensor", None)]
        for name, k, bname, rt in specs:
            if not _want(name, filters):
                continue
            skip = reason or (no_torch if k == 3 and torch is None else None)
            if skip:
                yield make_row(name, None, "ns/op", skipped=skip)
                continue
            v, lo, hi = summary(samples[0])
            yield make_row(name, v, "ns/op", baseline=summary(samples[k])[0],
                           baseline_name=bname, ratio_target=rt, reps=reps, vmin=lo, vmax=hi,
                           params={"ops_per_rep": n_eager}, note=note)

    # ---- 1000 captured t.add_(1): replay, and capture itself
    def capture(n: int) -> Any:
        g = mg.MTIAGraph()
        with mg.graph(g):
            x = t
            for _ in range(n):
                x.add_(1)
        return g

    graph = None
    if reason is None and any(_want(n, filters) for n in GRAPH_ROWS):
        try:
            graph = capture(graph_nodes)
            graph.replay()
            mg.synchronize()
        except Exception as e:  # noqa: BLE001
            reason = f"capturing/replaying {graph_nodes} t.add_(1) failed: {e}"

    def replay_rep(g: Any, n: int, launches: int) -> Callable[[], float]:
        def rep() -> float:
            replay, sync = g.replay, mg.synchronize
            t0 = _now()
            for _ in range(launches):
                replay()
                sync()
            return (_now() - t0) / (launches * n)
        return rep

    launches = 20 if quick else 200
    if _want("py_replay_1000", filters) or _want("py_replay_speedup_vs_eager", filters):
        if reason:
            for name in ("py_replay_1000", "py_replay_speedup_vs_eager"):
                if _want(name, filters):
                    yield make_row(name, None, "ns/node" if name.endswith("1000") else "x",
                                   skipped=reason)
        else:
            replay_s, eager_s, numpy_s = interleave(
                [replay_rep(graph, graph_nodes, launches), eager_rep(graph_nodes),
                 numpy_rep(graph_nodes, b)], reps)
            v, lo, hi = summary(replay_s)
            if _want("py_replay_1000", filters):
                yield make_row("py_replay_1000", v, "ns/node", baseline=summary(numpy_s)[0],
                               baseline_name="np.add(a, 1, out=b) per op", target=15.0,
                               reps=reps, vmin=lo, vmax=hi,
                               params={"nodes": graph_nodes, "replays_per_rep": launches},
                               note="g.replay() + synchronize() of 1000 captured t.add_(1), "
                                    "per node")
            if _want("py_replay_speedup_vs_eager", filters):
                speedups = [e / r for e, r in zip(eager_s, replay_s)]
                s, slo, shi = summary(speedups)
                yield make_row("py_replay_speedup_vs_eager", s, "x", baseline=1.0,
                               baseline_name="eager: the same 1000 t.add_(1) + synchronize()",
                               better="higher", target=40.0, reps=reps, vmin=slo, vmax=shi,
                               params={"eager_ns_per_op": summary(eager_s)[0],
                                       "replay_ns_per_node": v, "nodes": graph_nodes},
                               note="eager time / replay time for the same 1000 ops, per rep")

    if _want("py_capture_instantiate", filters):
        if reason:
            yield make_row("py_capture_instantiate", None, "ns/node", skipped=reason)
        else:
            rounds = 2 if quick else 5

            def capture_rep() -> float:
                total = 0
                for _ in range(rounds):
                    t0 = _now()
                    g = capture(graph_nodes)  # keep_graph=False: instantiated at capture_end
                    total += _now() - t0
                    g.reset()
                return total / (rounds * graph_nodes)

            cap_s, eager_s = interleave([capture_rep, eager_rep(graph_nodes)], reps)
            v, lo, hi = summary(cap_s)
            yield make_row("py_capture_instantiate", v, "ns/node", baseline=summary(eager_s)[0],
                           baseline_name="eager t.add_(1) per op (1000 ops + synchronize)",
                           reps=reps, vmin=lo, vmax=hi,
                           params={"nodes": graph_nodes, "captures_per_rep": rounds},
                           note="MTIAGraph() + `with graph(g)` around 1000 t.add_(1) "
                                "(instantiated at capture_end); per node")

    if plot_data is not None and reason is None:
        sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
        eager_pts, replay_pts = [], []
        for n in sizes:
            g = capture(n)
            r_s, e_s = interleave([replay_rep(g, n, max(2, 20000 // n)), eager_rep(n)], reps)
            replay_pts.append(summary(r_s)[0])
            eager_pts.append(summary(e_s)[0])
            g.reset()
        plot_data.update(sizes=sizes, eager=eager_pts, replay=replay_pts)

    if graph is not None:
        graph.reset()


# --------------------------------------------------------------------------- matmul


def binding() -> Tuple[Any, Any]:
    """The cffi binding of libmtiart (ffi, lib)."""
    try:
        from mtia_graph._C import ffi, lib
    except ImportError:
        from mtia_graph._mtiart import ffi, lib
    return ffi, lib


def _matmul_row(name: str, n: int, quick: bool, reps: int) -> Row:
    """Sustained float32 matmul: many back to back, one wait; numpy's the same way."""
    import numpy as np

    ffi, lib = binding()
    if not hasattr(lib, "mtiart_op_matmul"):
        return make_row(name, None, "GFLOP/s", better="higher",
                        skipped="mtiart_op_matmul is not in the binding")
    rng = np.random.default_rng(0)
    ha = rng.standard_normal((n, n), dtype=np.float32)
    hb = rng.standard_normal((n, n), dtype=np.float32)
    hc = np.empty((n, n), dtype=np.float32)
    nbytes = ha.nbytes
    flops = 2.0 * n * n * n

    def check(st: int, what: str) -> None:
        if st != 0:
            msg = ffi.string(lib.mtiart_last_error_message()).decode(errors="replace")
            raise RuntimeError(f"{what} failed ({st}): {msg}")

    stream = ffi.new("mtiart_stream *")
    check(lib.mtiart_stream_get_default(0, stream), "mtiart_stream_get_default")
    s = stream[0]
    ptrs = []
    try:
        for _ in range(3):
            p = ffi.new("void **")
            check(lib.mtiart_malloc(0, nbytes, p), "mtiart_malloc")
            ptrs.append(p[0])
        da, db, dc = ptrs
        for dev, host in ((da, ha), (db, hb)):
            check(lib.mtiart_memcpy(s, dev, ffi.from_buffer(host), nbytes,
                                    lib.MTIART_MEMCPY_HOST_TO_DEVICE), "mtiart_memcpy")
        descs = []
        for ptr in (dc, da, db):
            d = ffi.new("mtiart_tensor_desc *")
            d.data = ptr
            d.dtype = lib.MTIART_DTYPE_FLOAT32
            d.ndim = 2
            d.shape[0] = n
            d.shape[1] = n
            descs.append(d)
        out_d, a_d, b_d = descs
        # as many matmuls as numpy does in ~0.1 s (0.03 s quick), at least 2
        t0 = _now()
        np.matmul(ha, hb, out=hc)
        one = max(1, _now() - t0)
        times = max(2, int((0.03e9 if quick else 0.1e9) / one))

        def mt_rep() -> float:
            t0 = _now()
            for _ in range(times):
                check(lib.mtiart_op_matmul(s, out_d, a_d, b_d), "mtiart_op_matmul")
            check(lib.mtiart_stream_synchronize(s), "mtiart_stream_synchronize")
            return flops * times / (_now() - t0)  # flop per ns = GFLOP/s

        def np_rep() -> float:
            t0 = _now()
            for _ in range(times):
                np.matmul(ha, hb, out=hc)
            return flops * times / (_now() - t0)

        mt_s, np_s = interleave([_settled(mt_rep), _settled(np_rep)], reps)
        check(lib.mtiart_memcpy(s, ffi.from_buffer(hc), dc, nbytes,
                                lib.MTIART_MEMCPY_DEVICE_TO_HOST), "mtiart_memcpy")
    finally:
        for p in ptrs:
            lib.mtiart_free(p)
        lib.mtiart_stream_synchronize(s)
    ref = ha @ hb
    err = float(np.max(np.abs(hc - ref)) / max(1e-30, float(np.max(np.abs(ref)))))
    v, lo, hi = summary(mt_s)
    return make_row(name, v, "GFLOP/s", baseline=summary(np_s)[0], better="higher",
                    ratio_target=1.0,
                    baseline_name="numpy.matmul(a, b, out=c) back to back (its BLAS, its "
                                  "threads) in the same process",
                    reps=reps, vmin=lo, vmax=hi,
                    params={"n": n, "dtype": "float32", "matmuls_per_rep": times,
                            "max_rel_error_vs_numpy": err},
                    note="sustained: mtiart_op_matmul back to back on the default stream, "
                         "then one synchronize")


# --------------------------------------------------------------------------- MLP step


class MLPWorkload:
    """The MLP inference step (batch 32, 256 -> 512 -> 256, relu, softmax) in numpy, in
    mtia_graph (eager and captured) and in torch CPU, over the same weights and inputs."""

    def __init__(self, mg: Any, torch: Any = None) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        f32 = np.float32
        self.np = np
        self.mg = mg
        self.w1 = (rng.standard_normal((MLP_IN, MLP_HIDDEN)) / np.sqrt(MLP_IN)).astype(f32)
        self.b1 = (rng.standard_normal(MLP_HIDDEN) * 0.1).astype(f32)
        self.w2 = (rng.standard_normal((MLP_HIDDEN, MLP_OUT)) / np.sqrt(MLP_HIDDEN)).astype(f32)
        self.b2 = (rng.standard_normal(MLP_OUT) * 0.1).astype(f32)
        self.inputs = [rng.standard_normal((MLP_BATCH, MLP_IN)).astype(f32) for _ in range(8)]
        self.torch = torch
        if torch is not None:
            self.t_w = [torch.from_numpy(a) for a in (self.w1, self.b1, self.w2, self.b2)]
            self.t_inputs = [torch.from_numpy(x) for x in self.inputs]
        dev = mg.from_numpy
        self.d_w = [dev(a) for a in (self.w1, self.b1, self.w2, self.b2)]
        self.d_inputs = [dev(x) for x in self.inputs]
        # capture once over a static input, after a warm-up on a side stream (as torch's
        # graph capture recipe does) so the allocator has the blocks cached
        self.static_x = mg.zeros((MLP_BATCH, MLP_IN))
        s = mg.Stream()
        s.wait_stream(mg.current_stream())
        with mg.stream(s):
            self.mtia_step(self.static_x)
        mg.current_stream().wait_stream(s)
        mg.synchronize()
        self.graph = mg.MTIAGraph()
        with mg.graph(self.graph):
            self.static_out = self.mtia_step(self.static_x)
        # the same step with fusion off, for the fused/unfused ratio of one run
        mg.set_graph_fusion(False)
        try:
            self.unfused = mg.MTIAGraph()
            with mg.graph(self.unfused):
                self.unfused_out = self.mtia_step(self.static_x)
        finally:
            mg.set_graph_fusion(None)

    def numpy_step(self, x: Any) -> Any:
        np = self.np
        h = np.maximum(x @ self.w1 + self.b1, 0)
        z = h @ self.w2 + self.b2
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def mtia_step(self, x: Any) -> Any:
        w1, b1, w2, b2 = self.d_w
        return ((x @ w1 + b1).relu() @ w2 + b2).softmax(dim=-1)

    def torch_step(self, x: Any) -> Any:
        torch = self.torch
        w1, b1, w2, b2 = self.t_w
        return torch.softmax(torch.relu(x @ w1 + b1) @ w2 + b2, dim=-1)

    def max_abs_error(self) -> float:
        """Replayed output against numpy's, over every input."""
        worst = 0.0
        for x in self.inputs:
            self.static_x.copy_(x)
            self.graph.replay()
            out = self.static_out.numpy()
            worst = max(worst, float(self.np.max(self.np.abs(out - self.numpy_step(x)))))
        return worst

    # per-step timings (us per step over `steps` steps)
    def time_numpy(self, steps: int) -> float:
        xs, step = self.inputs, self.numpy_step
        t0 = _now()
        for i in range(steps):
            step(xs[i & 7])
        return (_now() - t0) / steps / 1e3

    def time_torch(self, steps: int) -> float:
        xs, step = self.t_inputs, self.torch_step
        with self.torch.inference_mode():
            t0 = _now()
            for i in range(steps):
                step(xs[i & 7]).numpy()
            return (_now() - t0) / steps / 1e3

    def time_eager_sync(self, steps: int) -> float:
        xs, step, sync = self.d_inputs, self.mtia_step, self.mg.synchronize
        t0 = _now()
        for i in range(steps):
            step(xs[i & 7])
            sync()
        return (_now() - t0) / steps / 1e3

    def time_replay_sync(self, steps: int) -> float:
        replay, sync = self.graph.replay, self.mg.synchronize
        t0 = _now()
        for _ in range(steps):
            replay()
            sync()
        return (_now() - t0) / steps / 1e3

    def time_copy_io(self, steps: int, fused: bool = True) -> float:
        graph, out = (self.graph, self.static_out) if fused else (self.unfused, self.unfused_out)
        xs, copy_in, replay, read = self.inputs, self.static_x.copy_, graph.replay, out.numpy
        t0 = _now()
        for i in range(steps):
            copy_in(xs[i & 7])
            replay()
            read()
        return (_now() - t0) / steps / 1e3

    def time_b2b(self, steps: int) -> float:
        replay = self.graph.replay
        t0 = _now()
        for _ in range(steps):
            replay()
        self.mg.synchronize()
        return (_now() - t0) / steps / 1e3

    def close(self) -> None:
        self.graph.reset()
        self.unfused.reset()


def _mlp_rows(mg: Any, torch: Any, no_torch: Optional[str], reason: Optional[str],
              quick: bool, reps: int, filters: Sequence[str]) -> Iterator[Row]:
    wl = None
    if reason is None:
        try:
            wl = MLPWorkload(mg, torch)
            err = wl.max_abs_error()
        except Exception as e:  # noqa: BLE001
            reason = f"the MLP step does not run on mtia_graph: {type(e).__name__}: {e}"
    if reason:
        for name in MLP_ROWS:
            if _want(name, filters):
                yield make_row(name, None, "us/step", skipped=reason)
        return
    steps = 20 if quick else 200
    timers: List[Callable[[int], float]] = [wl.time_numpy, wl.time_eager_sync,
                                            wl.time_replay_sync, wl.time_copy_io, wl.time_b2b,
                                            lambda n: wl.time_copy_io(n, fused=False)]
    if torch is not None:
        timers.append(wl.time_torch)
    samples = interleave([_settled(lambda f=f: f(steps)) for f in timers], reps)
    numpy_us = summary(samples[0])[0]
    copy_io_us = summary(samples[3])[0]
    torch_us = summary(samples[6])[0] if torch is not None else None
    shape = f"batch {MLP_BATCH}, {MLP_IN}->{MLP_HIDDEN}->{MLP_OUT}, relu, softmax"
    params = {"steps_per_rep": steps, "batch": MLP_BATCH, "in": MLP_IN, "hidden": MLP_HIDDEN,
              "out": MLP_OUT, "max_abs_error_vs_numpy": err,
              "graph_nodes": wl.graph.num_nodes() if hasattr(wl.graph, "num_nodes") else None}
    numpy_name = "numpy step softmax(relu(x @ W1 + b1) @ W2 + b2), same process"
    torch_name = "torch CPU eager step (inference_mode), same process"
    specs = [
        ("py_mlp_eager_sync", 1, numpy_us, numpy_name, 1.0,
         "mtia_graph eager: every op issued from Python, synchronize() per step"),
        ("py_mlp_replay_sync", 2, numpy_us, numpy_name, None,
         "g.replay() + synchronize() per step (input already in place)"),
        ("py_mlp_replay_copy_io", 3, numpy_us, numpy_name, 0.7,
         "copy the numpy input into the static input, g.replay(), read the output back as "
         "numpy, every step"),
        ("py_mlp_replay_b2b", 4, numpy_us, numpy_name, None,
         "replays back to back, one synchronize() at the end; per step"),
        ("py_mlp_torch_eager", 6, numpy_us, numpy_name, None,
         "the peer: torch CPU eager step, output read as numpy (zero-copy)"),
        ("py_mlp_replay_copy_io_vs_torch", 3, torch_us, torch_name, 0.7,
         "copy input in + g.replay() + read output, against torch CPU eager"),
        ("py_mlp_replay_copy_io_unfused", 5, copy_io_us, "py_mlp_replay_copy_io (fused)", None,
         "py_mlp_replay_copy_io with graph fusion off (mtia_graph.set_graph_fusion(False)); "
         "the ratio is unfused over fused"),
    ]
    for name, k, base, bname, rt, note in specs:
        if not _want(name, filters):
            continue
        if (k == 6 or base is None) and torch is None:
            yield make_row(name, None, "us/step", skipped=no_torch)
            continue
        v, lo, hi = summary(samples[k])
        q1, q3 = quartiles(samples[k])
        yield make_row(name, v, "us/step", baseline=base, baseline_name=bname,
                       ratio_target=rt, reps=reps, vmin=lo, vmax=hi,
                       params=dict(params, q1=q1, q3=q3), note=f"{note}; {shape}")
    wl.close()


def mlp_child(steps: int, reps: int) -> Dict[str, float]:
    """Per-step figures of the mtia_graph MLP step in this process (the scaling table runs
    one such process per worker count)."""
    import mtia_graph as mg

    wl = MLPWorkload(mg)
    try:
        replay, copy_io, eager = interleave(
            [lambda: wl.time_replay_sync(steps), lambda: wl.time_copy_io(steps),
             lambda: wl.time_eager_sync(steps)], reps)
        workers = mg.get_device_properties(0).num_workers
        return {"workers": workers, "replay_sync_us": summary(replay)[0],
                "copy_io_us": summary(copy_io)[0], "eager_sync_us": summary(eager)[0]}
    finally:
        wl.close()
