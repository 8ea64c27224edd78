"""User kernels: C kernels loaded with load_kernel, and @mtia_graph.kernel Python kernels.

The C kernels are compiled at test time with the system C compiler (skipped without one).
"""

import gc
import os
import shutil
import subprocess
import textwrap
import threading

import numpy as np
import pytest

import mtia_graph as mtia
from mtia_graph import KernelError, MTIAGraph, callbacks

C_SOURCE = textwrap.dedent(r"""
    #include <stdint.h>
    #include <string.h>

    /* y[i] += a * x[i], i over [0, n), split into num_blocks chunks. */
    int32_t axpy(void *const *args, uint32_t block, uint32_t num_blocks) {
        const float *x = *(float *const *)args[0];
        float *y = *(float *const *)args[1];
        double a = *(const double *)args[2];
        int64_t n = *(const int64_t *)args[3];
        int64_t chunk = (n + num_blocks - 1) / num_blocks;
        int64_t lo = chunk * block, hi = lo + chunk < n ? lo + chunk : n;
        for (int64_t i = lo; i < hi; i++) y[i] += (float)(a * x[i]);
        return 0;
    }

    /* Writes each typed VALUE argument into out (an int64[6]). */
    int32_t values(void *const *args, uint32_t block, uint32_t num_blocks) {
        int64_t *out = *(int64_t *const *)args[0];
        out[0] = *(const uint8_t *)args[1];          /* bool */
        out[1] = *(const int64_t *)args[2];          /* int */
        out[2] = (int64_t)*(const double *)args[3];  /* float */
        out[3] = *(const int32_t *)args[4];          /* np.int32 */
        out[4] = (int64_t)*(const float *)args[5];   /* np.float32 */
        char raw[3];
        memcpy(raw, args[6], 3);                     /* bytes */
        out[5] = raw[0] * 10000 + raw[1] * 100 + raw[2];
        (void)block; (void)num_blocks;
        return 0;
    }

    /* Whether its (possibly empty) buffer argument arrived as NULL. */
    int32_t is_null(void *const *args, uint32_t block, uint32_t num_blocks) {
        int64_t *out = *(int64_t *const *)args[1];
        out[0] = *(void *const *)args[0] == NULL;
        (void)block; (void)num_blocks;
        return 0;
    }

    int32_t fail(void *const *args, uint32_t block, uint32_t num_blocks) {
        (void)args; (void)block; (void)num_blocks;
        return 7;
    }
""")


