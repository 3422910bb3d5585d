"""Registration and classical segmentation: pure functions on :class:`pipeline.image.Volume`.

Registration (``registration``): rigid study-to-study alignment robust to table shifts and
prone/supine turns, local phase alignment, resampling and point mapping, with a quality
figure per transform. Segmentation: kidney, tumour (``tumour``), ice ball and cryoprobes
(``iceball``), ablation zone and enhancing nodules (``ablation_zone``), external masks
(``masks``). Nothing here imports the workflow, the outputs, the CLI or DICOM I/O.
"""

from segmentation._common import distance_from_index_mm, ncc, paste_into
from segmentation.ablation_zone import (
    ENHANCING_HU,
    ENHANCING_PCT,
    ZoneResult,
    segment_ablation_zone,
)
from segmentation.iceball import IceballResult, detect_probes, segment_iceball
from segmentation.kidney import segment_kidney
from segmentation.masks import load_external_mask
from segmentation.registration import (
    QUALITY_THRESHOLDS,
    RegistrationResult,
    body_mask,
    register_phases,
    register_rigid,
    registration_quality,
    resample_to,
    transform_points_lps,
)
from segmentation.tumour import segment_tumour, tissue_levels_hu, transfer_mask

__all__ = [
    "ENHANCING_HU",
    "ENHANCING_PCT",
    "QUALITY_THRESHOLDS",
    "IceballResult",
    "RegistrationResult",
    "ZoneResult",
    "body_mask",
    "detect_probes",
    "load_external_mask",
    "register_phases",
    "register_rigid",
    "paste_into",
    "distance_from_index_mm",
    "ncc",
    "registration_quality",
    "resample_to",
    "segment_ablation_zone",
    "segment_iceball",
    "segment_kidney",
    "segment_tumour",
    "tissue_levels_hu",
    "transfer_mask",
    "transform_points_lps",
]
