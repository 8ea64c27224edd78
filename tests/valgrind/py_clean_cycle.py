"""Capture, replay and reset with stream-ordered frees, which memcheck must find clean.

An MLP step is captured on a side stream into a private pool, replayed on new inputs,
checked, and reset; a second graph shares a pool handle and frees an intermediate during
its capture; tensors created inside the captures outlive the reset.

memcheck-expect: status=0 errors=0 never-freed=0 libmtiart-lost=0
"""
import numpy as np

import mtia_graph as mtia

w = mtia.from_numpy(np.full((8, 8), 0.5, dtype=np.float32))
static_x = mtia.zeros((4, 8))

side = mtia.Stream()
side.wait_stream(mtia.current_stream())
with mtia.stream(side):
    g = mtia.MTIAGraph()
    with mtia.graph(g):
        hidden = (static_x @ w + 1).relu()
        static_y = hidden.softmax(dim=-1)
        del hidden                           # freed inside the capture, stream-ordered
mtia.current_stream().wait_stream(side)

for step in range(3):
    static_x.copy_(np.full((4, 8), step, dtype=np.float32))
    g.replay()
    assert np.allclose(static_y.numpy().sum(axis=-1), 1.0)

pool = mtia.graph_pool_handle()
g2 = mtia.MTIAGraph()
with mtia.graph(g2, pool=pool):
    tmp = static_y * 2
    out = tmp + 1
    del tmp
g2.replay()
mtia.synchronize()
assert np.allclose(out.numpy(), static_y.numpy() * 2 + 1)

g.reset()
g2.reset()
kept = static_y.numpy()                      # outputs outlive the reset of their graph
del static_y, out
mtia.synchronize()
mtia.empty_cache()
