"""Every output path of a run, decided in one place (imports nothing of ours).

The Snakemake rules, the stage functions and the CLI all ask :class:`OutputLayout`; no
other code joins output paths by hand. Patient folders use a file-system-safe form of the
PatientID (``safe_id``), mapped back through the manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OutputLayout", "safe_id", "write_json_atomic"]


_WILDCARD = re.compile(r"^\{\w+\}$")


def safe_id(text: str) -> str:
    """PatientID/LesionID → a name safe for files and Snakemake wildcards.

    A Snakemake wildcard placeholder such as ``"{patient}"`` passes through unchanged, so
    rules can build their patterns with the same layout functions.
    """
    if _WILDCARD.match(str(text)):
        return str(text)
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))
    return cleaned or "_"


@dataclass(frozen=True)
class OutputLayout:
    """The layout of ``OUT/`` (documented in the README)."""

    out: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OutputLayout:
        """The layout of a workflow configuration's ``out`` folder (made absolute)."""
        return cls(Path(config["out"]).resolve())

    # index ---------------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.out / "index"

    @property
    def series_csv(self) -> Path:
        return self.index_dir / "series.csv"

    @property
    def patients_json(self) -> Path:
        """Patients of the manifest found in the index (written by the index checkpoint)."""
        return self.index_dir / "patients.json"

    # per patient ---------------------------------------------------------------
    def patient_dir(self, patient: str) -> Path:
        return self.out / "patients" / safe_id(patient)

    def analysis_json(self, patient: str) -> Path:
        return self.patient_dir(patient) / "analysis.json"

    def mask_file(self, patient: str, lesion: str, study_uid: str, structure: str) -> Path:
        return (self.patient_dir(patient) / "masks"
                / f"{safe_id(lesion)}_{study_uid}_{structure}.nii.gz")

    def panel_file(self, patient: str, lesion: str, study_uid: str) -> Path:
        """Cropped image + masks + calipers of one lesion in one study, for the report."""
        return self.patient_dir(patient) / "panels" / f"{safe_id(lesion)}_{study_uid}.npz"

    def dicom_dir(self, patient: str) -> Path:
        return self.out / "dicom" / safe_id(patient)

    def dicom_done(self, patient: str) -> Path:
        return self.dicom_dir(patient) / "manifest.json"

    # cohort --------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.out / "tables"

    @property
    def timepoints_csv(self) -> Path:
        return self.tables_dir / "lesion_timepoints.csv"

    @property
    def outcomes_csv(self) -> Path:
        return self.tables_dir / "lesion_outcomes.csv"

    @property
    def cohort_json(self) -> Path:
        return self.tables_dir / "cohort_summary.json"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @property
    def report_index(self) -> Path:
        return self.report_dir / "index.html"

    @property
    def registry_sqlite(self) -> Path:
        return self.out / "registry.sqlite"

    @property
    def registry_done(self) -> Path:
        return self.out / "logs" / "registry.done.json"

    @property
    def summary_txt(self) -> Path:
        return self.out / "summary.txt"

    # logs and benchmarks ---------------------------------------------------------
    def log(self, stage: str, name: str = "all") -> Path:
        return self.out / "logs" / stage / f"{safe_id(name)}.log"

    def benchmark(self, stage: str, name: str = "all") -> Path:
        return self.out / "benchmarks" / stage / f"{safe_id(name)}.tsv"


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON beside ``path`` and rename it into place, so a reader (or a resumed run)
    never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    tmp.replace(path)
    return path
