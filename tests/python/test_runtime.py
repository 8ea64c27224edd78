"""Devices, initialisation, errors and the package surface."""

import inspect
import threading

import pytest

import mtia_graph
from mtia_graph import Device
from mtia_graph._C import ffi, lib

# --------------------------------------------------------------------------- surface

TORCH_MTIA_NAMES = [
    "is_available",
    "init",
    "is_initialized",
    "device_count",
    "current_device",
    "set_device",
    "device",
    "get_device_properties",
    "get_device_capability",
    "synchronize",
    "Stream",
    "Event",
    "current_stream",
    "default_stream",
    "set_stream",
    "stream",
    "StreamContext",
    "is_current_stream_capturing",
    "empty_cache",
    "memory_stats",
    "memory_allocated",
    "max_memory_allocated",
    "memory_reserved",
    "max_memory_reserved",
    "reset_peak_memory_stats",
    "snapshot",
    "attach_out_of_memory_observer",
    "MTIAGraph",
    "graph",
    "graph_pool_handle",
    "Tensor",
    "float32",
    "float64",
    "int32",
    "int64",
    "bool",
    "empty",
    "zeros",
    "ones",
    "full",
    "arange",
    "tensor",
    "from_numpy",
    "empty_like",
    "zeros_like",
    "full_like",
]


@pytest.mark.parametrize("name", TORCH_MTIA_NAMES)
def test_torch_mtia_names_exist(name):
    assert hasattr(mtia_graph, name)


def test_all_is_consistent():
    for name in mtia_graph.__all__:
        assert hasattr(mtia_graph, name), name


def test_torch_dtype_aliases():
    assert mtia_graph.float is mtia_graph.float32
    assert mtia_graph.double is mtia_graph.float64
    assert mtia_graph.long is mtia_graph.int64
    assert mtia_graph.int is mtia_graph.int32
    assert "float" not in mtia_graph.__all__


# What each public name is; a refactoring must not turn a class into a function or lose
# a name.
PUBLIC_KINDS = {
    "exception": [
        "MTIAError",
        "OutOfMemoryError",
        "InvalidHandleError",
        "KernelError",
        "CaptureError",
        "MTIAValueError",
        "RaceError",
        "RaceWarning",
        "PoolOrderWarning",
    ],
    "class": [
        "Device",
        "DeviceProperties",
        "device",
        "Stream",
        "Event",
        "StreamContext",
        "MTIAGraph",
        "graph",
        "Tensor",
        "dtype",
        "Kernel",
        "PythonKernel",
        "Race",
        "RaceNode",
    ],
    "function": [
        "is_available",
        "init",
        "is_initialized",
        "device_count",
        "current_device",
        "set_device",
        "get_device_properties",
        "get_device_capability",
        "stream",
        "current_stream",
        "default_stream",
        "set_stream",
        "synchronize",
        "is_current_stream_capturing",
        "launch_host_func",
        "empty_cache",
        "memory_stats",
        "memory_allocated",
        "max_memory_allocated",
        "memory_reserved",
        "max_memory_reserved",
        "reset_peak_memory_stats",
        "reset_accumulated_memory_stats",
        "snapshot",
        "memory_snapshot",
        "mem_get_info",
        "record_memory_history",
        "attach_out_of_memory_observer",
        "detach_out_of_memory_observer",
        "graph_pool_handle",
        "while_",
        "if_",
        "set_graph_fusion",
        "get_default_dtype",
        "result_type",
        "promote_types",
        "can_cast",
        "empty",
        "zeros",
        "ones",
        "full",
        "arange",
        "tensor",
        "from_numpy",
        "empty_like",
        "zeros_like",
        "ones_like",
        "full_like",
        "where",
        "matmul",
        "from_dlpack",
        "load_kernel",
        "kernel",
        "set_pool_order_check",
    ],
    "dtype": ["float32", "float64", "int32", "int64", "bool"],
}


