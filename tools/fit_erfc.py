#!/usr/bin/env python3
"""Fit the polynomial of the float32 exact-GELU kernel (libmtiart/kernels/vecmath_impl.h).

The kernel computes erfc(z), z >= 0, as ``t * exp(-z*z + P(t))`` with ``t = 1 / (1 + z/2)``
(the form of Numerical Recipes' erfcc): every z maps into t in (0, 1], and
``P(t) = log(erfc(z) / t) + z*z`` is smooth there, so one polynomial covers the whole range
with a bounded *relative* error, which the left tail of GELU needs. This script fits P by
Lawson's iteratively reweighted least squares (which converges to the minimax fit) on
Chebyshev nodes against math.erfc, and prints the coefficients and the relative error of
erfc that they give in exact arithmetic.

    python3 tools/fit_erfc.py [DEGREE]      (default 9)

Needs numpy.
"""

from __future__ import annotations

import math
import sys

import numpy as np


def target(t: float) -> float:
    z = 2.0 * (1.0 / t - 1.0)
    if z < 26.0:
        return math.log(math.erfc(z) / t) + z * z
    # math.erfc underflows beyond z ~ 26: its asymptotic series is exact to double there.
    series = 1.0 - 0.5 / z**2 + 0.75 / z**4 - 1.875 / z**6
    return math.log(series / (z * math.sqrt(math.pi) * t))


def fit(degree: int, nodes: int = 4000, rounds: int = 300) -> list[float]:
    k = np.arange(nodes)
    t = 0.5 + 0.5 * np.cos((2 * k + 1) * np.pi / (2 * nodes))
    t = t[t > 1e-3]
    y = np.array([target(float(v)) for v in t])
    vander = np.vander(t, degree + 1, increasing=True)
    weights = np.ones_like(t)
    for _ in range(rounds):
        root = np.sqrt(weights)
        coef, *_ = np.linalg.lstsq(vander * root[:, None], y * root, rcond=None)
        residual = np.abs(vander @ coef - y)
        weights *= residual
        weights /= weights.sum()
    return [float(c) for c in coef]


def erfc_from(coef: list[float], z: float) -> float:
    t = 1.0 / (1.0 + 0.5 * z)
    p = 0.0
    for c in reversed(coef):
        p = p * t + c
    return t * math.exp(-z * z + p)


def main() -> None:
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    coef = fit(degree)
    worst = max(
        abs(erfc_from(coef, z) / math.erfc(z) - 1.0) for z in np.linspace(0.0, 10.0, 100001)
    )
    print(f"degree {degree}: max relative error of erfc on [0, 10]: {worst:.3g}")
    print("coefficients of t^0 .. t^n:")
    for c in coef:
        print(f"    {c:.10e}f")


if __name__ == "__main__":
    main()
