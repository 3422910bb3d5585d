"""Study roles (from dates relative to the procedure) and the choice of series per study.

Works on the series index (``OUT/index/series.csv`` as a DataFrame): columns
``patient_id, study_instance_uid, study_date, series_key, modality, usable, phase,
preferred, slice_thickness_mm, n_instances, acquisition_time``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from pipeline.assessment.records import Role

__all__ = ["StudyPlan", "plan_studies", "parse_study_date"]

# contrast phase preference for measuring a tumour / an ablation zone: nephrographic
# (homogeneous parenchyma, best lesion conspicuity and the usual follow-up phase), then
# corticomedullary/arterial, then excretory.
_CT_CONTRAST_PREFERENCE = ("nephrographic", "arterial", "excretory")


@dataclass
class StudyPlan:
    """What to load for one study of one patient, and why other things were not used."""

    study_instance_uid: str
    study_date: date
    days_since_procedure: int
    role: Role
    modality: str
    unenhanced_key: str | None = None
    contrast_key: str | None = None
    contrast_phase: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def series_keys(self) -> list[str]:
        return [k for k in (self.unenhanced_key, self.contrast_key) if k]


def parse_study_date(value: object) -> date | None:
    """A DICOM DA (YYYYMMDD), ISO date string, date or Timestamp → date; None if absent."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if not text:
        return None
    if len(text) >= 8 and text[:8].isdigit():
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    return date.fromisoformat(text[:10])


def _rank(rows: pd.DataFrame) -> pd.DataFrame:
    """Order candidate series: preferred reconstruction first, then 1–3 mm slices, then
    the latest acquisition, then the most slices (stable for reruns via series_key)."""
    r = rows.copy()
    pref = r["preferred"] if "preferred" in r else pd.Series(True, index=r.index)
    thick = pd.to_numeric(r.get("slice_thickness_mm"), errors="coerce").fillna(99.0)
    r["_pref"] = ~pref.astype(bool)
    r["_thick"] = (thick - 2.0).abs()
    acq = r["acquisition_time"] if "acquisition_time" in r else pd.Series("", index=r.index)
    r["_acq"] = acq.fillna("").astype(str)
    r["_n"] = -pd.to_numeric(r.get("n_instances"), errors="coerce").fillna(0)
    return r.sort_values(["_pref", "_thick", "_acq", "_n", "series_key"],
                         ascending=[True, True, False, True, True])


def _pick(rows: pd.DataFrame, phases: tuple[str, ...]) -> tuple[str | None, str | None]:
    for phase in phases:
        cand = rows[rows["phase"] == phase]
        if len(cand):
            best = _rank(cand).iloc[0]
            return str(best["series_key"]), phase
    return None, None


def plan_studies(
    series: pd.DataFrame,
    patient_id: str,
    procedure_date: date,
    *,
    baseline_study_uid: str | None = None,
    intraprocedural_window_days: int = 0,
) -> list[StudyPlan]:
    """Assign a role to every study of a patient and choose its series.

    - intra-procedural: studies within ``intraprocedural_window_days`` of the procedure;
    - baseline: ``baseline_study_uid`` if given, else the latest earlier study that has a
      usable CT/MR series; earlier pre-procedure studies are not used (noted);
    - follow-up: later studies.
    """
    rows = series[series["patient_id"].astype(str) == str(patient_id)]
    if rows.empty:
        raise ValueError(f"patient {patient_id!r}: no series in the index")
    usable = rows[rows["usable"].astype(str).str.lower().isin(("true", "1"))]
    usable = usable[usable["modality"].isin(("CT", "MR"))]
    plans: list[StudyPlan] = []
    for study_uid, study_rows in rows.groupby("study_instance_uid", sort=True):
        study_date = parse_study_date(study_rows["study_date"].iloc[0])
        if study_date is None:
            continue
        days = (study_date - procedure_date).days
        if abs(days) <= intraprocedural_window_days:
            role = Role.INTRAPROCEDURAL
        elif days < 0:
            role = Role.BASELINE
        else:
            role = Role.FOLLOWUP
        u = usable[usable["study_instance_uid"] == study_uid]
        modality = "MR" if (u["modality"] == "MR").any() and not (u["modality"] == "CT").any() \
            else "CT"
        plan = StudyPlan(str(study_uid), study_date, days, role, modality)
        if u.empty:
            plan.notes.append("no usable CT/MR series in this study")
        elif role is Role.INTRAPROCEDURAL:
            plan.unenhanced_key, _ = _pick(u[u["modality"] == "CT"], ("non_contrast", "unknown"))
            if plan.unenhanced_key is None:
                plan.notes.append("no unenhanced CT for the ice ball")
        elif modality == "MR":
            plan.unenhanced_key, _ = _pick(u, ("mr_pre",))
            plan.contrast_key, plan.contrast_phase = _pick(u, ("mr_post",))
        else:
            ct = u[u["modality"] == "CT"]
            plan.unenhanced_key, _ = _pick(ct, ("non_contrast",))
            plan.contrast_key, plan.contrast_phase = _pick(ct, _CT_CONTRAST_PREFERENCE)
        if role is not Role.INTRAPROCEDURAL:
            if plan.unenhanced_key is None:
                plan.notes.append("no unenhanced series: enhancement not assessable")
            if plan.contrast_key is None:
                plan.notes.append("no contrast series: enhancement not assessable")
        plans.append(plan)

    baselines = [p for p in plans if p.role is Role.BASELINE]
    if baseline_study_uid is not None:
        chosen = [p for p in baselines if p.study_instance_uid == baseline_study_uid]
        if not chosen:
            raise ValueError(
                f"patient {patient_id!r}: baseline_study_uid {baseline_study_uid} is not a "
                "study before the procedure in the index"
            )
        keep = chosen[0]
    else:
        with_series = [p for p in baselines if p.series_keys]
        keep = max(with_series, key=lambda p: p.study_date) if with_series else None
    result = []
    for p in plans:
        if p.role is Role.BASELINE and p is not keep:
            continue  # earlier pre-procedure studies are not part of the assessment
        result.append(p)
    return sorted(result, key=lambda p: (p.days_since_procedure, p.study_instance_uid))
