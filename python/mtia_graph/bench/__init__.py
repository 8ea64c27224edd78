"""Benchmarks of mtia_graph and libmtiart: ``python -m mtia_graph.bench``.

Runs the Python benchmarks in this process and, when it can find it, the C benchmark
program ``bench_runtime`` (built by meson from ``benchmarks/bench_runtime.c``; it is not
part of the wheel) in a subprocess, then prints every row as a JSON line followed by a
readable table.

Every figure is a median over several repetitions and comes with a baseline measured in
the same process, interleaved with it rep by rep (numpy for the Python rows; a direct C
call of the same kernel function, libc malloc, memcpy, ... for the C rows), so that the
ratio holds on a noisy machine even when absolute times drift. Targets are the project
goals of ANCHORS.md. A benchmark is never a test: the exit status is non-zero only when
something failed to run, never because of a time.

Usage::

    python -m mtia_graph.bench [--quick] [--json] [--c-bench PATH | --no-c]
                               [--filter SUBSTRING]... [--reps N] [--output FILE]
                               [--plot out.png]

Where the C benchmark comes from, first match wins: ``--c-bench PATH``, the environment
variable ``MTIA_GRAPH_BENCH_C``, then ``build-bench/``, ``build-tests/`` and ``build/``
``benchmarks/bench_runtime`` under the current directory (``tools/bench.sh`` builds
``build-bench/`` and passes the path explicitly).

JSON row keys (``ROW_KEYS``): kind ("result"), suite ("c" | "python"), name, value, unit,
baseline, baseline_unit, baseline_name, ratio (value / baseline), better ("lower" |
"higher"), target, ratio_target, pass (true | false | null when the row has no target),
reps, min, max, params, note, skipped (a reason, or null). Lines with kind "meta"
describe a run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

__all__ = ["ROW_KEYS", "main", "python_benchmarks", "run_c_bench", "find_c_bench",
           "format_table"]

ROW_KEYS = (
    "kind", "suite", "name", "value", "unit", "baseline", "baseline_unit", "baseline_name",
    "ratio", "better", "target", "ratio_target", "pass", "reps", "min", "max", "params",
    "note", "skipped",
)

C_BENCH_ENV = "MTIA_GRAPH_BENCH_C"
C_BENCH_CANDIDATES = (
    "build-bench/benchmarks/bench_runtime",
    "build-tests/benchmarks/bench_runtime",
    "build/benchmarks/bench_runtime",
)

_now = time.perf_counter_ns


# --------------------------------------------------------------------------- rows


def _finite(x: Any) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def make_row(name: str, value: Optional[float], unit: str, *, baseline: Optional[float] = None,
             baseline_name: Optional[str] = None, baseline_unit: Optional[str] = None,
             better: str = "lower", target: Optional[float] = None,
             ratio_target: Optional[float] = None, reps: int = 0,
             vmin: Optional[float] = None, vmax: Optional[float] = None,
             params: Optional[Dict[str, Any]] = None, note: Optional[str] = None,
             skipped: Optional[str] = None, suite: str = "python") -> Dict[str, Any]:
    value, baseline = _finite(value), _finite(baseline)
    ratio = value / baseline if value is not None and baseline else None
    passed: Optional[bool] = None
    if not skipped and (target is not None or ratio_target is not None):
        hi = better == "higher"
        ok = value is not None
        if ok and target is not None:
            ok = value >= target if hi else value <= target
        if ok and ratio_target is not None:
            ok = ratio is not None and (ratio >= ratio_target if hi else ratio <= ratio_target)
        passed = bool(ok)
    return {
        "kind": "result", "suite": suite, "name": name, "value": value, "unit": unit,
        "baseline": baseline, "baseline_unit": baseline_unit or unit,
        "baseline_name": baseline_name, "ratio": ratio, "better": better, "target": target,
        "ratio_target": ratio_target, "pass": passed, "reps": reps,
        "min": _finite(vmin), "max": _finite(vmax), "params": params or {}, "note": note,
        "skipped": skipped,
    }


def _measure(fn: Callable[[], float], base: Optional[Callable[[], float]], reps: int
             ) -> Tuple[float, Optional[float], float, float]:
    """Interleave figure and baseline rep by rep (after one warm-up of each); medians."""
    fn()
    if base:
        base()
    vs: List[float] = []
    bs: List[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            vs.append(fn())
            if base:
                bs.append(base())
    finally:
        if gc_was_enabled:
            gc.enable()
    return (statistics.median(vs), statistics.median(bs) if bs else None, min(vs), max(vs))


# --------------------------------------------------------------------------- C benchmark


def find_c_bench(explicit: Optional[str] = None) -> Optional[str]:
    """The C benchmark program to run, or None."""
    if explicit:
        return explicit
    env = os.environ.get(C_BENCH_ENV)
    if env:
        return env
    for rel in C_BENCH_CANDIDATES:
        path = os.path.join(os.getcwd(), rel)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_c_bench(path: str, quick: bool = False, filters: Sequence[str] = (),
                reps: Optional[int] = None) -> Iterator[Dict[str, Any]]:
    """Run the C benchmark program; yield its JSON lines (meta and result rows) as they
    come. Raises RuntimeError when the program cannot run or fails."""
    cmd = [path, "--json"]
    if quick:
        cmd.append("--quick")
    for f in filters:
        cmd += ["--filter", f]
    if reps:
        cmd += ["--reps", str(reps)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise RuntimeError(f"cannot run the C benchmark {path}: {e}") from e
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except ValueError:
            print(f"mtia_graph.bench: unexpected output from {path}: {line}", file=sys.stderr)
    err = proc.stderr.read()
    rc = proc.wait()
    if rc != 0:
        raise RuntimeError(f"the C benchmark {path} failed (exit status {rc}): {err.strip()}")


# --------------------------------------------------------------------------- Python benchmarks


def _want(name: str, filters: Sequence[str]) -> bool:
    return not filters or any(f in name for f in filters)


PY_ROW_NAMES = ("py_add_inplace", "py_replay_1000", "py_capture_instantiate",
                "py_replay_speedup_vs_eager", "py_matmul_512", "py_matmul_1024")


def python_benchmarks(quick: bool = False, reps: Optional[int] = None,
                      filters: Sequence[str] = (),
                      plot_data: Optional[Dict[str, Any]] = None) -> Iterator[Dict[str, Any]]:
    """Yield the Python benchmark rows (a row with `skipped` set when a part of the package
    it needs is missing)."""
    import numpy as np

    reps = reps or (3 if quick else 9)
    try:
        import mtia_graph as mg
    except Exception as e:  # noqa: BLE001 - report, do not crash
        for name in PY_ROW_NAMES:
            if _want(name, filters):
                yield make_row(name, None, "-", skipped=f"import mtia_graph failed: {e}")
        return

    missing = [a for a in ("zeros", "synchronize", "MTIAGraph", "graph") if not hasattr(mg, a)]
    tensor_reason = f"mtia_graph lacks {', '.join(missing)}" if missing else None

    n_eager = 2000 if quick else 20000
    graph_nodes = 1000
    numpy_name = "np.add(a, 1, out=a) on a one-element float32 array"

    a = np.zeros(1, dtype=np.float32)

    def numpy_rep(n: int) -> Callable[[], float]:
        def rep() -> float:
            add = np.add
            t0 = _now()
            for _ in range(n):
                add(a, 1, out=a)
            return (_now() - t0) / n
        return rep

    # ---- eager t.add_(1)
    t = None
    if tensor_reason is None:
        try:
            t = mg.zeros(1)
            t.add_(1)
            mg.synchronize()
        except Exception as e:  # noqa: BLE001
            tensor_reason = f"mtia_graph.zeros(1).add_(1) failed: {e}"

    def eager_rep(n: int) -> Callable[[], float]:
        def rep() -> float:
            x = t
            t0 = _now()
            for _ in range(n):
                x.add_(1)
            mg.synchronize()
            return (_now() - t0) / n
        return rep

    eager_per_op = None
    if _want("py_add_inplace", filters):
        if tensor_reason:
            yield make_row("py_add_inplace", None, "ns/op", skipped=tensor_reason)
        else:
            v, b, lo, hi = _measure(eager_rep(n_eager), numpy_rep(n_eager), reps)
            eager_per_op = v
            yield make_row("py_add_inplace", v, "ns/op", baseline=b, baseline_name=numpy_name,
                           target=700.0, reps=reps, vmin=lo, vmax=hi,
                           params={"ops_per_rep": n_eager},
                           note="t.add_(1) on a one-element tensor, per op, including a final "
                                "synchronize")

    # ---- capture of 1000 t.add_(1), replay
    def capture(n: int) -> Any:
        g = mg.MTIAGraph()
        with mg.graph(g):
            x = t
            for _ in range(n):
                x.add_(1)
        return g

    graph = None
    graph_reason = tensor_reason
    if graph_reason is None and any(_want(n, filters) for n in PY_ROW_NAMES[1:4]):
        try:
            graph = capture(graph_nodes)
            graph.replay()
            mg.synchronize()
        except Exception as e:  # noqa: BLE001
            graph_reason = f"capturing/replaying {graph_nodes} t.add_(1) failed: {e}"

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
    replay_per_node = None
    if _want("py_replay_1000", filters) or _want("py_replay_speedup_vs_eager", filters):
        if graph_reason:
            for name in ("py_replay_1000", "py_replay_speedup_vs_eager"):
                if _want(name, filters):
                    yield make_row(name, None, "ns/node" if name.endswith("1000") else "x",
                                   skipped=graph_reason)
        else:
            # figure: replay + wait per node; baseline: numpy per op. The eager run of the
            # same 1000 ops (with its final synchronize) is measured alongside for the
            # speedup row.
            eager_1000: List[float] = []
            numpy_1000 = numpy_rep(graph_nodes)
            eager_k = eager_rep(graph_nodes)

            def base() -> float:
                eager_1000.append(eager_k())
                return numpy_1000()

            v, b, lo, hi = _measure(replay_rep(graph, graph_nodes, launches), base, reps)
            replay_per_node = v
            if _want("py_replay_1000", filters):
                yield make_row("py_replay_1000", v, "ns/node", baseline=b,
                               baseline_name=numpy_name, target=15.0, reps=reps, vmin=lo,
                               vmax=hi,
                               params={"nodes": graph_nodes, "replays_per_rep": launches},
                               note="g.replay() + synchronize() of 1000 captured t.add_(1), "
                                    "per node")
            if _want("py_replay_speedup_vs_eager", filters):
                eager_med = statistics.median(eager_1000[1:] or eager_1000)
                speedup = eager_med / v if v else None
                yield make_row("py_replay_speedup_vs_eager", speedup, "x", baseline=1.0,
                               baseline_name="eager: the same 1000 t.add_(1) + synchronize()",
                               better="higher", target=40.0, reps=reps,
                               params={"eager_ns_per_op": eager_med, "replay_ns_per_node": v,
                                       "nodes": graph_nodes},
                               note="eager time / replay time for the same 1000 ops")

    if _want("py_capture_instantiate", filters):
        if graph_reason:
            yield make_row("py_capture_instantiate", None, "ns/node", skipped=graph_reason)
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

            eager = eager_rep(graph_nodes)
            v, b, lo, hi = _measure(capture_rep, eager, reps)
            yield make_row("py_capture_instantiate", v, "ns/node", baseline=b,
                           baseline_name="eager t.add_(1) per op (1000 ops + synchronize)",
                           reps=reps, vmin=lo, vmax=hi,
                           params={"nodes": graph_nodes, "captures_per_rep": rounds},
                           note="MTIAGraph() + `with graph(g)` around 1000 t.add_(1) "
                                "(instantiated at capture_end); per node. The C row "
                                "capture_instantiate carries the <= 100 ns/node goal")

    if plot_data is not None and graph_reason is None and tensor_reason is None:
        sizes = [10, 100, 1000] if quick else [10, 100, 1000, 10000]
        eager_pts, replay_pts = [], []
        for n in sizes:
            g = capture(n)
            replay_pts.append(_measure(replay_rep(g, n, max(2, 20000 // n)), None, reps)[0])
            eager_pts.append(_measure(eager_rep(n), None, reps)[0])
            g.reset()
        plot_data.update(sizes=sizes, eager=eager_pts, replay=replay_pts)

    if graph is not None:
        graph.reset()

    # ---- matmul through the C kernel library, numpy as baseline
    for size in (512, 1024):
        name = f"py_matmul_{size}"
        if not _want(name, filters):
            continue
        try:
            row = _matmul_row(name, size, quick, reps)
        except Exception as e:  # noqa: BLE001
            row = make_row(name, None, "GFLOP/s", better="higher", skipped=f"{e}")
        yield row


def _matmul_row(name: str, n: int, quick: bool, reps: int) -> Dict[str, Any]:
    import numpy as np

    from mtia_graph._C import ffi, lib  # the cffi binding

    if not hasattr(lib, "mtiart_op_matmul"):
        return make_row(name, None, "GFLOP/s", better="higher",
                        skipped="mtiart_op_matmul is not in the binding")
    rng = np.random.default_rng(0)
    ha = rng.standard_normal((n, n), dtype=np.float32)
    hb = rng.standard_normal((n, n), dtype=np.float32)
    hc = np.empty((n, n), dtype=np.float32)
    nbytes = ha.nbytes

    def check(st: int, what: str) -> None:
        if st != 0:
            msg = ffi.string(lib.mtiart_last_error_message()).decode(errors="replace")
            raise RuntimeError(f"{what} failed ({st}): {msg}")

    stream = ffi.new("mtiart_stream *")
    check(lib.mtiart_stream_get_default(0, stream), "mtiart_stream_get_default")
    s = stream[0]
    ptrs = []
    for _ in range(3):
        p = ffi.new("void **")
        check(lib.mtiart_malloc(0, nbytes, p), "mtiart_malloc")
        ptrs.append(p[0])
    da, db, dc = ptrs
    try:
        check(lib.mtiart_memcpy(s, da, ffi.from_buffer(ha), nbytes,
                                lib.MTIART_MEMCPY_HOST_TO_DEVICE), "mtiart_memcpy")
        check(lib.mtiart_memcpy(s, db, ffi.from_buffer(hb), nbytes,
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
        times = 1 if quick or n >= 1024 else 3
        flops = 2.0 * n * n * n

        # numpy's OpenBLAS threads keep spinning for tens of ms after a call, and the
        # runtime's workers for a few us: let the other side settle (untimed) before each
        # rep, or the interleaving would make each side pay for the other's spinning.
        settle = 0.12

        def mt_rep() -> float:
            time.sleep(settle)
            t0 = _now()
            for _ in range(times):
                check(lib.mtiart_op_matmul(s, out_d, a_d, b_d), "mtiart_op_matmul")
            check(lib.mtiart_stream_synchronize(s), "mtiart_stream_synchronize")
            return flops * times / (_now() - t0)  # flop per ns = GFLOP/s

        def np_rep() -> float:
            time.sleep(settle)
            t0 = _now()
            for _ in range(times):
                np.matmul(ha, hb, out=hc)
            return flops * times / (_now() - t0)

        v, b, lo, hi = _measure(mt_rep, np_rep, reps)
        check(lib.mtiart_memcpy(s, ffi.from_buffer(hc), dc, nbytes,
                                lib.MTIART_MEMCPY_DEVICE_TO_HOST), "mtiart_memcpy")
        ref = ha @ hb
        err = float(np.max(np.abs(hc - ref)) / max(1e-30, float(np.max(np.abs(ref)))))
    finally:
        for p in ptrs:
            lib.mtiart_free(p)
        lib.mtiart_stream_synchronize(s)
    return make_row(name, v, "GFLOP/s", baseline=b, better="higher", ratio_target=0.5,
                    baseline_name="numpy.matmul (its BLAS, its threads) in the same process",
                    reps=reps, vmin=lo, vmax=hi,
                    params={"n": n, "dtype": "float32", "matmuls_per_rep": times,
                            "max_rel_error_vs_numpy": err},
                    note="mtiart_op_matmul on the default stream + synchronize")


# --------------------------------------------------------------------------- output


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.3g}"


def format_table(rows: Iterable[Dict[str, Any]]) -> str:
    rows = [r for r in rows if r.get("kind") == "result"]
    head = (f"{'suite':<6} {'benchmark':<28} {'median':>10} {'unit':<8} {'baseline':>10} "
            f"{'ratio':>8} {'target':<16} result")
    lines = [head, "-" * len(head)]
    baselines: List[str] = []
    for r in rows:
        bn = r.get("baseline_name")
        if bn and bn not in baselines:
            baselines.append(bn)
        if r.get("skipped"):
            lines.append(f"{r['suite']:<6} {r['name']:<28} {'-':>10} {r['unit']:<8} {'-':>10} "
                         f"{'-':>8} {'-':<16} skipped: {r['skipped']}")
            continue
        op = ">=" if r.get("better") == "higher" else "<="
        tparts = []
        if r.get("target") is not None:
            tparts.append(f"{op}{_fmt(r['target'])}")
        if r.get("ratio_target") is not None:
            tparts.append(f"{op}{_fmt(r['ratio_target'])}x base")
        result = {True: "PASS", False: "MISS", None: ""}[r.get("pass")]
        lines.append(f"{r['suite']:<6} {r['name']:<28} {_fmt(r['value']):>10} {r['unit']:<8} "
                     f"{_fmt(r['baseline']):>10} {_fmt(r['ratio']):>8} "
                     f"{' '.join(tparts) or '-':<16} {result}")
    lines.append("")
    lines.append("median of the reps; ratio = median / baseline, both measured in the same "
                 "process, interleaved. Baselines:")
    lines += [f"  - {b}" for b in baselines]
    return "\n".join(lines)


def _plot(path: str, data: Dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("mtia_graph.bench: --plot needs matplotlib (pip install matplotlib); skipped",
              file=sys.stderr)
        return
    if not data:
        print("mtia_graph.bench: no data to plot (the graph benchmarks were skipped)",
              file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(data["sizes"], data["eager"], "o-", label="eager t.add_(1) + synchronize")
    ax.loglog(data["sizes"], data["replay"], "s-", label="graph replay + synchronize")
    ax.set_xlabel("ops per graph / per synchronize")
    ax.set_ylabel("ns per op (node)")
    ax.set_title("mtia_graph: eager vs replay")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"mtia_graph.bench: wrote {path}", file=sys.stderr)


def _meta() -> Dict[str, Any]:
    meta: Dict[str, Any] = {"kind": "meta", "suite": "python",
                            "python": platform.python_version(),
                            "machine": platform.machine(), "ncpu": os.cpu_count(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        import numpy as np

        meta["numpy"] = np.__version__
    except ImportError:
        pass
    try:
        from mtia_graph._C import ffi, lib

        meta["libmtiart"] = ffi.string(lib.mtiart_version_string()).decode()
        props = ffi.new("mtiart_device_properties *")
        if lib.mtiart_device_get_properties(0, props) == 0:
            meta["workers"] = props.num_workers
    except Exception:  # noqa: BLE001
        pass
    return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mtia_graph.bench",
        description="Run the mtia_graph (Python) and libmtiart (C) benchmarks; print JSON lines "
                    "and a table. Figures are medians with a same-process baseline.")
    ap.add_argument("--quick", action="store_true",
                    help="one short pass (CI: proves every benchmark runs; rough figures)")
    ap.add_argument("--json", action="store_true", help="JSON lines only, no table")
    ap.add_argument("--c-bench", metavar="PATH",
                    help=f"the C benchmark program (default: ${C_BENCH_ENV}, then "
                         f"{', '.join(C_BENCH_CANDIDATES)} under the current directory)")
    ap.add_argument("--no-c", action="store_true", help="skip the C benchmarks")
    ap.add_argument("--no-python", action="store_true", help="skip the Python benchmarks")
    ap.add_argument("--filter", action="append", default=[], metavar="SUBSTRING",
                    help="run only rows whose name contains SUBSTRING (repeatable)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per row")
    ap.add_argument("--output", metavar="FILE", help="also write the JSON lines to FILE")
    ap.add_argument("--plot", metavar="PNG",
                    help="plot ns/node against graph size for eager and replay (matplotlib)")
    args = ap.parse_args(argv)

    out_file = open(args.output, "w", encoding="utf-8") if args.output else None
    rows: List[Dict[str, Any]] = []
    failed = False

    def emit(obj: Dict[str, Any]) -> None:
        line = json.dumps(obj)
        print(line, flush=True)
        if out_file:
            out_file.write(line + "\n")
        if obj.get("kind") == "result":
            rows.append(obj)

    try:
        # The C benchmark first, in its own process, before this process starts the
        # runtime's workers (they would compete for the cores).
        if not args.no_c:
            path = find_c_bench(args.c_bench)
            if path is None:
                print("mtia_graph.bench: no C benchmark program found (build it with "
                      "tools/bench.sh or pass --c-bench PATH); C rows skipped",
                      file=sys.stderr)
            else:
                try:
                    for obj in run_c_bench(path, args.quick, args.filter, args.reps):
                        emit(obj)
                except RuntimeError as e:
                    print(f"mtia_graph.bench: {e}", file=sys.stderr)
                    failed = True
        if not args.no_python:
            emit(_meta())
            plot_data: Optional[Dict[str, Any]] = None
            if args.plot:
                try:
                    import matplotlib  # noqa: F401
                    plot_data = {}
                except ImportError:
                    print("mtia_graph.bench: --plot needs matplotlib (pip install "
                          "matplotlib); no plot", file=sys.stderr)
            for row in python_benchmarks(args.quick, args.reps, args.filter, plot_data):
                emit(row)
            if plot_data is not None:
                _plot(args.plot, plot_data)
    finally:
        if out_file:
            out_file.close()
    if not args.json:
        print()
        print(format_table(rows))
    return 1 if failed else 0

