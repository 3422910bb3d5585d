"""The registry database (SQLAlchemy 2): SQLite by default, PostgreSQL by URL.

Every write is one transaction of upserts keyed on natural keys (patient id, lesion id,
study/series UIDs), so rerunning a pipeline never duplicates rows and a run that fails
part-way leaves the rows of earlier runs intact (the transaction rolls back).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.assessment.records import LesionOutcome, LesionTimepoint

__all__ = [
    "Base",
    "Registry",
    "RunInfo",
    "SeriesRecord",
    "LesionRecord",
    "config_hash",
]


class Base(DeclarativeBase):
    pass


class PipelineRun(Base):
    __tablename__ = "pipeline_runs"
    run_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[str] = mapped_column(String(32))
    config_hash: Mapped[str] = mapped_column(String(64))
    config_json: Mapped[str] = mapped_column(Text)
    archive: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))


class Patient(Base):
    __tablename__ = "patients"
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class Procedure(Base):
    __tablename__ = "procedures"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.patient_id"), primary_key=True)
    procedure_date: Mapped[date] = mapped_column(Date, primary_key=True)


class Lesion(Base):
    __tablename__ = "lesions"
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.patient_id"), primary_key=True)
    lesion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    procedure_date: Mapped[date] = mapped_column(Date)
    side: Mapped[str | None] = mapped_column(String(1))
    seed_x_mm: Mapped[float] = mapped_column(Float)
    seed_y_mm: Mapped[float] = mapped_column(Float)
    seed_z_mm: Mapped[float] = mapped_column(Float)
    tracking_uid: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        ForeignKeyConstraint(
            ["patient_id", "procedure_date"],
            ["procedures.patient_id", "procedures.procedure_date"],
        ),
    )


class Study(Base):
    __tablename__ = "studies"
    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.patient_id"))
    study_date: Mapped[date | None] = mapped_column(Date)


class Series(Base):
    __tablename__ = "series"
    series_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_instance_uid"))
    modality: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(Text)
    phase: Mapped[str | None] = mapped_column(String(24))
    usable: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)


class Measurement(Base):
    """One measured quantity of one lesion in one study (long format, unit explicit)."""

    __tablename__ = "measurements"
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lesion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(
        ForeignKey("studies.study_instance_uid"), primary_key=True
    )
    quantity: Mapped[str] = mapped_column(String(48), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    text_value: Mapped[str | None] = mapped_column(Text)
    unit: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    days_since_procedure: Mapped[int] = mapped_column(Integer)
    qc: Mapped[str | None] = mapped_column(Text)
    run_uid: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.run_uid"))
    __table_args__ = (
        ForeignKeyConstraint(
            ["patient_id", "lesion_id"], ["lesions.patient_id", "lesions.lesion_id"]
        ),
    )


class Outcome(Base):
    __tablename__ = "outcomes"
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    lesion_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    baseline_long_axis_mm: Mapped[float | None] = mapped_column(Float)
    last_followup_days: Mapped[int | None] = mapped_column(Integer)
    last_followup_long_axis_mm: Mapped[float | None] = mapped_column(Float)
    size_change_pct: Mapped[float | None] = mapped_column(Float)
    no_enhancement: Mapped[bool | None] = mapped_column(Boolean)
    size_decrease: Mapped[bool | None] = mapped_column(Boolean)
    success: Mapped[bool | None] = mapped_column(Boolean)
    technical_success: Mapped[bool | None] = mapped_column(Boolean)
    min_margin_mm: Mapped[float | None] = mapped_column(Float)
    iceball_long_axis_mm: Mapped[float | None] = mapped_column(Float)
    residual_tumour: Mapped[bool | None] = mapped_column(Boolean)
    local_progression: Mapped[bool | None] = mapped_column(Boolean)
    needs_review: Mapped[bool] = mapped_column(Boolean)
    review_reasons: Mapped[str | None] = mapped_column(Text)
    run_uid: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.run_uid"))
    __table_args__ = (
        ForeignKeyConstraint(
            ["patient_id", "lesion_id"], ["lesions.patient_id", "lesions.lesion_id"]
        ),
    )


# quantity name in the measurements table → (LesionTimepoint attribute, UCUM unit)
_QUANTITIES: dict[str, tuple[str, str]] = {
    "long_axis": ("long_axis_mm", "mm"),
    "short_axis": ("short_axis_mm", "mm"),
    "max_3d_diameter": ("max_3d_diameter_mm", "mm"),
    "volume": ("volume_ml", "ml"),
    "enhancement_hu": ("enhancement_hu", "[hnsf'U]"),
    "enhancement_pct": ("enhancement_pct", "%"),
    "iceball_long_axis": ("iceball_long_axis_mm", "mm"),
    "iceball_short_axis": ("iceball_short_axis_mm", "mm"),
    "iceball_volume": ("iceball_volume_ml", "ml"),
    "min_margin": ("min_margin_mm", "mm"),
    "tumour_coverage": ("tumour_coverage_pct", "%"),
}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a configuration."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class RunInfo:
    run_uid: str
    version: str
    config: dict[str, Any]
    archive: str


@dataclass(frozen=True)
class SeriesRecord:
    series_key: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    study_date: date | None
    modality: str | None
    series_description: str | None
    phase: str | None
    usable: bool
    reason: str | None


@dataclass(frozen=True)
class LesionRecord:
    patient_id: str
    lesion_id: str
    procedure_date: date
    side: str | None
    seed_lps_mm: tuple[float, float, float]
    tracking_uid: str | None = None


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Registry:
    """Connection to the registry database; creates the schema on first use.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///OUT/registry.sqlite`` or
            ``postgresql+psycopg2://user@host/db``.
    """

    def __init__(self, url: str) -> None:
        if not url or "://" not in url:
            raise ValueError(f"registry URL must look like dialect://..., got {url!r}")
        backend = make_url(url).get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"registry supports sqlite and postgresql, got {backend!r}")
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_foreign_keys)
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ upsert helper
    def _upsert(self, conn: Connection, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        table = model.__table__  # type: ignore[attr-defined]
        dialect = sqlite if self.engine.dialect.name == "sqlite" else postgresql
        keys = [c.name for c in table.primary_key.columns]
        for row in rows:
            stmt = dialect.insert(table).values(**row)
            update = {k: stmt.excluded[k] for k in row if k not in keys}
            if update:
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update)
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=keys)
            conn.execute(stmt)

    # ------------------------------------------------------------------ public API
    def record_run(
        self,
        run: RunInfo,
        *,
        series: Iterable[SeriesRecord] = (),
        lesions: Iterable[LesionRecord] = (),
        timepoints: Iterable[LesionTimepoint] = (),
        outcomes: Iterable[LesionOutcome] = (),
    ) -> None:
        """Write one pipeline run's results in a single transaction (all or nothing)."""
        now = datetime.now(UTC)
        series, lesions = list(series), list(lesions)
        timepoints, outcomes = list(timepoints), list(outcomes)
        with self.engine.begin() as conn:
            self._upsert(conn, PipelineRun, [{
                "run_uid": run.run_uid, "started_at": now, "finished_at": None,
                "version": run.version, "config_hash": config_hash(run.config),
                "config_json": json.dumps(run.config, sort_keys=True, default=str),
                "archive": run.archive, "status": "writing",
            }])
            patients = {s.patient_id for s in series} | {les.patient_id for les in lesions}
            patients |= {t.patient_id for t in timepoints}
            self._upsert(conn, Patient, [{"patient_id": p} for p in sorted(patients)])
            procedures = sorted({(les.patient_id, les.procedure_date) for les in lesions})
            self._upsert(conn, Procedure, [
                {"patient_id": p, "procedure_date": d} for p, d in procedures
            ])
            self._upsert(conn, Lesion, [{
                "patient_id": les.patient_id, "lesion_id": les.lesion_id,
                "procedure_date": les.procedure_date, "side": les.side,
                "seed_x_mm": les.seed_lps_mm[0], "seed_y_mm": les.seed_lps_mm[1],
                "seed_z_mm": les.seed_lps_mm[2], "tracking_uid": les.tracking_uid,
            } for les in lesions])
            studies: dict[str, dict[str, Any]] = {}
            for s in series:
                studies[s.study_instance_uid] = {
                    "study_instance_uid": s.study_instance_uid,
                    "patient_id": s.patient_id, "study_date": s.study_date,
                }
            for t in timepoints:
                studies.setdefault(t.study_instance_uid, {
                    "study_instance_uid": t.study_instance_uid,
                    "patient_id": t.patient_id, "study_date": t.study_date,
                })
            self._upsert(conn, Study, list(studies.values()))
            self._upsert(conn, Series, [{
                "series_key": s.series_key, "series_instance_uid": s.series_instance_uid,
                "study_instance_uid": s.study_instance_uid, "modality": s.modality,
                "series_description": s.series_description, "phase": s.phase,
                "usable": s.usable, "reason": s.reason,
            } for s in series])
            self._upsert(conn, Measurement, _measurement_rows(timepoints, run.run_uid))
            self._upsert(conn, Outcome, [_outcome_row(o, run.run_uid) for o in outcomes])
            self._upsert(conn, PipelineRun, [{
                "run_uid": run.run_uid, "started_at": now, "finished_at": datetime.now(UTC),
                "version": run.version, "config_hash": config_hash(run.config),
                "config_json": json.dumps(run.config, sort_keys=True, default=str),
                "archive": run.archive, "status": "complete",
            }])

    def count(self, model_name: str) -> int:
        model = {m.__tablename__: m for m in _MODELS}[model_name]
        with self.engine.connect() as conn:
            return len(conn.execute(select(model.__table__)).all())  # type: ignore[attr-defined]

    def rows(self, model_name: str) -> list[dict[str, Any]]:
        model = {m.__tablename__: m for m in _MODELS}[model_name]
        with self.engine.connect() as conn:
            result = conn.execute(select(model.__table__))  # type: ignore[attr-defined]
            return [dict(r._mapping) for r in result]


