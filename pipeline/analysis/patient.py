"""Workflow stage ``analyse``: every lesion of one patient in every study.

For each lesion (grouped by procedure date): plan the studies (roles, series), load each
chosen series once, register every study to the baseline contrast series (robust to
table offsets and the prone intra-procedural position), segment and measure, and write
``patients/<id>/analysis.json``, the masks (NIfTI on the measured series grid, for the
SEG) and the rendered review panels. A study that fails is recorded with its reason in
the lesion's ``errors`` and a ``qc`` note; the other studies and lesions go on.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.analysis.lesion import (
    StudyMeasurement,
    measure_iceball,
    measure_tumour,
    measure_zone,
    tumour_into,
)
from pipeline.analysis.manifest import ManifestLesion, read_manifest
from pipeline.analysis.studies import StudyPlan, plan_studies
from pipeline.assessment.criteria import AssessmentCriteria
from pipeline.assessment.records import LesionTimepoint, Role, timepoint_to_dict
from pipeline.dicom.errors import DicomInputError
from pipeline.dicom.instances import series_paths
from pipeline.dicom.loader import load_series, write_nifti
from pipeline.image import GeometryError, Volume
from pipeline.layout import OutputLayout, safe_id, write_json_atomic
from segmentation import load_external_mask, segment_iceball

__all__ = ["SeriesCache", "analyse_lesion", "read_external_masks", "stage_analyse"]

log = logging.getLogger("cryotrack.analyse")

# exceptions that mean "this study cannot be measured" (bad data, nothing found), as
# opposed to programming errors, which still propagate in tests but are recorded in runs
_STUDY_ERRORS = (DicomInputError, GeometryError, ValueError, RuntimeError)


class SeriesCache:
    """Loads each series once per patient, by series_key (paths from instances.parquet).
    Thread-safe: concurrent studies asking for the same series wait for one load."""

    def __init__(self, instances: pd.DataFrame, gap_policy: str) -> None:
        self._instances = instances
        self._gap_policy = gap_policy
        self._cache: dict[str, Volume] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.seconds = 0.0

    def paths(self, key: str) -> list[str]:
        return series_paths(self._instances, key)

    def get(self, key: str | None) -> Volume | None:
        if key is None:
            return None
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                started = time.perf_counter()
                vol = load_series(self.paths(key), gap_policy=self._gap_policy)  # type: ignore[arg-type]
                vol.source["series_key"] = key
                self._cache[key] = vol
                with self._guard:
                    self.seconds += time.perf_counter() - started
            return self._cache[key]


#: lesion search grid (mm) for the ice-ball scan, whose transform carries the baseline
#: tumour into it for the margin and coverage (the other studies only need the lesion's
#: position to segment around: the default 1.5 mm). 0.75 rather than 1.0: with the truth
#: tumour carried by the pipeline's registration, the margin's error from the
#: registration over 46 lesions of eleven archives went from −0.10 to −0.07 mm on average
#: (mean |error| 0.20 → 0.17 mm; seed 73's endophytic tumour −0.74 → +0.32 mm, seed 89's
#: progression tumour −0.21 → +0.02), at the same time per patient
_INTRA_FINE_MM = 0.75


def _registration_to_baseline(reference: Volume, moving: Volume, seed_lps: np.ndarray,
                              half_mm: float, fine_mm: float | None = None
                              ) -> tuple[Any, list[str], dict[str, Any]]:
    from segmentation import register_rigid

    reg = register_rigid(reference, moving, focus_point_lps=seed_lps,
                         focus_radius_mm=min(60.0, half_mm), fine_mm=fine_mm)
    info = {"quality": reg.quality, "metric": reg.quality_metric, "ok": reg.ok}
    return reg.transform, ([] if reg.ok else list(reg.qc or ["registration doubtful"])), info


#: the ice ball grown by this much (mm) is left out of the metric when the baseline →
#: ice-ball-scan registration is refined: freezing changes the kidney around the tumour
#: (and the probes' streaks cross it), tissue the first search matched against its
#: unfrozen baseline look
_ICE_EXCLUSION_MM = 3.0
#: range (mm) of that refinement around the first registration
_ICE_REFINE_SEARCH_MM = 6.0


def _registration_off_the_ice(reference: Volume, intra: Volume, seed_lps: np.ndarray,
                              transform: Any, ice_full: Volume, half_mm: float) -> Any:
    """The baseline → ice-ball-scan transform refined with the ice ball (grown by
    ``_ICE_EXCLUSION_MM``) left out of the metric, so the kidney beyond the ice carries it.

    Screened on the 55 ice-ball scans of five ten-patient archives (true ice ball): the
    error at the tumour fell on every one, 0.42 → 0.25 mm on average and 1.24 → 0.64 mm at
    worst. ``transform`` is returned unchanged when the ice ball is empty or the refined
    registration is doubtful."""
    from scipy import ndimage as ndi

    from segmentation import register_rigid, resample_to

    ice = np.asarray(ice_full.array) > 0
    if not ice.any():
        return transform
    kji = np.argwhere(ice)
    lo_lps = ice_full.index_to_lps(kji.min(axis=0)[::-1].astype(float))
    hi_lps = ice_full.index_to_lps(kji.max(axis=0)[::-1].astype(float))
    # the ice ball's box (LPS mm) with room for the growth: the distance map is computed
    # there, not on the whole scan
    half = float(np.max(np.abs(hi_lps - lo_lps))) / 2.0 + _ICE_EXCLUSION_MM + 3.0
    box = ice_full.crop_around_lps((lo_lps + hi_lps) / 2.0, half)
    grown = ndi.distance_transform_edt(np.asarray(box.array) == 0,
                                       sampling=box.spacing_mm[::-1]) <= _ICE_EXCLUSION_MM
    radius_mm = min(60.0, half_mm)
    ref = reference.crop_around_lps(seed_lps, radius_mm + 10.0)
    on_ref = resample_to(box.with_array(grown.astype(np.float32), modality=""), ref, transform,
                         default_value=0.0)
    keep = ref.with_array((np.asarray(on_ref.array) < 0.5).astype(np.uint8), modality="")
    reg = register_rigid(ref, intra, fixed_mask=keep, initial=transform,
                         focus_point_lps=seed_lps, focus_radius_mm=radius_mm,
                         fine_mm=_INTRA_FINE_MM, search_mm=_ICE_REFINE_SEARCH_MM)
    if not reg.ok:
        log.info("registration off the ice ball doubtful (%s): the first one kept",
                 "; ".join(reg.qc))
        return transform
    moved_mm = float(np.linalg.norm(_mapped(reg.transform, seed_lps)
                                    - _mapped(transform, seed_lps)))
    log.info("registration refined off the ice ball: lesion moved %.2f mm", moved_mm)
    return reg.transform


def _timepoint(les: ManifestLesion, plan: StudyPlan, modality: str) -> LesionTimepoint:
    return LesionTimepoint(
        patient_id=les.patient_id, lesion_id=les.lesion_id,
        study_instance_uid=plan.study_instance_uid, study_date=plan.study_date,
        days_since_procedure=plan.days_since_procedure, role=plan.role, modality=modality,
    )


def analyse_lesion(
    les: ManifestLesion,
    plans: list[StudyPlan],
    cache: SeriesCache,
    criteria: AssessmentCriteria,
    half_mm: float,
    on_measured: Callable[[StudyPlan, str, StudyMeasurement, LesionTimepoint], None],
    external: dict[tuple[str, str], Path] | None = None,
    workers: int = 1,
) -> tuple[list[LesionTimepoint], list[str]]:
    """Measure one lesion in all its studies; ``on_measured`` receives each result, in
    study order, on the calling thread.

    The baseline comes first (it gives the reference image and the tumour); the other
    studies only need those, so ``workers`` > 1 measures them concurrently (threads: the
    SimpleITK and scipy.ndimage kernels release the GIL). ``external`` maps
    (study_instance_uid, structure) to a user-supplied NIfTI mask."""
    seed = np.asarray(les.seed_lps_mm, dtype=np.float64)
    baseline = [p for p in plans if p.role is Role.BASELINE]
    context = _LesionContext(les, seed, cache, criteria, half_mm, external or {})
    outcomes: dict[int, _StudyOutcome] = {}
    for n, plan in enumerate(plans):
        if plan.role is Role.BASELINE:
            outcomes[n] = context.measure(plan)
    rest = [(n, plan) for n, plan in enumerate(plans) if n not in outcomes]
    if workers > 1 and len(rest) > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="study") as pool:
            for (n, _), outcome in zip(rest, pool.map(lambda np_: context.measure(np_[1]),
                                                      rest), strict=True):
                outcomes[n] = outcome
    else:
        for n, plan in rest:
            outcomes[n] = context.measure(plan)
    timepoints: list[LesionTimepoint] = []
    errors: list[str] = []
    for n, plan in enumerate(plans):
        outcome = outcomes[n]
        if outcome.measurement is not None:
            on_measured(plan, outcome.key, outcome.measurement, outcome.timepoint)
        if outcome.error is not None:
            errors.append(outcome.error)
        timepoints.append(outcome.timepoint)
    if not baseline:
        errors.append("no baseline study before the procedure")
    return timepoints, errors


@dataclass
class _StudyOutcome:
    timepoint: LesionTimepoint
    measurement: StudyMeasurement | None = None
    key: str = ""
    error: str | None = None


class _LesionContext:
    """What measuring one study of a lesion needs: the baseline reference image and tumour
    are set by the baseline study, then read (never written) by the others."""

    def __init__(self, les: ManifestLesion, seed: np.ndarray, cache: SeriesCache,
                 criteria: AssessmentCriteria, half_mm: float,
                 external: dict[tuple[str, str], Path]) -> None:
        self.les, self.seed, self.cache = les, seed, cache
        self.criteria, self.half_mm, self.external = criteria, half_mm, external
        self.reference: Volume | None = None
        self.tumour_full: Volume | None = None

    def measure(self, plan: StudyPlan) -> _StudyOutcome:
        """Measure ``plan``; a study that cannot be measured gives its reason, not an
        exception (the other studies go on)."""
        les, seed, half_mm = self.les, self.seed, self.half_mm
        tp = _timepoint(les, plan, plan.modality)
        ext = {structure: path for (study, structure), path in self.external.items()
               if study == plan.study_instance_uid}
        tp.qc.extend(plan.notes)
        try:
            if plan.role is Role.BASELINE:
                contrast = self.cache.get(plan.contrast_key)
                unenh = self.cache.get(plan.unenhanced_key)
                self.reference = contrast if contrast is not None else unenh
                m = measure_tumour(contrast, unenh, seed, self.criteria, half_mm, ext)
                key = (plan.contrast_key or plan.unenhanced_key) or ""
                self.tumour_full = m.full_masks.get("tumour")
                tp.long_axis_mm, tp.short_axis_mm = m.size.long_axis_mm, m.size.short_axis_mm
                tp.max_3d_diameter_mm, tp.volume_ml = m.size.max_3d_diameter_mm, m.size.volume_ml
            elif self.reference is None:
                raise ValueError("no baseline study with a usable series: cannot locate the "
                                 "lesion (the seed is given in baseline coordinates)")
            elif plan.role is Role.INTRAPROCEDURAL:
                intra = self.cache.get(plan.unenhanced_key)
                if intra is None:
                    raise ValueError("no unenhanced CT for the ice ball")
                transform, qc, info = _registration_to_baseline(
                    self.reference, intra, seed, half_mm, fine_mm=_INTRA_FINE_MM)
                tp.qc.extend(qc)
                center = _mapped(transform, seed)
                crop = intra.crop_around_lps(center, half_mm)
                ice = segment_iceball(intra, center)
                if self.tumour_full is not None and info["ok"]:
                    ice_mask = (load_external_mask(ext["iceball"], intra) if "iceball" in ext
                                else ice.mask)
                    transform = _registration_off_the_ice(self.reference, intra, seed,
                                                          transform, ice_mask, half_mm)
                tumour_here = (tumour_into(self.tumour_full, crop, transform)
                               if self.tumour_full is not None else None)
                m = measure_iceball(intra, center, tumour_here, half_mm, ext, iceball=ice)
                key = plan.unenhanced_key or ""
            else:
                post = self.cache.get(plan.contrast_key)
                pre = self.cache.get(plan.unenhanced_key)
                image = post if post is not None else pre
                if image is None:
                    raise ValueError("no usable series in this follow-up")
                if post is None:
                    tp.qc.append("no contrast series: ablation zone measured on unenhanced CT")
                transform, qc, _info = _registration_to_baseline(self.reference, image, seed,
                                                                 half_mm)
                tp.qc.extend(qc)
                center = _mapped(transform, seed)
                m = measure_zone(image, pre if post is not None else None, center,
                                 self.criteria, half_mm, ext)
                key = (plan.contrast_key or plan.unenhanced_key) or ""
                tp.long_axis_mm, tp.short_axis_mm = m.size.long_axis_mm, m.size.short_axis_mm
                tp.max_3d_diameter_mm, tp.volume_ml = m.size.max_3d_diameter_mm, m.size.volume_ml
            for name, value in m.values.items():
                setattr(tp, name, value)
            tp.modality = (m.image.modality if m.image is not None else plan.modality) or "CT"
            tp.qc.extend(q for q in m.qc if q not in tp.qc)
            return _StudyOutcome(tp, m, key)
        except _STUDY_ERRORS as exc:
            reason = f"{plan.role.value} study {plan.study_date}: {exc}"
            log.warning("lesion %s/%s: %s", les.patient_id, les.lesion_id, reason)
            log.debug("%s", traceback.format_exc())
            tp.qc.append(f"not measured: {exc}")
            return _StudyOutcome(tp, error=reason)


_STRUCTURES = ("tumour", "iceball", "ablation_zone")


def read_external_masks(
    csv_path: str | None,
) -> dict[tuple[str, str], dict[tuple[str, str], Path]]:
    """User-supplied masks: (patient, lesion) → {(study_uid, structure): NIfTI path}.

    CSV columns ``patient_id,lesion_id,study_instance_uid,structure,path``; ``path`` is
    relative to the CSV's folder unless absolute. A bad row is an error naming the line.
    """
    if not csv_path:
        return {}
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"external masks CSV not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = ["patient_id", "lesion_id", "study_instance_uid", "structure", "path"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    out: dict[tuple[str, str], dict[tuple[str, str], Path]] = {}
    for n, row in enumerate(table.to_dict("records"), start=2):
        if row["structure"] not in _STRUCTURES:
            raise ValueError(f"{path}:{n}: structure must be one of {_STRUCTURES}, "
                             f"got {row['structure']!r}")
        mask_path = Path(row["path"])
        if not mask_path.is_absolute():
            mask_path = path.parent / mask_path
        if not mask_path.is_file():
            raise FileNotFoundError(f"{path}:{n}: mask file not found: {mask_path}")
        out.setdefault((row["patient_id"], row["lesion_id"]), {})[
            (row["study_instance_uid"], row["structure"])] = mask_path
    return out


def _mapped(transform: Any, point_lps: np.ndarray) -> np.ndarray:
    from segmentation import transform_points_lps

    return np.asarray(transform_points_lps(transform, point_lps), dtype=np.float64)


def stage_analyse(config: dict[str, Any], patient: str) -> dict[str, Any]:
    """Analyse every manifest lesion of one patient (``patient`` is the safe id)."""
    from pipeline.outputs.overlay import ReviewPanel
    from pipeline.outputs.report_html import timepoint_flags, timepoint_values
    from pipeline.outputs.report_images import render_lesion_panels, write_rendered_json

    started = time.perf_counter()
    layout = OutputLayout.from_config(config)
    lesions = [les for les in read_manifest(Path(config["lesions"]))
               if safe_id(les.patient_id) == patient]
    if not lesions:
        raise ValueError(f"patient {patient!r} is not in the lesion manifest")
    patient_id = lesions[0].patient_id
    series = pd.read_csv(layout.series_csv, dtype={"patient_id": str, "study_date": str},
                         keep_default_na=False)
    instances = pd.read_parquet(layout.index_dir / "instances.parquet")
    criteria = AssessmentCriteria.from_mapping(config.get("criteria"))
    analysis_cfg = config["analysis"]
    half_mm = float(analysis_cfg["crop_half_size_mm"])
    workers = _use_threads(int(analysis_cfg.get("threads", 1)))
    cache = SeriesCache(instances, config["loading"]["gap_policy"])
    external = read_external_masks(analysis_cfg.get("external_masks"))
    patient_dir = layout.patient_dir(patient_id)
    out: dict[str, Any] = {"patient_id": patient_id, "lesions": [], "studies": {}}

    for les in lesions:
        entry: dict[str, Any] = {"lesion_id": les.lesion_id, "tracking_uid": les.tracking_uid,
                                 "items": [], "errors": [], "timepoints": []}
        panels: list[Any] = []
        try:
            plans = plan_studies(
                series, les.patient_id, les.procedure_date,
                baseline_study_uid=les.baseline_study_uid,
                intraprocedural_window_days=int(analysis_cfg["intraprocedural_window_days"]),
            )
        except ValueError as exc:
            entry["errors"].append(str(exc))
            out["lesions"].append(entry)
            continue
        for p in plans:
            out["studies"][p.study_instance_uid] = {
                "study_date": p.study_date.isoformat(), "role": p.role.value,
                "days_since_procedure": p.days_since_procedure, "modality": p.modality,
                "unenhanced_key": p.unenhanced_key, "contrast_key": p.contrast_key,
                "contrast_phase": p.contrast_phase, "notes": p.notes,
            }

        def on_measured(plan: StudyPlan, key: str, m: StudyMeasurement, tp: LesionTimepoint,
                        les: ManifestLesion = les, entry: dict[str, Any] = entry,
                        panels: list[Any] = panels) -> None:
            item: dict[str, Any] = {"study_instance_uid": plan.study_instance_uid,
                                    "series_key": key, "masks": {}, "extra": m.extra}
            for name, mask in m.full_masks.items():
                if name == "probes" or not np.asarray(mask.array).any():
                    continue
                path = layout.mask_file(les.patient_id, les.lesion_id,
                                        plan.study_instance_uid, name)
                write_nifti(mask.with_array(np.asarray(mask.array, dtype=np.uint8)), path)
                item["masks"][name] = str(path.relative_to(patient_dir))
            entry["items"].append(item)
            if m.image is not None:
                panels.append(ReviewPanel(
                    patient_id=les.patient_id, lesion_id=les.lesion_id,
                    study_date=plan.study_date, role=plan.role,
                    days_since_procedure=plan.days_since_procedure, image=m.image,
                    masks=m.masks, long_axis_endpoints_lps=m.size.long_endpoints_lps,
                    short_axis_endpoints_lps=m.size.short_endpoints_lps,
                    values=timepoint_values(tp), flags=timepoint_flags(tp),
                    modality="MR" if m.image.modality == "MR" else "CT",
                    study_instance_uid=plan.study_instance_uid,
                ))

        timepoints, errors = analyse_lesion(les, plans, cache, criteria, half_mm, on_measured,
                                            external.get((les.patient_id, les.lesion_id)),
                                            workers=workers)
        # panel values must show the final timepoint values (set after on_measured)
        entry["timepoints"] = [timepoint_to_dict(t) for t in timepoints]
        entry["errors"].extend(errors)
        if panels:
            rendered = render_lesion_panels(layout.report_dir, _refresh(panels, timepoints))
            rel = f"panels/{safe_id(les.lesion_id)}.json"
            write_rendered_json(patient_dir / rel, rendered)
            entry["panels"] = rel
        out["lesions"].append(entry)

    out["seconds"] = round(time.perf_counter() - started, 2)
    out["loading_seconds"] = round(cache.seconds, 2)
    path = layout.analysis_json(patient_id)
    write_json_atomic(path, out)
    n_tp = sum(len(e["timepoints"]) for e in out["lesions"])
    n_err = sum(len(e["errors"]) for e in out["lesions"])
    return {"patient": patient_id, "lesions": len(lesions), "timepoints": n_tp,
            "errors": n_err, "seconds": out["seconds"]}


def _use_threads(threads: int) -> int:
    """Studies measured concurrently within a budget of ``threads`` cores: one study per
    core, every SimpleITK filter single-threaded (by default each would start a thread
    per core of the machine, oversubscribing it under Snakemake's core accounting)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return max(1, threads)


def _refresh(panels: list[Any], timepoints: list[LesionTimepoint]) -> list[Any]:
    """Panels with the values and flags of the finished timepoints."""
    from dataclasses import replace

    from pipeline.outputs.report_html import timepoint_flags, timepoint_values

    by_study = {t.study_instance_uid: t for t in timepoints}
    return [replace(p, values=timepoint_values(by_study[p.study_instance_uid]),
                    flags=timepoint_flags(by_study[p.study_instance_uid])) for p in panels]
