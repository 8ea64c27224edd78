"""The device tensor: factories, attributes, host access, ops, views, promotion."""

import gc
import math
import operator
import pickle
import threading

import numpy as np
import pytest

import mtia_graph as mg
from mtia_graph import CaptureError, Device, Stream

DTYPES = [mg.float32, mg.float64, mg.int32, mg.int64, mg.bool]


def same(t, expected, dtype=None, rtol=1e-6, atol=1e-6):
    """t (a Tensor) holds ``expected`` (array-like), with ``dtype`` if given."""
    assert isinstance(t, mg.Tensor)
    expected = np.asarray(expected)
    got = t.numpy()
    if dtype is not None:
        assert t.dtype is dtype, (t.dtype, dtype)
    assert got.dtype == t.dtype.to_numpy()
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
    else:
        np.testing.assert_array_equal(got, expected)


def two_devices():
    if mg.device_count() < 2:
        pytest.skip("needs two devices")


# --------------------------------------------------------------------------- dtypes


def test_dtype_objects():
    assert repr(mg.float32) == "mtia_graph.float32"
    assert [d.itemsize for d in DTYPES] == [4, 8, 4, 8, 1]
    assert mg.float64.is_floating_point and not mg.int32.is_floating_point
    assert mg.int64.to_numpy() == np.int64 and mg.bool.to_numpy() == np.bool_
    assert pickle.loads(pickle.dumps(mg.int32)) is mg.int32
    assert mg.get_default_dtype() is mg.float32


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("float64", mg.float64),
        (np.int32, mg.int32),
        (np.dtype("int64"), mg.int64),
        ("bool", mg.bool),
        ("double", mg.float64),
        ("long", mg.int64),
        (float, mg.float32),
        (int, mg.int64),
        (bool, mg.bool),
    ],
)
def test_dtype_specs_accepted(spec, expected):
    assert mg.zeros(2, dtype=spec).dtype is expected


@pytest.mark.parametrize(
    "spec,exc",
    [
        ("float16", ValueError),
        (np.float16, ValueError),
        ("complex", ValueError),
        (3, TypeError),
        (object(), TypeError),
        ([mg.float32], TypeError),
    ],
)
def test_dtype_specs_rejected(spec, exc):
    with pytest.raises(exc):
        mg.zeros(2, dtype=spec)


# --------------------------------------------------------------------------- factories


@pytest.mark.parametrize("args", [(2, 3), ((2, 3),), ([2, 3],), (np.int64(2), 3)])
def test_size_forms(args):
    for fn in (mg.empty, mg.zeros, mg.ones):
        t = fn(*args)
        assert t.shape == (2, 3) and t.dtype is mg.float32 and t.device == Device(0)


def test_zeros_ones_values():
    for d in DTYPES:
        same(mg.zeros(2, 2, dtype=d), np.zeros((2, 2), d.to_numpy()), d)
        same(mg.ones(3, dtype=d), np.ones(3, d.to_numpy()), d)
    same(mg.zeros(()), np.zeros(()), mg.float32)


@pytest.mark.parametrize(
    "args,exc",
    [
        ((-1,), ValueError),
        ((2, -3), ValueError),
        ((2.0,), TypeError),
        (("a",), TypeError),
        ((True,), TypeError),
        (((1,) * 9,), ValueError),
        ((None,), TypeError),
        (([2, "x"],), TypeError),
    ],
)
def test_size_errors(args, exc):
    for fn in (mg.empty, mg.zeros, mg.ones):
        with pytest.raises(exc):
            fn(*args)


@pytest.mark.parametrize(
    "device,exc", [(5, ValueError), ("cpu", ValueError), (1.5, TypeError), ("mtia:9", ValueError)]
)
def test_device_argument_errors(device, exc):
    with pytest.raises(exc):
        mg.zeros(2, device=device)


def test_full():
    same(mg.full((2, 2), 1), np.full((2, 2), 1, np.int64), mg.int64)
    same(mg.full(3, 2.5), np.full(3, 2.5, np.float32), mg.float32)
    same(mg.full((), True), np.array(True), mg.bool)
    same(mg.full([2], 7, dtype=mg.float64), [7.0, 7.0], mg.float64)
    same(mg.full((2,), 2.9, dtype=mg.int32), [2, 2], mg.int32)  # truncates like torch
    same(mg.full((2,), 0.5, dtype=mg.bool), [True, True], mg.bool)
    with pytest.raises(TypeError):
        mg.full((2,), "x")
    with pytest.raises(ValueError):
        mg.full((-2,), 1)
    with pytest.raises(ValueError):
        mg.full((2,), float("nan"), dtype=mg.int64)


def test_arange():
    same(mg.arange(5), np.arange(5), mg.int64)
    same(mg.arange(2, 9, 3), [2, 5, 8], mg.int64)
    same(mg.arange(5, 0, -2), [5, 3, 1], mg.int64)
    same(mg.arange(1, 2, 0.25), np.arange(1, 2, 0.25, dtype=np.float32), mg.float32)
    same(mg.arange(0, 1, 0.1, dtype=mg.float64), np.arange(0, 1, 0.1), mg.float64)
    same(mg.arange(4, dtype=mg.int32), [0, 1, 2, 3], mg.int32)
    same(mg.arange(0), np.arange(0), mg.int64)
    same(mg.arange(3, 3), np.arange(0), mg.int64)
    assert mg.arange(2**40, 2**40 + 3).tolist() == [2**40, 2**40 + 1, 2**40 + 2]


