"""Outputs: registry tables (CSV), the registry database, DICOM SEG/SR, the review report."""
