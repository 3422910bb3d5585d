"""Per-patient analysis: study roles, series choice, and the lesion measurement chain."""