@pytest.mark.parametrize(
    "args,exc",
    [
        ((1, 0), ValueError),
        ((0, 5, 0), ValueError),
        (("a",), TypeError),
        ((float("inf"),), ValueError),
        ((True,), TypeError),
        ((0, 5, -1), ValueError),
        ((None,), TypeError),
    ],
)
def test_arange_errors(args, exc):
    with pytest.raises(exc):
        mg.arange(*args)


def test_tensor_inference():
    same(mg.tensor([1.0, 2.0]), [1.0, 2.0], mg.float32)
    same(mg.tensor([[1, 2], [3, 4]]), [[1, 2], [3, 4]], mg.int64)
    same(mg.tensor([True, False]), [True, False], mg.bool)
    same(mg.tensor(3), np.array(3), mg.int64)
    same(mg.tensor(2.5), np.array(2.5), mg.float32)
    same(mg.tensor([]), np.zeros(0), mg.float32)
    same(mg.tensor(np.array([1.5], np.float64)), [1.5], mg.float64)  # numpy keeps dtype
    same(mg.tensor(np.float64(2.0)), np.array(2.0), mg.float64)
    same(
        mg.tensor(np.arange(6, dtype=np.int32).reshape(2, 3)), np.arange(6).reshape(2, 3), mg.int32
    )
    same(mg.tensor([1, 2], dtype=mg.float64), [1.0, 2.0], mg.float64)
    same(mg.tensor([1.7, -1.7], dtype=mg.int32), [1, -1], mg.int32)
    same(mg.tensor((1, 2.5)), [1.0, 2.5], mg.float32)


def test_tensor_from_tensor_copies():
    a = mg.tensor([1, 2, 3])
    b = mg.tensor(a)
    b.add_(1)
    assert a.tolist() == [1, 2, 3] and b.tolist() == [2, 3, 4]
    c = mg.tensor(a, dtype=mg.float64)
    same(c, [1.0, 2.0, 3.0], mg.float64)


@pytest.mark.parametrize(
    "data",
    ["abc", [[1], [1, 2]], np.array([1], np.uint8), np.array([1j]), {"a": 1}, object(), [None]],
)
def test_tensor_rejects(data):
    with pytest.raises(TypeError):
        mg.tensor(data)


def test_from_numpy():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    t = mg.from_numpy(a)
    same(t, a, mg.float64)
    a[0, 0] = 100  # a copy, not shared
    assert t[0, 0].item() == 0
    same(mg.from_numpy(a.T), a.T, mg.float64)  # non-contiguous input
    same(mg.from_numpy(np.array([True, False])), [True, False], mg.bool)
    same(mg.from_numpy(np.arange(3, dtype=np.int32), dtype=mg.int64), [0, 1, 2], mg.int64)
    with pytest.raises(TypeError):
        mg.from_numpy([1, 2])
    with pytest.raises(TypeError):
        mg.from_numpy(np.zeros(2, np.float16))


def test_like_factories():
    base = mg.arange(6, dtype=mg.int32).reshape(2, 3)
    e = mg.empty_like(base)
    assert e.shape == (2, 3) and e.dtype is mg.int32
    same(mg.zeros_like(base), np.zeros((2, 3)), mg.int32)
    same(mg.ones_like(base, dtype=mg.float64), np.ones((2, 3)), mg.float64)
    same(mg.full_like(base, 7), np.full((2, 3), 7), mg.int32)
    same(mg.full_like(base, 2.5, dtype=mg.float32), np.full((2, 3), 2.5), mg.float32)
    for fn in (mg.empty_like, mg.zeros_like, mg.ones_like):
        with pytest.raises(TypeError):
            fn(np.zeros(2))
    with pytest.raises(TypeError):
        mg.full_like([1], 1)


def test_tensor_class_constructor():
    same(mg.Tensor([1, 2]), [1.0, 2.0], mg.float32)
    assert mg.Tensor().shape == (0,)
    assert mg.Tensor(2, 3).shape == (2, 3)
    with pytest.raises(TypeError):

        class Sub(mg.Tensor):
            pass

        Sub([1])


def test_factories_on_other_device():
    two_devices()
    for t in (
        mg.zeros(3, device=1),
        mg.ones(3, device="mtia:1"),
        mg.arange(3, device=Device(1)),
        mg.tensor([1, 2, 3], device=1),
        mg.full((3,), 1, device=1),
    ):
        assert t.device == Device(1) and str(t.device) == "mtia:1"
    with mg.device(1):
        assert mg.zeros(2).device == Device(1)
        assert mg.empty_like(mg.zeros(2, device=0)).device == Device(0)
    assert mg.zeros_like(mg.zeros(2, device=1), device=0).device == Device(0)


# --------------------------------------------------------------------------- attributes


def test_attributes():
    t = mg.zeros(2, 3, 4, dtype=mg.float64)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.ndim == 3 == t.dim()
    assert t.numel() == 24
    assert t.nbytes == 24 * 8
    assert t.element_size() == 8 == t.itemsize
    assert t.size() == (2, 3, 4) and t.size(0) == 2 and t.size(-1) == 4
    with pytest.raises(IndexError):
        t.size(3)
    with pytest.raises(TypeError):
        t.size("0")
    assert isinstance(t.data_ptr(), int) and t.data_ptr() != 0
    assert t.device == Device(0) and str(t.device) == "mtia:0"
    assert t.is_contiguous() and t.is_floating_point() and t.is_mtia
    s = mg.tensor(5)
    assert s.shape == () and s.ndim == 0 and s.numel() == 1 and s.size() == ()
    assert s.size(0) == 1 and s.size(-1) == 1


def test_desc_is_built_once():
    t = mg.ones(3)
    t.add_(1)
    d = t._desc
    t.add_(1)
    t.mul_(2)
    assert t._desc is d


