"""``cryotrack index``: scan an archive (headers only), group series, classify, write tables.

Flow: walk the folder tree → read headers in parallel (dask, ``workers`` processes,
chunked file lists; ``workers=1`` runs in-process) → group into series
(:mod:`pipeline.dicom.grouping`) → classify (:mod:`pipeline.dicom.classify`) → for usable
axial CT (slice normal within 30° of z, so gantry-tilted CT too), confirm the contrast
phase from a few decoded slices (:mod:`pipeline.dicom.contrast`) → study rules
(reformats, ``preferred``) → write:

- ``series.csv`` / ``series.parquet``: one row per series (see :data:`SERIES_COLUMNS`);
- ``instances.parquet``: one row per instance, sorted by series and slice position, so a
  later stage loads a series without re-scanning (``path``, ``series_key``,
  ``slice_index``, ``position_mm`` along the slice normal, ...);
- ``errors.csv``: ``path, reason`` for files that are not DICOM or cannot be parsed.

A DICOMDIR (by SOP class or file name) is the media directory, not an image: it is
skipped, counted in the summary, and listed neither as a series nor as an error. Every
other file ends up either in exactly one series or in ``errors.csv``.

``series.csv`` columns (one row per series; booleans ``true``/``false``):

- identity: ``patient_id, study_instance_uid, study_date, series_instance_uid,
  series_key`` (= the UID, or ``UID_2``... for the parts of a split UID, or
  ``nouid-<hash>`` when the UID is blank; see :mod:`pipeline.dicom.grouping`),
  ``series_number, series_description, modality, sop_class_uid``;
- geometry: ``n_instances`` (files), ``n_slices`` (frames), ``rows, columns``,
  ``pixel_spacing_mm`` ("row\\column"), ``slice_thickness_mm`` (tag),
  ``slice_spacing_mm`` (median step between sorted slice positions), ``orientation``
  (axial|coronal|sagittal|oblique|unknown), ``tilt_deg`` (gantry tilt),
  ``patient_position``, ``image_type``;
- contrast: ``contrast_agent_tag`` (ContrastBolusAgent), ``contrast`` (none|enhanced|
  unknown), ``phase`` (non_contrast|arterial|nephrographic|excretory|mr_pre|mr_post|
  unknown), ``contrast_basis`` (how it was decided), ``aorta_hu`` (content check),
  ``header_contrast, header_phase`` (headers alone);
- use: ``usable``, ``reason`` (why not, "; "-joined), ``preferred`` (one usable
  reconstruction per study/phase/orientation, see :mod:`pipeline.dicom.classify`),
  ``notes`` (tilt, split, reformat notes), ``derived``, ``reformat``;
- extras: times, descriptions, manufacturer/model, kernel, body part, echo number,
  ``frame_of_reference_uid``, ``transfer_syntax`` (","-joined if mixed), ``split_note``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.dicom.classify import DEFAULT_MIN_SLICES, apply_study_rules, describe_series
from pipeline.dicom.classify import series_text as _series_text
from pipeline.dicom.contrast import (
    ContentMeasure,
    PhaseCall,
    combine_phase,
    measure_ct_content,
    read_slice_hu,
)
from pipeline.dicom.geometry import positions_along_normal_mm, row_col_normal
from pipeline.dicom.grouping import SeriesGroup, group_series
from pipeline.dicom.headers import read_headers

__all__ = [
    "SERIES_COLUMNS",
    "INSTANCE_COLUMNS",
    "ArchiveIndex",
    "IndexSummary",
    "list_files",
    "scan_headers",
    "index_archive",
    "build_index",
]

log = logging.getLogger(__name__)

SERIES_COLUMNS = (
    "patient_id", "study_instance_uid", "study_date", "series_instance_uid", "series_key",
    "series_number", "series_description", "modality", "sop_class_uid", "n_instances",
    "n_slices", "rows", "columns", "pixel_spacing_mm", "slice_thickness_mm",
    "slice_spacing_mm", "orientation", "tilt_deg", "patient_position", "image_type",
    "contrast_agent_tag", "contrast", "phase", "contrast_basis", "aorta_hu", "usable",
    "reason", "preferred", "notes", "derived", "reformat", "header_contrast", "header_phase",
    "contrast_start_time", "acquisition_time", "series_time", "study_description",
    "protocol_name", "image_comments", "manufacturer", "manufacturer_model",
    "convolution_kernel", "body_part", "echo_number", "frame_of_reference_uid",
    "transfer_syntax", "split_note",
)
INSTANCE_COLUMNS = (
    "series_key", "slice_index", "path", "series_instance_uid", "sop_instance_uid",
    "instance_number", "acquisition_number", "position_mm", "ipp_x_mm", "ipp_y_mm",
    "ipp_z_mm", "number_of_frames", "rows", "columns", "transfer_syntax",
)
_AXIAL_COS = 0.866  # cos 30°: content check also on gantry-tilted axial CT
_CONTENT_FRACTIONS = (0.5, 0.375, 0.625, 0.25, 0.75)  # central first: reading may stop


@dataclass
class ArchiveIndex:
    """The in-memory index: series rows, instance rows and unreadable files."""

    series: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    errors: list[tuple[str, str]]
    n_files: int
    n_dicomdir: int
    groups: dict[str, SeriesGroup] = field(default_factory=dict)


@dataclass
class IndexSummary:
    """What :func:`build_index` did (``describe()`` is printed by the CLI)."""

    archive: Path
    out_dir: Path
    n_files: int
    n_series: int
    n_usable: int
    n_errors: int
    n_dicomdir: int
    n_patients: int
    n_studies: int
    workers: int
    header_seconds: float
    total_seconds: float
    series: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def files_per_s(self) -> float:
        return self.n_files / self.header_seconds if self.header_seconds > 0 else float("inf")

    def describe(self, max_rows: int = 40) -> str:
        lines = [
            f"indexed {self.n_files} files under {self.archive} in {self.total_seconds:.1f} s "
            f"(headers {self.files_per_s:.0f} files/s, {self.workers} worker(s))",
            f"{self.n_series} series ({self.n_usable} usable) in {self.n_studies} studies of "
            f"{self.n_patients} patients; {self.n_errors} unreadable/non-DICOM files "
            f"(errors.csv); {self.n_dicomdir} DICOMDIR skipped",
            f"wrote {self.out_dir}/series.csv, series.parquet, instances.parquet, errors.csv",
        ]
        for row in self.series[:max_rows]:
            status = "usable" + (" *" if row["preferred"] else "") if row["usable"] else (
                f"NOT USED: {row['reason']}")
            lines.append(
                f"  {row['patient_id'][:12]:12s} {row['study_date']:8s} {row['modality']:3s} "
                f"{row['series_description'][:24]:24s} {row['n_slices']:5d} "
                f"{row['orientation'][:8]:8s} {row['phase']:14s} {status[:70]}"
            )
        if len(self.series) > max_rows:
            lines.append(f"  ... {len(self.series) - max_rows} more series in series.csv")
        return "\n".join(lines)


def list_files(archive: Path) -> list[str]:
    """Every regular file under ``archive`` (sorted, symlinked folders not followed)."""
    root = Path(archive)
    if not root.exists():
        raise FileNotFoundError(f"archive not found: {root}")
    if root.is_file():
        return [str(root)]
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def _chunks(items: Sequence[str], workers: int) -> list[list[str]]:
    size = max(32, min(2000, len(items) // max(1, workers * 4) + 1))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _make_pool(workers: int) -> Executor | None:
    if workers <= 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def _run(func: Any, chunks: list[Any], pool: Executor | None) -> list[Any]:
    """Apply ``func`` to each chunk: in-process, or as dask tasks on the process pool."""
    if pool is None or len(chunks) <= 1:
        return [func(c) for c in chunks]
    import dask

    # Results travel as one pickle.dumps blob per chunk: dask ships task results with
    # cloudpickle, whose per-object hook makes thousands of small dicts ~2× slower.
    tasks = [dask.delayed(_pickled_call, pure=False)(func, c) for c in chunks]
    # chunksize=1: dask's default batches 6 tasks per submission, which leaves a worker
    # idle when there are only a few (large) chunks.
    blobs = dask.compute(*tasks, scheduler="processes", pool=pool, chunksize=1)
    return [pickle.loads(blob) for blob in blobs]


def _pickled_call(func: Any, chunk: Any) -> bytes:
    return pickle.dumps(func(chunk), protocol=pickle.HIGHEST_PROTOCOL)


def scan_headers(
    paths: Sequence[str], *, workers: int = 1, pool: Executor | None = None
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], int]:
    """Read headers of ``paths``: (records, errors as (path, reason), number of DICOMDIRs)."""
    own_pool = pool is None and workers > 1
    if own_pool:
        pool = _make_pool(workers)
    try:
        results = _run(read_headers, _chunks(paths, workers), pool)
    finally:
        if own_pool and pool is not None:
            pool.shutdown()
    records: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    n_dicomdir = 0
    for chunk in results:
        for outcome in chunk:
            if outcome[0] == "ok":
                rec = outcome[1]
                if not (rec["sop_class_uid"] or rec["series_instance_uid"] or rec["modality"]):
                    errors.append((rec["path"], "DICOM without SOP Class UID, Series UID or "
                                   "Modality (not an image)"))
                else:
                    records.append(rec)
            elif outcome[0] == "dicomdir":
                n_dicomdir += 1
            else:
                errors.append((outcome[1], outcome[2]))
    return records, errors, n_dicomdir


def _sorted_members(group: SeriesGroup) -> list[tuple[dict[str, Any], float | None]]:
    """Instances with their position along the normal, sorted along it (or by number)."""
    recs = group.records
    iop = recs[0]["iop"]
    if iop is not None and all(r["ipp"] is not None for r in recs):
        try:
            pos = positions_along_normal_mm([r["ipp"] for r in recs], iop)
        except ValueError:
            pos = None
        if pos is not None:
            order = np.argsort(pos, kind="stable")
            return [(recs[i], float(pos[i])) for i in order]
    return sorted(((r, None) for r in recs),
                  key=lambda t: (t[0]["instance_number"] is None, t[0]["instance_number"] or 0,
                                 t[0]["path"]))


def _content_task(job: tuple[str, list[str], tuple[float, float], tuple[float, ...]]
                  ) -> tuple[str, ContentMeasure]:
    key, paths, spacing, iop = job

    def slices() -> Any:  # decoded lazily: measure_ct_content may stop early
        for p in paths:
            hu = read_slice_hu(p)
            if hu.ndim == 2:
                yield hu, spacing, iop

    try:
        return key, measure_ct_content(slices())
    except Exception as exc:  # a slice that does not decode: the header call stands
        return key, ContentMeasure(None, False, 0, "content not measurable: "
                                   f"{type(exc).__name__}: {exc}")


def _content_chunk(jobs: list[Any]) -> list[tuple[str, ContentMeasure]]:
    return [_content_task(j) for j in jobs]


def _near_axial(iop: Any) -> bool:
    """Slice normal within 30° of the patient z axis (axial, incl. gantry-tilted CT)."""
    try:
        _, _, normal = row_col_normal(iop)
    except ValueError:
        return False
    return abs(float(normal[2])) >= _AXIAL_COS


def _content_jobs(rows: list[dict[str, Any]], groups: dict[str, SeriesGroup]) -> list[Any]:
    jobs = []
    for row in rows:
        if not (row["usable"] and row["modality"] == "CT"):
            continue
        group = groups[row["series_key"]]
        if not _near_axial(group.records[0]["iop"]):
            continue
        if len(group.records) < 3:
            continue  # multi-frame objects: header call only
        members = _sorted_members(group)
        idx = list(dict.fromkeys(min(len(members) - 1, int(f * len(members)))
                                 for f in _CONTENT_FRACTIONS))
        first = members[0][0]
        spacing = (first["pixel_spacing_row_mm"], first["pixel_spacing_col_mm"])
        jobs.append((row["series_key"], [members[i][0]["path"] for i in idx], spacing,
                     first["iop"]))
    return jobs


def _instance_rows(group: SeriesGroup) -> list[dict[str, Any]]:
    out = []
    for k, (rec, pos) in enumerate(_sorted_members(group)):
        ipp = rec["ipp"] or (None, None, None)
        out.append({
            "series_key": group.series_key, "slice_index": k, "path": rec["path"],
            "series_instance_uid": group.series_instance_uid,
            "sop_instance_uid": rec["sop_instance_uid"],
            "instance_number": rec["instance_number"],
            "acquisition_number": rec["acquisition_number"], "position_mm": pos,
            "ipp_x_mm": ipp[0], "ipp_y_mm": ipp[1], "ipp_z_mm": ipp[2],
            "number_of_frames": rec["number_of_frames"], "rows": rec["rows"],
            "columns": rec["columns"], "transfer_syntax": rec["transfer_syntax"],
        })
    return out


def index_archive(
    archive: Path | str,
    *,
    workers: int = 1,
    content_check: bool = True,
    min_slices: int = DEFAULT_MIN_SLICES,
) -> ArchiveIndex:
    """Scan, group and classify an archive in memory (what :func:`build_index` writes)."""
    paths = list_files(Path(archive))
    pool = _make_pool(workers) if workers > 1 and len(paths) > 32 else None
    try:
        records, errors, n_dicomdir = scan_headers(paths, workers=workers, pool=pool)
        return _index_from_records(records, errors, n_dicomdir, len(paths),
                                   content_check=content_check, min_slices=min_slices,
                                   workers=workers, pool=pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _index_from_records(
    records: list[dict[str, Any]],
    errors: list[tuple[str, str]],
    n_dicomdir: int,
    n_files: int,
    *,
    content_check: bool,
    min_slices: int,
    workers: int,
    pool: Executor | None,
) -> ArchiveIndex:
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    if min_slices < 1:
        raise ValueError(f"min_slices must be ≥ 1, got {min_slices}")
    groups = {g.series_key: g for g in group_series(records)}
    rows = [describe_series(g, min_slices=min_slices) for g in groups.values()]
    if content_check:
        jobs = _content_jobs(rows, groups)
        per = max(1, len(jobs) // max(1, workers * 2))
        chunks = [jobs[i : i + per] for i in range(0, len(jobs), per)]
        measured = dict(m for chunk in _run(_content_chunk, chunks, pool) for m in chunk)
        for row in rows:
            if row["series_key"] in measured:
                _apply_content(row, measured[row["series_key"]])
    apply_study_rules(rows)
    instances = [r for g in groups.values() for r in _instance_rows(g)]
    return ArchiveIndex(rows, instances, sorted(errors), n_files, n_dicomdir, groups)


def _apply_content(row: dict[str, Any], measure: ContentMeasure) -> None:
    header = PhaseCall(row["header_contrast"], row["header_phase"], row["contrast_basis"])
    call = combine_phase(header, measure, _series_text(row))
    row.update(contrast=call.contrast, phase=call.phase, contrast_basis=call.basis,
               aorta_hu=None if measure.aorta_hu is None else round(measure.aorta_hu, 1))


def _write_tables(index: ArchiveIndex, out_dir: Path) -> None:
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    series = pd.DataFrame([{c: r.get(c) for c in SERIES_COLUMNS} for r in index.series],
                          columns=list(SERIES_COLUMNS))
    for col in ("series_number", "rows", "columns", "echo_number"):
        series[col] = series[col].astype("Int64")
    for col in ("slice_thickness_mm", "slice_spacing_mm", "tilt_deg", "aorta_hu"):
        series[col] = series[col].astype("float64")
    for col in ("usable", "preferred", "derived", "reformat"):
        series[col] = series[col].astype(bool)
    series.to_parquet(out_dir / "series.parquet", index=False)
    csv = series.copy()
    for col in ("usable", "preferred", "derived", "reformat"):
        csv[col] = csv[col].map({True: "true", False: "false"})
    csv.to_csv(out_dir / "series.csv", index=False)
    inst = pd.DataFrame(index.instances, columns=list(INSTANCE_COLUMNS))
    for col in ("instance_number", "acquisition_number", "rows", "columns"):
        inst[col] = inst[col].astype("Int64")
    for col in ("position_mm", "ipp_x_mm", "ipp_y_mm", "ipp_z_mm"):
        inst[col] = inst[col].astype("float64")
    inst.to_parquet(out_dir / "instances.parquet", index=False)
    pd.DataFrame(index.errors, columns=["path", "reason"]).to_csv(out_dir / "errors.csv",
                                                                   index=False)


def build_index(
    archive: Path,
    out_dir: Path,
    workers: int = 1,
    content_check: bool = True,
    *,
    min_slices: int = DEFAULT_MIN_SLICES,
) -> IndexSummary:
    """Index ``archive`` and write series.csv/.parquet, instances.parquet, errors.csv.

    Args:
        archive: any folder tree of DICOM files (or a single file).
        out_dir: output folder (created).
        workers: header-reading processes (1 = in-process).
        content_check: confirm CT contrast phase from a few decoded slices per series.
        min_slices: series with fewer slices are ``usable=false``.
    """
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    t0 = time.perf_counter()
    archive, out_dir = Path(archive), Path(out_dir)
    paths = list_files(archive)
    pool = _make_pool(workers) if workers > 1 and len(paths) > 32 else None
    try:
        t1 = time.perf_counter()
        records, errors, n_dicomdir = scan_headers(paths, workers=workers, pool=pool)
        header_s = time.perf_counter() - t1
        index = _index_from_records(records, errors, n_dicomdir, len(paths),
                                    content_check=content_check, min_slices=min_slices,
                                    workers=workers, pool=pool)
    finally:
        if pool is not None:
            pool.shutdown()
    _write_tables(index, out_dir)
    rows = index.series
    summary = IndexSummary(
        archive=archive, out_dir=out_dir, n_files=len(paths), n_series=len(rows),
        n_usable=sum(1 for r in rows if r["usable"]), n_errors=len(index.errors),
        n_dicomdir=n_dicomdir, n_patients=len({r["patient_id"] for r in rows}),
        n_studies=len({r["study_instance_uid"] for r in rows}), workers=workers,
        header_seconds=header_s, total_seconds=time.perf_counter() - t0, series=rows,
    )
    log.info("indexed %d files: %d series, %d errors", len(paths), len(rows), len(errors))
    return summary
