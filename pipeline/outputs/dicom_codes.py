"""Coded concepts written into cryotrack's DICOM SEG and SR objects (one place, documented).

Standard codes come from pydicom's code dictionary (DICOM PS3.16) wherever a concept
exists there; checked against pydicom 3.0.2 ``pydicom.sr.codedict``:

============================  ==========================================================
structure / measurement       code
============================  ==========================================================
category of lesion segments   SCT 49755003 "Morphologically Abnormal Structure" (CID 7150)
category of the kidney        SCT 91723000 "Anatomical Structure" (CID 7150)
tumour                        SCT 108369006 "Neoplasm" (CID 7151/7159)
ablation zone                 SCT 6574001 "Necrosis" (CID 7159; the zone is coagulative
                              necrosis after cryoablation; segment label "Ablation zone")
enhancing tissue              NCIt C113842 "Enhancing Lesion" (CID 7159)
kidney (type and region)      SCT 64033007 "Kidney"
long / short axis             SCT 103339001 "Long axis" / SCT 103340004 "Short axis"
3D maximum diameter           SCT 81827009 "Diameter", derivation SCT 56851009 "Maximum"
volume                        SCT 118565006 "Volume", unit UCUM ml
mean attenuation              DCM 112031 "Attenuation Coefficient", derivation SCT 373098007
                              "Mean", unit UCUM [hnsf'U] (TID 1419 style)
enhancing yes/no/equivocal    SCT 373066001 "Yes" / 373067005 "No" / 42425007 "Equivocal"
============================  ==========================================================

No standard code exists for the cryoablation ice ball, for enhancement as a difference
(contrast − unenhanced), for the minimal ablative margin or for tumour coverage. These use
the private coding scheme :data:`PRIVATE_SCHEME` ("99CRYOTRACK"), declared in every object
through :func:`coding_scheme_identification` (CodingSchemeIdentificationSequence, as
PS3.3 C.12.1 requires for schemes outside PS3.16 Table 8-1).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = [
    "PRIVATE_SCHEME",
    "STRUCTURES",
    "StructureCodes",
    "MeasureCodes",
    "MEASURES",
    "ENHANCING_CONCEPT",
    "ENHANCING_VALUES",
    "UNIT_MM",
    "UNIT_ML",
    "UNIT_HU",
    "UNIT_PERCENT",
    "coding_scheme_identification",
]

#: Private coding scheme designator for concepts absent from DICOM PS3.16.
PRIVATE_SCHEME = "99CRYOTRACK"

UNIT_MM = codes.UCUM.Millimeter
UNIT_ML = Code("ml", "UCUM", "milliliter")
UNIT_HU = codes.UCUM.HounsfieldUnit
UNIT_PERCENT = codes.UCUM.Percent

_MORPH_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure
_KIDNEY = codes.SCT.Kidney


@dataclass(frozen=True)
class StructureCodes:
    """How one mask structure is described in SEG (segment) and SR (finding)."""

    label: str
    category: Code
    property_type: Code
    anatomic_region: Code | None
    #: recommended display colour, CIELab (L 0..100, a/b −128..127)
    display_lab: tuple[float, float, float]


#: Keys are the structure names used throughout the pipeline (mask dict keys).
STRUCTURES: dict[str, StructureCodes] = {
    "tumour": StructureCodes(
        "Tumour", _MORPH_ABNORMAL, codes.SCT.Neoplasm, _KIDNEY, (55.0, 70.0, 50.0)
    ),
    "iceball": StructureCodes(
        "Ice ball",
        _MORPH_ABNORMAL,
        Code("ICEBALL", PRIVATE_SCHEME, "Cryoablation ice ball"),
        _KIDNEY,
        (80.0, -10.0, -45.0),
    ),
    "ablation_zone": StructureCodes(
        "Ablation zone", _MORPH_ABNORMAL, codes.SCT.Necrosis, _KIDNEY, (70.0, 5.0, 65.0)
    ),
    "enhancing": StructureCodes(
        "Enhancing tissue",
        _MORPH_ABNORMAL,
        codes.NCIt.EnhancingLesion,
        _KIDNEY,
        (60.0, 80.0, -20.0),
    ),
    "kidney": StructureCodes(
        "Kidney", codes.SCT.AnatomicalStructure, _KIDNEY, None, (60.0, 20.0, 30.0)
    ),
}


@dataclass(frozen=True)
class MeasureCodes:
    """Concept name, optional derivation and the (required) UCUM unit of a measurement."""

    name: Code
    unit: Code
    derivation: Code | None = None


#: Measurement keys (units in the name, as in lesion_timepoints.csv) → codes.
MEASURES: dict[str, MeasureCodes] = {
    "long_axis_mm": MeasureCodes(codes.SCT.LongAxis, UNIT_MM),
    "short_axis_mm": MeasureCodes(codes.SCT.ShortAxis, UNIT_MM),
    "max_3d_diameter_mm": MeasureCodes(codes.SCT.Diameter, UNIT_MM, codes.SCT.Maximum),
    "volume_ml": MeasureCodes(codes.SCT.Volume, UNIT_ML),
    "mean_attenuation_hu": MeasureCodes(codes.DCM.AttenuationCoefficient, UNIT_HU, codes.SCT.Mean),
    "enhancement_hu": MeasureCodes(
        Code("ENHHU", PRIVATE_SCHEME, "Enhancement, contrast minus unenhanced attenuation"),
        UNIT_HU,
    ),
    "enhancement_pct": MeasureCodes(
        Code("ENHPCT", PRIVATE_SCHEME, "Enhancement, percent signal increase"), UNIT_PERCENT
    ),
    "min_margin_mm": MeasureCodes(
        Code("MINMARGIN", PRIVATE_SCHEME, "Minimal ablative margin"), UNIT_MM
    ),
    "tumour_coverage_pct": MeasureCodes(
        Code("TUMCOVER", PRIVATE_SCHEME, "Tumour coverage by ice ball"), UNIT_PERCENT
    ),
}

#: Qualitative evaluation "is there enhancing tissue" and its values.
ENHANCING_CONCEPT = Code("ENHANCING", PRIVATE_SCHEME, "Enhancing tissue present")
ENHANCING_VALUES: dict[str, Code] = {
    "yes": codes.SCT.Yes,
    "no": codes.SCT.No,
    "equivocal": codes.SCT.Equivocal,
    "not_assessable": Code("NOTASSESSABLE", PRIVATE_SCHEME, "Not assessable"),
}


def coding_scheme_identification() -> list[Dataset]:
    """Items of CodingSchemeIdentificationSequence declaring :data:`PRIVATE_SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "cryotrack private concepts"
    item.CodingSchemeResponsibleOrganization = "cryotrack project"
    return [item]
