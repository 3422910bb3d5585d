"""Overlay images of the report, renderable apart from the HTML.

A cohort's volumes do not fit in one process, so a workflow renders each lesion's overlays
in its own job (:func:`render_lesion_panels`), keeps the small :class:`RenderedPanel`
records (JSON via :func:`write_rendered_json` / :func:`read_rendered_json`), and the final
report job passes those records to :func:`pipeline.outputs.report.write_report`. File names
depend only on the identifiers and the lesion's own studies, so rendering per lesion or all
at once gives the same files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pipeline.assessment.records import Role
from pipeline.outputs.overlay import ReviewPanel, caliper_notes, render_overlay
from pipeline.outputs.report_html import write_text_atomic

__all__ = [
    "RenderedPanel",
    "render_lesion_panels",
    "report_slug",
    "lesion_stem",
    "panel_sort_key",
    "write_rendered_json",
    "read_rendered_json",
]

IMG_DIR = "img"
_ROLE_ORDER = {Role.BASELINE: 0, Role.INTRAPROCEDURAL: 1, Role.FOLLOWUP: 2}


def report_slug(text: str) -> str:
    """A file-name-safe, URL-safe form of an identifier (``[A-Za-z0-9_-]``).

    Identifiers that are not already safe get a short hash of the original appended, so
    two different identifiers never share a file (``P/1`` and ``P_1`` differ).
    """
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if safe != text or not safe:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe or 'id'}-{digest}"
    return safe


def lesion_stem(patient_id: str, lesion_id: str) -> str:
    """Common file-name prefix of one lesion's images."""
    return f"{report_slug(patient_id)}__{report_slug(lesion_id)}"


@dataclass(frozen=True)
class RenderedPanel:
    """What the report needs of a panel once its overlay PNG exists (no voxels).

    ``png_relpath`` is relative to the report directory, POSIX style
    (``img/<patient>__<lesion>__<yyyymmdd>_<role>_<nn>.png``).
    """

    patient_id: str
    lesion_id: str
    study_date: date
    role: Role
    days_since_procedure: int
    modality: str
    png_relpath: str
    values: Mapping[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    study_instance_uid: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "values", dict(self.values))
        object.__setattr__(self, "flags", tuple(str(f) for f in self.flags))
        rel = Path(self.png_relpath)
        if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".png":
            raise ValueError(
                f"RenderedPanel {self.patient_id}/{self.lesion_id}: png_relpath must be a "
                f"relative .png path inside the report, got {self.png_relpath!r}"
            )

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "lesion_id": self.lesion_id,
            "study_date": self.study_date.isoformat(),
            "role": self.role.value,
            "days_since_procedure": self.days_since_procedure,
            "modality": self.modality,
            "png_relpath": self.png_relpath,
            "values": [[k, v] for k, v in self.values.items()],  # keeps the order
            "flags": list(self.flags),
            "study_instance_uid": self.study_instance_uid,
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> RenderedPanel:
        return cls(
            patient_id=str(data["patient_id"]),
            lesion_id=str(data["lesion_id"]),
            study_date=date.fromisoformat(data["study_date"]),
            role=Role(data["role"]),
            days_since_procedure=int(data["days_since_procedure"]),
            modality=str(data["modality"]),
            png_relpath=str(data["png_relpath"]),
            values={str(k): str(v) for k, v in data.get("values", [])},
            flags=tuple(str(f) for f in data.get("flags", [])),
            study_instance_uid=str(data.get("study_instance_uid", "")),
        )


def panel_sort_key(panel: ReviewPanel | RenderedPanel) -> tuple:
    """Time order of a lesion's studies (day, date, role, study UID, modality)."""
    return (panel.days_since_procedure, panel.study_date, _ROLE_ORDER[panel.role],
            panel.study_instance_uid, panel.modality)


def render_lesion_panels(out_dir: Path, panels: Sequence[ReviewPanel], *,
                         size_px: int = 512) -> list[RenderedPanel]:
    """Render overlays into ``out_dir/img`` with the report's names; return their records.

    The records' ``flags`` are the panel's flags plus the overlay's own caliper warnings
    (:func:`~pipeline.outputs.overlay.caliper_notes`), so the HTML shows them too.

    ``panels`` may hold several lesions; each lesion's studies are numbered in time order,
    so pass *all* panels of a lesion in one call.
    """
    out_dir = Path(out_dir)
    by_lesion: dict[tuple[str, str], list[ReviewPanel]] = {}
    for p in panels:
        by_lesion.setdefault((p.patient_id, p.lesion_id), []).append(p)
    rendered: list[RenderedPanel] = []
    for (pid, lid), group in sorted(by_lesion.items()):
        for n, panel in enumerate(sorted(group, key=panel_sort_key)):
            rel = (f"{IMG_DIR}/{lesion_stem(pid, lid)}__"
                   f"{panel.study_date.strftime('%Y%m%d')}_{panel.role.value}_{n:02d}.png")
            render_overlay(panel, out_dir / rel, size_px=size_px)
            rendered.append(RenderedPanel(
                patient_id=pid, lesion_id=lid, study_date=panel.study_date, role=panel.role,
                days_since_procedure=panel.days_since_procedure, modality=panel.modality,
                png_relpath=rel, values=panel.values,
                flags=(*panel.flags, *caliper_notes(panel)),
                study_instance_uid=panel.study_instance_uid,
            ))
    return rendered


def write_rendered_json(path: Path, rendered: Sequence[RenderedPanel]) -> Path:
    """Save panel records (e.g. one file per lesion job) as JSON, stable key order."""
    text = json.dumps([r.to_json_dict() for r in rendered], indent=1, ensure_ascii=False)
    return write_text_atomic(Path(path), text + "\n")


def read_rendered_json(path: Path) -> list[RenderedPanel]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rendered panels")
    return [RenderedPanel.from_json_dict(d) for d in data]
