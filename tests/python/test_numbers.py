"""Numbers and error types: a Python value out of a dtype's range raises (torch's message,
as MTIAValueError, which is both a RuntimeError and a ValueError), nothing wraps silently;
sizes and ids beyond what the runtime holds raise MTIAValueError naming the limit, never a
bare OverflowError; priorities clamp; graphs, streams and events cannot be copied."""

from __future__ import annotations

import copy
import math
import operator
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mtia_graph as mg
from mtia_graph import MTIAValueError

OVERFLOW = "without overflow"
INT_DTYPES = [mg.int32, mg.int64]
ALL_DTYPES = [mg.float32, mg.float64, mg.int32, mg.int64, mg.bool]


def test_value_error_is_a_runtime_error_and_a_value_error():
    assert issubclass(MTIAValueError, RuntimeError) and issubclass(MTIAValueError, ValueError)


# --------------------------------------------------------------------- Python values


@pytest.mark.parametrize(
    "make",
    [
        lambda: mg.tensor([2**63]),
        lambda: mg.tensor([-1, 2**63]),  # numpy would make this float64
        lambda: mg.tensor(2**70),
        lambda: mg.tensor([[1, 2], [3, 2**64]]),
        lambda: mg.tensor([-(2**63) - 1]),
        lambda: mg.tensor([2**40], dtype=mg.int32),
        lambda: mg.tensor([1e30], dtype=mg.int64),
        lambda: mg.tensor([math.nan], dtype=mg.int32),
        lambda: mg.tensor([math.inf], dtype=mg.int64),
        lambda: mg.full((2,), 2**40, dtype=mg.int32),
        lambda: mg.full((2,), 1e30, dtype=mg.int64),
        lambda: mg.full((2,), 2**63, dtype=mg.int64),
        lambda: mg.full((2,), -(2**31) - 1, dtype=mg.int32),
        lambda: mg.full((2,), 1e300, dtype=mg.float32),
        lambda: mg.full((2,), 2**2000, dtype=mg.float64),
        lambda: mg.zeros(2, dtype=mg.int32).fill_(2**31),
        lambda: mg.zeros(2, dtype=mg.int32).fill_(1e10),
        lambda: mg.zeros(2).fill_(1e300),
        lambda: mg.zeros(2, dtype=mg.int32) + 2**40,
        lambda: 2**40 + mg.zeros(2, dtype=mg.int32),
        lambda: mg.zeros(2, dtype=mg.int32).add_(2**40),
        lambda: mg.zeros(2, dtype=mg.int32).sub_(2**31),
        lambda: mg.zeros(2, dtype=mg.int32).mul_(np.int64(2**40)),
        lambda: mg.zeros(2, dtype=mg.int64) + 2**63,
        lambda: mg.zeros(2, dtype=mg.int32).add_(1, alpha=2**40),
        lambda: mg.zeros(2, dtype=mg.int32).maximum(2**40),
        lambda: mg.zeros(2) * 2**2000,
        lambda: mg.where(mg.tensor([True, False]), mg.zeros(2, dtype=mg.int32), 2**40),
        lambda: mg.where(mg.tensor([True, False]), 2**63, 0),
        lambda: mg.zeros(3, dtype=mg.int32).copy_([2**40, 0, 0]),
        lambda: mg.zeros(2, dtype=mg.int32).__setitem__(0, 2**40),
        lambda: mg.arange(2**40, 2**40 + 3, dtype=mg.int32),
        lambda: mg.zeros(2) < 2**2000,
    ],
)
def test_values_a_dtype_does_not_hold_raise_as_in_torch(make):
    with pytest.raises(MTIAValueError, match=OVERFLOW) as info:
        make()
    assert isinstance(info.value, RuntimeError)  # what torch raises (and ports catch)
    # the message names the dtype's range
    assert " holds " in str(info.value)


def test_what_fits_still_works():
    assert mg.tensor([2**63 - 1, -(2**63)]).tolist() == [2**63 - 1, -(2**63)]
    assert mg.tensor([1.5, 2**63]).dtype is mg.float32  # a float makes it float32, as torch
    assert mg.tensor([True, 2]).tolist() == [1, 2]
    assert mg.tensor([3.7, -3.7], dtype=mg.int32).tolist() == [3, -3]  # truncates, as torch
    assert mg.tensor([1e300], dtype=mg.float32).tolist() == [math.inf]  # as torch
    assert mg.tensor([2**70], dtype=mg.float32).item() == float(2**70)
    assert mg.full((2,), 2**31 - 1, dtype=mg.int32).tolist() == [2**31 - 1] * 2
    assert mg.full((2,), -(2**31), dtype=mg.int32).tolist() == [-(2**31)] * 2
    assert mg.full((1,), math.inf).item() == math.inf
    assert mg.zeros(2, dtype=mg.bool).fill_(5).tolist() == [True, True]
    assert (mg.zeros(2, dtype=mg.int32) + (2**31 - 1)).tolist() == [2**31 - 1] * 2
    assert (mg.zeros(2, dtype=mg.int32) / 2**64).dtype is mg.float32  # computed as floats
    assert (mg.zeros(2, dtype=mg.bool) + 2**40).tolist() == [2**40] * 2  # int64
    assert (mg.zeros(2) + 1e300).tolist() == [math.inf] * 2  # as numpy and torch
    assert mg.arange(2**31 - 3, 2**31, dtype=mg.int32).tolist() == [2**31 - 3, 2**31 - 2, 2**31 - 1]
    # arrays are converted as casts are, like torch's tensor(array, dtype=...)
    assert mg.tensor(np.array([2**40 + 5]), dtype=mg.int32).tolist() == [5]


