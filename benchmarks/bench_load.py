"""Benchmark: load_series vs ``dcm2niix -z n`` on the same 512×512×300 int16 CT series.

Not a test. Writes the series once with fixtures.dicom_writer into a temporary folder,
then alternates the two readers (warm page cache) and prints the medians and the ratio
load_series / dcm2niix (target ≤ 1.0).

    .venv/bin/python benchmarks/bench_load.py [--slices 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fixtures.dicom_writer import (
    DEFAULT_UID_ROOT,
    PatientInfo,
    SeriesInfo,
    StudyInfo,
    make_uid,
    write_series,
)
from pipeline.dicom.loader import load_series
from pipeline.image import Volume

__all__ = ["main"]


def _synthetic_ct(n_slices: int) -> Volume:
    rng = np.random.default_rng(0)
    jj, ii = np.mgrid[0:512, 0:512]
    body = ((ii - 256) / 200.0) ** 2 + ((jj - 256) / 150.0) ** 2 <= 1.0
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    array = np.empty((n_slices, 512, 512), dtype=np.float32)
    for k in range(n_slices):
        array[k] = hu + rng.normal(0, 15, size=hu.shape).astype(np.float32)
    return Volume.from_geometry(
        array, origin_lps=(-200.0, -180.0, -300.0), spacing_mm=(0.78, 0.78, 1.0)
    )


def _time(fn: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its finished children)."""

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    t0, c0 = time.perf_counter(), cpu()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0, cpu() - c0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        print("dcm2niix not installed (Debian package dcm2niix)", file=sys.stderr)
        return 2
    # dcm2niix writes its NIfTI to RAM (tmpfs) when there is one: flushing 150 MB to disk
    # in the background would slow down whichever reader runs next, not dcm2niix itself.
    ram = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(prefix="bench_load_") as tmp,
        tempfile.TemporaryDirectory(
            prefix="bench_load_nii_", dir=ram if ram.is_dir() else None
        ) as out,
    ):
        series_dir, out_dir = Path(tmp) / "dicom", Path(out)
        t0 = time.perf_counter()
        paths = write_series(
            _synthetic_ct(args.slices),
            series_dir,
            modality="CT",
            patient=PatientInfo("BENCH"),
            study=StudyInfo(make_uid(DEFAULT_UID_ROOT, "bench-study"), "20240101"),
            series=SeriesInfo(make_uid(DEFAULT_UID_ROOT, "bench-series"), 2),
        )
        print(f"wrote {len(paths)} files of 512×512 int16 in {time.perf_counter() - t0:.1f} s")

        def run_loader() -> None:
            vol = load_series(paths)
            if vol.array.shape != (args.slices, 512, 512):
                raise RuntimeError(f"unexpected shape {vol.array.shape}")

        def run_dcm2niix() -> None:
            subprocess.run(
                [dcm2niix, "-z", "n", "-f", "bench", "-o", str(out_dir), str(series_dir)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        run_loader()  # warm the page cache and imports
        run_dcm2niix()
        runs: dict[str, list[tuple[float, float]]] = {"load_series": [], "dcm2niix -z n": []}
        for _ in range(args.repeats):  # interleave to share the machine's noise fairly
            runs["load_series"].append(_time(run_loader))
            runs["dcm2niix -z n"].append(_time(run_dcm2niix))
    medians = {}
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        medians[name] = (wall, cpu)
        print(
            f"{name:14s} median wall {wall:.3f} s, CPU {cpu:.3f} s "
            f"(wall runs {[round(v[0], 3) for v in values]})"
        )
    (lw, lc), (dw, dc) = medians["load_series"], medians["dcm2niix -z n"]
    print(f"ratio load_series / dcm2niix: wall {lw / dw:.2f}, CPU {lc / dc:.2f} (target ≤ 1.0)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall is noisy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
