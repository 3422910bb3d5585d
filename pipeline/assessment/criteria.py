"""Configurable assessment criteria (defaults from the product brief)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

from measurements.enhancement import EnhancementClass  # one enum for the call, shared

__all__ = ["AssessmentCriteria", "SizeReference", "EnhancementClass"]


class SizeReference(StrEnum):
    """What the last follow-up long axis is compared with for ``size_decrease``."""

    BASELINE = "baseline"
    FIRST_FOLLOWUP = "first_followup"


@dataclass(frozen=True)
class AssessmentCriteria:
    """Thresholds of the brief. All values validated on construction.

    Attributes:
        enhancing_hu: CT ΔHU at or above which tissue is enhancing (Bosniak 2019: 20).
        equivocal_hu: CT ΔHU at or above which (and below ``enhancing_hu``) it is equivocal.
        mr_enhancing_pct: MR percent signal increase at or above which it is enhancing (15).
        margin_target_mm: minimal ablative margin for technical success (5 mm).
        coverage_required_pct: tumour coverage by the ice ball for technical success (100 %);
            compared after rounding to ``coverage_tolerance_pct``.
        coverage_tolerance_pct: rounding tolerance on coverage (voxelisation noise).
        size_reference: compare the last follow-up with the baseline tumour (default)
            or with the first follow-up ablation zone.
        growth_pct / growth_mm: RECIST-style growth for local progression (+20 % and ≥ 5 mm
            over the smallest earlier follow-up long axis).
        margin_review_band_mm: a measured minimal margin closer than this to
            ``margin_target_mm`` (either side) puts the lesion up for review: the margin is
            known to a few tenths of a millimetre (tumour border, registration into the
            ice-ball scan, ice-ball model), so ``technical_success`` may be either there.
            0 turns it off.
    """

    enhancing_hu: float = 20.0
    equivocal_hu: float = 10.0
    mr_enhancing_pct: float = 15.0
    margin_target_mm: float = 5.0
    coverage_required_pct: float = 100.0
    coverage_tolerance_pct: float = 0.5
    size_reference: SizeReference = SizeReference.BASELINE
    growth_pct: float = 20.0
    growth_mm: float = 5.0
    margin_review_band_mm: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_reference", SizeReference(self.size_reference))
        if not self.equivocal_hu < self.enhancing_hu:
            raise ValueError(
                f"equivocal_hu ({self.equivocal_hu}) must be below enhancing_hu "
                f"({self.enhancing_hu})"
            )
        for name in ("mr_enhancing_pct", "growth_pct", "growth_mm", "coverage_tolerance_pct",
                     "margin_review_band_mm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if not 0 < self.coverage_required_pct <= 100:
            raise ValueError(
                f"coverage_required_pct must be in (0, 100], got {self.coverage_required_pct}"
            )

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> AssessmentCriteria:
        """Build from a config mapping; unknown keys are an error (typos must not pass)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown assessment criteria: {unknown}; known: {sorted(known)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size_reference"] = self.size_reference.value
        return d

    def classify_ct_delta_hu(self, delta_hu: float | None) -> EnhancementClass:
        if delta_hu is None:
            return EnhancementClass.NOT_ASSESSABLE
        if delta_hu >= self.enhancing_hu:
            return EnhancementClass.YES
        if delta_hu >= self.equivocal_hu:
            return EnhancementClass.EQUIVOCAL
        return EnhancementClass.NO

    def classify_mr_pct(self, increase_pct: float | None) -> EnhancementClass:
        if increase_pct is None:
            return EnhancementClass.NOT_ASSESSABLE
        if increase_pct >= self.mr_enhancing_pct:
            return EnhancementClass.YES
        return EnhancementClass.NO
