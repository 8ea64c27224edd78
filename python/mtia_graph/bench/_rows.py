"""Rows of the benchmark output: building them, interleaved measurement, the text table,
and the markdown tables the README carries."""

from __future__ import annotations

import gc
import math
import statistics
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROW_KEYS = (
    "kind", "suite", "name", "value", "unit", "baseline", "baseline_unit", "baseline_name",
    "ratio", "better", "target", "ratio_target", "pass", "reps", "min", "max", "params",
    "note", "skipped",
)

Row = Dict[str, Any]


def _finite(x: Any) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def make_row(name: str, value: Optional[float], unit: str, *, baseline: Optional[float] = None,
             baseline_name: Optional[str] = None, baseline_unit: Optional[str] = None,
             better: str = "lower", target: Optional[float] = None,
             ratio_target: Optional[float] = None, reps: int = 0,
             vmin: Optional[float] = None, vmax: Optional[float] = None,
             params: Optional[Dict[str, Any]] = None, note: Optional[str] = None,
             skipped: Optional[str] = None, suite: str = "python") -> Row:
    """One result row (``ROW_KEYS``); ``ratio = value / baseline``; ``pass`` is None
    without a target, else whether every given target holds."""
    if skipped:
        value = baseline = vmin = vmax = None
        reps = 0
    value, baseline = _finite(value), _finite(baseline)
    ratio = value / baseline if value is not None and baseline else None
    passed: Optional[bool] = None
    if not skipped and (target is not None or ratio_target is not None):
        hi = better == "higher"
        ok = value is not None
        if ok and target is not None:
            ok = value >= target if hi else value <= target
        if ok and ratio_target is not None:
            ok = ratio is not None and (ratio >= ratio_target if hi else ratio <= ratio_target)
        passed = bool(ok)
    return {
        "kind": "result", "suite": suite, "name": name, "value": value, "unit": unit,
        "baseline": baseline, "baseline_unit": baseline_unit or unit,
        "baseline_name": baseline_name, "ratio": ratio, "better": better, "target": target,
        "ratio_target": ratio_target, "pass": passed, "reps": reps,
        "min": _finite(vmin), "max": _finite(vmax), "params": params or {}, "note": note,
        "skipped": skipped,
    }


def interleave(fns: Sequence[Callable[[], float]], reps: int) -> List[List[float]]:
    """One warm-up call of each function, then ``reps`` rounds calling each once, starting
    at a different function each round so that none always runs first or after the same
    neighbour; the garbage collector is off while timing. Returns each function's figures."""
    for fn in fns:
        fn()
    out: List[List[float]] = [[] for _ in fns]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(reps):
            for j in range(len(fns)):
                k = (i + j) % len(fns)
                out[k].append(fns[k]())
    finally:
        if was_enabled:
            gc.enable()
    return out


def summary(samples: Sequence[float]) -> Tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(samples), min(samples), max(samples)


def quartiles(samples: Sequence[float]) -> Tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[0], q[2]


# --------------------------------------------------------------------------- text table


def fmt(v: Any) -> str:
    """A figure with 3-4 significant digits."""
    if v is None:
        return "-"
    v = float(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.2f}"
    return f"{v:.3g}"


def target_text(r: Row) -> str:
    op = ">=" if r.get("better") == "higher" else "<="
    parts = []
    if r.get("target") is not None:
        parts.append(f"{op} {fmt(r['target'])} {r['unit']}")
    if r.get("ratio_target") is not None:
        parts.append(f"{op} {fmt(r['ratio_target'])}x")
    return ", ".join(parts)


def format_table(rows: Iterable[Row]) -> str:
    """The readable table printed after the JSON lines."""
    rows = [r for r in rows if r.get("kind") == "result"]
    head = (f"{'suite':<6} {'benchmark':<36} {'median':>10} {'unit':<8} {'baseline':>10} "
            f"{'ratio':>8} {'target':<18} result")
    lines = [head, "-" * len(head)]
    baselines: List[str] = []
    for r in rows:
        bn = r.get("baseline_name")
        if bn and bn not in baselines:
            baselines.append(bn)
        if r.get("skipped"):
            lines.append(f"{r['suite']:<6} {r['name']:<36} {'-':>10} {r['unit']:<8} {'-':>10} "
                         f"{'-':>8} {'-':<18} skipped: {r['skipped']}")
            continue
        result = {True: "PASS", False: "MISS", None: ""}[r.get("pass")]
        lines.append(f"{r['suite']:<6} {r['name']:<36} {fmt(r['value']):>10} {r['unit']:<8} "
                     f"{fmt(r['baseline']):>10} {fmt(r['ratio']):>8} "
                     f"{target_text(r) or '-':<18} {result}")
    lines.append("")
    lines.append("median of the reps; ratio = median / baseline, both measured in the same "
                 "process, interleaved. Baselines:")
    lines += [f"  - {b}" for b in baselines]
    return "\n".join(lines)


# --------------------------------------------------------------------------- markdown