@pytest.fixture(scope="module")
def kernel_lib(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the test kernels")
    d = tmp_path_factory.mktemp("kernels")
    src = d / "kernels.c"
    src.write_text(C_SOURCE)
    so = d / "libtestkernels.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src)], check=True)
    return so


def same(t, expected):
    mtia.synchronize(t.device.index)
    np.testing.assert_array_equal(t.numpy(), np.asarray(expected, dtype=t.numpy().dtype))


# ----------------------------------------------------------------------------- C kernels


def test_load_and_launch_c_kernel_with_blocks(kernel_lib):
    axpy = mtia.load_kernel(kernel_lib, "axpy")
    assert isinstance(axpy, mtia.Kernel) and axpy.name == "axpy"
    x = mtia.arange(100, dtype=mtia.float32)
    y = mtia.ones(100)
    axpy(x, y, 2.0, 100, blocks=7, access=("r", "rw"))
    same(y, 1 + 2 * np.arange(100, dtype=np.float32))


def test_c_kernel_is_ordered_with_other_stream_work(kernel_lib):
    axpy = mtia.load_kernel(kernel_lib, "axpy")
    s = mtia.Stream()
    with mtia.stream(s):
        x = mtia.full((1000,), 3.0)
        y = mtia.zeros(1000)
        axpy(x, y, 1.0, 1000, blocks=4)
        y.mul_(2)
        axpy(x, y, 1.0, 1000, blocks=4)
    s.synchronize()
    same(y, np.full(1000, 9.0))


def test_c_kernel_value_argument_types(kernel_lib):
    k = mtia.load_kernel(kernel_lib, "values")
    out = mtia.zeros(6, dtype=mtia.int64)
    k(out, True, -5, 7.9, np.int32(-3), np.float32(4.5), b"\x01\x02\x03")
    same(out, [1, -5, 7, -3, 4, 10203])


def test_c_kernel_value_arguments_are_taken_at_capture(kernel_lib):
    """VALUE arguments are copied at launch: they are not host memory a replay reads."""
    k = mtia.load_kernel(kernel_lib, "values")
    out = mtia.zeros(6, dtype=mtia.int64)
    raw = bytearray(b"\x01\x02\x03")
    scalar = np.array(4.5, dtype=np.float32)
    g = MTIAGraph()
    with mtia.graph(g):
        k(out, True, -5, 7.9, np.int32(-3), scalar[()], bytes(raw))
        k(out, True, -5, 7.9, np.int32(-3), scalar[()], raw)
    raw[:] = b"\x09\x09\x09"
    scalar[()] = 99
    g.replay()
    same(out, [1, -5, 7, -3, 4, 10203])


def test_c_kernel_empty_tensor_arrives_as_null(kernel_lib):
    k = mtia.load_kernel(kernel_lib, "is_null")
    out = mtia.zeros(1, dtype=mtia.int64)
    k(mtia.empty(0), out)
    same(out, [1])


def test_c_kernel_capture_and_replay(kernel_lib):
    axpy = mtia.load_kernel(kernel_lib, "axpy")
    x = mtia.arange(16, dtype=mtia.float32)
    y = mtia.zeros(16)
    g = MTIAGraph()
    with mtia.graph(g):
        axpy(x, y, 1.0, 16, blocks=3, access=["r", "rw"])
    same(y, np.zeros(16))  # capture does not run it
    for _ in range(5):
        g.replay()
    same(y, 5 * np.arange(16, dtype=np.float32))


def test_c_kernel_failure_is_a_sticky_kernel_error_and_stream_recovers(kernel_lib):
    fail = mtia.load_kernel(kernel_lib, "fail")
    fail()
    with pytest.raises(KernelError):
        mtia.synchronize()
    y = mtia.ones(3)
    y.add_(1)
    same(y, [2, 2, 2])


def test_load_kernel_errors(kernel_lib, tmp_path):
    # the documented MTIAValueError (a ValueError), with the loader's reason
    with pytest.raises(mtia.MTIAValueError, match="no_such_symbol"):
        mtia.load_kernel(kernel_lib, "no_such_symbol")
    with pytest.raises(mtia.MTIAValueError, match=r"missing\.so"):
        mtia.load_kernel(tmp_path / "missing.so", "axpy")
    # C would stop at an embedded NUL and load something else ("libc.so.6\0junk": libc)
    for path, name in (("libc.so.6\0junk", "malloc"), (str(kernel_lib), "axpy\0more")):
        with pytest.raises(mtia.MTIAValueError, match="NUL"):
            mtia.load_kernel(path, name)
    with pytest.raises(mtia.MTIAValueError, match="NUL"):
        mtia.load_kernel(os.fsencode(str(kernel_lib)) + b"\0x", "axpy")
    assert mtia.load_kernel(str(kernel_lib).encode(), "axpy").name == "axpy"


def test_c_kernel_argument_errors(kernel_lib):
    axpy = mtia.load_kernel(kernel_lib, "axpy")
    x, y = mtia.ones(4), mtia.ones(4)
    with pytest.raises(ValueError):
        axpy(x, y, 1.0, 4, access=("r",))
    with pytest.raises(ValueError):
        axpy(x, y, 1.0, 4, access=("r", "x"))
    with pytest.raises(TypeError):
        axpy(x, y, 1.0, 4, access="rw")
    with pytest.raises(TypeError):
        axpy(x, y, object(), 4)
    with pytest.raises(mtia.MTIAValueError, match="does not fit in int64_t"):
        axpy(x, y, 1.0, 1 << 70)
    with pytest.raises(ValueError):
        axpy(x, y, 1.0, 4, blocks=0)
    with pytest.raises(ValueError):
        axpy(x, y, b"", 4)
    if mtia.device_count() > 1:
        with pytest.raises(RuntimeError):
            axpy(x, mtia.ones(4, device=1), 1.0, 4)


# ------------------------------------------------------------------------ Python kernels


def test_python_kernel_gets_views_and_scalars():
    seen = {}

    @mtia.kernel
    def k(x, out, scale, tag):
        seen["shapes"] = (x.shape, out.shape)
        seen["dtypes"] = (x.dtype, out.dtype)
        seen["tag"] = tag
        out[...] = x.sum(axis=1) * scale

    assert isinstance(k, mtia.PythonKernel) and k.__name__ == "k"
    x = mtia.arange(6, dtype=mtia.float64).reshape(2, 3)
    out = mtia.zeros(2, dtype=mtia.float64)
    k(x, out, 2.0, "hello")
    same(out, [6.0, 24.0])
    assert seen == {"shapes": ((2, 3), (2,)), "dtypes": (np.float64, np.float64), "tag": "hello"}


def test_python_kernel_is_stream_ordered():
    @mtia.kernel
    def double(x):
        x *= 2

    s = mtia.Stream()
    with mtia.stream(s):
        x = mtia.ones(8, dtype=mtia.int32)
        x.add_(1)  # 2
        double(x)  # 4
        x.add_(1)  # 5
        double(x)  # 10
    s.synchronize()
    same(x, [10] * 8)


def test_python_kernel_read_only_access():
    @mtia.kernel(access=("r", "w"))
    def copy(src, dst):
        assert not src.flags.writeable
        assert dst.flags.writeable
        dst[...] = src

    src = mtia.arange(5, dtype=mtia.int64)
    dst = mtia.zeros(5, dtype=mtia.int64)
    copy(src, dst)
    same(dst, range(5))

    @mtia.kernel
    def bad(src):
        src[0] = 1

    bad(src, access=("r",))
    with pytest.raises(KernelError, match="read-only"):
        mtia.synchronize()


def test_python_kernel_exception_surfaces_with_traceback_and_stream_keeps_working():
    @mtia.kernel
    def broken(x):
        raise ZeroDivisionError("kernel exploded")

    x = mtia.ones(2)
    broken(x)
    with pytest.raises(KernelError) as info:
        mtia.synchronize()
    msg = str(info.value)
    assert "Python kernel" in msg and "broken" in msg
    assert "Traceback" in msg and "ZeroDivisionError: kernel exploded" in msg
    x.add_(1)
    same(x, [2, 2])


def test_python_kernel_capture_and_replay():
    calls = []

    @mtia.kernel
    def accumulate(acc, x, step):
        calls.append(step)
        acc += x * step

    x = mtia.arange(4, dtype=mtia.float32)
    acc = mtia.zeros(4)
    g = MTIAGraph()
    with mtia.graph(g):
        accumulate(acc, x, 3.0)
        acc.add_(1)
    mtia.synchronize()
    assert calls == []  # captured, not run
    for _ in range(4):
        g.replay()
    same(acc, 4 * (3 * np.arange(4, dtype=np.float32) + 1))
    assert calls == [3.0] * 4
    # the captured launch is kept by the graph; after reset (and the last replay's
    # completion) it is released
    from mtia_graph._C import release_done
    from mtia_graph.kernels import _PyKernelLaunch

    assert any(isinstance(o, _PyKernelLaunch) for o in g._keepalive)
    g.reset()
    del g
    mtia.synchronize()
    release_done()
    gc.collect()
    assert not any(isinstance(o, _PyKernelLaunch) for o in callbacks._persistent.values())


def test_eager_python_kernel_entries_are_released():
    @mtia.kernel
    def noop(x):
        pass

    x = mtia.ones(3)
    for _ in range(10):
        noop(x)
    mtia.synchronize()
    assert not callbacks._oneshot


def test_python_kernel_with_empty_tensor_and_no_tensors():
    got = []

    @mtia.kernel
    def k(*args):
        got.append([a.shape if isinstance(a, np.ndarray) else a for a in args])

    k(mtia.empty(0, 3), 5)
    k()
    mtia.synchronize()
    assert got == [[(0, 3), 5], []]


def test_python_kernel_on_explicit_stream_and_other_thread():
    @mtia.kernel
    def inc(x):
        x += 1

    s = mtia.Stream()
    x = mtia.zeros(4)
    mtia.synchronize()
    inc(x, stream=s)
    s.synchronize()
    same(x, [1] * 4)

    def worker():
        inc(x)
        mtia.synchronize()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    same(x, [2] * 4)
