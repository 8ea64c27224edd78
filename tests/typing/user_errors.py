"""Misuse a type checker must reject: ``mypy --strict`` reports an error on exactly the
lines marked ``# error`` (tests/python/test_typing.py). Never run."""

from __future__ import annotations

import mtia_graph as mg

t = mg.zeros(3)
t.add_("one")  # error
t.sum(dim="rows")  # error
label: str = t.item()  # error
mg.zeros(2, dtype=3.5)  # error
mg.ones(2, device=[0])  # error
mg.set_stream(t)  # error
mg.Event().record(mg.Device(0))  # error
mg.MTIAGraph().capture_begin(pool=5)  # error
mg.graph(mg.MTIAGraph(), stream=mg.Event())  # error
mg.launch_host_func(print, stream="s")  # error
pool: tuple[str, str] = mg.graph_pool_handle()  # error
count: int = mg.device_count()
shape: tuple[int, ...] = t.shape
