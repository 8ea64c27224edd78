"""`python -m mtia_graph.bench` and the C benchmark programs speak their JSON-lines format.

Smoke tests of the benchmark harness, never timed tests: nothing here looks at a figure,
only at the shape of the output: every row kind (measured, skipped, against a peer, the
scaling table), the table, and the README block generated from one run.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mtia_graph import bench

ROW_KEYS = set(bench.ROW_KEYS)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

C_ROWS = {
    "eager_enqueue",
    "eager_op_incl_sync",
    "op_add_scalar_enqueue",
    "launch_wait_roundtrip",
    "graph_launch_1node",
    "capture_instantiate",
    "capture_buffer",
    "launch_input_check",
    "replay_nested_chain_1000_b2b",
    "exec_update",
    "load_instantiate",
    "alloc_free_pair",
    "elementwise_add_f32_vs_memcpy_1t",
    "elementwise_add_f32_vs_memcpy_mt",
    "cpu_wait_host_thread",
    "cpu_wait_workers",
    "cpu_idle_process",
    "memcheck_blocks_sync",
    "scaling_workers_1",
    "scaling_fanout_1",
    "scaling_eager_blocks_1",
} | {
    f"replay_{shape}_{n}_{mode}"
    for shape in ("chain", "independent")
    for n in (10, 100, 1000, 10000)
    for mode in ("wait", "b2b")
}
PEER_ROWS = {
    f"peer_tbb_{shape}_{n}_{mode}"
    for shape, sizes in (
        ("chain", (10, 1000)),
        ("fanout", (1000, 10000)),
        ("independent", (1000, 10000)),
    )
    for n in sizes
    for mode in ("wait", "b2b")
} | {"peer_tbb_one_task_roundtrip", "peer_tbb_build_capture_1000", "peer_tbb_build_explicit_1000"}
TORCH_ROWS = {"py_add_inplace_torch", "py_mlp_torch_eager", "py_mlp_replay_copy_io_vs_torch"}


def _torch_importable():
    proc = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return proc.returncode == 0


def _run(args, cwd, prelude="", extra_env=None):
    """Run the bench module (after `prelude`, Python run first in the child); the JSON
    objects it printed."""
    env = dict(os.environ, **(extra_env or {}))
    env.pop("MTIA_GRAPH_BENCH_C", None)
    code = f"import sys\n{prelude}\nfrom mtia_graph.bench import main\nsys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--quick", "--json", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _check_rows(objs, suite, with_meta=True):
    """Every row of `suite` has every key with the right types, and every measured row its
    baseline (or peer) and ratio."""
    results = [o for o in objs if o["kind"] == "result" and o["suite"] == suite]
    assert results, f"no {suite} rows"
    assert not with_meta or any(o["kind"] == "meta" and o["suite"] == suite for o in objs)
    for row in results:
        assert set(row) == ROW_KEYS, row
        assert isinstance(row["name"], str) and row["name"]
        assert isinstance(row["unit"], str) and row["unit"]
        assert row["better"] in ("lower", "higher")
        assert row["pass"] in (True, False, None)
        assert isinstance(row["params"], dict)
        if row["skipped"] is None:
            assert isinstance(row["value"], (int, float)), row
            assert isinstance(row["reps"], int) and row["reps"] >= 1
            assert isinstance(row["baseline"], (int, float)) and row["baseline"] > 0, row
            assert isinstance(row["baseline_name"], str) and row["baseline_name"], row
            assert row["ratio"] == pytest.approx(row["value"] / row["baseline"], rel=1e-3)
            assert row["min"] <= row["value"] <= row["max"], row
            if row["target"] is not None or row["ratio_target"] is not None:
                assert row["pass"] in (True, False)
            else:
                assert row["pass"] is None
        else:
            assert isinstance(row["skipped"], str) and row["skipped"]
            assert row["value"] is None and row["ratio"] is None and row["pass"] is None
    return {r["name"]: r for r in results}


def test_python_benchmarks_json_lines(tmp_path):
    objs = _run(["--no-c"], cwd=str(tmp_path))
    rows = _check_rows(objs, "python")
    assert set(rows) == set(bench.PY_ROW_NAMES)
    with_torch = _torch_importable()
    for name, r in rows.items():
        if name in TORCH_ROWS and not with_torch:
            assert "torch" in r["skipped"], r
        elif name == "memcheck_py_mlp_example":
            # run outside the repository: the example is not there
            assert "examples/mlp.py" in r["skipped"], r
        else:
            assert r["skipped"] is None, r
    meta = next(o for o in objs if o["kind"] == "meta" and o["suite"] == "python")
    for key in ("time", "ncpu", "cpu", "numpy"):
        assert key in meta
    mlp = rows["py_mlp_replay_copy_io"]
    assert mlp["params"]["max_abs_error_vs_numpy"] < 1e-5
    assert mlp["params"]["batch"] == 32 and mlp["params"]["hidden"] == 512


def test_python_rows_without_torch_are_skipped_with_a_note(tmp_path):
    # sys.modules["torch"] = None makes `import torch` fail, as on a machine without it
    objs = _run(
        ["--no-c", "--filter", "py_add_inplace", "--filter", "torch"],
        cwd=str(tmp_path),
        prelude="sys.modules['torch'] = None",
    )
    rows = _check_rows(objs, "python")
    assert set(rows) == {"py_add_inplace_np_out_a", "py_add_inplace_np_out_b"} | TORCH_ROWS
    for name in TORCH_ROWS:
        assert "torch" in rows[name]["skipped"] and "pip install" in rows[name]["skipped"]
    assert rows["py_add_inplace_np_out_b"]["skipped"] is None


def test_table_output(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtia_graph.bench",
            "--quick",
            "--no-c",
            "--filter",
            "py_add_inplace",
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout[proc.stdout.index("\nsuite ") :]
    for name in ("py_add_inplace_np_out_a", "py_add_inplace_np_out_b", "py_add_inplace_torch"):
        assert name in table
    assert "baseline" in table and "ratio" in table
    assert "np.add(a, 1, out=b)" in table


def _c_bench():
    env = os.environ.get("MTIA_GRAPH_BENCH_C")
    if env and os.path.isfile(env) and os.access(env, os.X_OK):
        return env
    for d in ("build-bench", "build-tests", "build"):
        path = os.path.join(REPO, d, "benchmarks", "bench_runtime")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


needs_c_bench = pytest.mark.skipif(_c_bench() is None, reason="no built benchmarks/bench_runtime")


@needs_c_bench
def test_c_and_peer_benchmarks_json_lines(tmp_path):
    objs = _run(["--no-python", "--c-bench", _c_bench()], cwd=str(tmp_path))
    rows = _check_rows(objs, "c")
    assert set(rows) >= C_ROWS, C_ROWS - set(rows)
    for r in rows.values():
        if r["name"] == "memcheck_blocks_sync" and shutil.which("valgrind") is None:
            assert "valgrind" in r["skipped"], r
        else:
            assert r["skipped"] is None, r
    ncpu = os.cpu_count()
    assert f"scaling_workers_{ncpu}" in rows
    assert rows[f"scaling_workers_{ncpu}"]["params"]["oversubscribed"] is False
    # the baseline of the kernel-library op is that op's own kernel, not the empty one
    assert "binary-scalar kernel" in rows["op_add_scalar_enqueue"]["baseline_name"]
    assert "memcpy_threads" in rows["elementwise_add_f32_vs_memcpy_mt"]["params"]

    peers = os.path.join(os.path.dirname(_c_bench()), "bench_peers")
    if not os.path.exists(peers):
        assert any(o["name"] == "peer_tbb" and o["skipped"] for o in objs if o["kind"] == "result")
        return
    peer_rows = _check_rows(objs, "peer")
    assert set(peer_rows) == PEER_ROWS
    skipped = {bool(r["skipped"]) for r in peer_rows.values()}
    assert len(skipped) == 1  # built with oneTBB (all measured) or without (all skipped)
    if skipped == {True}:
        assert all("oneTBB" in r["skipped"] for r in peer_rows.values())
    else:
        assert all("oneTBB" in r["baseline_name"] for r in peer_rows.values())


@needs_c_bench
def test_c_bench_alone_skips_what_it_cannot_measure(tmp_path):
    """Copied away from kernel_probe and bench_peers, the C rows that need them are
    skipped with the reason, and the missing peer program is one skipped row."""
    lonely = tmp_path / "bin" / "bench_runtime"
    lonely.parent.mkdir()
    shutil.copy2(_c_bench(), lonely)
    build = os.path.dirname(os.path.dirname(_c_bench()))  # its libmtiart, found by rpath
    objs = _run(
        ["--no-python", "--c-bench", str(lonely), "--filter", "op_add_scalar", "--filter", "peer"],
        cwd=str(tmp_path),
        extra_env={"LD_LIBRARY_PATH": build},
    )
    rows = _check_rows(objs, "c")
    assert "kernel_probe" in rows["op_add_scalar_enqueue"]["skipped"]
    peer = _check_rows(objs, "peer", with_meta=False)
    assert "bench_peers" in peer["peer_tbb"]["skipped"]


@needs_c_bench
@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_peer_program_without_tbb_prints_every_row_skipped(tmp_path):
    build = os.path.dirname(os.path.dirname(_c_bench()))
    lib = os.path.join(build, "libmtiart.so.0")
    exe = tmp_path / "bench_peers"
    subprocess.run(
        [
            "c++",
            "-std=c++17",
            "-x",
            "c++",
            os.path.join(REPO, "benchmarks", "bench_peers.cpp"),
            "-x",
            "c",
            os.path.join(REPO, "benchmarks", "harness.c"),
            "-I",
            os.path.join(REPO, "include"),
            "-x",
            "none",
            lib,
            f"-Wl,-rpath,{build}",
            "-lpthread",
            "-lm",
            "-o",
            str(exe),
        ],
        check=True,
        timeout=300,
    )
    proc = subprocess.run([str(exe), "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    rows = _check_rows(objs, "peer")
    assert set(rows) == PEER_ROWS
    for r in rows.values():
        assert "oneTBB was not found" in r["skipped"] and "libtbb-dev" in r["skipped"]


@needs_c_bench
def test_scaling_table(tmp_path):
    out = tmp_path / "scaling.jsonl"
    md = tmp_path / "scaling.md"
    objs = _run(
        [
            "--scaling",
            "--c-bench",
            _c_bench(),
            "--workers",
            "1,2,4",
            "--reps",
            "1",
            "--output",
            str(out),
            "--markdown",
            str(md),
        ],
        cwd=str(tmp_path),
    )
    c_rows = _check_rows(objs, "c")
    py_rows = _check_rows(objs, "python")
    for w in (1, 2, 4):
        for prefix in ("scaling_workers", "scaling_fanout", "scaling_eager_blocks"):
            assert f"{prefix}_{w}" in c_rows
        for kind in ("replay", "eager"):
            assert f"scaling_mlp_{kind}_{w}" in py_rows
    ncpu = os.cpu_count()
    for r in list(c_rows.values()) + list(py_rows.values()):
        over = r["params"]["workers"] > ncpu
        assert r["params"]["oversubscribed"] is over
        assert ("OVERSUBSCRIBED" in r["note"]) is over
    assert [json.loads(line) for line in out.read_text().splitlines()] == objs
    table = md.read_text()
    assert "| `scaling_workers`: " in table and "| `scaling_mlp_replay`: " in table
    assert "4 workers" in table
    assert (" *" in table) is (ncpu < 4)


def test_readme_block_is_regenerated_from_one_run(tmp_path):
    """--from-json renders the rows of a saved run into the README between the markers,
    leaving the rest of the README as it was."""
    run = [
        {"kind": "meta", "suite": "c", "ncpu": 2, "workers": 2, "quick": False},
        {
            "kind": "meta",
            "suite": "python",
            "cpu": "Test CPU",
            "ncpu": 2,
            "workers": 2,
            "time": "2026-01-02 03:04:05 +0000",
            "loadavg": [0.5, 0.25, 0.125],
            "commit": "abc1234",
            "quick": False,
            "numpy": "2.0",
        },
        bench.make_row(
            "replay_chain_1000_b2b",
            3.0,
            "ns/node",
            baseline=1.5,
            baseline_name="direct loop",
            ratio_target=2.0,
            suite="c",
        ),
        bench.make_row(
            "peer_tbb_chain_1000_wait",
            5.0,
            "ns/node",
            baseline=40.0,
            baseline_name="oneTBB flow graph",
            suite="peer",
        ),
        bench.make_row("py_add_inplace_torch", None, "ns/op", skipped="torch is not importable"),
    ]
    results = tmp_path / "run.jsonl"
    results.write_text("".join(json.dumps(o) + "\n" for o in run))
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# T\n\nbefore\n\n{bench.README_BEGIN}\nold table\n{bench.README_END}\n\nafter\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtia_graph.bench",
            "--from-json",
            str(results),
            "--readme",
            str(readme),
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # nothing was run
    text = readme.read_text()
    assert text.startswith("# T\n\nbefore\n\n" + bench.README_BEGIN + "\n")
    assert text.endswith(bench.README_END + "\n\nafter\n")
    assert "old table" not in text
    for needle in (
        "Test CPU",
        "2 CPUs",
        "2026-01-02",
        "load average 0.50 0.25 0.12",
        "commit abc1234",
        "`replay_chain_1000_b2b` | 3 ns/node | 1.5 ns/node (direct loop) | 2x | <= 2x | pass |",
        "`peer_tbb_chain_1000_wait`",
        "0.125x",
        "skipped: torch is not importable",
    ):
        assert needle in text, needle

    # without the markers nothing is rewritten and the command fails
    readme.write_text("# no markers\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtia_graph.bench",
            "--from-json",
            str(results),
            "--readme",
            str(readme),
        ],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "markers" in proc.stderr
    assert readme.read_text() == "# no markers\n"


def test_the_repository_readme_has_the_generated_blocks():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    for begin, end in (
        (bench.README_BEGIN, bench.README_END),
        (bench.SCALING_BEGIN, bench.SCALING_END),
    ):
        i, j = text.find(begin), text.find(end)
        assert 0 <= i < j, begin
        assert "Generated from one run:" in text[i:j]
