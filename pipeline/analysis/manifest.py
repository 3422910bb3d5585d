"""The lesion manifest (CSV, one row per treated lesion), validated on entry.

Columns (brief): ``patient_id,lesion_id,procedure_date,side,seed_x_mm,seed_y_mm,seed_z_mm,
baseline_study_uid``; ``side`` and ``baseline_study_uid`` may be empty. The seed is a point
inside the tumour in LPS millimetres of the baseline study.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

__all__ = ["ManifestError", "ManifestLesion", "read_manifest", "REQUIRED_COLUMNS"]

REQUIRED_COLUMNS = (
    "patient_id", "lesion_id", "procedure_date", "seed_x_mm", "seed_y_mm", "seed_z_mm",
)
OPTIONAL_COLUMNS = ("side", "baseline_study_uid")


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ManifestLesion:
    patient_id: str
    lesion_id: str
    procedure_date: date
    side: str | None
    seed_lps_mm: tuple[float, float, float]
    baseline_study_uid: str | None

    @property
    def key(self) -> str:
        """File-system-safe identifier ``patient__lesion``."""
        return f"{_safe(self.patient_id)}__{_safe(self.lesion_id)}"

    @property
    def tracking_uid(self) -> str:
        """A DICOM UID stable for this lesion across studies and reruns (2.25 + hash)."""
        digest = hashlib.sha256(f"{self.patient_id}\0{self.lesion_id}".encode()).digest()
        return "2.25." + str(int.from_bytes(digest[:15], "big"))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _parse_date(value: str, where: str) -> date:
    text = value.strip()
    for fmt_len, parse in ((10, date.fromisoformat), (8, _dicom_date)):
        if len(text) == fmt_len:
            try:
                return parse(text)
            except ValueError:
                break
    raise ManifestError(f"{where}: procedure_date {value!r} is not YYYY-MM-DD or YYYYMMDD")


def _dicom_date(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def read_manifest(path: Path) -> list[ManifestLesion]:
    """Read and validate a lesion manifest; raise ManifestError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"lesion manifest not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"{path}: missing columns {missing}; found {header}")
        lesions: list[ManifestLesion] = []
        seen: set[tuple[str, str]] = set()
        for line_no, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            where = f"{path}:{line_no}"
            if not any(row.values()):
                continue
            pid, lid = row["patient_id"], row["lesion_id"]
            if not pid or not lid:
                raise ManifestError(f"{where}: patient_id and lesion_id must not be empty")
            if (pid, lid) in seen:
                raise ManifestError(f"{where}: duplicate lesion {pid}/{lid}")
            seen.add((pid, lid))
            try:
                seed = tuple(float(row[c]) for c in ("seed_x_mm", "seed_y_mm", "seed_z_mm"))
            except ValueError as exc:
                raise ManifestError(f"{where}: seed coordinates must be numbers ({exc})") from exc
            if not np.all(np.isfinite(seed)):
                raise ManifestError(f"{where}: seed coordinates must be finite, got {seed}")
            side = row.get("side", "").upper() or None
            if side not in (None, "L", "R"):
                raise ManifestError(f"{where}: side must be L, R or empty, got {row['side']!r}")
            lesions.append(
                ManifestLesion(
                    patient_id=pid,
                    lesion_id=lid,
                    procedure_date=_parse_date(row["procedure_date"], where),
                    side=side,
                    seed_lps_mm=(seed[0], seed[1], seed[2]),
                    baseline_study_uid=row.get("baseline_study_uid") or None,
                )
            )
    if not lesions:
        raise ManifestError(f"{path}: no lesions listed")
    return lesions