def _kind_of(obj):
    if isinstance(obj, type):
        return "exception" if issubclass(obj, BaseException) else "class"
    if isinstance(obj, mtia_graph.dtype):
        return "dtype"
    return "function" if inspect.isfunction(obj) else type(obj).__name__


def test_public_names_keep_their_kinds():
    listed = [name for names in PUBLIC_KINDS.values() for name in names]
    assert sorted(listed) == sorted(mtia_graph.__all__)
    for kind, names in PUBLIC_KINDS.items():
        for name in names:
            obj = getattr(mtia_graph, name)
            assert _kind_of(obj) == kind, name
            if kind != "dtype":
                assert obj.__module__.split(".")[0] == "mtia_graph", (name, obj.__module__)


@pytest.mark.parametrize(
    "alias,name",
    [
        ("float", "float32"),
        ("double", "float64"),
        ("int", "int32"),
        ("long", "int64"),
        ("bool", "bool"),
    ],
)
def test_torch_dtype_names_are_the_dtypes(alias, name):
    import pickle

    dt = getattr(mtia_graph, alias)
    assert isinstance(dt, mtia_graph.dtype) and dt.name == name
    assert getattr(mtia_graph, name) is dt
    assert repr(dt) == f"mtia_graph.{name}"
    assert pickle.loads(pickle.dumps(dt)) is dt
    assert mtia_graph.tensor([1], dtype=alias).dtype is dt  # names work as dtype arguments


def test_no_module_of_the_package_shadows_a_builtin():
    # Only the package namespace binds torch's builtin-named dtypes (bool, float, int).
    import builtins
    import importlib
    import pkgutil

    shadowing = {}
    for info in pkgutil.walk_packages(mtia_graph.__path__, "mtia_graph."):
        if info.name.startswith("mtia_graph.bench") or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        names = {n for n in vars(module) if not n.startswith("__") and hasattr(builtins, n)}
        if names:
            shadowing[info.name] = sorted(names)
    assert not shadowing


def test_graph_names_come_from_graphs_module():
    from mtia_graph import graphs

    assert mtia_graph.MTIAGraph is graphs.MTIAGraph
    assert mtia_graph.graph is graphs.graph
    assert mtia_graph.graph_pool_handle is graphs.graph_pool_handle


def test_exception_hierarchy():
    assert issubclass(mtia_graph.MTIAError, RuntimeError)
    for cls in (
        mtia_graph.OutOfMemoryError,
        mtia_graph.InvalidHandleError,
        mtia_graph.KernelError,
        mtia_graph.CaptureError,
        mtia_graph.MTIAValueError,
    ):
        assert issubclass(cls, mtia_graph.MTIAError)
    assert issubclass(mtia_graph.MTIAValueError, ValueError)


# --------------------------------------------------------------------------- init