# --------------------------------------------------------------------------- host access


def test_numpy_tolist_item_array():
    t = mg.arange(6).reshape(2, 3)
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]
    a = np.asarray(t)
    assert a.dtype == np.int64 and a.shape == (2, 3)
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert mg.tensor([2.5]).item() == 2.5
    assert mg.tensor(True).item() is True
    assert isinstance(mg.tensor(3).item(), int)
    with pytest.raises(ValueError):
        t.item()
    with pytest.raises(ValueError):
        mg.zeros(0).item()
    assert float(mg.tensor(1.5)) == 1.5 and int(mg.tensor(7)) == 7
    assert bool(mg.tensor([1])) is True and bool(mg.tensor(0.0)) is False
    with pytest.raises(RuntimeError):
        bool(mg.ones(2))
    assert [1, 2, 3][mg.tensor(1)] == 2
    with pytest.raises(TypeError):
        [1][mg.tensor(0.0)]
    assert len(t) == 2
    with pytest.raises(TypeError):
        len(mg.tensor(1))
    assert [row.tolist() for row in t] == [[0, 1, 2], [3, 4, 5]]


def test_repr():
    assert repr(mg.tensor([1.0, 2.0])) == "tensor([1., 2.], device='mtia:0')"
    assert repr(mg.tensor([1, 2])) == "tensor([1, 2], device='mtia:0')"
    assert "dtype=mtia_graph.float64" in repr(mg.tensor([1.0], dtype=mg.float64))
    assert "dtype=mtia_graph.int32" in repr(mg.tensor([1], dtype=mg.int32))
    assert "size=(0, 3)" in repr(mg.zeros(0, 3))
    assert repr(mg.tensor(True)) == "tensor(True, device='mtia:0')"


def test_pickle_roundtrip():
    t = mg.arange(5, dtype=mg.int32)
    u = pickle.loads(pickle.dumps(t))
    same(u, [0, 1, 2, 3, 4], mg.int32)


# --------------------------------------------------------------------------- in-place


def test_fill_and_zero():
    t = mg.empty(2, 2)
    same(t.fill_(3.5), np.full((2, 2), 3.5), mg.float32)
    same(t.zero_(), np.zeros((2, 2)), mg.float32)
    i = mg.empty(3, dtype=mg.int64)
    same(i.fill_(2.9), [2, 2, 2])
    same(i.fill_(True), [1, 1, 1])
    same(i.fill_(2**40), [2**40] * 3)
    b = mg.empty(2, dtype=mg.bool)
    same(b.fill_(0.25), [True, True])
    same(b.fill_(0), [False, False])
    same(t.fill_(mg.tensor(4.0)), np.full((2, 2), 4.0))
    with pytest.raises(ValueError):
        t.fill_(mg.ones(2))
    with pytest.raises(TypeError):
        t.fill_("1")
    with pytest.raises(TypeError):
        t.fill_(None)


def test_copy_from_tensor_and_host():
    t = mg.zeros(2, 3)
    same(t.copy_(mg.arange(6).reshape(2, 3)), np.arange(6).reshape(2, 3), mg.float32)
    same(t.copy_(mg.tensor([1.0, 2.0, 3.0])), [[1, 2, 3], [1, 2, 3]])  # broadcast
    same(t.copy_(mg.tensor(9)), np.full((2, 3), 9))
    same(t.copy_(np.arange(6, dtype=np.int64).reshape(2, 3)), np.arange(6).reshape(2, 3))
    same(t.copy_(np.array([[1.0], [2.0]])), [[1, 1, 1], [2, 2, 2]])
    same(t.copy_([[0, 1, 2], [3, 4, 5]]), np.arange(6).reshape(2, 3))
    same(t.copy_(5), np.full((2, 3), 5))
    same(t.copy_(t), np.full((2, 3), 5))
    b = mg.zeros(3, dtype=mg.bool)
    same(b.copy_(mg.tensor([0.0, 2.0, -1.0])), [False, True, True], mg.bool)
    same(b.copy_(mg.tensor([True])), [True, True, True], mg.bool)


def test_copy_errors():
    t = mg.zeros(2, 3)
    with pytest.raises(ValueError):
        t.copy_(mg.zeros(3, 2))
    with pytest.raises(ValueError):
        t.copy_(np.zeros(4))
    with pytest.raises(TypeError):
        t.copy_("abc")
    with pytest.raises(TypeError):
        t.copy_(object())
    same(t, np.zeros((2, 3)))


def test_copy_from_overlapping_view():
    t = mg.arange(6, dtype=mg.float32).reshape(2, 3)
    t.copy_(t[0])  # source overlaps the destination
    same(t, [[0, 1, 2], [0, 1, 2]])
    u = mg.arange(4)
    u[1:].copy_(u[:3])
    same(u, [0, 0, 1, 2])


def test_copy_across_devices():
    two_devices()
    a = mg.arange(4, dtype=mg.float32, device=1)
    b = mg.zeros(2, 4, device=0)
    same(b.copy_(a), [[0, 1, 2, 3]] * 2)
    c = a.to(device=0)
    assert c.device == Device(0)
    same(c, [0, 1, 2, 3], mg.float32)
    d = a.to("mtia:0")
    assert d.device == Device(0)


