"""The registry CSV tables, with exactly the brief's column names (units in the names)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.assessment.records import (
    OUTCOME_COLUMNS,
    TIMEPOINT_COLUMNS,
    LesionOutcome,
    LesionTimepoint,
    _cell,
)

__all__ = ["write_timepoints_csv", "write_outcomes_csv", "write_csv_atomic"]


def write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Write a CSV to a temporary file beside ``path`` and rename it into place, so a reader
    never sees a half-written table and an interrupted run leaves the old table intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: _cell(row.get(c)) for c in columns})
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; tables are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_timepoints_csv(path: Path, timepoints: Iterable[LesionTimepoint]) -> Path:
    """``lesion_timepoints.csv``: sorted by patient, lesion, days since procedure."""
    ordered = sorted(
        timepoints, key=lambda t: (t.patient_id, t.lesion_id, t.days_since_procedure,
                                   t.study_instance_uid)
    )
    return write_csv_atomic(path, TIMEPOINT_COLUMNS, (asdict(t) for t in ordered))


def write_outcomes_csv(path: Path, outcomes: Iterable[LesionOutcome]) -> Path:
    """``lesion_outcomes.csv``: one row per lesion, sorted by patient and lesion."""
    ordered = sorted(outcomes, key=lambda o: (o.patient_id, o.lesion_id))
    return write_csv_atomic(path, OUTCOME_COLUMNS, (asdict(o) for o in ordered))
