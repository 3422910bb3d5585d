"""DICOM input: header index of an archive, series → Volume loading, NIfTI conversion."""

from pipeline.dicom.errors import (
    DicomInputError,
    InconsistentSeriesError,
    MissingTagError,
    NotDicomError,
    SeriesGeometryError,
    UnreadableFileError,
    UnsupportedTransferSyntaxError,
)
from pipeline.dicom.loader import load_series, read_nifti, write_nifti

__all__ = [
    "DicomInputError",
    "InconsistentSeriesError",
    "MissingTagError",
    "NotDicomError",
    "SeriesGeometryError",
    "UnreadableFileError",
    "UnsupportedTransferSyntaxError",
    "load_series",
    "read_nifti",
    "write_nifti",
]
