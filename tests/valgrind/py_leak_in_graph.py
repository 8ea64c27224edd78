"""A tensor allocated inside a captured graph that is never freed, as when a C extension
takes a reference to it and never drops it: memcheck must fail the run, with the Python
line that allocated the tensor in its report.

memcheck-expect: status=99 errors=0 never-freed=4096 libmtiart-lost=0
memcheck-expect-log: Device memory never freed: 4,096 bytes in 1 blocks
memcheck-expect-log: File ".*py_leak_in_graph.py", line [0-9]+, in capture_step
memcheck-expect-log: leaked = x \* 2 {2}# the leaked tensor
"""
import ctypes

import mtia_graph as mtia


def capture_step(graph, x):
    with mtia.graph(graph):
        leaked = x * 2  # the leaked tensor
        y = leaked + 1
    # A reference nobody releases: the tensor can never be freed.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(leaked))
    return y


x = mtia.ones(1024)
g = mtia.MTIAGraph()
y = capture_step(g, x)
g.replay()
assert y[0].item() == 3.0
g.reset()
del y
mtia.synchronize()