def test_add_sub_mul_div_inplace_scalars():
    t = mg.ones(4)
    same(t.add_(1), [2] * 4)
    same(t.add_(0.5), [2.5] * 4)
    same(t.add_(2, alpha=2), [6.5] * 4)
    same(t.sub_(1.5), [5] * 4)
    same(t.sub_(1, alpha=3), [2] * 4)
    same(t.mul_(4), [8] * 4)
    same(t.div_(16), [0.5] * 4)
    same(t.add_(np.float64(1.0)), [1.5] * 4)
    i = mg.arange(4, dtype=mg.int32)
    same(i.add_(1), [1, 2, 3, 4], mg.int32)
    same(i.mul_(3), [3, 6, 9, 12], mg.int32)
    same(i.sub_(True), [2, 5, 8, 11], mg.int32)
    same(i.add_(np.int64(1)), [3, 6, 9, 12], mg.int32)
    b = mg.tensor([True, False])
    same(b.add_(True), [True, True], mg.bool)


def test_inplace_with_tensors_and_broadcasting():
    t = mg.ones(2, 3)
    row = mg.tensor([1.0, 2.0, 3.0])
    same(t.add_(row), [[2, 3, 4], [2, 3, 4]])
    same(t.mul_(mg.tensor([[1.0], [2.0]])), [[2, 3, 4], [4, 6, 8]])
    same(t.sub_(row, alpha=2), [[0, -1, -2], [2, 2, 2]])
    same(t.div_(mg.tensor(2.0)), [[0, -0.5, -1], [1, 1, 1]])
    same(t.add_(t), [[0, -1, -2], [2, 2, 2]])
    t2 = mg.ones(3)
    same(t2.add_(np.array([1.0, 2.0, 3.0])), [2, 3, 4])
    same(t2.add_([1, 1, 1]), [3, 4, 5])


def test_inplace_promotion_rules():
    i = mg.ones(3, dtype=mg.int32)
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.add_(1.5)
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.div_(2)
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.add_(mg.ones(3))
    with pytest.raises(TypeError, match="alpha"):
        i.add_(1, alpha=0.5)
    same(i.add_(mg.ones(3, dtype=mg.int64)), [2, 2, 2], mg.int32)  # computed in int64
    f = mg.ones(2)
    same(f.add_(mg.tensor([0.25, 0.5], dtype=mg.float64)), [1.25, 1.5], mg.float32)
    same(f.add_(mg.tensor([1, 2])), [2.25, 3.5], mg.float32)
    b = mg.zeros(2, dtype=mg.bool)
    with pytest.raises(RuntimeError):
        b.add_(1)
    same(i, [2, 2, 2])  # failed calls changed nothing


def test_inplace_errors():
    t = mg.ones(2, 3)
    with pytest.raises(ValueError):
        t.add_(mg.ones(3, 2))
    with pytest.raises(ValueError):
        t.add_(mg.ones(2, 2, 3))  # would need to grow
    with pytest.raises(TypeError):
        t.add_("x")
    with pytest.raises(TypeError):
        t.mul_(None)
    with pytest.raises(TypeError):
        t.add_(1, alpha="2")
    same(t, np.ones((2, 3)))


def test_relu_inplace():
    t = mg.tensor([-1.0, 0.0, 2.0])
    assert t.relu_() is t
    same(t, [0, 0, 2])
    i = mg.tensor([-3, 3])
    same(i.relu_(), [0, 3], mg.int64)


def test_inplace_operators_keep_identity():
    t = mg.ones(3)
    ref = t
    t += 1
    t *= 3
    t -= 2
    t /= 2
    assert t is ref
    same(t, [2, 2, 2])
    i = mg.ones(2, dtype=mg.int64)
    with pytest.raises(RuntimeError):
        i /= 2


# --------------------------------------------------------------------------- out-of-place


def test_arithmetic_matches_numpy():
    a_np = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    b_np = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    a, b = mg.tensor(a_np), mg.tensor(b_np)
    same(a + b, a_np + b_np)
    same(a - b, a_np - b_np)
    same(a * b, a_np * b_np)
    same(a / b, a_np / b_np)
    same(b - a, b_np - a_np)
    same(a + 1, a_np + 1)
    same(2 - a, 2 - a_np)
    same(3 * a, 3 * a_np)
    same(1 / b, 1 / b_np)
    same(a / 2, a_np / 2)
    same(-a, -a_np)
    same(abs(a), abs(a_np))
    same(+a, a_np)
    same(a + a_np, a_np + a_np)
    same(a_np + a, a_np + a_np)  # numpy defers to the tensor
    same(a_np * b, a_np * b_np)
    same(a.add(b, alpha=2), a_np + 2 * b_np)
    same(a.sub(1, alpha=2), a_np - 2)
    same(a.mul(b), a_np * b_np)
    same(a.div(b), a_np / b_np)
    same(a.maximum(b), np.maximum(a_np, b_np))
    same(a.minimum(b), np.minimum(a_np, b_np))


def test_out_of_place_type_errors():
    t = mg.ones(2)
    with pytest.raises(TypeError):
        t + "a"
    with pytest.raises(TypeError):
        None * t
    with pytest.raises(TypeError):
        t @ 3


def test_integer_division_is_true_division():
    a = mg.tensor([1, 2, 3])
    same(a / 2, [0.5, 1.0, 1.5], mg.float32)
    same(a / mg.tensor([2, 4, 6], dtype=mg.int32), [0.5, 0.5, 0.5], mg.float32)
    same(6 / a, [6.0, 3.0, 2.0], mg.float32)


def test_bool_operations():
    a, b = mg.tensor([True, True, False]), mg.tensor([True, False, False])
    same(a & b, [True, False, False], mg.bool)
    same(a | b, [True, True, False], mg.bool)
    same(~a, [False, False, True], mg.bool)
    same(a + b, [True, True, False], mg.bool)
    with pytest.raises(RuntimeError):
        _ = -a
    with pytest.raises(TypeError):
        ~mg.ones(2)
    with pytest.raises(TypeError):
        mg.ones(2) & a


