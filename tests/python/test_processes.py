"""Processes: a child of os.fork() made after the runtime was initialised gets an MTIAError
from every call (never a hang), saying the runtime was initialised before the fork; a child
forked before initialisation, and multiprocessing's spawn and forkserver workers, use the
runtime normally; the parent keeps working. Each scenario runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork semantics of Linux")

FORK_AFTER_INIT = """
import os, sys, time
import numpy as np
import mtia_graph as mg

x = mg.arange(8, dtype=mg.float32)
g = mg.MTIAGraph()
with mg.graph(g):
    y = x * 2
s = mg.Stream()
mg.synchronize()

pid = os.fork()
if pid == 0:
    failures = []
    def refused(what, fn):
        try:
            fn()
        except mg.MTIAError as exc:
            if "before it forked this process" not in str(exc):
                failures.append(f"{what}: {exc}")
        else:
            failures.append(f"{what}: no error")
    refused("synchronize", mg.synchronize)
    refused("Stream.synchronize", s.synchronize)
    refused("Stream()", mg.Stream)
    refused("Event.record", lambda: mg.Event().record(s))
    refused("add_", lambda: x.add_(1))
    refused("numpy", x.numpy)
    refused("tensor", lambda: mg.tensor([1.0]))
    refused("replay", g.replay)
    refused("init", mg.init)
    refused("memory_stats", mg.memory_stats)
    if mg.is_initialized():
        failures.append("is_initialized() in the child")
    # Dropping objects calls the runtime too (destroy, free): quietly refused.
    del x, y, g, s
    import gc; gc.collect()
    print("\\n".join(failures), file=sys.stderr)
    sys.exit(1 if failures else 0)  # a normal exit: the runtime's exit handler runs

start = time.monotonic()
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() - start > 60:
        os.kill(pid, 9)
        sys.exit("child hung")
    time.sleep(0.01)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
assert time.monotonic() - start < 20
# the parent is unaffected
g.replay()
np.testing.assert_array_equal(y.numpy(), np.arange(8) * 2)
x.add_(1)
g.replay()
assert y.tolist() == [2.0 * (i + 1) for i in range(8)]
print("ok")
"""

FORK_BEFORE_INIT = """
import os, sys
import mtia_graph as mg

assert not mg.is_initialized()  # importing does not initialise the runtime
pid = os.fork()
if pid == 0:
    t = mg.ones(4)
    g = mg.MTIAGraph()
    with mg.graph(g):
        u = t + 1
    g.replay()
    os._exit(0 if u.tolist() == [2.0] * 4 else 1)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
assert (mg.ones(2) * 3).tolist() == [3.0, 3.0]
print("ok")
"""

# A module the pool's workers import by name (spawn and forkserver pickle the function).
WORKER = """
import mtia_graph as mg

def capture_and_replay(n):
    x = mg.zeros(n)
    g = mg.MTIAGraph()
    with mg.graph(g):
        x.add_(1)
    for _ in range(3):
        g.replay()
    return x.tolist(), mg.is_initialized()
"""

POOL = """
import multiprocessing as mp, sys
import mtia_graph as mg
import mp_worker

if __name__ == "__main__":
    method = sys.argv[1]
    assert (mg.ones(2) + 1).tolist() == [2.0, 2.0]  # the parent's runtime is initialised
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        results = pool.map_async(mp_worker.capture_and_replay, [3, 4]).get(timeout=60)
        assert results == [([3.0] * 3, True), ([3.0] * 4, True)], results
    assert (mg.ones(2) * 2).tolist() == [2.0, 2.0]
    print("ok")
"""

POOL_FORK = """
import multiprocessing as mp, sys
import mtia_graph as mg
import mp_worker

if __name__ == "__main__":
    mg.init()
    with mp.get_context("fork").Pool(1) as pool:
        try:
            pool.apply_async(mp_worker.capture_and_replay, (3,)).get(timeout=60)
        except mg.MTIAError as exc:
            assert "before it forked this process" in str(exc), exc
            assert "spawn or forkserver" in str(exc), exc
        else:
            sys.exit("the fork worker used the parent's runtime")
    assert (mg.ones(2) * 2).tolist() == [2.0, 2.0]
    print("ok")
"""


def run(subprocess_python, code, *args, cwd=None, timeout=180):
    """Run ``code`` in a fresh interpreter (as a script in ``cwd`` when given, which
    multiprocessing's spawn needs to re-import it); it must print "ok" last."""
    if cwd is None:
        result = subprocess_python(code, timeout=timeout)
    else:
        script = cwd / "main.py"
        script.write_text(textwrap.dedent(code))
        result = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=str(cwd),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        result.stdout + result.stderr
    )


def test_fork_after_initialisation_refuses_every_call(subprocess_python):
    run(subprocess_python, FORK_AFTER_INIT)


def test_fork_before_initialisation_works(subprocess_python):
    run(subprocess_python, FORK_BEFORE_INIT)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_spawn_and_forkserver_workers_use_the_runtime(
    subprocess_python, tmp_path, method
):
    (tmp_path / "mp_worker.py").write_text(textwrap.dedent(WORKER))
    run(subprocess_python, POOL, method, cwd=tmp_path)


def test_multiprocessing_fork_worker_gets_a_clear_error(subprocess_python, tmp_path):
    (tmp_path / "mp_worker.py").write_text(textwrap.dedent(WORKER))
    run(subprocess_python, POOL_FORK, cwd=tmp_path)
