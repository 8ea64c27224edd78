"""Devices: the ``torch.mtia`` device functions over libmtiart's emulated devices.

The current device is state of the calling thread, as in torch: a thread starts on device 0
(streams.py keeps each thread's current stream of every device).
The runtime initialises lazily, on the first call that needs it (or :func:`init`);
``MTIART_NUM_DEVICES`` / ``MTIART_DEVICE_MEMORY`` / ``MTIART_NUM_WORKERS`` are read then.
"""

from __future__ import annotations

import threading
from typing import Any

from ._C import MTIAError, check, ffi, lib

__all__ = [
    "Device",
    "DeviceProperties",
    "current_device",
    "device",
    "device_count",
    "get_device_capability",
    "get_device_properties",
    "init",
    "is_available",
    "is_initialized",
    "set_device",
]


class Device:
    """An mtia device, the value tensors report as ``.device`` (prints as ``mtia:0``).

    ``Device(0)``, ``Device("mtia:0")``, ``Device("mtia", 0)`` and ``Device(other_device)``
    name device 0; ``Device("mtia")`` names "the current device" (``index`` is None).
    """

    __slots__ = ("_index",)

    _index: int | None

    def __init__(
        self, type_or_index: str | int | Device = "mtia", index: int | None = None
    ) -> None:
        idx: int | None
        if isinstance(type_or_index, Device):
            if index is not None:
                raise TypeError("Device(Device, index) is not supported")
            idx = type_or_index._index
        elif isinstance(type_or_index, str):
            typ, sep, rest = type_or_index.partition(":")
            if typ != "mtia":
                raise ValueError(f"expected an 'mtia' device, got {type_or_index!r}")
            if sep:
                if index is not None:
                    raise ValueError(f"device string {type_or_index!r} already has an index")
                if not rest.isdigit():
                    raise ValueError(f"invalid device string {type_or_index!r}")
                idx = int(rest)
            else:
                idx = _check_int_index(index) if index is not None else None
        elif isinstance(type_or_index, int) and not isinstance(type_or_index, bool):
            if index is not None:
                raise TypeError("Device(int, index) is not supported")
            idx = _check_int_index(type_or_index)
        else:
            raise TypeError(
                f"Device() expects a str, int or Device, got {type(type_or_index).__name__}"
            )
        self._index = idx

    @property
    def type(self) -> str:
        """Always ``"mtia"``."""
        return "mtia"

    @property
    def index(self) -> int | None:
        """The device index (None for "the current device")."""
        return self._index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Device):
            return self._index == other._index
        if isinstance(other, str):
            try:
                return self == Device(other)
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("mtia", self._index))

    def __str__(self) -> str:
        return "mtia" if self._index is None else f"mtia:{self._index}"

    def __repr__(self) -> str:
        if self._index is None:
            return "device(type='mtia')"
        return f"device(type='mtia', index={self._index})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Device, (str(self),))


# What the functions taking a device accept (None: the current device).
_DeviceLike = int | str | Device | None


def _check_int_index(index: Any) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"device index must be an int, got {type(index).__name__}")
    if index < 0:
        raise ValueError(f"device index must be non-negative, got {index}")
    return index


# One Device per index: tensors hand these out, so `.device` allocates nothing.
_device_objects: list[Device] = []


def _device_object(index: int) -> Device:
    while len(_device_objects) <= index:
        _device_objects.append(Device(len(_device_objects)))
    return _device_objects[index]


_num_devices: int | None = None


def device_count() -> int:
    """Number of devices (initialises the runtime)."""
    global _num_devices
    if _num_devices is None:
        count = ffi.new("int *")
        check(lib.mtiart_device_count(count), "device_count")
        _num_devices = int(count[0])
    return _num_devices


def is_available() -> bool:
    """Whether the runtime can be initialised and has at least one device."""
    try:
        return device_count() > 0
    except MTIAError:
        return False