def test_comparisons():
    a_np = np.array([1.0, 2.0, 3.0], np.float32)
    a = mg.tensor(a_np)
    b = mg.tensor([3.0, 2.0, 1.0])
    for op in ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        same(getattr(a, op)(b), getattr(a_np, op)(np.array([3.0, 2.0, 1.0])), mg.bool)
        same(getattr(a, op)(2), getattr(a_np, op)(2), mg.bool)
    same(a > 2, a_np > 2, mg.bool)
    same(a.eq(2), a_np == 2)
    same(a.ne(2), a_np != 2)
    same(a.lt(b), a_np < b.numpy())
    same(a.le(b), a_np <= b.numpy())
    same(a.gt(b), a_np > b.numpy())
    same(a.ge(b), a_np >= b.numpy())
    same(mg.tensor([1, 2]) < 1.5, [True, False], mg.bool)
    same(mg.arange(3).reshape(3, 1) == mg.arange(3), np.eye(3, dtype=bool), mg.bool)
    assert a.__hash__() == id(a)  # tensors stay hashable despite elementwise ==
    assert a in {a}


def test_unary_math_matches_numpy():
    x_np = np.linspace(0.1, 3.0, 7).astype(np.float32)
    x = mg.tensor(x_np)
    same(x.exp(), np.exp(x_np), rtol=1e-5)
    same(x.log(), np.log(x_np), rtol=1e-5)
    same(x.sqrt(), np.sqrt(x_np), rtol=1e-5)
    same(x.tanh(), np.tanh(x_np), rtol=1e-5)
    same(x.sigmoid(), 1 / (1 + np.exp(-x_np)), rtol=1e-5)
    gelu = 0.5 * x_np * (1 + np.tanh(np.sqrt(2 / np.pi) * (x_np + 0.044715 * x_np**3)))
    same(x.gelu(approximate="tanh"), gelu, rtol=1e-4)
    same((x - 1).relu(), np.maximum(x_np - 1, 0))
    same(mg.tensor([0, 1]).exp(), np.exp([0.0, 1.0]), mg.float32, rtol=1e-6)
    same(mg.tensor([-2, 3], dtype=mg.int32).abs(), [2, 3], mg.int32)
    same(mg.tensor([-2, 3]).neg(), [2, -3], mg.int64)


def exact_gelu(x):
    return np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in np.asarray(x, np.float64)])


@pytest.mark.parametrize("dt", [mg.float32, mg.float64])
def test_gelu_is_exact_by_default_as_in_torch(dt):
    # torch.nn.functional.gelu(torch.tensor(1.0)) == 0.8413447; the tanh form gives 0.841192
    assert mg.tensor([1.0], dtype=dt).gelu().item() == pytest.approx(0.8413447460685429, rel=1e-7)
    assert mg.tensor([1.0], dtype=dt).gelu(approximate="tanh").item() == pytest.approx(
        0.8411920070648193, rel=1e-6
    )
    # the left tail keeps its relative precision (1 + erf(x / sqrt 2) would cancel there)
    x_np = np.concatenate([np.linspace(-12.5, 13, 2001), [0.0, -0.0]]).astype(dt.to_numpy())
    same(mg.tensor(x_np).gelu(), exact_gelu(x_np), dt, rtol=2e-6, atol=1e-35)


def test_gelu_special_values_and_arguments():
    out = mg.tensor([np.inf, -np.inf, np.nan, -40.0]).gelu().numpy()
    assert out[0] == np.inf and np.isnan(out[1]) and np.isnan(out[2])
    assert out[3] == 0 and np.signbit(out[3])
    same(mg.tensor([1, -2]).gelu(), exact_gelu([1.0, -2.0]), mg.float32, rtol=1e-6)
    for bad in ("erf", "None", None, 1):
        with pytest.raises(mg.MTIAValueError, match="approximate must be 'none' or 'tanh'"):
            mg.tensor([1.0]).gelu(approximate=bad)


def test_clone_is_independent():
    a = mg.arange(4)
    b = a.clone()
    b.add_(10)
    same(a, [0, 1, 2, 3])
    same(b, [10, 11, 12, 13])
    assert a.data_ptr() != b.data_ptr()


def test_to_and_casts():
    a = mg.tensor([1.7, -2.2])
    same(a.int(), [1, -2], mg.int32)
    same(a.long(), [1, -2], mg.int64)
    same(a.double(), [1.7, -2.2], mg.float64, rtol=1e-6)
    same(a.bool(), [True, True], mg.bool)
    same(mg.tensor([0, 2]).float(), [0.0, 2.0], mg.float32)
    assert a.to(mg.float32) is a
    assert a.to(mg.float32, copy=True) is not a
    same(a.to("float64"), [1.7, -2.2], mg.float64, rtol=1e-6)
    same(a.to(dtype=mg.int64), [1, -2], mg.int64)