_MODELS: tuple[type[Base], ...] = (
    PipelineRun, Patient, Procedure, Lesion, Study, Series, Measurement, Outcome,
)


def _measurement_rows(timepoints: Sequence[LesionTimepoint], run_uid: str) -> list[dict[str, Any]]:
    rows = []
    for t in timepoints:
        base = {
            "patient_id": t.patient_id, "lesion_id": t.lesion_id,
            "study_instance_uid": t.study_instance_uid, "role": t.role.value,
            "days_since_procedure": t.days_since_procedure,
            "qc": "; ".join(t.qc) or None, "run_uid": run_uid,
        }
        for quantity, (attr, unit) in _QUANTITIES.items():
            value = getattr(t, attr)
            if value is not None:
                rows.append({**base, "quantity": quantity, "value": float(value),
                             "text_value": None, "unit": unit})
        rows.append({**base, "quantity": "enhancing", "value": None,
                     "text_value": t.enhancing, "unit": "{class}"})
    return rows


def _outcome_row(o: LesionOutcome, run_uid: str) -> dict[str, Any]:
    return {
        "patient_id": o.patient_id, "lesion_id": o.lesion_id,
        "baseline_long_axis_mm": o.baseline_long_axis_mm,
        "last_followup_days": o.last_followup_days,
        "last_followup_long_axis_mm": o.last_followup_long_axis_mm,
        "size_change_pct": o.size_change_pct, "no_enhancement": o.no_enhancement,
        "size_decrease": o.size_decrease, "success": o.success,
        "technical_success": o.technical_success, "min_margin_mm": o.min_margin_mm,
        "iceball_long_axis_mm": o.iceball_long_axis_mm, "residual_tumour": o.residual_tumour,
        "local_progression": o.local_progression, "needs_review": o.needs_review,
        "review_reasons": "; ".join(o.review_reasons) or None, "run_uid": run_uid,
    }