SUITE_TITLES = {
    "c": "C runtime (`bench_runtime`): against a direct C call, libc, memcpy, a ping-pong",
    "peer": "Against oneTBB's flow graph (`bench_peers`): value = libmtiart, baseline = oneTBB",
    "python": "Python (`mtia_graph`): against numpy (and torch CPU where installed)",
}


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_header(metas: Sequence[Row]) -> str:
    """One line saying where and when a run was made, from its meta lines."""
    m: Dict[str, Any] = {}
    for meta in metas:  # the Python meta line knows the most; C lines fill the rest
        for k, v in meta.items():
            m.setdefault(k, v)
    parts = []
    cpu = m.get("cpu") or m.get("machine") or "unknown CPU"
    parts.append(f"{cpu}, {m.get('ncpu', '?')} CPUs")
    if m.get("workers") is not None:
        parts.append(f"{m['workers']} runtime workers")
    if m.get("time"):
        parts.append(str(m["time"]))
    if m.get("loadavg"):
        parts.append("load average " + " ".join(f"{x:.2f}" for x in m["loadavg"]) +
                     " at the start")
    if m.get("commit"):
        parts.append(f"commit {m['commit']}")
    mode = "quick pass" if m.get("quick") else "full run"
    parts.append(mode)
    versions = [f"{k} {m[k]}" for k in ("libmtiart", "python", "numpy", "torch", "peer")
                if m.get(k)]
    return "; ".join(parts) + (f" ({', '.join(versions)})" if versions else "")


def markdown_tables(objs: Iterable[Row]) -> str:
    """The rows of one run as markdown: a line about the run, then one table per suite."""
    objs = list(objs)
    metas = [o for o in objs if o.get("kind") == "meta"]
    metas.sort(key=lambda m: m.get("suite") != "python")
    rows = [o for o in objs if o.get("kind") == "result"]
    out = [f"Generated from one run: {run_header(metas)}.", ""]
    suites = [s for s in SUITE_TITLES if any(r["suite"] == s for r in rows)]
    suites += sorted({r["suite"] for r in rows} - set(suites))
    for suite in suites:
        out.append(f"**{SUITE_TITLES.get(suite, suite)}**")
        out.append("")
        out.append("| row | median | baseline | ratio | goal | |")
        out.append("|---|---|---|---|---|---|")
        for r in (r for r in rows if r["suite"] == suite):
            if r.get("skipped"):
                out.append(f"| `{r['name']}` | skipped: {_md(r['skipped'])} | | | | |")
                continue
            value = f"{fmt(r['value'])} {r['unit']}"
            base = (f"{fmt(r['baseline'])} {r['baseline_unit']} ({_md(r['baseline_name'])})"
                    if r.get("baseline") is not None and r.get("baseline_name") else "-")
            ratio = f"{fmt(r['ratio'])}x" if r.get("ratio") is not None else "-"
            result = {True: "pass", False: "miss", None: ""}[r.get("pass")]
            out.append(f"| `{r['name']}` | {value} | {base} | {ratio} | "
                       f"{_md(target_text(r)) or '-'} | {result} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def scaling_markdown(objs: Iterable[Row]) -> str:
    """The worker-scaling rows (``<workload>_<workers>``) as one table: a workload per row,
    a worker count per column, each cell the median speedup over 1 worker with its
    interquartile range; counts above the CPU count are marked oversubscribed."""
    objs = list(objs)
    metas = [o for o in objs if o.get("kind") == "meta"]
    metas.sort(key=lambda m: m.get("suite") != "python")
    rows = [o for o in objs if o.get("kind") == "result" and o["name"].startswith("scaling_")]
    table: Dict[str, Dict[int, Row]] = {}
    for r in rows:
        workload, _, w = r["name"].rpartition("_")
        if w.isdigit():
            table.setdefault(workload, {})[int(w)] = r
    counts = sorted({w for cells in table.values() for w in cells})
    ncpu = next((m.get("ncpu") for m in metas if m.get("ncpu")), None)
    out = [f"Generated from one run: {run_header(metas)}.", "",
           "Speedup over 1 worker (median of interleaved rounds; interquartile range in "
           "brackets)" + (f"; * = oversubscribed (more workers than the {ncpu} CPUs)"
                          if ncpu and any(w > ncpu for w in counts) else "") + ".", "",
           "| workload | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}"
                                       f"{' *' if ncpu and w > ncpu else ''}"
                                       for w in counts) + " |",
           "|---|" + "---|" * len(counts)]
    for workload, cells in table.items():
        line = []
        for w in counts:
            r = cells.get(w)
            if r is None:
                line.append("")
            elif r.get("skipped"):
                line.append("skipped")
            else:
                p = r.get("params") or {}
                spread = ""
                if p.get("speedup_q1") is not None and p.get("speedup_q3") is not None:
                    spread = f" [{fmt(p['speedup_q1'])}-{fmt(p['speedup_q3'])}]"
                line.append(f"{fmt(r['value'])}x{spread}")
        note = next((r.get("note") for r in cells.values() if r.get("note")), "")
        label = f"`{workload}`" + (f": {_md(note.split(';')[0])}" if note else "")
        out.append(f"| {label} | " + " | ".join(line) + " |")
    return "\n".join(out) + "\n"


def replace_between_markers(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with everything between the lines ``begin`` and ``end`` replaced by body.
    Raises ValueError when the markers are missing or out of order."""
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"markers {begin!r} ... {end!r} not found")
    return text[:i + len(begin)] + "\n" + body.rstrip("\n") + "\n" + text[j:]
