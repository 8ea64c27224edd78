"""`python -m mtia_graph.bench` runs and speaks its JSON-lines format.

A smoke test of the benchmark harness, never a timed test: nothing here looks at a
figure, only at the shape of the output.
"""

import json
import os
import subprocess
import sys

import pytest

ROW_KEYS = {
    "kind", "suite", "name", "value", "unit", "baseline", "baseline_unit", "baseline_name",
    "ratio", "better", "target", "ratio_target", "pass", "reps", "min", "max", "params",
    "note", "skipped",
}
PY_ROWS = {"py_add_inplace", "py_replay_1000", "py_capture_instantiate",
           "py_replay_speedup_vs_eager", "py_matmul_512", "py_matmul_1024"}

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, cwd):
    env = dict(os.environ)
    env.pop("MTIA_GRAPH_BENCH_C", None)
    proc = subprocess.run([sys.executable, "-m", "mtia_graph.bench", "--quick", "--json", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    objs = [json.loads(line) for line in lines]  # every line is JSON
    return objs


def _check_rows(objs, suite):
    results = [o for o in objs if o["kind"] == "result" and o["suite"] == suite]
    assert results, f"no {suite} rows"
    assert any(o["kind"] == "meta" and o["suite"] == suite for o in objs)
    for row in results:
        assert set(row) == ROW_KEYS, row
        assert isinstance(row["name"], str) and row["name"]
        assert isinstance(row["unit"], str)
        assert row["better"] in ("lower", "higher")
        assert row["pass"] in (True, False, None)
        assert isinstance(row["params"], dict)
        if row["skipped"] is None:
            assert isinstance(row["value"], (int, float)), row
            assert isinstance(row["reps"], int) and row["reps"] >= 1
            if row["baseline"] is not None and row["baseline"] > 0:
                assert row["ratio"] is not None
            if row["target"] is not None or row["ratio_target"] is not None:
                assert row["pass"] in (True, False)
        else:
            assert isinstance(row["skipped"], str)
    return results


def test_python_benchmarks_json_lines(tmp_path):
    objs = _run(["--no-c"], cwd=str(tmp_path))
    rows = _check_rows(objs, "python")
    assert {r["name"] for r in rows} == PY_ROWS
    # the package is installed with a Tensor and graphs: nothing may be skipped, except
    # matmul when the kernel library is not there
    for r in rows:
        if not r["name"].startswith("py_matmul"):
            assert r["skipped"] is None, r


def test_table_output(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mtia_graph.bench", "--quick", "--no-c",
                           "--filter", "py_add_inplace"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "py_add_inplace" in proc.stdout and "baseline" in proc.stdout


def _c_bench():
    env = os.environ.get("MTIA_GRAPH_BENCH_C")
    if env and os.path.isfile(env) and os.access(env, os.X_OK):
        return env
    for d in ("build-bench", "build-tests", "build"):
        path = os.path.join(REPO, d, "benchmarks", "bench_runtime")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.mark.skipif(_c_bench() is None, reason="no built benchmarks/bench_runtime")
def test_c_benchmarks_json_lines(tmp_path):
    objs = _run(["--no-python", "--c-bench", _c_bench()], cwd=str(tmp_path))
    rows = _check_rows(objs, "c")
    names = {r["name"] for r in rows}
    for expected in ("eager_enqueue", "graph_launch_1node", "replay_chain_1000",
                     "replay_independent_1000", "capture_instantiate", "alloc_free_pair",
                     "elementwise_add_f32", "scaling_workers_1"):
        assert expected in names