def test_reductions():
    x_np = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    x = mg.tensor(x_np)
    same(x.sum(), x_np.sum(), mg.float32, rtol=1e-5)
    same(x.sum(1), x_np.sum(1), rtol=1e-5)
    same(x.sum(-1, keepdim=True), x_np.sum(-1, keepdims=True), rtol=1e-5)
    same(x.sum((0, 2)), x_np.sum((0, 2)), rtol=1e-5)
    same(x.sum((0, 2), keepdim=True), x_np.sum((0, 2), keepdims=True), rtol=1e-5)
    same(x.mean(), x_np.mean(), rtol=1e-5)
    same(x.mean(0), x_np.mean(0), rtol=1e-5)
    same(x.mean((1, 2)), x_np.mean((1, 2)), rtol=1e-5)
    same(x.amax(1), x_np.max(1))
    same(x.amin(-1, keepdim=True), x_np.min(-1, keepdims=True))
    same(x.max(), x_np.max())
    same(x.min(), x_np.min())
    i = mg.arange(10, dtype=mg.int32)
    same(i.sum(), np.array(45), mg.int64)
    same(mg.tensor([True, True, False]).sum(), np.array(2), mg.int64)
    same(i.sum(dtype=mg.float64), np.array(45.0), mg.float64)
    same(i.mean(dtype=mg.float32), np.array(4.5), mg.float32)
    with pytest.raises(RuntimeError, match="mean"):
        i.mean()
    with pytest.raises(IndexError):
        x.sum(3)
    with pytest.raises(TypeError):
        x.sum("1")
    same(mg.tensor(3.0).sum(), np.array(3.0))


def test_matmul_shapes_match_numpy():
    rng = np.random.default_rng(0)
    cases = [
        ((3, 4), (4, 5)),
        ((4,), (4, 5)),
        ((3, 4), (4,)),
        ((4,), (4,)),
        ((2, 3, 4), (2, 4, 5)),
        ((2, 3, 4), (4, 5)),
        ((4,), (2, 4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)),
        ((3, 0), (0, 2)),
        ((0, 3), (3, 2)),
    ]
    for sa, sb in cases:
        a_np = rng.standard_normal(sa).astype(np.float32)
        b_np = rng.standard_normal(sb).astype(np.float32)
        got = mg.tensor(a_np) @ mg.tensor(b_np)
        same(got, a_np @ b_np, mg.float32, rtol=1e-4, atol=1e-5)
    same(mg.matmul(mg.tensor([[1, 2]]), mg.tensor([[3], [4]])), [[11]], mg.int64)
    same(mg.tensor([[1.0, 2.0]]).matmul(mg.tensor([[1], [1]])), [[3.0]], mg.float32)
    same(mg.tensor([[1.0, 2.0]]) @ np.ones((2, 1)), [[3.0]])
    same(np.ones((1, 2)) @ mg.tensor([[1.0], [2.0]]), [[3.0]])


def test_matmul_errors():
    with pytest.raises(ValueError):
        mg.ones(2, 3) @ mg.ones(2, 3)
    with pytest.raises(ValueError):
        mg.tensor(1.0) @ mg.ones(2)
    with pytest.raises(RuntimeError):
        mg.ones(2, 2, dtype=mg.bool) @ mg.ones(2, 2, dtype=mg.bool)
    with pytest.raises(TypeError):
        mg.matmul([1], mg.ones(1))
    with pytest.raises(TypeError):
        mg.ones(2).matmul(np.ones(2).tolist())


def test_softmax():
    x_np = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 10.0]], np.float32)
    x = mg.tensor(x_np)

    def ref(a, axis):
        e = np.exp(a - a.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    same(x.softmax(-1), ref(x_np, -1), mg.float32, rtol=1e-5)
    same(x.softmax(dim=0), ref(x_np, 0), rtol=1e-5)
    same(mg.tensor([1, 2]).softmax(0), ref(np.array([1.0, 2.0]), -1), mg.float32, rtol=1e-5)
    same(mg.tensor(5.0).softmax(0), np.array(1.0))
    with pytest.raises(TypeError):
        x.softmax()  # dim is required, as in torch
    with pytest.raises(IndexError):
        x.softmax(2)


def test_where():
    cond = mg.tensor([True, False, True])
    same(mg.where(cond, mg.tensor([1.0, 2.0, 3.0]), 0), [1.0, 0.0, 3.0], mg.float32)
    same(mg.where(cond, 1, -1), [1, -1, 1], mg.int64)
    same(mg.where(mg.tensor([[True], [False]]), mg.ones(3), mg.zeros(3)), [[1, 1, 1], [0, 0, 0]])
    with pytest.raises(TypeError):
        mg.where([True], 1, 2)
    with pytest.raises(TypeError):
        mg.where(cond, "a", 1)


# --------------------------------------------------------------------------- promotion


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ((mg.int32, (3,)), 1.5, mg.float32),
        ((mg.int32, (3,)), 2, mg.int32),
        ((mg.int32, (3,)), (mg.int64, (3,)), mg.int64),
        ((mg.bool, (3,)), 1, mg.int64),
        ((mg.bool, (3,)), (mg.int32, (3,)), mg.int32),
        ((mg.bool, (3,)), True, mg.bool),
        ((mg.float32, (3,)), (mg.float64, (3,)), mg.float64),
        ((mg.float32, (3,)), (mg.float64, ()), mg.float32),
        ((mg.int32, (3,)), (mg.float64, ()), mg.float64),
        ((mg.int64, (3,)), (mg.int32, ()), mg.int64),
        ((mg.int32, (3,)), (mg.int64, ()), mg.int32),
        ((mg.int64, (3,)), (mg.float32, (3,)), mg.float32),
        ((mg.float64, (3,)), 1.5, mg.float64),
    ],
)
def test_promotion(a, b, expected):
    ta = mg.ones(a[1], dtype=a[0])
    tb = mg.ones(b[1], dtype=b[0]) if isinstance(b, tuple) else b
    assert mg.result_type(ta, tb) is expected
    assert (ta + tb).dtype is expected
    assert (tb + ta).dtype is expected
    assert (ta * tb).dtype is expected
    assert (ta == tb).dtype is mg.bool
    expected_np = np.ones(
        np.broadcast_shapes(a[1], b[1] if isinstance(b, tuple) else ()), dtype=expected.to_numpy()
    ) * (1 if isinstance(b, tuple) else b)
    same(ta * tb, expected_np, expected)


