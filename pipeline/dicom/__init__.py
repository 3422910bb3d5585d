"""pipeline/dicom"""
