"""Property tests: tensor arithmetic agrees with numpy under torch's promotion rules."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import mtia_graph as mg

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

DTYPES = [mg.float32, mg.float64, mg.int32, mg.int64, mg.bool]
dtypes = st.sampled_from(DTYPES)

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.true_divide),
    "maximum": (lambda a, b: a.maximum(b), np.maximum),
    "minimum": (lambda a, b: a.minimum(b), np.minimum),
    "eq": (lambda a, b: a == b, np.equal),
    "ne": (lambda a, b: a != b, np.not_equal),
    "lt": (lambda a, b: a < b, np.less),
    "le": (lambda a, b: a <= b, np.less_equal),
    "gt": (lambda a, b: a > b, np.greater),
    "ge": (lambda a, b: a >= b, np.greater_equal),
}
COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge"}


def elements(dt):
    if dt is mg.bool:
        return st.booleans()
    if dt.is_floating_point:
        return st.floats(-1e3, 1e3, width=32 if dt is mg.float32 else 64)
    return st.integers(-1000, 1000)  # products stay inside int32


def arrays(dt, shape):
    return hnp.arrays(dt.to_numpy(), shape, elements=elements(dt))


def assert_matches(t, expected, dt):
    assert t.dtype is dt, (t.dtype, dt)
    got = t.numpy()
    assert got.shape == expected.shape
    if dt.is_floating_point:
        rtol = 2e-6 if dt is mg.float32 else 1e-12
        np.testing.assert_allclose(got, expected.astype(dt.to_numpy()), rtol=rtol, atol=1e-30)
    else:
        np.testing.assert_array_equal(got, expected)


def expected_binary(name, a_np, b_np, compute):
    if name == "div" and not compute.is_floating_point:
        compute = mg.float32
    x = np.asarray(a_np).astype(compute.to_numpy())
    y = np.asarray(b_np).astype(compute.to_numpy())
    with np.errstate(all="ignore"):
        out = BINARY[name][1](x, y)
    return np.asarray(out), (mg.bool if name in COMPARISONS else compute)


def bool_sub(name, dt):
    return name == "sub" and dt is mg.bool  # rejected by torch and numpy


@SETTINGS
@given(
    data=st.data(),
    name=st.sampled_from(sorted(BINARY)),
    da=dtypes,
    db=dtypes,
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4),
)
def test_binary_tensor_tensor(data, name, da, db, shapes):
    sa, sb = shapes.input_shapes
    a_np = data.draw(arrays(da, sa), label="a")
    b_np = data.draw(arrays(db, sb), label="b")
    a, b = mg.tensor(a_np), mg.tensor(b_np)
    compute = mg.result_type(a, b)
    assume(not bool_sub(name, compute))
    expected, out_dt = expected_binary(name, a_np, b_np, compute)
    result = BINARY[name][0](a, b)
    assert result.shape == shapes.result_shape
    assert_matches(result, expected, out_dt)


scalars = st.one_of(
    st.booleans(), st.integers(-100, 100), st.floats(-100, 100, allow_nan=False, width=32)
)


@SETTINGS
@given(
    data=st.data(),
    name=st.sampled_from(sorted(BINARY)),
    da=dtypes,
    scalar=scalars,
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    reflected=st.booleans(),
)
def test_binary_tensor_scalar(data, name, da, scalar, shape, reflected):
    a_np = data.draw(arrays(da, shape), label="a")
    a = mg.tensor(a_np)
    compute = mg.result_type(a, scalar)
    assume(not bool_sub(name, compute))
    if name in ("maximum", "minimum"):
        fn = getattr(a, name)
        result = fn(scalar)
        expected, out_dt = expected_binary(name, a_np, scalar, compute)
    elif reflected:
        result = BINARY[name][0](scalar, a)
        expected, out_dt = expected_binary(name, scalar, a_np, compute)
        expected = np.broadcast_to(expected, a_np.shape)
    else:
        result = BINARY[name][0](a, scalar)
        expected, out_dt = expected_binary(name, a_np, scalar, compute)
    assert_matches(result, expected, out_dt)


@SETTINGS
@given(
    data=st.data(),
    name=st.sampled_from(["add", "sub", "mul", "div"]),
    da=dtypes,
    db=dtypes,
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4),
)
def test_inplace_matches_numpy_or_raises(data, name, da, db, shapes):
    sa, sb = shapes.input_shapes
    a_np = data.draw(arrays(da, sa), label="a")
    b_np = data.draw(arrays(db, sb), label="b")
    a, b = mg.tensor(a_np), mg.tensor(b_np)
    compute = mg.result_type(a, b)
    if name == "div" and not compute.is_floating_point:
        compute = mg.float32
    before = a.numpy()
    op = getattr(a, name + "_")
    if not mg.can_cast(compute, da):
        with pytest.raises(RuntimeError):
            op(b)
        np.testing.assert_array_equal(a.numpy(), before)
        return
    if shapes.result_shape != tuple(sa):
        with pytest.raises(ValueError):
            op(b)
        np.testing.assert_array_equal(a.numpy(), before)
        return
    assume(not bool_sub(name, compute))
    expected, _ = expected_binary(name, a_np, b_np, compute)
    assert op(b) is a
    assert_matches(a, expected.astype(da.to_numpy()), da)


@SETTINGS
@given(
    data=st.data(),
    dt=st.sampled_from([mg.float32, mg.float64, mg.int32, mg.int64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
    keepdim=st.booleans(),
)
def test_sum_matches_numpy(data, dt, shape, keepdim):
    a_np = data.draw(arrays(dt, shape), label="a")
    a = mg.tensor(a_np)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    out_dt = dt if dt.is_floating_point else mg.int64
    expected = a_np.astype(out_dt.to_numpy()).sum(axis=axis, keepdims=keepdim)
    got = a.sum(axis, keepdim=keepdim)
    assert got.dtype is out_dt
    np.testing.assert_allclose(
        got.numpy(),
        expected,
        rtol=1e-4 if dt is mg.float32 else 1e-9,
        atol=1e-2 if dt is mg.float32 else 1e-9,
    )
    np.testing.assert_allclose(
        a.sum().numpy(), a_np.astype(out_dt.to_numpy()).sum(), rtol=1e-4, atol=1e-2
    )


@SETTINGS
@given(
    data=st.data(),
    src=dtypes,
    dst=dtypes,
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)
def test_cast_matches_numpy(data, src, dst, shape):
    a_np = data.draw(arrays(src, shape), label="a")
    got = mg.tensor(a_np).to(dst)
    assert got.dtype is dst
    np.testing.assert_array_equal(got.numpy(), a_np.astype(dst.to_numpy()))


@SETTINGS
@given(
    data=st.data(),
    dt=st.sampled_from([mg.float32, mg.float64, mg.int64]),
    m=st.integers(1, 6),
    k=st.integers(0, 6),
    n=st.integers(1, 6),
    batch=st.sampled_from([(), (2,), (1, 3)]),
)
def test_matmul_matches_numpy(data, dt, m, k, n, batch):
    a_np = data.draw(arrays(dt, (*batch, m, k)), label="a")
    b_np = data.draw(arrays(dt, (k, n) if data.draw(st.booleans()) else (*batch, k, n)), label="b")
    got = mg.tensor(a_np) @ mg.tensor(b_np)
    expected = a_np @ b_np
    assert got.dtype is dt and got.shape == expected.shape
    if dt.is_floating_point:
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-2)
    else:
        np.testing.assert_array_equal(got.numpy(), expected)


@SETTINGS
@given(data=st.data(), dt=dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=4))
def test_reshape_roundtrip_and_copy(data, dt, shape):
    a_np = data.draw(arrays(dt, shape), label="a")
    a = mg.tensor(a_np)
    flat = a.reshape(-1)
    np.testing.assert_array_equal(flat.numpy(), a_np.reshape(-1))
    assert flat.data_ptr() == a.data_ptr()
    back = flat.view(*shape) if shape else flat.view(())
    np.testing.assert_array_equal(back.numpy(), a_np)
    c = mg.empty_like(a).copy_(a_np)
    np.testing.assert_array_equal(c.numpy(), a_np)