def test_promotion_helpers():
    assert mg.promote_types(mg.int32, mg.float32) is mg.float32
    assert mg.promote_types(mg.bool, mg.int32) is mg.int32
    assert mg.can_cast(mg.int64, mg.int32)
    assert not mg.can_cast(mg.float32, mg.int64)
    assert not mg.can_cast(mg.int32, mg.bool)
    assert mg.can_cast(mg.bool, mg.float64)
    with pytest.raises(TypeError):
        mg.result_type()
    with pytest.raises(TypeError):
        mg.result_type("x")


def test_broadcast_errors():
    with pytest.raises(ValueError, match="broadcast"):
        mg.ones(2, 3) + mg.ones(4)
    with pytest.raises(ValueError):
        mg.ones(3) * mg.ones(2, 2)


def test_cross_device_ops_are_rejected():
    two_devices()
    a, b = mg.ones(2, device=0), mg.ones(2, device=1)
    with pytest.raises(RuntimeError, match="same device"):
        a + b
    with pytest.raises(RuntimeError, match="same device"):
        a.add_(b)
    with pytest.raises(RuntimeError, match="same device"):
        a @ b
    same(b + b, [2, 2])  # device 1 works on its own streams
    assert (b * 2).device == Device(1)
    same(b.sum(), np.array(2.0))


# --------------------------------------------------------------------------- views


def test_reshape_and_view_share_storage():
    a = mg.arange(6, dtype=mg.float32)
    b = a.reshape(2, 3)
    c = a.view(3, -1)
    d = a.reshape((-1,))
    assert b.shape == (2, 3) and c.shape == (3, 2) and d.shape == (6,)
    assert b.data_ptr() == a.data_ptr() == c.data_ptr()
    b.add_(1)
    same(a, np.arange(6) + 1)
    same(c, (np.arange(6) + 1).reshape(3, 2))
    assert a.flatten().shape == (6,)
    assert b.unsqueeze(0).shape == (1, 2, 3) and b.unsqueeze(-1).shape == (2, 3, 1)
    assert b.unsqueeze(0).squeeze().shape == (2, 3)
    assert mg.zeros(1, 3, 1).squeeze(0).shape == (3, 1)
    assert mg.zeros(2, 3).squeeze(0).shape == (2, 3)


def test_view_keeps_storage_alive():
    a = mg.arange(1000, dtype=mg.float64)
    v = a.reshape(10, 100)[3]
    del a
    gc.collect()
    mg.ones(1000, dtype=mg.float64)  # would reuse the memory if it had been freed
    same(v, np.arange(300, 400))


@pytest.mark.parametrize(
    "shape,exc",
    [
        ((4,), ValueError),
        ((-1, -1), ValueError),
        ((4, -1), ValueError),
        ((-2, 3), ValueError),
        (("a",), TypeError),
        ((2.0, 3), TypeError),
    ],
)
def test_reshape_errors(shape, exc):
    with pytest.raises(exc):
        mg.zeros(6).reshape(*shape)


def test_indexing_views():
    a = mg.arange(12).reshape(3, 4)
    same(a[1], [4, 5, 6, 7])
    same(a[-1], [8, 9, 10, 11])
    same(a[1, 2], np.array(6))
    same(a[1:], [[4, 5, 6, 7], [8, 9, 10, 11]])
    same(a[:0], np.zeros((0, 4)))
    same(a[2, 1:3], [9, 10])
    a[0] = 100
    a[1, 1:3] = mg.tensor([-1, -2])
    a[2] = [7, 7, 7, 7]
    same(a, [[100] * 4, [4, -1, -2, 7], [7] * 4])
    a[0].add_(1)
    same(a[0], [101] * 4)


@pytest.mark.parametrize(
    "index,exc",
    [
        (3, IndexError),
        (-4, IndexError),
        (slice(0, 2, 2), ValueError),
        (True, TypeError),
        ("a", TypeError),
        ((0, 0, 0), IndexError),
        ((slice(0, 1), 0), ValueError),
        (1.0, TypeError),
    ],
)
def test_indexing_errors(index, exc):
    with pytest.raises(exc):
        mg.zeros(3, 4)[index]


# --------------------------------------------------------------------------- empty tensors


def test_zero_element_tensors():
    before = mg.memory_allocated()
    e = mg.empty(0, 3)
    assert e.numel() == 0 and e.nbytes == 0 and e.data_ptr() == 0
    assert mg.memory_allocated() <= before  # no allocation
    assert e.numpy().shape == (0, 3) and e.tolist() == []
    same(e.add_(1), np.zeros((0, 3)))
    same(e + e, np.zeros((0, 3)))
    same(e * 2, np.zeros((0, 3)))
    same(-e, np.zeros((0, 3)))
    same(e.exp(), np.zeros((0, 3)))
    same(e.fill_(3), np.zeros((0, 3)))
    same(e.zero_(), np.zeros((0, 3)))
    same(e.copy_(mg.ones(3)), np.zeros((0, 3)))
    same(e.clone(), np.zeros((0, 3)))
    same(e.reshape(3, 0), np.zeros((3, 0)))
    same(e.sum(), np.array(0.0))
    same(e.sum(0), np.zeros(3))
    assert math.isnan(e.mean().item())
    same(e.softmax(-1), np.zeros((0, 3)))
    same(e == 1, np.zeros((0, 3), bool), mg.bool)
    same(mg.zeros(0, dtype=mg.int64).float(), np.zeros(0), mg.float32)
    same(mg.tensor(np.zeros((2, 0))), np.zeros((2, 0)))
    same(mg.arange(0) + mg.ones(1, dtype=mg.int64), np.zeros(0))
    same(mg.zeros(2, 0) @ mg.zeros(0, 3), np.zeros((2, 3)))


