"""Shared fixtures of the Python test suite.

Two emulated devices unless the environment says otherwise, so that the multi-device paths
(current device per thread, tensors on mtia:1, cross-device checks) are exercised; the
variable must be set before the runtime initialises, i.e. before the first test runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading

os.environ.setdefault("MTIART_NUM_DEVICES", "2")

import pytest

import mtia_graph


@pytest.fixture(autouse=True)
def _clean_runtime_state():
    """Each test starts and ends on device 0's default stream with no pending errors."""

    def reset():
        # set_stream also makes the stream's device current, so the device comes last.
        for d in range(mtia_graph.device_count()):
            mtia_graph.set_stream(mtia_graph.default_stream(d))
        mtia_graph.set_device(0)

    reset()
    yield
    reset()
    for d in range(mtia_graph.device_count()):
        # A test that left a sticky error behind must not fail the next one.
        with contextlib.suppress(mtia_graph.MTIAError):
            mtia_graph.synchronize(d)


@pytest.fixture
def gate():
    """A host-side gate: ``gate.block(stream)`` parks the stream until the test ends (or
    ``gate.open()``), without ever depending on timing."""

    class Gate:
        def __init__(self):
            self.event = threading.Event()

        def block(self, stream):
            stream.launch_host_func(lambda: self.event.wait(30))

        def open(self):
            self.event.set()

    g = Gate()
    yield g
    g.open()


def run_python(
    code: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for settings read at runtime initialisation)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


@pytest.fixture
def subprocess_python():
    return run_python


class RawCapture:
    """Stream capture through the C API only (independent of graphs.py)."""

    def __init__(self):
        from mtia_graph._C import ffi, lib

        self.ffi, self.lib = ffi, lib
        self.graphs = []
        self.execs = []

    def begin(self, stream, mode="global", pool=(0, 0)):
        lib, ffi = self.lib, self.ffi
        modes = {
            "global": lib.MTIART_CAPTURE_MODE_GLOBAL,
            "thread_local": lib.MTIART_CAPTURE_MODE_THREAD_LOCAL,
            "relaxed": lib.MTIART_CAPTURE_MODE_RELAXED,
        }
        pid = ffi.new("mtiart_pool_id *", {"first": pool[0], "second": pool[1]})
        mtia_graph._C.check(lib.mtiart_stream_begin_capture(stream._handle, modes[mode], pid[0]))
        return mtia_graph.callbacks.capture_id_of(stream._handle)

    def end(self, stream):
        """End the capture; returns the graph handle or raises the capture's error."""
        out = self.ffi.new("mtiart_graph *")
        mtia_graph._C.check(self.lib.mtiart_stream_end_capture(stream._handle, out))
        self.graphs.append(out[0])
        return out[0]

    def instantiate(self, graph):
        out = self.ffi.new("mtiart_graph_exec *")
        mtia_graph._C.check(self.lib.mtiart_graph_instantiate(graph, out))
        self.execs.append(out[0])
        return out[0]

    def launch(self, exec_, stream):
        mtia_graph._C.check(self.lib.mtiart_graph_launch(exec_, stream._handle))

    def node_count(self, graph):
        n = self.ffi.new("size_t *")
        mtia_graph._C.check(self.lib.mtiart_graph_get_node_count(graph, n))
        return int(n[0])

    def close(self, streams=()):
        for s in streams:  # abandon a capture a failing test left open
            if s.is_capturing():
                out = self.ffi.new("mtiart_graph *")
                if self.lib.mtiart_stream_end_capture(s._handle, out) == 0:
                    self.graphs.append(out[0])
        mtia_graph.synchronize()
        for e in self.execs:
            self.lib.mtiart_graph_exec_destroy(e)
        for g in self.graphs:
            self.lib.mtiart_graph_destroy(g)


@pytest.fixture
def raw_capture():
    cap = RawCapture()
    streams = []
    cap.track = streams.append
    yield cap
    cap.close([mtia_graph.current_stream(), mtia_graph.default_stream(), *streams])
