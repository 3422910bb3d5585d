"""Lesion measurements: pure functions on :class:`pipeline.image.Volume` images and masks.

Size (RECIST axial long/short axis, 3-D caliper diameter, volume), ablative margin and
coverage, CT/MR enhancement and enhancing components. Every length is in mm of patient
space (LPS) whatever the grid orientation; masks and images must share a grid. Nothing
here imports the workflow, outputs, CLI or DICOM I/O.
"""

from measurements._common import EmptyMaskError, ModalityError
from measurements.components import (
    Component,
    ComponentShape,
    PeripheralRim,
    RimPart,
    SlabPart,
    enhancing_components,
    peripheral_rim,
    rim_parts,
    slab_partial_volume_parts,
)
from measurements.enhancement import (
    Z_95,
    Enhancement,
    EnhancementClass,
    MREnhancement,
    classify_with_uncertainty,
    ct_enhancement,
    ct_enhancement_at_pre_slabs,
    ct_enhancement_partial_slabs,
    mean_attenuation_hu,
    mr_enhancement,
    mr_fat_signal_ratio,
    subtraction_image,
)
from measurements.margin import (
    Margin,
    ablative_margin,
    ablative_margin_from_distances,
    coverage_pct,
    signed_distance_mm,
)
from measurements.size import (
    AxialDiameters,
    Caliper3D,
    axial_diameters,
    max_3d_diameter,
    max_3d_diameter_mm,
    mesh_max_3d_diameter,
    mesh_max_3d_diameter_mm,
    mesh_volume_ml,
    volume_ml,
)

__all__ = [
    "EmptyMaskError",
    "ModalityError",
    "AxialDiameters",
    "Caliper3D",
    "axial_diameters",
    "max_3d_diameter",
    "max_3d_diameter_mm",
    "mesh_max_3d_diameter",
    "mesh_max_3d_diameter_mm",
    "volume_ml",
    "mesh_volume_ml",
    "Margin",
    "ablative_margin",
    "ablative_margin_from_distances",
    "coverage_pct",
    "signed_distance_mm",
    "EnhancementClass",
    "Enhancement",
    "MREnhancement",
    "ct_enhancement",
    "ct_enhancement_at_pre_slabs",
    "ct_enhancement_partial_slabs",
    "classify_with_uncertainty",
    "Z_95",
    "mr_enhancement",
    "mr_fat_signal_ratio",
    "mean_attenuation_hu",
    "subtraction_image",
    "ComponentShape",
    "Component",
    "enhancing_components",
    "PeripheralRim",
    "peripheral_rim",
    "RimPart",
    "rim_parts",
    "SlabPart",
    "slab_partial_volume_parts",
]