# --------------------------------------------------------------------------- streams


def test_ops_are_enqueued_on_the_current_stream(gate):
    t = mg.zeros(4)
    mg.synchronize()
    s = Stream()
    gate.block(s)
    with mg.stream(s):
        t.add_(1)
        u = t * 3
        assert not s.query()  # held back by the gate: the work is on s
    assert mg.default_stream().query()
    gate.open()
    s.synchronize()
    same(t, np.ones(4))
    same(u, np.full(4, 3.0))


def test_host_read_waits_for_current_stream_only_after_sync():
    s = Stream()
    t = mg.zeros(1000)
    mg.synchronize()
    with mg.stream(s):
        for _ in range(10):
            t.add_(1)
        same(t, np.full(1000, 10.0))  # numpy() synchronizes the current stream (s)


def test_tensor_ops_in_threads_use_their_own_stream():
    results = {}

    def worker(k):
        s = Stream()
        with mg.stream(s):
            t = mg.full((100,), k, dtype=mg.int64)
            for _ in range(50):
                t.add_(1)
            results[k] = t.sum().item()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == {k: 100 * (k + 50) for k in range(4)}


def test_capture_tensor_ops_with_raw_capture(raw_capture):
    s = Stream()
    raw_capture.track(s)
    x = mg.zeros(8)
    mg.synchronize()
    cid = raw_capture.begin(s)
    with mg.stream(s):
        x.add_(1)
        x.mul_(2)
        y = x + 1  # allocated in the capture's pool
        x.copy_(np.arange(8, dtype=np.float32))  # host buffer read at every replay
    graph = raw_capture.end(s)
    keep = mg.callbacks.capture_keepalive(cid)
    assert any(isinstance(k, np.ndarray) for k in keep)
    assert raw_capture.node_count(graph) >= 4
    same(x, np.zeros(8))  # captured, not run
    exe = raw_capture.instantiate(graph)
    gc.collect()
    raw_capture.launch(exe, s)
    s.synchronize()
    same(y, np.full(8, 3.0))
    same(x, np.arange(8.0))
    raw_capture.launch(exe, s)
    s.synchronize()
    same(y, np.arange(8.0) * 2 + 3)  # (x + 1) * 2 + 1 with x = arange
    del keep


def test_host_read_during_capture_raises_and_invalidates(raw_capture):
    s = Stream()
    raw_capture.track(s)
    t = mg.ones(3)
    one = mg.ones(1)
    mg.synchronize()
    raw_capture.begin(s)
    with mg.stream(s):
        t.add_(1)
        text = repr(t)  # must not touch the device
        assert "capturing" in text
        with pytest.raises(CaptureError, match="capturing"):
            t.numpy()
        with pytest.raises(CaptureError):
            one.item()
        with pytest.raises(CaptureError):
            t.tolist()
    with pytest.raises(CaptureError):
        raw_capture.end(s)
    same(t, np.ones(3))  # the captured add never ran; t still usable
    t.add_(1)
    same(t, np.full(3, 2.0))


def test_tensor_creation_inside_graph_survives_reset():
    g = mg.MTIAGraph()
    src = mg.arange(4, dtype=mg.float32)
    mg.synchronize()
    with mg.graph(g):
        out = src * 2
        table = mg.tensor([10.0, 20.0, 30.0, 40.0])  # uploaded from a host buffer
        out.add_(table)
    g.replay()
    mg.synchronize()
    same(out, [10, 22, 34, 46])
    src.fill_(1)
    g.replay()
    mg.synchronize()
    same(out, [12, 22, 32, 42])
    g.reset()
    gc.collect()
    same(out, [12, 22, 32, 42])
    same(table, [10, 20, 30, 40])


def test_fast_path_from_a_fresh_thread():
    t = mg.zeros(1)
    mg.synchronize()
    errors = []

    def worker():
        try:
            t.add_(1)  # the first thing this thread does: its stream state is built here
            t.add_(2.0)
            mg.synchronize()
        except Exception as exc:  # noqa: BLE001 - surfaced in the main thread
            errors.append(exc)

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert not errors
    assert t.item() == 3.0


# --------------------------------------------------------------------------- operand types

NAMED_BINARY = [
    "add",
    "sub",
    "mul",
    "div",
    "maximum",
    "minimum",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
]


@pytest.mark.parametrize("name", NAMED_BINARY)
@pytest.mark.parametrize("bad", ["x", object(), {1: 2}, None])
def test_named_binary_methods_reject_other_operand_types(name, bad):
    t = mg.ones(3)
    with pytest.raises(TypeError, match=f"{name}\\(\\): expected a Tensor or a number"):
        getattr(t, name)(bad)
    same(t + 1, np.full(3, 2.0))  # the tensor is still usable


@pytest.mark.parametrize(
    "op",
    [
        operator.add,
        operator.sub,
        operator.mul,
        operator.truediv,
        operator.lt,
        operator.le,
        operator.gt,
        operator.ge,
    ],
)
def test_operators_leave_other_operand_types_to_python(op):
    class Other:
        """Takes part in any binary operation with a tensor, from either side."""

        def __init__(self):
            self.seen = []

        def _record(self, other):
            self.seen.append(other)
            return "handled"

        __radd__ = __rsub__ = __rmul__ = __rtruediv__ = _record
        __gt__ = __ge__ = __lt__ = __le__ = _record

    t, other = mg.ones(2), Other()
    assert op(t, other) == "handled" and other.seen == [t]
    with pytest.raises(TypeError):
        op(t, object())