def init() -> None:
    """Initialise the runtime now (it also initialises itself on first use)."""
    check(lib.mtiart_init(), "init")


def is_initialized() -> bool:
    """Whether the runtime has been initialised in this process."""
    return bool(lib.mtiart_is_initialized())


def _device_index(dev: object, optional: bool = True) -> int:
    """A validated device index from an int, ``"mtia[:N]"``, :class:`Device` or None.

    None (and a Device without index) means the current device when ``optional``.
    Raises TypeError for other types and ValueError for an index out of range.
    """
    if dev is None:
        if not optional:
            raise TypeError("expected a device (int, str or mtia_graph.Device), got None")
        return _current.index
    if isinstance(dev, int) and not isinstance(dev, bool):
        idx = dev
    elif isinstance(dev, (str, Device)):
        named = Device(dev)._index
        if named is None:
            return _current.index
        idx = named
    else:
        raise TypeError(
            f"expected a device (int, str or mtia_graph.Device), got {type(dev).__name__}"
        )
    n = device_count()
    if not 0 <= idx < n:
        raise ValueError(
            f"invalid device index {idx}: there {'is' if n == 1 else 'are'} "
            f"{n} mtia device{'' if n == 1 else 's'}"
        )
    return idx


class _ThreadDevice(threading.local):
    """The calling thread's current device (streams.py keeps its current streams)."""

    def __init__(self) -> None:
        self.index = 0


_current = _ThreadDevice()


def _make_current(index: int) -> None:
    """Make the (validated) device ``index`` the calling thread's current device."""
    _current.index = index


def current_device() -> int:
    """Index of the calling thread's current device."""
    return _current.index


def set_device(device: int | str | Device) -> None:
    """Set the calling thread's current device."""
    _current.index = _device_index(device, optional=False)


class device:
    """Context manager that changes the current device (``None`` leaves it unchanged)."""

    def __init__(self, device: _DeviceLike) -> None:
        self.idx = -1 if device is None else _device_index(device)
        self.prev_idx = -1

    def __enter__(self) -> device:
        self.prev_idx = _current.index
        if self.idx != -1:
            _current.index = self.idx
        return self

    def __exit__(self, type: Any, value: Any, traceback: Any) -> None:  # noqa: A002 - torch's names
        _current.index = self.prev_idx


class DeviceProperties(dict[str, Any]):
    """Properties of a device: a dict, as ``torch.mtia.get_device_properties`` returns, whose
    keys also read as attributes (``props.total_memory``, as torch.cuda's).

    Keys: ``name``, ``index``, ``total_memory``, ``num_workers``, ``major``, ``minor``,
    ``segment_granularity``, ``least_stream_priority``, ``greatest_stream_priority``.
    """

    __slots__ = ()

    # The keys, as attributes (for type checkers; reads go through __getattr__).
    name: str
    index: int
    total_memory: int
    num_workers: int
    major: int
    minor: int
    segment_granularity: int
    least_stream_priority: int
    greatest_stream_priority: int

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"device properties have no {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("device properties are read-only")


def get_device_properties(device: _DeviceLike = None) -> DeviceProperties:
    """Properties of a device (default: the current one), as a dict (see
    :class:`DeviceProperties`)."""
    idx = _device_index(device)
    p = ffi.new("mtiart_device_properties *")
    check(lib.mtiart_device_get_properties(idx, p), "get_device_properties")
    return DeviceProperties(
        name=ffi.string(p.name).decode(),
        index=int(p.index),
        total_memory=int(p.total_memory),
        num_workers=int(p.num_workers),
        major=int(p.capability_major),
        minor=int(p.capability_minor),
        segment_granularity=int(p.segment_granularity),
        least_stream_priority=int(p.least_stream_priority),
        greatest_stream_priority=int(p.greatest_stream_priority),
    )


def get_device_capability(device: _DeviceLike = None) -> tuple[int, int]:
    """``(major, minor)`` feature level of a device."""
    p = get_device_properties(device)
    return (p["major"], p["minor"])
