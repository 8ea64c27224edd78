"""A thread that waits for a stream (synchronize, numpy(), a blocking copy) may run blocks of
the runtime's own multi-block kernels queued there: results stay those of the workers, from
any number of waiting threads, eager or replayed. (That a program's kernels never run on the
waiting thread is tested in C, tests/c/test_host_help.c, where kernels have several blocks.)"""

from __future__ import annotations

import threading

import numpy as np

import mtia_graph as mtia


def _integer_valued(shape: tuple[int, ...], seed: int) -> np.ndarray:
    # small integers: every summation order gives the same float32 bits
    rng = np.random.default_rng(seed)
    return rng.integers(-2, 3, size=shape).astype(np.float32)


def test_matmul_results_from_many_waiting_threads() -> None:
    failures: list[str] = []

    def run(seed: int) -> None:
        a_np, b_np = _integer_valued((64, 256), seed), _integer_valued((256, 512), seed + 100)
        want = a_np @ b_np
        s = mtia.Stream()
        with mtia.stream(s):
            a, b = mtia.from_numpy(a_np), mtia.from_numpy(b_np)
            for i in range(60):
                got = (a @ b).relu() if i % 2 else a @ b
                expect = np.maximum(want, 0) if i % 2 else want
                if i % 3 == 0:
                    s.synchronize()
                if not np.array_equal(got.numpy(), expect):
                    failures.append(f"thread {seed} iteration {i}")

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_replayed_matmul_read_back_every_step_matches_numpy() -> None:
    a_np, b_np = _integer_valued((32, 256), 7), _integer_valued((256, 512), 8)
    static_a = mtia.zeros((32, 256))
    b = mtia.from_numpy(b_np)
    g = mtia.MTIAGraph()
    with mtia.graph(g):
        out = (static_a @ b).relu()
    for step in range(50):
        x = np.roll(a_np, step, axis=0)
        static_a.copy_(x)
        g.replay()
        assert np.array_equal(out.numpy(), np.maximum(x @ b_np, 0)), step
