"""mtia_graph.debug.bisect: the first node whose replay differs from the eager run."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import textwrap
import warnings

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph._C import lib
from mtia_graph.debug import NodeDivergence, bisect

C_SOURCE = textwrap.dedent("""
    #include <stdint.h>

    /* out[i] = x[i] * a over n floats: `a` is a VALUE argument, fixed at capture. */
    int32_t scale(void *const *args, uint32_t block, uint32_t num_blocks) {
        const float *x = *(float *const *)args[0];
        float *out = *(float *const *)args[1];
        double a = *(const double *)args[2];
        int64_t n = *(const int64_t *)args[3];
        for (int64_t i = 0; i < n; i++) out[i] = (float)(a * x[i]);
        (void)block; (void)num_blocks;
        return 0;
    }
""")


@pytest.fixture(scope="module")
def scale_kernel(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the test kernel")
    d = tmp_path_factory.mktemp("bisect_kernels")
    src = d / "scale.c"
    src.write_text(C_SOURCE)
    so = d / "libscale.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src)], check=True)
    return mtia.load_kernel(so, "scale")


def host(values, dtype=np.float32):
    return mtia.tensor(np.asarray(values, dtype=dtype))


def test_python_kernel_reading_a_capture_time_value_is_found():
    calls = {"n": 0}

    @mtia.kernel(access=("w", "r"))
    def scale(out, x, factor):
        out[...] = x * factor

    def step(x):
        calls["n"] += 1  # a step counter the graph froze at capture
        y = x * 2.0
        z = mtia.empty_like(y)
        scale(z, y, float(calls["n"]))
        return (z + 1.0).sum()

    x = host(np.arange(8))
    found = bisect(step, [x])
    assert isinstance(found, NodeDivergence)
    assert found.node == 1
    assert found.op == "mtia_graph.python"
    assert found.input_shapes == ("float32[8]",)
    assert found.buffer == 0
    assert found.index == (1,)
    assert (found.got, found.expected) == (2.0, 4.0)  # 2 * 1 * 1 replayed, 2 * 1 * 2 eagerly
    assert found.max_abs_diff == 14.0
    assert "node 1 (mtia_graph.python, inputs float32[8])" in str(found)
    assert calls["n"] == 2  # fn ran twice: captured and eagerly


def test_c_kernel_with_a_frozen_value_argument_is_found(scale_kernel):
    lr = {"value": 0.5}

    def step(x, w):
        g = x.exp()
        update = mtia.empty_like(w)
        scale_kernel(g, update, lr["value"], 4, access=("r", "w"))
        lr["value"] *= 0.5  # a decaying learning rate the graph froze at capture
        w.sub_(update)

    x, w = host([0.0, 1.0, 2.0, 3.0]), host([1.0, 1.0, 1.0, 1.0])
    found = bisect(step, [x, w])
    assert found is not None
    assert (found.node, found.op) == (1, "scale")
    assert found.input_shapes == ("float32[4]",)
    np.testing.assert_allclose(found.max_abs_diff, 0.25 * np.exp(3.0), rtol=1e-6)
    assert found.expected == pytest.approx(0.25) and found.got == pytest.approx(0.5)


def test_a_wrong_builtin_input_is_reported_at_the_first_node_that_reads_it():
    # The graph reads a host buffer the capture froze (a captured upload reads the array
    # at replay): the replay sees the array's later contents, the eager run the new one.
    source = np.ones(4, dtype=np.float32)
    versions = iter([np.ones(4, dtype=np.float32), np.full(4, 3.0, dtype=np.float32)])

    def step(w):
        nonlocal source
        source = next(versions)
        return w * mtia.tensor(source)

    found = bisect(step, [host([1.0, 2.0, 3.0, 4.0])])
    assert found is not None
    assert found.node == 0 and found.op == "memcpy HtoD"
    assert (found.expected, found.got) == (3.0, 1.0)
    assert found.input_shapes == ()


def test_correct_functions_report_no_divergence(scale_kernel):
    @mtia.kernel(access=("r", "w"))
    def square(x, out):
        out[...] = x * x

    def step(x, w, acc):
        h = (x @ w).relu()
        p = h.softmax(-1)
        s = mtia.empty_like(p)
        square(p, s)
        t = mtia.empty_like(s)
        scale_kernel(s, t, 2.0, 6, access=("r", "w"))
        acc.add_(t.sum(0))  # in place on an input: every prefix starts from the same acc
        return mtia.where(p > 0.2, p, mtia.zeros(2, 3)).mean()

    x = host(np.linspace(-1, 1, 8).reshape(2, 4))
    w = host(np.linspace(0, 1, 12).reshape(4, 3))
    acc = host(np.zeros(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bisect(step, [x, w, acc]) is None


def test_several_streams_joined_correctly_report_no_divergence():
    def step(x):
        side = mtia.Stream()
        side.wait_stream(mtia.current_stream())
        with mtia.stream(side):
            a = x.exp()
        b = x * 3.0
        mtia.current_stream().wait_stream(side)
        return a + b

    assert bisect(step, [host(np.arange(6))]) is None


def test_host_functions_are_named_as_not_compared():
    seen = []

    def step(x):
        y = x + 1.0
        mtia.launch_host_func(lambda: seen.append(1))
        return y * 2.0

    with pytest.warns(UserWarning, match=r"1 nodes .* not compared: node 1 \(host function\)"):
        assert bisect(step, [host([1.0, 2.0])]) is None


def test_not_compared_nodes_are_listed_with_the_divergence():
    calls = {"n": 0}

    def step(x):
        mtia.launch_host_func(lambda: None)
        calls["n"] += 1
        return x * float(calls["n"])

    with pytest.warns(UserWarning, match="host function"):
        found = bisect(step, [host([1.0, 2.0])])
    assert found is not None and found.node == 1
    assert found.not_compared == ("node 0 (host function)",)


def test_different_operation_sequences_are_an_error():
    calls = {"n": 0}

    def step(x):
        calls["n"] += 1
        return x.exp() if calls["n"] == 1 else x.sum()

    with pytest.raises(RuntimeError, match="different operations: node 0"):
        bisect(step, [host([1.0, 2.0])])


def test_tolerance():
    calls = {"n": 0}

    def step(x):
        calls["n"] += 1
        return x + 1e-3 * calls["n"]

    assert bisect(step, [host([1.0, 2.0])], atol=1e-2) is None
    found = bisect(step, [host([1.0, 2.0])])
    assert found is not None and found.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_a_failing_function_leaves_the_package_as_it_was():
    calls = {"n": 0}

    def step(x):
        calls["n"] += 1
        y = x * 2.0
        if calls["n"] == 2:  # the eager run
            x + mtia.zeros(3)  # shapes (2,) and (3,) do not broadcast
        return y

    with pytest.raises(ValueError):
        bisect(step, [host([1.0, 2.0])])
    assert importlib.import_module("mtia_graph.tensor")._op_binary is lib.mtiart_op_binary
    assert mtia.factories.lib is lib and mtia.kernels.lib is lib
    np.testing.assert_array_equal((host([1.0]) + 1.0).numpy(), [2.0])


def test_a_refused_operation_keeps_its_own_error_in_the_eager_run():
    # Traced calls run inside a capture of their own; a call the runtime refuses must
    # fail as it does eagerly, with its own message, and leave the stream usable.
    from mtia_graph._C import ffi, last_error_message
    from mtia_graph.debug import _EagerTrace
    from mtia_graph.streams import _stream_handle

    stream = _stream_handle(0)
    with _EagerTrace() as trace:
        status = mtia.kernels.lib.mtiart_memset_async(stream, ffi.NULL, 0, 8)
        message = last_error_message()
    assert status == lib.MTIART_ERROR_INVALID_VALUE
    assert message.startswith("mtiart_memset_async") and "capture" not in message
    assert trace.ops == []
    np.testing.assert_array_equal((host([1.0]) * 3.0).numpy(), [3.0])
