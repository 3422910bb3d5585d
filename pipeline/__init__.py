"""cryotrack pipeline: archive → index → volumes → registration → segmentation →
measurements → assessment → outputs. This package holds the image type, DICOM I/O,
the workflow wiring and the CLI."""

__version__ = "0.1.0"
__all__ = ["__version__"]