@pytest.mark.parametrize("dt", INT_DTYPES)
@pytest.mark.parametrize("big", [2**63, 2**64, 2**200, 2**31])
def test_comparisons_with_integers_beyond_the_dtype_are_exact(dt, big):
    """torch wraps the scalar (int32 == 2**40 gives True); numpy 2 answers exactly."""
    if dt is mg.int64 and big == 2**31:
        big = 2**63
    x = mg.tensor([-5, 0, 7], dtype=dt)
    cases = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
        "==": operator.eq,
        "!=": operator.ne,
    }
    for value in (big, -big - 1):
        for name, op in cases.items():
            want = [op(v, value) for v in (-5, 0, 7)]
            assert op(x, value).tolist() == want, (name, value)
            assert op(value, x).tolist() == [op(value, v) for v in (-5, 0, 7)], (name, value)
        assert x.eq(value).dtype is mg.bool


# --------------------------------------------------------------------- sizes, ids, priorities


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: mg.empty(2**62), "2**63 - 1"),
        (lambda: mg.zeros(2**61, 4), "2**63 - 1"),
        (lambda: mg.arange(2**62), "2**63 - 1"),
        (lambda: mg.zeros(0, 2**70), "dimension"),
        (lambda: mg.ones(2**64), "dimension"),
        (lambda: mg.full((2**63,), 1), "dimension"),
        (lambda: mg.MTIAGraph().capture_begin((2**64, 0)), "2**64"),
        (lambda: mg.MTIAGraph().capture_begin((0, -1)), "2**64"),
        (lambda: mg.graph(mg.MTIAGraph(), pool=(0, 2**64)), "2**64"),
        (lambda: mg.arange(0, 2**63), "2**63 - 1"),
        (lambda: mg.arange(0, 1e30), "2**63 - 1"),
        (lambda: mg.arange(0, 2**1100, 2**1090), "double"),
    ],
)
def test_sizes_and_ids_beyond_the_limits_raise_value_errors(make, words):
    with pytest.raises(MTIAValueError) as info:
        make()
    assert words in str(info.value)
    assert not isinstance(info.value, OverflowError)


def test_priorities_clamp_whatever_their_magnitude():
    least = mg.get_device_properties()["least_stream_priority"]
    greatest = mg.get_device_properties()["greatest_stream_priority"]
    assert mg.Stream(priority=2**70).priority == least
    assert mg.Stream(priority=-(2**70)).priority == greatest
    assert mg.Stream(priority=-(2**31)).priority == greatest


# --------------------------------------------------------------------- copies of handles


@pytest.mark.parametrize(
    "make",
    [mg.MTIAGraph, mg.Stream, mg.Event, mg.default_stream, mg.current_stream],
    ids=["MTIAGraph", "Stream", "Event", "default_stream", "current_stream"],
)
def test_graphs_streams_and_events_refuse_copy_and_pickle(make):
    obj = make()
    for how in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            how(obj)


def test_a_graph_is_not_copied_into_two_owners():
    """copy.copy(g) made two owners of one executable: when the copy died, the original's
    replay() raised InvalidHandleError."""
    x = mg.zeros(2)
    g = mg.MTIAGraph()
    with mg.graph(g):
        x.add_(1)
    with pytest.raises(TypeError):
        copy.copy(g)
    g.replay()
    assert x.tolist() == [1.0, 1.0]


# --------------------------------------------------------------------- property test
#
# Random Python scalars x dtypes x operations: the result either raises MTIAValueError (the
# value does not fit the dtype the operation computes in) or equals numpy's, computed in
# that same dtype, exactly. Nothing wraps.

SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63)]),
    st.sampled_from([-(2**63) - 1, 2**64, 2**2000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, -2.5, 3.4e38, 3.5e38, 1e300, -1e-45]),
)
BINARY = {
    "add": (operator.add, np.add),
    "sub": (operator.sub, np.subtract),
    "mul": (operator.mul, np.multiply),
    "div": (operator.truediv, np.true_divide),
    "maximum": (lambda a, b: a.maximum(b), np.maximum),
    "minimum": (lambda a, b: a.minimum(b), np.minimum),
}
COMPARE = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}
ELEMENTS = {
    mg.float32: [-3.5, 0.0, 1.0, 2.0**100],
    mg.float64: [-3.5, 0.0, 1.0, 2.0**1000],
    mg.int32: [-(2**31), -7, 0, 2**31 - 1],
    mg.int64: [-(2**63), -7, 0, 2**63 - 1],
    mg.bool: [True, False, True, False],
}


