"""The demo's model as a plain script: capture an MLP step once, replay it on new inputs.

python examples/mlp.py
"""

import numpy as np

import mtia_graph as mtia

rng = np.random.default_rng(0)
w1 = mtia.from_numpy((rng.standard_normal((64, 128)) / 8).astype(np.float32))
b1 = mtia.zeros(128)
w2 = mtia.from_numpy((rng.standard_normal((128, 10)) / 11).astype(np.float32))
b2 = mtia.zeros(10)

static_x = mtia.zeros((16, 64))

# Warm up on a side stream so the allocator has the blocks cached, as torch recommends.
side = mtia.Stream()
side.wait_stream(mtia.current_stream())
with mtia.stream(side):
    ((static_x @ w1 + b1).gelu() @ w2 + b2).softmax(dim=-1)
mtia.current_stream().wait_stream(side)

g = mtia.MTIAGraph()
with mtia.graph(g):
    static_out = ((static_x @ w1 + b1).gelu() @ w2 + b2).softmax(dim=-1)

for i in range(3):
    x = rng.standard_normal((16, 64)).astype(np.float32)
    static_x.copy_(x)  # new data into the captured input
    g.replay()  # one launch runs all six ops
    probs = static_out.numpy()
    print(
        f"input {i}: predicted classes {probs.argmax(axis=1)[:8]} ..., rows sum to "
        f"{probs.sum(axis=1).min():.6f}..{probs.sum(axis=1).max():.6f}"
    )
