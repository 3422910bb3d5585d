"""Benchmark: load_series vs ``dcm2niix -z n`` on the same 512×512×300 int16 CT series.

Not a test. Writes the series once with fixtures.dicom_writer into a temporary folder,
then alternates the two readers (warm page cache) and prints the medians and the ratio
load_series / dcm2niix (target ≤ 1.0).

    .venv/bin/python benchmarks/bench_load.py [--slices 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
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


def _time(fn: object, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        print("dcm2niix not installed (Debian package dcm2niix)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        series_dir, out_dir = Path(tmp) / "dicom", Path(tmp) / "nii"
        out_dir.mkdir()
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
        loader_s, dcm2niix_s = [], []
        for _ in range(args.repeats):  # interleave to share the machine's noise fairly
            loader_s += _time(run_loader, 1)
            dcm2niix_s += _time(run_dcm2niix, 1)
    m_loader, m_dcm = statistics.median(loader_s), statistics.median(dcm2niix_s)
    print(f"load_series      median {m_loader:.3f} s  (runs {[round(x, 3) for x in loader_s]})")
    print(f"dcm2niix -z n    median {m_dcm:.3f} s  (runs {[round(x, 3) for x in dcm2niix_s]})")
    print(f"ratio load_series / dcm2niix = {m_loader / m_dcm:.2f} (target ≤ 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