def _fits(value, dt):
    """Whether numpy can hold the Python number ``value`` as ``dt`` without wrapping."""
    if dt is mg.bool:
        return True
    if dt.is_floating_point:
        try:
            float(value)
        except OverflowError:
            return False
        return True
    return isinstance(value, (bool, int)) and dt._min <= value <= dt._max


def _compute_dtype(x, value, name):
    dt = mg.result_type(x, value)
    if name == "div" and not dt.is_floating_point:
        return mg.float32
    return dt


def _numpy(dt, elements, value, np_op):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        a = np.asarray(elements, dtype=np.float64 if dt.is_floating_point else object)
        a = a.astype(dt.to_numpy())
        b = np.asarray(value).astype(dt.to_numpy())
        return np_op(a, b)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    dt=st.sampled_from(ALL_DTYPES),
    value=SCALARS,
    name=st.sampled_from(sorted(BINARY) + sorted(COMPARE)),
    reverse=st.booleans(),
)
def test_scalar_operations_raise_or_match_numpy_exactly(dt, value, name, reverse):
    elements = ELEMENTS[dt]
    x = mg.tensor(elements, dtype=dt)
    compute = _compute_dtype(x, value, name)
    if name in COMPARE:
        op = COMPARE[name]
        if not _fits(value, compute) and compute.is_floating_point:
            with pytest.raises(MTIAValueError, match=OVERFLOW):  # numpy raises too
                _ = op(value, x) if reverse else op(x, value)
            return
        got = op(value, x) if reverse else op(x, value)
        if not _fits(value, compute):
            # exact, as numpy 2: every element compares the same way
            want = [op(value, v) if reverse else op(v, value) for v in elements]
            assert got.tolist() == want
            return
        np_op = {
            "lt": np.less,
            "le": np.less_equal,
            "gt": np.greater,
            "ge": np.greater_equal,
            "eq": np.equal,
            "ne": np.not_equal,
        }[name]
        want = _numpy(compute, elements, value, (lambda a, b: np_op(b, a)) if reverse else np_op)
        np.testing.assert_array_equal(got.numpy(), want)
        return
    op, np_op = BINARY[name]
    if name in ("maximum", "minimum"):
        reverse = False  # methods of the tensor
    if compute is mg.bool and name in ("sub",):
        with pytest.raises(MTIAValueError):
            op(x, value)
        return
    if not _fits(value, compute):
        with pytest.raises(MTIAValueError, match=OVERFLOW):
            _ = op(value, x) if reverse else op(x, value)
        return
    got = op(value, x) if reverse else op(x, value)
    assert got.dtype is compute or (name == "div" and got.dtype.is_floating_point)
    want = _numpy(compute, elements, value, (lambda a, b: np_op(b, a)) if reverse else np_op)
    np.testing.assert_array_equal(got.numpy(), want.astype(got.dtype.to_numpy()))


def test_scalar_comparisons_with_unrepresentable_floats_raise():
    with pytest.raises(MTIAValueError, match=OVERFLOW):
        _ = mg.zeros(2) < 2**2000


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(dt=st.sampled_from(ALL_DTYPES), value=SCALARS)
def test_fill_full_and_tensor_raise_or_store_the_value(dt, value):
    """Storing a value (fill_, full, tensor([v], dtype)) needs the dtype to hold it, as in
    torch: integers exactly (floats truncate, NaN and inf do not fit), floats up to their
    largest finite value (beyond: torch raises for fill/full, and tensor() gives inf)."""
    if dt is mg.bool:
        fits = True
        stored = bool(value)
    elif dt.is_floating_point:
        try:
            f = float(value)
        except OverflowError:
            f = None
        fits = f is not None and (not math.isfinite(f) or abs(f) <= dt._max)
        stored = f
    else:
        if isinstance(value, float):
            fits = math.isfinite(value) and dt._min - 1 < value < dt._max + 1
            stored = int(value) if fits else None
        else:
            fits = dt._min <= value <= dt._max
            stored = int(value)
    for make in (
        lambda: mg.zeros(2, dtype=dt).fill_(value),
        lambda: mg.full((2,), value, dtype=dt),
    ):
        if not fits:
            with pytest.raises(MTIAValueError, match=OVERFLOW):
                make()
            continue
        got = make().tolist()
        want = np.asarray([stored, stored], dtype=dt.to_numpy()).tolist()
        assert got == want or (dt.is_floating_point and all(map(math.isnan, got + want)))
