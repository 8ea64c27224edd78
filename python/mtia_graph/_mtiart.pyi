# Type stub of the cffi extension module generated from include/mtiart.h.
#
# cffi builds `lib` (the C functions, constants and enum values of the header) and the
# C types of `ffi` at run time, so neither has static types: both are Any past the few
# `ffi` methods whose signature matters to callers (def_extern keeps the decorated
# function's type).
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

class _FFI:
    NULL: Any
    def def_extern(
        self, name: str = ..., error: Any = ..., onerror: Any = ...
    ) -> Callable[[_F], _F]: ...
    def __getattr__(self, name: str) -> Any: ...

ffi: _FFI
lib: Any
