"""Percentiles and the bare-vs-guarded line the adapter benches print."""

from __future__ import annotations

import statistics


def pct(xs: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``xs``."""
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def report(name: str, bare: list[float], guarded: list[float]) -> None:
    b, g = pct(bare), pct(guarded)
    print(
        f"{name}: bare p50 {b[0]:.0f} us p99 {b[1]:.0f} | guarded p50 {g[0]:.0f} us p99 {g[1]:.0f}"
        f" | overhead p50 {g[0] - b[0]:.0f} us"
    )
