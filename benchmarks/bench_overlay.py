"""Benchmark: one review overlay panel on a full-size CT (512×512×80, 0.78×0.78×2.5 mm).

Not a test. Prints the time of :func:`pipeline.outputs.overlay.render_overlay` per panel
and its ratio to a reference run in the same process: the same 512-pixel slice written
as a plain grey PNG by matplotlib (``plt.imsave``), the least a panel must do. The panel
adds the crop around the lesion, the mask contours, the caliper lines and the text.

    .venv/bin/python benchmarks/bench_overlay.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pipeline.image import Volume
from pipeline.outputs.overlay import ReviewPanel, render_overlay


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: fonts and first-call imports are not measured
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    shape = (80, 512, 512)
    rng = np.random.default_rng(0)
    image = (30 + rng.normal(0, 12, shape)).astype(np.int16)
    vol = Volume.from_geometry(image, origin_lps=[-200, -200, 0],
                               spacing_mm=[0.78, 0.78, 2.5], modality="CT")
    tumour = np.zeros(shape, bool)
    tumour[38:43, 250:280, 250:280] = True
    panel = ReviewPanel("P", "L", date(2024, 1, 1), "baseline", -10, vol,
                        {"tumour": vol.with_array(tumour), "iceball": vol.with_array(tumour)},
                        None, None, {}, (), "CT")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        panel_s = _median_s(lambda: render_overlay(panel, out / "panel.png", size_px=512),
                            args.repeats)
        plain_s = _median_s(lambda: plt.imsave(out / "plain.png", image[40], cmap="gray",
                                               vmin=-150, vmax=250), args.repeats)
    print(f"grid {shape}, {args.repeats} repeats (median)")
    print(f"render_overlay        {panel_s * 1000:8.1f} ms per panel")
    print(f"plt.imsave (reference) {plain_s * 1000:7.1f} ms per slice")
    print(f"ratio                 {panel_s / plain_s:8.1f} x the plain slice")


if __name__ == "__main__":
    main()
