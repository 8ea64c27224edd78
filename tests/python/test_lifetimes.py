"""Handle lifetimes through the package: objects used on some threads while another thread
resets or drops them.

Every call either succeeds or raises an MTIAError subclass (a graph another thread is
resetting also gives the documented RuntimeError of an empty graph); nothing crashes,
and the runtime is usable afterwards.
"""

import threading
import time

import mtia_graph as mtia
from mtia_graph import InvalidHandleError, MTIAError, MTIAGraph, Stream

DURATION = 1.0  # seconds per race


def _run_threads(workers, duration=DURATION):
    """Run each worker(stop) on its own thread until `duration` passes; re-raise the first
    unexpected exception."""
    stop = threading.Event()
    errors = []

    def wrap(fn):
        try:
            fn(stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=wrap, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    stop.wait(duration)
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a thread is stuck"
    if errors:
        raise errors[0]


def _empty_graph_error(exc):
    """The documented RuntimeError of a graph that holds no capture right now."""
    return (
        isinstance(exc, RuntimeError)
        and not isinstance(exc, MTIAError)
        and (
            "before a successful capture" in str(exc)
            or "without a preceding successful capture" in str(exc)
            or "no captured graph is kept" in str(exc)
        )
    )


def _capture(g, x):
    with mtia.graph(g):
        x.add_(1)
        x.mul_(1)


def test_replay_dot_num_nodes_while_another_thread_resets():
    x, y = mtia.zeros(256), mtia.zeros(256)
    g = MTIAGraph()  # replayed: instantiated by capture_end
    template = MTIAGraph(keep_graph=True)  # dumped: keeps its template
    _capture(g, x)
    _capture(template, y)
    counts = {"ok": 0, "reset": 0, "empty": 0, "resets": 0}
    lock = threading.Lock()

    def note(key):
        with lock:
            counts[key] += 1

    def user(call):
        def run(stop):
            with mtia.stream(Stream()):
                while not stop.is_set():
                    try:
                        call()
                        note("ok")
                    except InvalidHandleError as exc:
                        assert "reset by another thread" in str(exc), str(exc)
                        note("reset")
                    except RuntimeError as exc:
                        if not _empty_graph_error(exc):
                            raise
                        note("empty")

        return run

    def resetter(stop):
        while not stop.is_set():
            time.sleep(0.002)
            for graph, tensor in ((g, x), (template, y)):
                graph.reset()
                note("resets")
                _capture(graph, tensor)

    _run_threads(
        [
            user(g.replay),
            user(g.replay),
            user(g.num_nodes),
            user(template.dot),
            user(template.num_nodes),
            resetter,
        ]
    )
    mtia.synchronize()
    assert counts["resets"] > 5
    assert counts["ok"] > 0
    # The graphs still work after the storm.
    before = x.numpy().copy()
    g.replay()
    mtia.synchronize()
    assert (x.numpy() == before + 1).all()
    assert "digraph" in template.dot()
    g.reset()
    template.reset()


def test_reset_racing_replay_reports_the_reset_clearly():
    """A replay whose executable another thread destroys mid-call: InvalidHandleError
    naming the reset, never a crash or a bare handle error."""
    x = mtia.zeros(16)
    seen: list[MTIAError] = []
    unexpected: list[BaseException] = []
    for _ in range(200):
        g = MTIAGraph()
        _capture(g, x)
        barrier = threading.Barrier(2)

        def replay(g: MTIAGraph = g, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                g.replay()
            except MTIAError as exc:
                seen.append(exc)
            except RuntimeError as exc:
                if not _empty_graph_error(exc):
                    unexpected.append(exc)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                unexpected.append(exc)

        t = threading.Thread(target=replay)
        t.start()
        barrier.wait()
        g.reset()
        t.join()
    mtia.synchronize()
    assert not unexpected, unexpected
    for exc in seen:
        assert isinstance(exc, InvalidHandleError)
        assert "reset by another thread" in str(exc)


def test_streams_and_events_used_while_dropped_elsewhere():
    """Threads pick shared Stream/Event objects and use them while an owner thread keeps
    replacing them (the last reference to the old ones goes, destroying their handles)."""
    streams = [Stream() for _ in range(4)]
    events = [mtia.Event(enable_timing=True) for _ in range(4)]
    for s, e in zip(streams, events, strict=True):
        e.record(s)
    lock = threading.Lock()
    calls = {"ok": 0, "error": 0}

    def pick(items, i):
        with lock:
            return items[i % len(items)]

    def user(seed):
        def run(stop):
            i = seed
            while not stop.is_set():
                i = (i * 1103515245 + 12345) & 0x7FFFFFFF
                s, e, e2 = pick(streams, i), pick(events, i >> 3), pick(events, i >> 5)
                op = i % 9
                try:
                    if op == 0:
                        e.record(s)
                    elif op == 1:
                        e.query()
                    elif op == 2:
                        e.synchronize()
                    elif op == 3:
                        s.wait_event(e)
                    elif op == 4:
                        s.query()
                    elif op == 5:
                        s.synchronize()
                    elif op == 6:
                        e2.record(s)
                        e2.synchronize()
                        e.elapsed_time(e2)
                    elif op == 7:
                        s.wait_stream(pick(streams, i >> 7))
                    else:
                        with mtia.stream(s):
                            t = mtia.ones(32)
                            t.add_(1)
                    with lock:
                        calls["ok"] += 1
                except MTIAError:
                    with lock:
                        calls["error"] += 1

        return run

    def owner(stop):
        i = 0
        while not stop.is_set():
            i += 1
            s = Stream(priority=-(i % 3))
            e = mtia.Event(enable_timing=True)
            e.record(s)
            with lock:
                streams[i % len(streams)] = s
                events[(i * 7) % len(events)] = e
            del s, e  # the replaced objects die with their last user
            time.sleep(0.0005)

    _run_threads([user(1), user(2), user(3), owner])
    mtia.synchronize()
    assert calls["ok"] > 0
    # Everything is still usable.
    s = Stream()
    with mtia.stream(s):
        t = mtia.ones(8) * 3
        assert t.numpy().tolist() == [3.0] * 8
