"""Helpers shared by the index/classify/contrast/convert tests (no tests here).

Synthetic series are written with the project's DICOM writer (fixtures/dicom_writer.py);
abdominal slices are painted from the synthetic anatomy (fixtures/anatomy.py) so the
contrast content check is tested on images made by someone else's model of the abdomen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fixtures.anatomy import anatomy_layers, build_anatomy
from fixtures.dicom_writer import PatientInfo, SeriesInfo, StudyInfo, make_uid, write_series
from fixtures.tissues import phase_index
from pipeline.image import Volume

ROOT = "1.2.826.0.1.3680043.8.498.77"

__all__ = ["uid", "patient", "study", "series_info", "ct_volume", "write_ct", "paint_abdomen"]


def uid(*parts: object) -> str:
    return make_uid(ROOT, *parts)


def patient(pid: str = "P1") -> PatientInfo:
    return PatientInfo(patient_id=pid, name=f"TEST^{pid}")


def study(pid: str = "P1", n: int = 1, date: str = "20240101") -> StudyInfo:
    return StudyInfo(study_instance_uid=uid("study", pid, n), study_date=date)


def series_info(name: str, number: int, description: str = "", **kw: Any) -> SeriesInfo:
    return SeriesInfo(series_instance_uid=uid("series", name), series_number=number,
                      description=description, **kw)


def ct_volume(n_slices: int = 12, *, spacing_k_mm: float = 2.0, size: int = 16,
              pixel_mm: float = 1.5, z0_mm: float = 0.0, direction: Any = None,
              value_hu: float = 40.0) -> Volume:
    """A small uniform CT volume (HU) on an axial grid."""
    arr = np.full((n_slices, size, size), value_hu, dtype=np.float32)
    arr[:, size // 4 : size // 2, size // 4 : size // 2] = value_hu + 60
    return Volume.from_geometry(arr, origin_lps=(-size * pixel_mm / 2, -size * pixel_mm / 2, z0_mm),
                                spacing_mm=(pixel_mm, pixel_mm, spacing_k_mm),
                                direction=direction, modality="CT")


def write_ct(out_dir: Path, volume: Volume, info: SeriesInfo, pid: str = "P1", study_n: int = 1,
             date: str = "20240101", **kw: Any) -> list[Path]:
    return write_series(volume, out_dir, modality="CT", patient=patient(pid),
                        study=study(pid, study_n, date), series=info, **kw)


def paint_abdomen(phase: str, *, n_slices: int = 12, size: int = 192, pixel_mm: float = 2.0,
                  spacing_k_mm: float = 3.0, seed: int = 0, noise_hu: float = 12.0,
                  z_center_mm: float = 0.0) -> Volume:
    """CT of the synthetic abdomen around the renal hila (fixtures anatomy, no motion).

    ``phase``: unenhanced | corticomedullary | nephrographic | excretory.
    Five z levels (−40…+40 mm: real slices at 25–75 % of a stack are that far apart) are
    painted and repeated along k (the content check reads five slices), plus Gaussian
    noise.
    """
    rng = np.random.default_rng(seed)
    anat = build_anatomy(rng)
    layers = anatomy_layers(anat, prone=False)
    col = phase_index(phase)
    half = size * pixel_mm / 2
    coords = (np.arange(size) + 0.5) * pixel_mm - half
    x, y = np.meshgrid(coords, coords)  # x along i (columns), y along j (rows)
    levels = []
    for dz in (-40.0, -20.0, 0.0, 20.0, 40.0):
        z = np.full_like(x, z_center_mm + dz)
        img = np.full(x.shape, -1000.0, dtype=np.float32)
        for layer in layers:
            inside = layer.shape.sdf(x, y, z) < 0
            img[inside] = layer.values[col]
        levels.append(img)
    # the slices the content check reads (25, 37.5, 50, 62.5, 75 %) get distinct levels
    bounds = (0.3, 0.44, 0.56, 0.7)
    arr = np.stack([levels[sum(k >= b * n_slices for b in bounds)] for k in range(n_slices)])
    arr = arr + rng.normal(0.0, noise_hu, size=arr.shape).astype(np.float32)
    z0 = z_center_mm - spacing_k_mm * (n_slices - 1) / 2
    return Volume.from_geometry(arr, origin_lps=(coords[0], coords[0], z0),
                                spacing_mm=(pixel_mm, pixel_mm, spacing_k_mm), modality="CT")
