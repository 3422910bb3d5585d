"""Exceptions for bad DICOM input. Each names the file or series and the reason.

A bad file or series is recorded (errors.csv, or ``usable=false`` with the reason in
series.csv) and skipped; it never stops the other patients.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DicomInputError",
    "NotDicomError",
    "UnreadableFileError",
    "MissingTagError",
    "UnsupportedTransferSyntaxError",
    "SeriesGeometryError",
    "InconsistentSeriesError",
]


class DicomInputError(ValueError):
    """Base class: a file or series that cannot be used, with where and why.

    Attributes:
        where: file path or series UID the problem is about.
        reason: short human-readable reason (goes into errors.csv / series.csv).
    """

    def __init__(self, where: str | Path, reason: str) -> None:
        self.where = str(where)
        self.reason = reason
        super().__init__(f"{self.where}: {reason}")


class NotDicomError(DicomInputError):
    """The file is not DICOM (no preamble/meta and not parseable as a raw dataset)."""


class UnreadableFileError(DicomInputError):
    """The file looks like DICOM but cannot be parsed or its pixel data cannot be decoded."""


class MissingTagError(DicomInputError):
    """A tag needed for geometry or intensity (e.g. ImagePositionPatient) is absent."""


class UnsupportedTransferSyntaxError(DicomInputError):
    """No installed decoder handles the transfer syntax."""


class SeriesGeometryError(DicomInputError):
    """The slices do not form a volume (gaps, duplicates, single position, tilt refused)."""


class InconsistentSeriesError(DicomInputError):
    """Instances of one series disagree (rows/columns, orientation, spacing)."""
