"""Benchmark: the measurements on a full-size CT grid (512×512×N, 0.7×0.7×2.5 mm).

Not a test. A tumour sphere (r = 15 mm), an ice ball (r = 25 mm, offset 4 mm) and a
follow-up zone with a 1 cm enhancing nodule are rasterised on a full grid (the functions
must crop to the lesion themselves); prints the median time of each measurement and the
error against the closed-form value.

    .venv/bin/python benchmarks/bench_measurements.py [--slices 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from measurements import (
    ablative_margin,
    axial_diameters,
    ct_enhancement,
    enhancing_components,
    max_3d_diameter_mm,
    volume_ml,
)
from pipeline.image import Volume


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    out = fn()  # warm-up: first-call imports are not measured
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spacing = np.array([0.7, 0.7, 2.5])
    shape_kji = (args.slices, 512, 512)
    centre = np.array([0.0, 0.0, 0.0])
    origin = centre - spacing * (np.array(shape_kji[::-1]) - 1) / 2.0
    k, j, i = np.ogrid[: shape_kji[0], : shape_kji[1], : shape_kji[2]]
    x, y, z = origin[0] + i * spacing[0], origin[1] + j * spacing[1], origin[2] + k * spacing[2]
    r2 = x**2 + y**2 + z**2
    tumour = Volume.from_geometry(r2 <= 15.0**2, origin_lps=origin, spacing_mm=spacing)
    ice = tumour.with_array((x - 4.0) ** 2 + y**2 + z**2 <= 25.0**2)
    rng = np.random.default_rng(0)
    nodule = (x - 8.0) ** 2 + y**2 + z**2 <= 5.0**2
    pre = tumour.with_array(
        (30 + rng.normal(0, 12, shape_kji)).astype(np.int16), modality="CT"
    )
    post = pre.with_array(
        (30 + np.where(nodule, 60, 0) + rng.normal(0, 12, shape_kji)).astype(np.int16)
    )
    rows = [
        ("axial_diameters", lambda: axial_diameters(tumour).long_axis_mm, 30.0),
        ("max_3d_diameter_mm", lambda: max_3d_diameter_mm(tumour), 30.0),
        ("volume_ml", lambda: volume_ml(tumour), 4 / 3 * np.pi * 15**3 / 1000),
        ("ablative_margin", lambda: ablative_margin(tumour, ice).min_margin_mm, 25 - 15 - 4.0),
        ("ct_enhancement", lambda: ct_enhancement(pre, post, tumour).delta_hu, None),
        ("enhancing_components", lambda: len(enhancing_components(pre, post, tumour)), 1),
    ]
    print(f"grid {shape_kji} spacing {spacing.tolist()} mm, {args.repeats} repeats (median)")
    for name, fn, truth in rows:
        value, seconds = _timed(fn, args.repeats)
        err = "" if truth is None else f" (truth {truth:.3f})"
        print(f"{name:22s} {seconds * 1000:8.1f} ms  value {value}{err}")


if __name__ == "__main__":
    main()