def test_import_does_not_initialise(subprocess_python):
    r = subprocess_python("""
        import mtia_graph
        print(mtia_graph.is_initialized())
        mtia_graph.init()
        mtia_graph.init()  # idempotent
        print(mtia_graph.is_initialized(), mtia_graph.is_available())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True"]


def test_device_count_from_environment(subprocess_python):
    r = subprocess_python(
        "import mtia_graph; print(mtia_graph.device_count())", env={"MTIART_NUM_DEVICES": "3"}
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "3"


def test_available_and_initialised():
    assert mtia_graph.is_available()
    mtia_graph.init()
    assert mtia_graph.is_initialized()
    assert mtia_graph.device_count() >= 1


# --------------------------------------------------------------------------- devices


def test_current_device_and_set_device():
    assert mtia_graph.current_device() == 0
    if mtia_graph.device_count() > 1:
        mtia_graph.set_device(1)
        assert mtia_graph.current_device() == 1
        mtia_graph.set_device("mtia:0")
        assert mtia_graph.current_device() == 0
        mtia_graph.set_device(Device(1))
        assert mtia_graph.current_device() == 1
    mtia_graph.set_device(0)


@pytest.mark.parametrize("bad", [-1, 64, "mtia:64"])
def test_set_device_out_of_range(bad):
    with pytest.raises(ValueError):
        mtia_graph.set_device(bad)
    assert mtia_graph.current_device() == 0


@pytest.mark.parametrize("bad", [1.0, None, [0], True, object()])
def test_set_device_wrong_type(bad):
    with pytest.raises((TypeError, ValueError)):
        mtia_graph.set_device(bad)
    if bad is not None:
        with pytest.raises(TypeError):
            mtia_graph.set_device(bad)


def test_set_device_bad_string():
    with pytest.raises(ValueError):
        mtia_graph.set_device("cuda:0")
    with pytest.raises(ValueError):
        mtia_graph.set_device("mtia:x")


def test_device_context_manager_restores():
    n = mtia_graph.device_count()
    target = 1 if n > 1 else 0
    with mtia_graph.device(target) as ctx:
        assert mtia_graph.current_device() == target
        assert isinstance(ctx, mtia_graph.device)
        with mtia_graph.device(None):
            assert mtia_graph.current_device() == target
        with mtia_graph.device(0):
            assert mtia_graph.current_device() == 0
        assert mtia_graph.current_device() == target
    assert mtia_graph.current_device() == 0


def test_device_context_manager_restores_on_exception():
    target = mtia_graph.device_count() - 1
    with pytest.raises(KeyError), mtia_graph.device(target):
        raise KeyError("x")
    assert mtia_graph.current_device() == 0


def test_device_context_manager_bad_index():
    with pytest.raises(ValueError):
        mtia_graph.device(99)
    with pytest.raises(TypeError):
        mtia_graph.device(2.5)


def test_current_device_is_per_thread():
    if mtia_graph.device_count() < 2:
        pytest.skip("needs two devices")
    seen = {}

    def worker():
        seen["start"] = mtia_graph.current_device()
        mtia_graph.set_device(1)
        seen["after"] = mtia_graph.current_device()

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert seen == {"start": 0, "after": 1}
    assert mtia_graph.current_device() == 0


def test_device_value_type():
    d = Device(0)
    assert str(d) == "mtia:0"
    assert repr(d) == "device(type='mtia', index=0)"
    assert d.type == "mtia" and d.index == 0
    assert Device("mtia:0") == d == Device("mtia", 0) == Device(d)
    assert d == "mtia:0"
    assert d != Device(1)
    assert d != 0  # not an int
    assert hash(d) == hash(Device("mtia:0"))
    assert len({Device(0), Device("mtia:0"), Device(1)}) == 2
    generic = Device("mtia")
    assert generic.index is None and str(generic) == "mtia"
    import pickle

    assert pickle.loads(pickle.dumps(d)) == d


@pytest.mark.parametrize(
    "args,exc",
    [
        (("cpu",), ValueError),
        (("mtia:-1",), ValueError),
        (("mtia:a",), ValueError),
        ((-1,), ValueError),
        ((1.5,), TypeError),
        ((None,), TypeError),
        ((True,), TypeError),
        (("mtia:1", 1), ValueError),
        (("mtia", "1"), TypeError),
    ],
)
def test_device_value_type_errors(args, exc):
    with pytest.raises(exc):
        Device(*args)


def test_get_device_properties():
    p = mtia_graph.get_device_properties()
    assert p.index == 0
    assert p.name
    assert p.total_memory > 0
    assert p.num_workers >= 1
    assert p.greatest_stream_priority < 0 == p.least_stream_priority
    assert p["total_memory"] == p.total_memory  # torch.mtia returns a dict
    assert "name" in p.keys()  # noqa: SIM118 - keys() itself is under test
    with pytest.raises(KeyError):
        p["nope"]
    # a dict, as torch.mtia's, whose keys read as attributes too
    assert isinstance(p, dict) and p == dict(p)
    assert set(p) == {
        "name",
        "index",
        "total_memory",
        "num_workers",
        "major",
        "minor",
        "segment_granularity",
        "least_stream_priority",
        "greatest_stream_priority",
    }
    with pytest.raises(AttributeError):
        _ = p.nope
    with pytest.raises(AttributeError):
        p.total_memory = 1
    import pickle

    assert pickle.loads(pickle.dumps(p)) == p
    assert mtia_graph.get_device_capability() == (p.major, p.minor)
    assert all(isinstance(x, int) for x in mtia_graph.get_device_capability(0))


def test_get_device_properties_other_device():
    last = mtia_graph.device_count() - 1
    assert mtia_graph.get_device_properties(last).index == last
    assert mtia_graph.get_device_properties(f"mtia:{last}").index == last


def test_get_device_properties_errors():
    with pytest.raises(ValueError):
        mtia_graph.get_device_properties(mtia_graph.device_count())
    with pytest.raises(TypeError):
        mtia_graph.get_device_properties(0.0)
    with pytest.raises(ValueError):
        mtia_graph.get_device_capability(-3)


def test_device_memory_capacity_from_environment(subprocess_python):
    r = subprocess_python(
        """
        import mtia_graph
        print(mtia_graph.get_device_properties().total_memory)
    """,
        env={"MTIART_DEVICE_MEMORY": "96M"},
    )
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == 96 << 20


# --------------------------------------------------------------------------- errors


def test_check_maps_status_codes():
    from mtia_graph import _C

    with pytest.raises(mtia_graph.InvalidHandleError) as info:
        _C.check(lib.mtiart_stream_query(ffi.NULL), "query")
    assert info.value.status == lib.MTIART_ERROR_INVALID_HANDLE
    assert info.value.status_name == "MTIART_ERROR_INVALID_HANDLE"
    assert "query" in str(info.value)
    assert _C.check(lib.MTIART_NOT_READY) == lib.MTIART_NOT_READY


def test_runtime_usable_after_failed_calls():
    t = mtia_graph.ones(4)
    with pytest.raises(mtia_graph.InvalidHandleError):
        mtia_graph._C.check(lib.mtiart_stream_synchronize(ffi.NULL))
    with pytest.raises(ValueError):
        t.add_(mtia_graph.ones(3))
    with pytest.raises(ValueError):
        mtia_graph.empty(-1)
    with pytest.raises(mtia_graph.MTIAValueError):  # rejected by the kernel library
        mtia_graph.ones(2, dtype=mtia_graph.bool) - mtia_graph.ones(2, dtype=mtia_graph.bool)
    s = mtia_graph.Stream()
    with mtia_graph.stream(s):
        t.add_(1)
    s.synchronize()
    mtia_graph.synchronize()
    assert t.tolist() == [2.0] * 4


def test_destroyed_stream_handle_is_an_error_not_a_crash():
    s = mtia_graph.Stream()
    assert lib.mtiart_stream_destroy(s._handle) == 0
    with pytest.raises(mtia_graph.InvalidHandleError):
        s.synchronize()
    with pytest.raises(mtia_graph.InvalidHandleError):
        s.query()
    with pytest.raises(mtia_graph.InvalidHandleError):
        s.launch_host_func(lambda: None)
    with mtia_graph.stream(s), pytest.raises(mtia_graph.InvalidHandleError):
        mtia_graph.zeros(3)
    # everything else still works
    t = mtia_graph.zeros(3)
    assert t.tolist() == [0.0, 0.0, 0.0]
    del s  # its ffi.gc destructor now fails quietly


def test_foreign_handle_is_an_error():
    e = mtia_graph.Event()
    # an event handle where a stream is expected
    status = lib.mtiart_stream_synchronize(ffi.cast("mtiart_stream", e._handle))
    assert status == lib.MTIART_ERROR_INVALID_HANDLE
    mtia_graph.synchronize()
